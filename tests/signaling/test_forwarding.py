"""signaling/forwarding.py: relayed responses' bytes, checked against the rebuild in tests."""

from __future__ import annotations

import dataclasses

import pytest

from protocols.sip.message import Response
from protocols.sip.parser import parse_message, parse_name_addr
from protocols.sip.serializer import serialize
from signaling import forwarding
from signaling.forwarding import response_bytes

_RINGING = (
    b"SIP/2.0 180 Ringing\r\n"
    b'Via: SIP/2.0/UDP 192.0.2.99:5060;branch=z9hG4bKf1;rport;oc;oc-algo="loss", '
    b"SIP/2.0/UDP 192.0.2.1:5062;branch=z9hG4bKc1;rport=5062;received=192.0.2.1\r\n"
    b"Record-Route: <sip:192.0.2.99:5060;lr>\r\n"
    b"From: <sip:alice@example.com>;tag=a1\r\nTo: <sip:bob@example.org>;tag=b1\r\n"
    b"Call-ID: fw-1@example.com\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")


def _received() -> Response:
    resp = parse_message(_RINGING)
    assert isinstance(resp, Response) and resp.wire is not None
    return resp


def test_the_test_suite_checks_every_edit() -> None:
    assert forwarding.CHECK_EDITS  # tests/conftest.py sets SIGNALING_TEST_CHECK_EDITS=1


def test_relayed_bytes_lose_the_top_via_only() -> None:
    resp = _received()
    data = response_bytes(resp)
    assert data == _RINGING.replace(
        b'SIP/2.0/UDP 192.0.2.99:5060;branch=z9hG4bKf1;rport;oc;oc-algo="loss", ', b"")
    assert data == serialize(dataclasses.replace(resp, vias=resp.vias[1:]))


def test_a_response_without_its_wire_is_rebuilt_by_the_caller() -> None:
    assert response_bytes(dataclasses.replace(_received())) is None


def test_a_field_changed_in_place_is_caught_by_the_check() -> None:
    """Changing a received response in place breaks the editor's contract (message.Message
    .wire says to clear it then): in tests the check raises instead of relaying stale bytes."""
    resp = _received()
    resp.to = parse_name_addr("<sip:carol@example.org>;tag=c1")
    with pytest.raises(AssertionError, match="differs from the rebuilt one"):
        response_bytes(resp)
    resp.wire = None
    assert response_bytes(resp) is None
