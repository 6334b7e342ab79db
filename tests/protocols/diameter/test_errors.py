"""Error classes carry their answer."""

from __future__ import annotations

from protocols.diameter.errors import (
    FramingError,
    LocalProtocolError,
    PeerStateError,
    RemoteProtocolError,
    SessionStateError,
    WatchdogStateError,
)


def test_error_bit_follows_the_result_code_class() -> None:
    assert RemoteProtocolError("x", 3004).error_bit
    assert not RemoteProtocolError("x", 5001).error_bit
    assert not RemoteProtocolError("x", 2001).error_bit


def test_framing_error_is_fatal_and_keeps_header() -> None:
    err = FramingError("x", 5015, b"h" * 20)
    assert err.fatal and err.header == b"h" * 20 and err.before == []


def test_state_errors() -> None:
    assert isinstance(PeerStateError("s", "e"), LocalProtocolError)
    assert isinstance(WatchdogStateError("s", "e"), LocalProtocolError)
    err = SessionStateError("s", "e", 5002)
    assert isinstance(err, RemoteProtocolError) and err.result_code == 5002
