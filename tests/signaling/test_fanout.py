"""The per-destination fan-out bound (signaling/fanout.py)."""

from __future__ import annotations

from signaling.fanout import cap_per_destination


def test_keeps_the_first_of_each_destination_in_order() -> None:
    targets = [("a", 1), ("b", 1), ("a", 2), ("a", 3), ("b", 2), ("c", 1), ("a", 4)]
    kept, dropped = cap_per_destination(targets, 2, lambda t: t[0])
    assert kept == [("a", 1), ("b", 1), ("a", 2), ("b", 2), ("c", 1)]
    assert dropped == 2


def test_within_the_bound_nothing_is_dropped() -> None:
    targets = [1, 2, 3]
    assert cap_per_destination(targets, 1, lambda t: t) == ([1, 2, 3], 0)
    assert cap_per_destination([], 1, lambda t: t) == ([], 0)
