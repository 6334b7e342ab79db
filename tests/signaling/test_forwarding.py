"""signaling/forwarding.py: relayed responses' and forwarded requests' bytes, checked against the
rebuild in tests."""

from __future__ import annotations

import dataclasses

import pytest

from protocols.sip.message import Request, Response
from protocols.sip.parser import parse_message, parse_name_addr, parse_via_list
from protocols.sip.serializer import serialize
from protocols.sip.uri import parse_uri
from signaling import forwarding
from signaling.forwarding import ack_bytes, request_bytes, response_bytes

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


# --- requests -----------------------------------------------------------------------------------

_BYE = (
    b"BYE sip:bob@192.0.2.7:5062 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1:5061;branch=z9hG4bK-b1;rport\r\n"
    b"Route: <sip:192.0.2.99:5060;lr>\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: <sip:alice@example.com>;tag=a1\r\nTo: <sip:bob@example.org>;tag=b1\r\n"
    b"Call-ID: fw-1@example.com\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n")
_VIA = parse_via_list("SIP/2.0/UDP 192.0.2.99:5060;branch=z9hG4bKp1")[0]
_RR = parse_name_addr("<sip:192.0.2.99:5060;lr>")


def _request(data: bytes = _BYE) -> Request:
    req = parse_message(data)
    assert isinstance(req, Request) and req.wire is not None
    req.routes = req.routes[1:]  # ours, popped as the proxy does (§16.4)
    return req


def _copy(req: Request, **changes: object) -> Request:
    fields: dict[str, object] = {
        "uri": req.uri, "vias": [_VIA, *req.vias], "record_routes": req.record_routes,
        "routes": req.routes, "max_forwards": 69, "extra": req.extra, "require": req.require}
    fields.update(changes)
    return req.forwarded(**fields)  # type: ignore[arg-type]


def test_forwarded_in_dialog_request_is_the_rebuild() -> None:
    req = _request()
    copy = _copy(req)
    assert request_bytes(req, copy) == serialize(copy)
    assert ack_bytes(req, _VIA, 69) == serialize(copy)


def test_initial_request_edits_are_read_from_the_copy() -> None:
    req = _request()
    uri = parse_uri("sip:bob@192.0.2.8:5070", request_uri=True)
    copy = _copy(req, uri=uri, record_routes=[_RR])
    data = request_bytes(req, copy)
    assert data == serialize(copy)  # our Record-Route above Max-Forwards, as serialize does


@pytest.mark.parametrize("change", ["extra", "require", "routes", "vias", "record_routes"])
def test_what_the_edit_cannot_say_is_rebuilt(change: str) -> None:
    """A copy whose untyped headers, Require or Route set differ (trace context, Path, a
    target's own Route), or whose Vias or Record-Routes are not ours added above the
    received ones: left to the serializer."""
    req = _request()
    other = {"extra": [("Subject", "x")], "require": ["path"], "routes": [_RR],
             "vias": [_VIA], "record_routes": [_RR, _RR]}[change]
    if change == "record_routes":
        req = _request(_BYE.replace(b"Max-Forwards", b"Record-Route: <sip:p0;lr>\r\nMax-Forwards"))
    assert request_bytes(req, _copy(req, **{change: other})) is None


def test_a_request_changed_in_place_is_caught_or_rebuilt() -> None:
    """auth/policy.py consumes our realm's credentials in place and clears ``wire``; a change
    in place that does not is caught by the check."""
    req = _request()
    req.to = parse_name_addr("<sip:carol@example.org>;tag=c1")
    with pytest.raises(AssertionError, match="differs from the rebuilt one"):
        request_bytes(req, _copy(req))
    req.wire = None
    assert request_bytes(req, _copy(req)) is None and ack_bytes(req, _VIA, 69) is None
