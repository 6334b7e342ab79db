"""The method and extension names: Allow, Supported and the bounded metric labels."""

from __future__ import annotations

from signaling.sipnames import ALLOW, KNOWN_METHODS, METHOD_LABELS, SUPPORTED_EXTENSIONS


def test_method_labels_are_bounded() -> None:
    """Metric labels: a known method is its own label, anything else "other" (bounded)."""
    assert all(METHOD_LABELS[m] == m for m in KNOWN_METHODS)
    assert METHOD_LABELS["FOO"] == "other" and METHOD_LABELS["invite"] == "other"
    assert "FOO" not in METHOD_LABELS  # a miss adds no label


def test_allow_lists_known_methods_and_supported_what_is_implemented() -> None:
    allowed = {m.strip() for m in ALLOW.split(",")}
    assert allowed <= KNOWN_METHODS and {"INVITE", "ACK", "BYE", "CANCEL", "REGISTER"} <= allowed
    assert {"gruu", "outbound", "path"} == SUPPORTED_EXTENSIONS  # RFC 5627, 5626, 3327
