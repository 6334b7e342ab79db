"""Relaying a response or forwarding a request by editing its bytes (protocols/sip/edit.py)
against the full rebuild.

The contract: whatever ``forwarded_response`` returns reads back as the message ``serialize``
writes for the copy without the top Via, raw texts included (``same``: both read
back and serialized again, which writes every field from its raw text in one canonical order);
byte for byte when the received message was itself in the serializer's order.  The same for
``forwarded_request`` and the copy a proxy forwards (``Request.forwarded``: a Via added, Route
values popped, Record-Routes added, Max-Forwards and the Request-URI changed); byte for byte
when the received request was in the serializer's order with a Max-Forwards.  Where an edit
cannot keep the contract it returns None.  Only the C fast path records where the top Via is
(``Message.wire``): a response parser.py parsed alone is always rebuilt.
"""

from __future__ import annotations

import dataclasses
import re

import pytest
from hypothesis import HealthCheck, given, settings

from benchmarks.sip_samples import OK_200
from protocols.sip.edit import forwarded_request, forwarded_response
from protocols.sip.errors import RemoteProtocolError
from protocols.sip.message import NameAddr, Request, Response
from protocols.sip.parser import (
    parse_message,
    parse_message_pure,
    parse_name_addr,
    parse_via_list,
)
from protocols.sip.serializer import serialize
from protocols.sip.uri import parse_uri

from .conftest import requests, responses, torture_corpus


def same(data: bytes, expected: Request | Response) -> bool:
    return serialize(parse_message(data)) == serialize(parse_message(serialize(expected)))


def lines(*head: str, body: bytes = b"") -> bytes:
    return "\r\n".join([*head, f"Content-Length: {len(body)}", "", ""]).encode() + body


_DIALOG = ("From: <sip:alice@example.com>;tag=a1", "To: <sip:bob@example.org>",
           "Call-ID: edit-1@example.com", "CSeq: 7 INVITE")


# --- responses ----------------------------------------------------------------------------------


def test_response_loses_its_top_via_byte_for_byte() -> None:
    resp = parse_message(serialize(parse_message(OK_200)))  # in the serializer's order
    assert isinstance(resp, Response)
    up = dataclasses.replace(resp, vias=resp.vias[1:])
    assert forwarded_response(resp) == serialize(up)


def test_response_sample_as_received() -> None:
    resp = parse_message(OK_200)
    assert isinstance(resp, Response)
    data = forwarded_response(resp)
    assert data is not None and same(data, dataclasses.replace(resp, vias=resp.vias[1:]))
    assert data == OK_200.replace(OK_200.split(b"\r\n")[1] + b"\r\n", b"", 1)


@pytest.mark.parametrize("via_lines", [
    # SIPp's [last_Via:]: every Via in one line
    ['Via: SIP/2.0/UDP 192.0.2.99:5060;branch=z9hG4bK1;oc;oc-algo="loss", '
     "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKc;rport=5060"],
    # no space after the comma, a quoted comma in the first value
    ['Via: SIP/2.0/UDP 192.0.2.99;branch=z9hG4bK2;x="a,b",SIP/2.0/TCP h;branch=z9hG4bKd'],
    # compact and lower-case names
    ["v: SIP/2.0/UDP 192.0.2.99;branch=z9hG4bK3", "via: SIP/2.0/UDP h;branch=z9hG4bKe"],
    # the Vias below another header
    ["Max-Forwards: 5", "Via: SIP/2.0/UDP 192.0.2.99;branch=z9hG4bK4",
     "Via: SIP/2.0/UDP h;branch=z9hG4bKf"],
])
def test_response_shapes(via_lines: list[str]) -> None:
    wire = lines("SIP/2.0 180 Ringing", *via_lines, *_DIALOG[:1], "To: <sip:b@h>;tag=t",
                 *_DIALOG[2:])
    resp = parse_message(wire)
    assert isinstance(resp, Response)
    data = forwarded_response(resp)
    assert data is not None
    expected = dataclasses.replace(resp, vias=resp.vias[1:])
    assert same(data, expected)
    assert len(parse_message(data).vias) == len(resp.vias) - 1
    pure = parse_message_pure(wire)
    assert pure == resp and pure.wire is None and forwarded_response(pure) is None


def test_response_body_keeps_only_content_length_octets() -> None:
    wire = lines("SIP/2.0 200 OK", "Via: SIP/2.0/UDP 192.0.2.99;branch=z9hG4bK5",
                 "Via: SIP/2.0/UDP h;branch=z9hG4bKg", *_DIALOG, body=b"v=0\r\n") + b"junk"
    resp = parse_message(wire)
    assert isinstance(resp, Response)
    data = forwarded_response(resp)
    assert data is not None and data.endswith(b"\r\n\r\nv=0\r\n")
    assert same(data, dataclasses.replace(resp, vias=resp.vias[1:]))


@pytest.mark.parametrize("wire", [
    b"\r\n" + OK_200,  # CRLFs before the start line (§7.5)
    OK_200.replace(b"Via: SIP/2.0/UDP 192.0.2.30:5060;", b"Via: SIP/2.0/UDP\r\n 192.0.2.30:5060;"),
    OK_200.replace(b"Content-Length: 0\r\n", b""),  # serialize adds one
])
def test_response_left_to_the_serializer(wire: bytes) -> None:
    resp = parse_message(wire)
    assert isinstance(resp, Response)
    assert forwarded_response(resp) is None


def test_built_or_copied_messages_have_no_wire() -> None:
    resp = parse_message(OK_200)
    assert isinstance(resp, Response)
    assert forwarded_response(dataclasses.replace(resp)) is None
    changed = parse_message(OK_200)
    assert isinstance(changed, Response)
    changed.vias[0] = parse_via_list("SIP/2.0/UDP elsewhere;branch=z9hG4bKq")[0]
    assert forwarded_response(changed) is None  # the top Via is not the received text


# --- requests -----------------------------------------------------------------------------------

_PROXY_VIA = parse_via_list("SIP/2.0/UDP 192.0.2.99:5060;branch=z9hG4bKp1;oc")[0]
_OUR_RR = parse_name_addr("<sip:192.0.2.99:5060;lr>")
_ROUTE = "Route: <sip:192.0.2.99:5060;lr>"


def forward(req: Request, pop: int = 0, rr: tuple[NameAddr, ...] = (),
            uri: str | None = None) -> tuple[bytes | None, Request]:
    """What the proxy does (signaling/proxy.py, forwarding.py): ``pop`` Route values popped
    in place (§16.4), then the edit; and the copy it would serialize instead."""
    req.routes = req.routes[pop:]
    mf = 70 if req.max_forwards is None else max(req.max_forwards - 1, 0)
    target = req.uri if uri is None else parse_uri(uri, request_uri=True)
    copy = req.forwarded(uri=target, vias=[_PROXY_VIA, *req.vias],
                         record_routes=[*rr, *req.record_routes], routes=req.routes,
                         max_forwards=mf, extra=req.extra, require=req.require)
    return forwarded_request(req, _PROXY_VIA, mf, rr, uri), copy


def _request(*head: str, body: bytes = b"") -> Request:
    req = parse_message(lines(*head, body=body))
    assert isinstance(req, Request) and req.wire is not None
    return req


_BYE = ("BYE sip:bob@192.0.2.7:5062 SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-b1;rport")


def test_in_dialog_bye_byte_for_byte() -> None:
    """The call's BYE as SIPp writes it (Route above Max-Forwards): our Route line goes, our
    Via comes, Max-Forwards is decremented; the serializer writes the same bytes."""
    req = _request(*_BYE, _ROUTE, "Max-Forwards: 70", *_DIALOG[:1], "To: <sip:b@h>;tag=t",
                   *_DIALOG[2:3], "CSeq: 2 BYE")
    data, copy = forward(req, pop=1)
    assert data == serialize(copy)
    assert b"Route" not in data and b"Max-Forwards: 69\r\n" in data
    assert data.startswith(b"BYE sip:bob@192.0.2.7:5062 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.99")


def test_stamped_top_via_is_written_as_it_is_now() -> None:
    """§18.2.1 / RFC 3581: the receive path adds received and rport to the top Via; the
    forwarded request carries them."""
    req = _request(*_BYE, "Max-Forwards: 70", *_DIALOG[:1], "To: <sip:b@h>;tag=t",
                   *_DIALOG[2:3], "CSeq: 2 BYE")
    req.vias[0] = req.vias[0].with_rport("198.51.100.4", 40000)
    data, copy = forward(req)
    assert data == serialize(copy)
    assert b";rport=40000;received=198.51.100.4\r\n" in data


@pytest.mark.parametrize("head", [
    # our Route first of two in one line, and the next line kept
    [_ROUTE + ", <sip:p2.example.com;lr>", "Route: <sip:p3.example.com;lr>", "Max-Forwards: 9"],
    # two Route lines; no space after the comma
    ["Route: <sip:192.0.2.99;lr>,<sip:p2.example.com;lr>"],
    # Route below From, compact Via, no Max-Forwards (one is added, §16.6 step 3)
    ["v: SIP/2.0/UDP h2;branch=z9hG4bK-c2", *_DIALOG[:1], _ROUTE],
    # the Vias below other headers, a Record-Route already there
    ["Max-Forwards: 3", "Record-Route: <sip:p0.example.com;lr>",
     "Via: SIP/2.0/TCP h3;branch=z9hG4bK-c3", _ROUTE],
])
def test_request_shapes(head: list[str]) -> None:
    base = [h for h in _DIALOG if not h.startswith("From") or not any(
        x.startswith("From") for x in head)]
    for pop, rr, uri in [(1, (), None), (1, (_OUR_RR,), "sip:bob@192.0.2.8:5070"),
                         (0, (_OUR_RR, parse_name_addr("<sip:10.0.0.1;lr>")), None)]:
        req = _request("INVITE sip:bob@example.org SIP/2.0",
                       "Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK-c1", *head, *base,
                       body=b"v=0\r\n")
        req = dataclasses.replace(req, cseq=req.cseq)  # a copy has no wire: rebuilt
        assert forward(req, pop)[0] is None
        req = _request("INVITE sip:bob@example.org SIP/2.0",
                       "Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK-c1", *head, *base,
                       body=b"v=0\r\n")
        data, copy = forward(req, pop, rr, uri)
        assert data is not None and same(data, copy)
        back = parse_message(data)
        assert isinstance(back, Request)
        assert back.record_routes == copy.record_routes and back.routes == copy.routes
        assert str(back.uri) == str(copy.uri) and back.body == b"v=0\r\n"


def test_initial_invite_byte_for_byte() -> None:
    """SIPp's INVITE (Max-Forwards below Contact): the Request-URI rewritten, our
    Record-Route above Max-Forwards, where the serializer writes it."""
    req = _request("INVITE sip:uas@192.0.2.99:5060 SIP/2.0",
                   "Via: SIP/2.0/UDP 192.0.2.1:5061;branch=z9hG4bK-i1;rport",
                   "Max-Forwards: 70", *_DIALOG, body=b"v=0\r\n")
    data, copy = forward(req, 0, (_OUR_RR,), "sip:uas@192.0.2.7:5062")
    assert data == serialize(copy)


def test_two_routes_popped_are_rebuilt() -> None:
    """RFC 5658: two Route values of ours; the edit cuts one at most, the serializer does it."""
    req = _request(*_BYE, _ROUTE, "Route: <sip:192.0.2.99;transport=tcp;lr>",
                   *_DIALOG[:3], "CSeq: 2 BYE")
    assert forward(req, pop=2)[0] is None
    for data in (b"\r\n" + lines(*_BYE, *_DIALOG[:3], "CSeq: 2 BYE"),  # CRLF-led
                 lines(*_BYE, *_DIALOG[:3], "CSeq: 2 BYE")[:-len("Content-Length: 0\r\n\r\n")]
                 + b"\r\n"):  # no Content-Length
        msg = parse_message(data)
        assert isinstance(msg, Request) and msg.wire is None and forward(msg)[0] is None


def _forward_each_way(data: bytes) -> int:
    """Every edit a proxy makes, on one received request: checked against the rebuild."""
    done = 0
    for pop, rr, uri in [(0, (), None), (1, (), None), (0, (_OUR_RR,), "sip:u@192.0.2.5"),
                         (1, (_OUR_RR, _OUR_RR), "sip:u@192.0.2.5;transport=tcp")]:
        req = _parsed(data)
        if not isinstance(req, Request) or req.wire is None or len(req.routes) < pop:
            continue
        got, copy = forward(req, pop, rr, uri)
        assert got is not None and same(got, copy), data
        done += 1
    return done


def test_rfc4475_torture_messages_forwarded() -> None:
    """Every torture request the C fast path takes (the clean ones; the others are parsed by
    parser.py and rebuilt), forwarded with each edit a proxy makes, and the same with our
    Route line added above its Vias."""
    edited = 0
    for data in torture_corpus().values():
        edited += _forward_each_way(data)
        head, sep, rest = data.partition(b"\r\n")
        edited += _forward_each_way(head + sep + _ROUTE.encode() + b"\r\n" + rest)
    assert edited >= 12  # esc02 and mpart01 as they are and with our Route: 14 today


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(requests())
def test_generated_requests(msg: Request) -> None:
    """Serializer output is in the serializer's order: with a Max-Forwards, the edit is the
    rebuild byte for byte (without, the added one is below our Via, not above From)."""
    for pop, rr, uri in [(0, (), None), (1, (_OUR_RR,), "sip:u@192.0.2.5")]:
        req = _parsed(serialize(msg))
        if not isinstance(req, Request) or req.wire is None or len(req.routes) < pop:
            return
        had_mf = req.max_forwards is not None
        got, copy = forward(req, pop, rr, uri)
        assert got is not None and same(got, copy)
        if had_mf:
            assert got == serialize(copy)


# --- corpora and generated messages -----------------------------------------------------------


def _parsed(data: bytes) -> Request | Response | None:
    try:
        return parse_message(data)
    except RemoteProtocolError:
        return None


_OURS = b"Via: SIP/2.0/UDP 192.0.2.99:5060;branch=z9hG4bKt1;oc;oc-algo=\"loss\""


def _as_responses(data: bytes) -> list[bytes]:
    """A torture message's header section as a response with our Via on top, as a UAS echoes
    a request's headers (§8.2.6.2): on a line of its own, and first in the top Via line."""
    head, sep, body = data.partition(b"\r\n\r\n")
    _, _, rest = head.partition(b"\r\n")
    status = b"SIP/2.0 200 OK\r\n"
    out = [status + _OURS + b"\r\n" + rest + sep + body]
    top = re.search(rb"(?im)^(via|v)[ \t]*:[ \t]*", rest)
    if top is not None:
        at = top.end()
        out.append(status + rest[:at] + _OURS[5:] + b", " + rest[at:] + sep + body)
    return [data, *out]


def test_rfc4475_torture_messages_as_responses() -> None:
    """Every response made of a torture message that the C fast path takes (the clean ones;
    the others are parsed by parser.py and rebuilt) is edited and reads back as the rebuild
    (the requests among them: ``test_rfc4475_torture_messages_forwarded``)."""
    edited = 0
    for data in torture_corpus().values():
        for candidate in _as_responses(data):
            msg = _parsed(candidate)
            if not isinstance(msg, Response) or msg.wire is None or len(msg.vias) < 2:
                continue  # rebuilt; a response with one Via is ours and never relayed
            got = forwarded_response(msg)
            assert got is not None and same(got, dataclasses.replace(msg, vias=msg.vias[1:]))
            edited += 1
    assert edited >= 10


_SETTINGS = settings(max_examples=150, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@_SETTINGS
@given(responses())
def test_generated_responses(msg: Response) -> None:
    """Serializer output is in the serializer's order: the edit is the rebuild, byte for
    byte."""
    resp = _parsed(serialize(msg))
    if not isinstance(resp, Response) or len(resp.vias) < 2 or resp.wire is None:
        return
    got = forwarded_response(resp)
    assert got == serialize(dataclasses.replace(resp, vias=resp.vias[1:]))


