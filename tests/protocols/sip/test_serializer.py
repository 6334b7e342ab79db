"""Tests of protocols.sip.serializer: header order, framing, raw forms and relaying."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from protocols.sip.message import CSeq, NameAddr, Request, Response, SipURI, TelURI, Via
from protocols.sip.parser import parse_message
from protocols.sip.serializer import serialize, start_line

from .conftest import messages, torture, torture_corpus


def build_request(**overrides: object) -> Request:
    fields: dict[str, object] = {
        "method": "INVITE",
        "uri": SipURI("sip", "example.com", "bob"),
        "vias": [Via("UDP", "192.0.2.1", 5060, {"branch": "z9hG4bK1", "rport": None})],
        "from_": NameAddr(SipURI("sip", "example.com", "alice"), "Alice", {"tag": "a1"}),
        "to": NameAddr(TelURI("+15551234"), '"Bob B"'),
        "call_id": "c1@host",
        "cseq": CSeq(7, "INVITE"),
    }
    fields.update(overrides)
    return Request(**fields)  # type: ignore[arg-type]


def test_request_wire_form_and_header_order() -> None:
    m = build_request(
        max_forwards=70,
        routes=[NameAddr(SipURI("sip", "p1.example.com", params={"lr": None}))],
        record_routes=[NameAddr(SipURI("sip", "p0.example.com", params={"lr": None}))],
        contacts=[NameAddr(SipURI("sip", "192.0.2.1", "alice", port=5060), None,
                           {"expires": "60", "q": "0.5"})],
        expires=3600, require=["100rel", "timer"], proxy_require=["sec-agree"],
        content_type="application/sdp", extra=[("User-Agent", "t/1"), ("X-Empty", "")],
        body=b"v=0\r\n",
    )
    assert serialize(m) == (
        b"INVITE sip:bob@example.com SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;rport\r\n"
        b"Route: <sip:p1.example.com;lr>\r\n"
        b"Record-Route: <sip:p0.example.com;lr>\r\n"
        b"Max-Forwards: 70\r\n"
        b"From: Alice <sip:alice@example.com>;tag=a1\r\n"
        b'To: "Bob B" <tel:+15551234>\r\n'
        b"Call-ID: c1@host\r\n"
        b"CSeq: 7 INVITE\r\n"
        b"Contact: <sip:alice@192.0.2.1:5060>;expires=60;q=0.5\r\n"
        b"Expires: 3600\r\n"
        b"Require: 100rel, timer\r\n"
        b"Proxy-Require: sec-agree\r\n"
        b"User-Agent: t/1\r\n"
        b"X-Empty: \r\n"
        b"Content-Type: application/sdp\r\n"
        b"Content-Length: 5\r\n\r\n"
        b"v=0\r\n"
    )


def test_response_wire_form() -> None:
    r = Response(status=180, reason="Ringing", vias=[Via("TCP", "h", None)],
                 from_=NameAddr(SipURI("sip", "a")), to=NameAddr(SipURI("sip", "b")),
                 call_id="x", cseq=CSeq(1, "INVITE"), contact_star=True)
    assert serialize(r) == (
        b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/TCP h\r\nFrom: <sip:a>\r\nTo: <sip:b>\r\n"
        b"Call-ID: x\r\nCSeq: 1 INVITE\r\nContact: *\r\nContent-Length: 0\r\n\r\n"
    )
    assert start_line(r) == "SIP/2.0 180 Ringing"
    empty = Response(status=100, reason="", vias=r.vias, from_=r.from_, to=r.to,
                     call_id="x", cseq=r.cseq)
    assert serialize(empty).startswith(b"SIP/2.0 100 \r\n")
    assert parse_message(serialize(empty)) == empty


def test_content_length_is_always_computed() -> None:
    m = parse_message(torture("dblreq"))  # Content-Length: 0 followed by junk
    m.body = b"abc"
    wire = serialize(m)
    assert b"Content-Length: 3\r\n\r\nabc" in wire and wire.count(b"Content-Length") == 1


def test_relayed_values_keep_their_raw_text() -> None:
    m = parse_message(torture("wsinv"))
    wire = serialize(m)
    # Header values are written as they came (after unfolding), names canonical.
    assert b"To: sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n\r\n" in wire
    assert b"Via: SIP  /   2.0 /UDP 192.0.2.2;branch=390skdjuw\r\n" in wire
    assert b"Max-Forwards: 68\r\n" in wire and b"CSeq: 9 INVITE\r\n" in wire
    assert b"NewFangledHeader: newfangled value continued newfangled value\r\n" in wire
    assert parse_message(wire) == m


def test_changed_values_are_rendered() -> None:
    m = parse_message(torture("esc01"))
    assert isinstance(m, Request)
    m.vias[0] = m.vias[0].with_param("received", "192.0.2.7")
    m.to = m.to.with_param("tag", "t9")
    m.max_forwards = 86
    wire = serialize(m)
    assert b"Via: SIP/2.0/UDP host5.example.net;branch=z9hG4bKkdjuw;received=192.0.2.7\r\n" in wire
    assert b"To: <sip:%75se%72@example.com>;tag=t9\r\n" in wire  # URI raw kept, escapes too
    assert b"Max-Forwards: 86\r\n" in wire
    assert parse_message(wire) == m


@pytest.mark.parametrize("name", sorted(torture_corpus()))
def test_serialize_is_idempotent_on_whatever_parses(name: str) -> None:
    try:
        m = parse_message(torture(name))
    except Exception:
        return  # the rejected ones are covered by test_parser
    once = serialize(m)
    assert serialize(parse_message(once)) == once


def test_bytes_that_are_not_utf8_survive_a_relay() -> None:
    data = torture("intmeth").replace(b"Content-Length: 0", b"X-Raw: a\xff\xfeb\r\nl: 0")
    m = parse_message(data)
    assert b"X-Raw: a\xff\xfeb\r\n" in serialize(m)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages)
def test_serialize_round_trips(m: Request | Response) -> None:
    wire = serialize(m)
    assert wire.endswith(b"\r\n\r\n" + m.body) if m.body else wire.endswith(b"\r\n\r\n")
    assert wire.count(b"\r\nContent-Length: ") == 1
    assert parse_message(wire) == m
