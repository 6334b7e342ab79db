"""Relaying a response by editing its bytes (protocols/sip/edit.py) against the full rebuild.

The contract: whatever ``forwarded_response`` returns reads back as the message ``serialize``
writes for the copy without the top Via, raw texts included (``same``: both read
back and serialized again, which writes every field from its raw text in one canonical order);
byte for byte when the received message was itself in the serializer's order.  Where an edit
cannot keep the contract it returns None.  Only the C fast path records where the top Via is
(``Message.wire``): a response parser.py parsed alone is always rebuilt.
"""

from __future__ import annotations

import dataclasses
import re

import pytest
from hypothesis import HealthCheck, given, settings

from benchmarks.sip_samples import OK_200
from protocols.sip.edit import forwarded_response
from protocols.sip.errors import RemoteProtocolError
from protocols.sip.message import Request, Response
from protocols.sip.parser import parse_message, parse_message_pure, parse_via_list
from protocols.sip.serializer import serialize

from .conftest import responses, torture_corpus


def same(data: bytes, expected: Response) -> bool:
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
    the others are parsed by parser.py and rebuilt) is edited and reads back as the rebuild;
    requests never have a wire."""
    edited = 0
    for data in torture_corpus().values():
        for candidate in _as_responses(data):
            msg = _parsed(candidate)
            if isinstance(msg, Request):
                assert msg.wire is None
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


