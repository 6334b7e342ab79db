"""Tests of protocols.sip._speedups, the C fast path of the SIP parser.

Contract (see ``protocols.sip.parser``): ``parse(data: bytes, stream: bool)`` returns ``None``
for anything outside the clean common subset it handles, every malformed message included, and
the pure-Python parser then decides; when it returns a message, that message is exactly what the
pure parser (``parse_message_pure``) returns.  "Exactly" is stricter than ``==``: ``raw`` is
excluded from dataclass equality but is what the serializer writes for a relayed value, and the
classes, the parameter order and the types of every nested value must match too (``assert_same``).

What is held:
- differential: for the RFC 4475 torture messages, every PROTOS c07-sip case (filled as the
  server test fills them), the benchmark samples, boundary variants of the limits, generated
  messages and mutations of all of these, on both datagram and stream framing: when the pure
  parser rejects, the fast path returns ``None``; when it accepts, the fast path returns
  ``None`` or the same message;
- non-vacuity: the fast path accepts the benchmark samples, the common shapes below and every
  message of ``clean_messages`` (the subset it declares), and a measured share of the generic
  generated messages;
- robustness: arbitrary bytes never raise, non-bytes raise ``TypeError``, returned lists are
  fresh per call, and 50k parses neither grow traced memory nor leak references.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import importlib
import os
import re
import shutil
import string
import sys
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from types import MappingProxyType, ModuleType

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from benchmarks.sip_samples import (
    INVITE_SDP,
    OK_200,
    REGISTER,
    invite_for_call,
    ok_for_call,
    register_for_user,
)
from protocols.sip import parser
from protocols.sip.edit import forwarded_request, forwarded_response
from protocols.sip.errors import RemoteProtocolError
from protocols.sip.message import CSeq, NameAddr, Request, Response, SipURI, Via
from protocols.sip.parser import (
    MAX_HEADER_LINE,
    MAX_HEADERS,
    MAX_MESSAGE_SIZE,
    MAX_VIAS,
    parse_message_pure,
    parse_name_addr,
    parse_via_list,
)
from protocols.sip.serializer import serialize
from protocols.sip.uri import MAX_URI_LENGTH, parse_uri
from tests.sanitizers import build_sanitized, run_sanitized
from tests.signaling.test_protos import CASE_COUNT, CASES_DIR, fill, load_case

from .conftest import requests, responses, torture_corpus

Message = Request | Response

# --- the extension and the reference -------------------------------------------------------------

_MODULE = "protocols.sip._speedups"


@functools.cache
def speedups() -> ModuleType:
    """The extension; an ImportError fails the calling test (the test command builds it)."""
    return importlib.import_module(_MODULE)


def fast(data: object, stream: bool) -> Message | None:
    """``_speedups.parse``, checked to return only what the contract allows."""
    out: object = speedups().parse(data, stream)
    if out is None:
        return None
    assert type(out) in (Request, Response), f"fast path returned {type(out)!r}"
    assert isinstance(out, Request | Response)
    return out


def pure(data: bytes, stream: bool) -> Message | None:
    """The reference: the message, or ``None`` when it raises ``RemoteProtocolError``."""
    try:
        return parse_message_pure(data, stream=stream)
    except RemoteProtocolError:
        return None


def test_extension_is_importable_and_is_the_parsers_fast_path() -> None:
    """Never skipped: a missing build fails here, and so does a parser that silently fell
    back to pure Python (a model change the extension does not know, or
    ``parser.set_fast_path(False)``, which leaves this module meaningless)."""
    module = speedups()
    assert callable(module.parse)
    assert parser.fast_parse is module.parse, "the parser does not use the C fast path"
    assert parser.ACCELERATED


# --- deep comparison -----------------------------------------------------------------------------


def _same(a: object, b: object, path: str) -> None:
    """Type identity and equality at every level, ``raw`` and dict order included."""
    assert type(a) is type(b), f"{path}: {type(a).__name__} != {type(b).__name__}"
    if dataclasses.is_dataclass(a):
        # fields() lists ``raw`` too (compare=False only hides it from ``==``); ``wire`` is
        # the C path's alone (parser.py leaves it None): ``check_wire`` holds it to its use.
        for f in dataclasses.fields(a):
            if f.name != "wire":
                _same(getattr(a, f.name), getattr(b, f.name), f"{path}.{f.name}")
    elif isinstance(a, dict):
        assert isinstance(b, dict)
        _same(list(a.items()), list(b.items()), f"{path}.items()")
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple)
        assert len(a) == len(b), f"{path}: {len(a)} items != {len(b)}: {a!r} != {b!r}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def check_wire(msg: Message, data: bytes) -> None:
    """A fast-parsed message's ``wire``: the bytes parsed, and a layout whose edits (edit.py)
    read back as the rebuild: for a response, exactly the top Via dropped; for a request, a
    proxy's forwarding edits (a Via added, our Route popped, a Record-Route added, the
    Request-URI and Max-Forwards changed).  Pure-parsed messages have none."""
    if msg.wire is None:
        return
    assert isinstance(msg, Request | Response) and msg.wire[0] is data
    if isinstance(msg, Request):
        req = dataclasses.replace(msg)
        req.wire = msg.wire
        req.routes = req.routes[1:]  # §16.4: the first Route popped (none when none)
        mf = 70 if req.max_forwards is None else max(req.max_forwards - 1, 0)
        edited = forwarded_request(req, _WIRE_VIA, mf, [_WIRE_RR], "sip:u@192.0.2.5")
        assert edited is not None
        copy = req.forwarded(uri=parse_uri("sip:u@192.0.2.5"), vias=[_WIRE_VIA, *req.vias],
                             record_routes=[_WIRE_RR, *req.record_routes], routes=req.routes,
                             max_forwards=mf, extra=req.extra, require=req.require)
        try:
            got = parse_message_pure(edited)
        except RemoteProtocolError as exc:
            # Our Via and Record-Route take a message at a limit past it; the rebuild writes
            # one line per Via value, so it may cross it where the edit does not, or the
            # other way.
            assert exc.reason in ("Too many header lines", "Too many Via headers",
                                  "Message Too Large"), exc
            return
        assert serialize(got) == serialize(copy)
        return
    cut = forwarded_response(msg)
    assert cut is not None
    rest = dataclasses.replace(msg, vias=msg.vias[1:])
    if rest.vias:  # else nothing to relay: a response with one Via is ours
        assert serialize(parse_message_pure(cut)) == serialize(rest)


_WIRE_VIA = parse_via_list("SIP/2.0/UDP 192.0.2.99:5060;branch=z9hG4bKw")[0]
_WIRE_RR = parse_name_addr("<sip:192.0.2.99;lr>")


def assert_same(fast_msg: Message, pure_msg: Message) -> None:
    """``fast_msg`` is exactly ``pure_msg``: equal, same classes, same ``raw`` everywhere,
    parameters in the same order, and the same bytes when written back."""
    _same(fast_msg, pure_msg, type(pure_msg).__name__)
    assert fast_msg == pure_msg
    assert serialize(fast_msg) == serialize(pure_msg)


class _Text(str):
    __slots__ = ()


def test_assert_same_sees_raw_order_and_type_differences() -> None:
    """The comparison is not vacuous: each difference ``==`` misses is caught."""
    msg = parse_message_pure(REGISTER)
    assert isinstance(msg, Request) and len(msg.vias[0].params) == 2
    top, uri = msg.vias[0], msg.from_.uri
    reordered = dict(reversed(list(top.params.items())))
    variants: list[tuple[str, Message, bool]] = [
        ("copy", dataclasses.replace(msg), True),
        ("via raw", dataclasses.replace(msg, vias=[dataclasses.replace(top, raw="x")]), False),
        ("param order", dataclasses.replace(
            msg, vias=[dataclasses.replace(top, params=reordered)]), False),
        ("uri raw", dataclasses.replace(msg, from_=dataclasses.replace(
            msg.from_, uri=dataclasses.replace(uri, raw=None))), False),
        ("params type", dataclasses.replace(msg, vias=[dataclasses.replace(
            top, params=MappingProxyType(dict(top.params)))]), False),
        ("int type", dataclasses.replace(msg, max_forwards=70.0), False),  # type: ignore[arg-type]
        ("str subclass", dataclasses.replace(msg, call_id=_Text(msg.call_id)), False),
    ]
    for label, other, same in variants:
        assert other == msg, label  # all differences that == does not see
        try:
            assert_same(other, msg)
        except AssertionError:
            assert not same, label
        else:
            assert same, label


# --- the differential property -------------------------------------------------------------------


def differential(data: bytes, stream: bool) -> bool:
    """The contract for one input; returns whether the fast path accepted it."""
    got = fast(data, stream)
    want = pure(data, stream)
    if want is None:
        assert got is None, f"fast path accepted what the pure parser rejects: {data!r}"
        return False
    if got is None:
        return False
    try:
        assert_same(got, want)
        check_wire(got, data)
    except AssertionError as exc:
        raise AssertionError(f"stream={stream} input={data!r}: {exc}") from exc
    return True


def accepted(data: bytes, stream: bool) -> Message:
    """``data`` must be accepted by both parsers, identically."""
    assert pure(data, stream) is not None, f"the pure parser rejects the test input {data!r}"
    assert differential(data, stream), f"fast path declined stream={stream} {data!r}"
    got = fast(data, stream)
    assert got is not None
    return got


STREAMS = (False, True)
_TORTURE = torture_corpus()


@pytest.mark.parametrize("name", sorted(_TORTURE))
def test_rfc4475_torture_messages(name: str) -> None:
    for stream in STREAMS:
        differential(_TORTURE[name], stream)


def _protos_values(index: int, method: str) -> dict[str, str]:
    # As tests/signaling/test_protos.py fills them (fixed, so a failure reproduces).
    return {
        "To": "protos@127.0.0.1:5060", "From": "tester@127.0.0.1",
        "From-Address": "127.0.0.1", "From-IP": "127.0.0.1", "Local-Port": "5061",
        "Call-ID": f"protos-{index}", "CSeq": "1", "Branch-ID": f"{index}x1",
        "Teardown-Method": method,
    }


def protos_messages() -> Iterator[tuple[str, bytes]]:
    names = sorted(os.listdir(CASES_DIR))
    assert len(names) == CASE_COUNT, f"PROTOS c07-sip corpus incomplete in {CASES_DIR}"
    for index, name in enumerate(names):
        invite_t, teardown_t = load_case(CASES_DIR / name)
        yield f"{name}/invite", fill(invite_t, _protos_values(index, "INVITE"))
        yield f"{name}/teardown", fill(teardown_t, _protos_values(index, "CANCEL"))


#: Least share of the PROTOS messages the pure parser accepts that the fast path must take.
#: Measured: 12,302 of 13,376 (92%; the declined ones carry tabs, folding, non-ASCII or
#: uncommon URI and parameter forms).  Nearly every case mutates one field of the same clean
#: INVITE or teardown, so a fast path that still takes the clean shape stays far above 80%.
PROTOS_ACCEPT_SHARE = 0.80


def test_protos_c07_cases() -> None:
    valid = taken = 0
    for label, data in protos_messages():
        for stream in STREAMS:
            try:
                taken += differential(data, stream)
            except AssertionError as exc:
                raise AssertionError(f"PROTOS {label}: {exc}") from exc
            valid += pure(data, stream) is not None
    assert taken >= PROTOS_ACCEPT_SHARE * valid, f"fast path took {taken} of {valid}"


BENCH_SAMPLES: dict[str, bytes] = {
    "INVITE_SDP": INVITE_SDP, "OK_200": OK_200, "REGISTER": REGISTER,
    **{f"invite_for_call({i})": invite_for_call(i) for i in (0, 1, 249, 250, 123_456)},
    **{f"ok_for_call({i})": ok_for_call(i) for i in (0, 1, 249, 250, 123_456)},
    **{f"register_for_user({i})": register_for_user(i) for i in (0, 1, 249, 250, 123_456)},
}


@pytest.mark.parametrize("name", sorted(BENCH_SAMPLES))
@pytest.mark.parametrize("stream", STREAMS)
def test_benchmark_samples_are_accepted(name: str, stream: bool) -> None:
    accepted(BENCH_SAMPLES[name], stream)


# --- common shapes the fast path must accept -----------------------------------------------------


def wire(*lines: str, body: bytes = b"", length: bool = True, tail: bytes = b"") -> bytes:
    """A message from its start line and header lines; Content-Length from ``body`` unless
    ``length`` is false; ``tail`` is sent after the body without being counted."""
    head = list(lines)
    if length:
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body + tail


_VIA = "Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK74b43"
_DIALOG = (
    'From: "Alice" <sip:alice@example.com>;tag=9fxced76sl',
    "To: Bob <sip:bob@example.org>;tag=314159",
    "Call-ID: 3848276298220188511@atlanta.example.com",
)
_SDP = b"v=0\r\no=- 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\n"

#: Realistic messages in the subset the fast path declares, by name; each must be accepted.
SHAPES: dict[str, bytes] = {
    "register_expires_q": wire(
        "REGISTER sip:registrar.example.com SIP/2.0", _VIA + ";rport", "Max-Forwards: 70",
        'To: "Carol" <sip:carol@example.com>',
        "From: <sip:carol@example.com>;tag=a73kszlfl",
        "Call-ID: 1j9FpLxk3uxtm8tn@198.51.100.7", "CSeq: 1 REGISTER",
        "Contact: <sip:carol@198.51.100.7:5060;transport=udp>;expires=3600;q=0.7",
        "Contact: <sip:carol@203.0.113.9>;q=0.1;expires=60",
        "Expires: 3600", "User-Agent: shape/1.0"),
    "invite_route_record_route": wire(
        "INVITE sip:bob@192.0.2.4:5062;transport=tcp SIP/2.0",
        "Via: SIP/2.0/TCP proxy.example.com:5060;branch=z9hG4bK2d4790.1;received=192.0.2.9",
        _VIA, "Max-Forwards: 68",
        "Route: <sip:p2.example.com;lr>", "Route: <sip:p3.example.com:5070;lr;transport=tcp>",
        "Record-Route: <sip:proxy.example.com;lr>", "Record-Route: <sip:192.0.2.9:5060;lr>",
        'From: "Alice" <sip:alice@example.com>;tag=9fxced76sl',
        "To: Bob <sip:bob@example.org>", "Call-ID: 3848276298220188511@atlanta.example.com",
        "CSeq: 2 INVITE", "Contact: <sip:alice@198.51.100.7>",
        "Content-Type: application/sdp", body=_SDP),
    "ok_with_to_tag": wire(
        "SIP/2.0 200 OK", _VIA + ";received=203.0.113.1", *_DIALOG, "CSeq: 2 INVITE",
        "Contact: <sip:bob@192.0.2.4>", "Record-Route: <sip:proxy.example.com;lr>",
        "Content-Type: application/sdp", body=_SDP),
    "ack": wire("ACK sip:bob@192.0.2.4 SIP/2.0", _VIA, "Max-Forwards: 70", *_DIALOG,
                "CSeq: 2 ACK", "Route: <sip:proxy.example.com;lr>"),
    "bye": wire("BYE sip:alice@198.51.100.7 SIP/2.0", _VIA, "Max-Forwards: 70", *_DIALOG,
                "CSeq: 231 BYE"),
    "cancel": wire("CANCEL sip:bob@example.org SIP/2.0", _VIA, "Max-Forwards: 70",
                   'From: "Alice" <sip:alice@example.com>;tag=9fxced76sl',
                   "To: Bob <sip:bob@example.org>",
                   "Call-ID: 3848276298220188511@atlanta.example.com", "CSeq: 2 CANCEL"),
    "options": wire("OPTIONS sip:carol@chicago.example.com SIP/2.0", _VIA, "Max-Forwards: 70",
                    "To: <sip:carol@chicago.example.com>",
                    "From: Alice <sip:alice@example.com>;tag=1928301774",
                    "Call-ID: a84b4c76e66710", "CSeq: 63104 OPTIONS",
                    "Accept: application/sdp"),
    "ringing": wire("SIP/2.0 180 Ringing", _VIA, *_DIALOG, "CSeq: 2 INVITE",
                    "Contact: <sip:bob@192.0.2.4>"),
    "trying_without_to_tag": wire(
        "SIP/2.0 100 Trying", _VIA, 'From: "Alice" <sip:alice@example.com>;tag=9fxced76sl',
        "To: Bob <sip:bob@example.org>", "Call-ID: 3848276298220188511@atlanta.example.com",
        "CSeq: 2 INVITE"),
    "busy_multiword_reason": wire("SIP/2.0 486 Busy Here", _VIA, *_DIALOG, "CSeq: 2 INVITE"),
    "lower_case_names": wire(
        "BYE sip:alice@198.51.100.7 SIP/2.0", "via" + _VIA[3:], "max-forwards: 70",
        'from: "Alice" <sip:alice@example.com>;tag=9fxced76sl',
        "to: Bob <sip:bob@example.org>;tag=314159", "call-id: 38482762@atlanta.example.com",
        "cseq: 231 BYE", "contact: <sip:bob@192.0.2.4>", "content-length: 0", length=False),
    "compact_forms": wire(
        "INVITE sip:bob@example.org SIP/2.0", "v: SIP/2.0/UDP 198.51.100.7;branch=z9hG4bKc1",
        "Max-Forwards: 70", "f: Alice <sip:alice@example.com>;tag=88sja8x",
        "t: <sip:bob@example.org>", "i: f81d4fae-7dec-11d0-a765-00a0c91e6bf6@foo.bar.com",
        "CSeq: 1 INVITE", "m: <sip:alice@198.51.100.7:5060>", "c: application/sdp",
        f"l: {len(_SDP)}", length=False, body=_SDP),
    "sips_tls": wire(
        "INVITE sips:bob@example.org SIP/2.0", "Via: SIP/2.0/TLS 198.51.100.7:5061;branch=z9hG4bKs",
        "Max-Forwards: 70", "From: <sips:alice@example.com>;tag=s1",
        "To: <sips:bob@example.org>", "Call-ID: sips-1@198.51.100.7", "CSeq: 7 INVITE",
        "Contact: <sips:alice@198.51.100.7:5061>"),
    "userinfo_port_params_headers": wire(
        "MESSAGE sip:bob@192.0.2.4:5080;user=ip SIP/2.0", _VIA, "Max-Forwards: 70",
        "From: <sip:alice:secret@example.com:5061;user=phone;maddr=192.0.2.1>;tag=u1",
        "To: <sip:bob@example.org?Subject=lunch&Priority=urgent>",
        "Call-ID: uinfo-1", "CSeq: 3 MESSAGE",
        "Contact: <sip:alice:pw@198.51.100.7:5070;transport=tcp;ob>;expires=60",
        "Content-Type: text/plain", body=b"lunch?"),
    "display_quoted_and_tokens": wire(
        "INVITE sip:bob@example.org SIP/2.0", _VIA, "Max-Forwards: 70",
        'From: "Alice Q. Smith (mobile)" <sip:alice@example.com>;tag=dq1',
        "To: Bob Q Public <sip:bob@example.org>", "Call-ID: disp-1@example.com",
        "CSeq: 1 INVITE", 'Contact: "Alice" <sip:alice@198.51.100.7>'),
    "datagram_without_content_length": wire(
        "MESSAGE sip:bob@example.org SIP/2.0", _VIA, "Max-Forwards: 70", *_DIALOG,
        "CSeq: 4 MESSAGE", "Content-Type: text/plain", length=False, tail=b"body to the end"),
    "empty_datagram_without_content_length": wire(
        "OPTIONS sip:example.org SIP/2.0", _VIA, "Max-Forwards: 70", *_DIALOG,
        "CSeq: 5 OPTIONS", length=False),
    "octets_after_content_length": wire(
        "MESSAGE sip:bob@example.org SIP/2.0", _VIA, "Max-Forwards: 70", *_DIALOG,
        "CSeq: 6 MESSAGE", "Content-Type: text/plain", body=b"hello", tail=b"junk\r\n"),
    # What JsSIP and other WebRTC clients send over WebSocket (RFC 7118, RFC 5626): quoted
    # +sip.instance values, and a Contact list with commas inside quotes.
    "webrtc_register_quoted_params": wire(
        "REGISTER sip:example.com SIP/2.0",
        "Via: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bK2480231;rport",
        "Max-Forwards: 69", 'From: "Alice" <sip:alice@example.com>;tag=fd8sghk1',
        "To: <sip:alice@example.com>", "Call-ID: 9ie0i3nhj1u3r7a2b1v4", "CSeq: 1 REGISTER",
        "Contact: <sip:x7b3j2@df7jal23ls0d.invalid;transport=ws>;+sip.ice;reg-id=1;"
        '+sip.instance="<urn:uuid:8f0c2b4e-6a57-4f62-9d0a-1c2b3d4e5f60>";expires=600',
        'Contact: <sip:a@h1>;x="a, b", "Carol, C" <sip:c@h2>;q=0.5',
        "Expires: 600", "Allow: INVITE,ACK,CANCEL,BYE,UPDATE,MESSAGE,OPTIONS,REFER,INFO",
        "Supported: path,gruu,outbound", "User-Agent: JsSIP 3.10.1"),
    # A response coming back through this proxy: our Via says RFC 7339 overload control, with
    # a quoted value (oc-algo="loss") on every forwarded request; SIPp's [last_Via:] copies
    # all the Vias into one comma-separated line.
    "relayed_response_quoted_via_param": wire(
        "SIP/2.0 180 Ringing",
        'Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1.2a;oc;oc-algo="loss"', _VIA,
        'Via: SIP/2.0/TCP 198.51.100.9;branch=z9hG4bKq;x="a;b=c, d"', *_DIALOG,
        "CSeq: 2 INVITE"),
    "relayed_response_via_list_in_one_line": wire(
        "SIP/2.0 200 OK",
        'Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1.2b;rport;oc;oc-algo="loss", '
        "SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK74b43;rport=5060;received=198.51.100.7,"
        'SIP/2.0/TLS [2001:db8::9]:5061;branch=z9hG4bKz;x="1,2"', *_DIALOG, "CSeq: 2 INVITE"),
}
_NEEDS_DATAGRAM = {"datagram_without_content_length", "empty_datagram_without_content_length"}


@pytest.mark.parametrize("name", sorted(SHAPES))
@pytest.mark.parametrize("stream", STREAMS)
def test_common_shapes_are_accepted(name: str, stream: bool) -> None:
    if stream and name in _NEEDS_DATAGRAM:
        # §18.3: a stream message without Content-Length is an error: the fast path declines.
        assert pure(SHAPES[name], True) is None and fast(SHAPES[name], True) is None
        return
    msg = accepted(SHAPES[name], stream)
    assert type(msg.vias[0]) is Via and type(msg.from_) is NameAddr
    assert type(msg.from_.uri) is SipURI


def test_shapes_decode_what_they_say() -> None:
    """Spot checks that the shapes exercise the fields they are named after."""
    reg = fast(SHAPES["register_expires_q"], False)
    assert isinstance(reg, Request) and reg.expires == 3600
    assert [dict(c.params) for c in reg.contacts] == [{"expires": "3600", "q": "0.7"},
                                                      {"q": "0.1", "expires": "60"}]
    inv = fast(SHAPES["invite_route_record_route"], True)
    assert isinstance(inv, Request) and len(inv.routes) == 2 and len(inv.record_routes) == 2
    ua = fast(SHAPES["userinfo_port_params_headers"], False)
    assert isinstance(ua, Request) and isinstance(ua.from_.uri, SipURI)
    assert ua.from_.uri.password == "secret" and ua.from_.uri.port == 5061
    assert isinstance(ua.to.uri, SipURI) and ua.to.uri.headers == "Subject=lunch&Priority=urgent"
    dg = fast(SHAPES["datagram_without_content_length"], False)
    assert dg is not None and dg.body == b"body to the end"
    tail = fast(SHAPES["octets_after_content_length"], False)
    assert tail is not None and tail.body == b"hello"
    listed = fast(SHAPES["relayed_response_via_list_in_one_line"], False)
    assert listed is not None and [v.transport for v in listed.vias] == ["UDP", "UDP", "TLS"]
    assert listed.vias[0].params["oc-algo"] == '"loss"' and listed.vias[2].params["x"] == '"1,2"'


# --- boundary variants: the limits and the number rules ------------------------------------------

_BASE_LINES = [
    "INVITE sip:bob@example.org SIP/2.0", _VIA, "Max-Forwards: 70", *_DIALOG,
    "CSeq: 2 INVITE", "Contact: <sip:alice@198.51.100.7:5060>", "Expires: 60",
]


def _variant(old: str, new: str) -> bytes:
    lines = [new if line == old else line for line in _BASE_LINES]
    assert lines != _BASE_LINES
    return wire(*lines)


def _sized(total: int) -> bytes:
    """A valid message of exactly ``total`` octets, padded with extension headers no longer
    than ``MAX_HEADER_LINE`` (so only the size limit can apply)."""
    base = len(wire(*_BASE_LINES))
    lines = -(-(total - base) // 8_009)  # each pad line: "X-Pad: " + up to 8000 + CRLF
    room = total - base - 9 * lines
    sizes = [room // lines + (k < room % lines) for k in range(lines)]
    out = wire(*_BASE_LINES, *["X-Pad: " + "a" * n for n in sizes])
    assert len(out) == total
    return out


EDGES: dict[str, bytes] = {
    "leading_crlfs": b"\r\n\r\n" + wire(*_BASE_LINES),
    "status_without_reason": wire("SIP/2.0 200", *_BASE_LINES[1:]),
    "status_empty_reason": wire("SIP/2.0 200 ", *_BASE_LINES[1:]),
    "status_999": wire("SIP/2.0 999 Odd", *_BASE_LINES[1:]),
    "status_099": wire("SIP/2.0 099 Odd", *_BASE_LINES[1:]),
    "cseq_max": _variant("CSeq: 2 INVITE", "CSeq: 4294967295 INVITE"),
    "cseq_over": _variant("CSeq: 2 INVITE", "CSeq: 4294967296 INVITE"),
    "cseq_eleven_digits": _variant("CSeq: 2 INVITE", "CSeq: 00000000002 INVITE"),
    "cseq_leading_zeros": _variant("CSeq: 2 INVITE", "CSeq: 0000000002 INVITE"),
    "cseq_two_spaces": _variant("CSeq: 2 INVITE", "CSeq: 2  INVITE"),
    "cseq_mismatch": _variant("CSeq: 2 INVITE", "CSeq: 2 BYE"),
    "cseq_superscript": _variant("CSeq: 2 INVITE", "CSeq: \u00b2 INVITE"),
    "max_forwards_255": _variant("Max-Forwards: 70", "Max-Forwards: 255"),
    "max_forwards_256": _variant("Max-Forwards: 70", "Max-Forwards: 256"),
    "max_forwards_zero_padded": _variant("Max-Forwards: 70", "Max-Forwards: 0000000070"),
    "max_forwards_negative": _variant("Max-Forwards: 70", "Max-Forwards: -1"),
    "max_forwards_empty": _variant("Max-Forwards: 70", "Max-Forwards:"),
    "expires_max": _variant("Expires: 60", "Expires: 4294967295"),
    "expires_over": _variant("Expires: 60", "Expires: 4294967296"),
    "expires_huge": _variant("Expires: 60", "Expires: 280297596632815"),
    "expires_twice": _variant("Expires: 60", "Expires: 60\r\nExpires: 60"),
    "via_port_65535": _variant(_VIA, "Via: SIP/2.0/UDP 198.51.100.7:65535;branch=z9hG4bK1"),
    "via_port_65536": _variant(_VIA, "Via: SIP/2.0/UDP 198.51.100.7:65536;branch=z9hG4bK1"),
    "via_port_99999": _variant(_VIA, "Via: SIP/2.0/UDP 198.51.100.7:99999;branch=z9hG4bK1"),
    "via_port_zero_padded": _variant(_VIA, "Via: SIP/2.0/UDP 198.51.100.7:05060;branch=z9hG4bK"),
    "via_port_six_digits": _variant(_VIA, "Via: SIP/2.0/UDP 198.51.100.7:005060;branch=z9"),
    "via_port_empty": _variant(_VIA, "Via: SIP/2.0/UDP 198.51.100.7:;branch=z9hG4bK1"),
    "via_lower_transport": _variant(_VIA, "Via: SIP/2.0/udp host.example;branch=z9hG4bK1"),
    "via_lower_version": _variant(_VIA, "Via: sip/2.0/UDP host.example;branch=z9hG4bK1"),
    "via_version_3": _variant(_VIA, "Via: SIP/3.0/UDP host.example;branch=z9hG4bK1"),
    "via_ipv6": _variant(_VIA, "Via: SIP/2.0/UDP [2001:db8::9]:5060;branch=z9hG4bK1"),
    "via_empty_param": _variant(_VIA, "Via: SIP/2.0/UDP host.example;branch=z9hG4bK1;"),
    "via_empty_value": _variant(_VIA, "Via: SIP/2.0/UDP host.example;branch="),
    "via_duplicate_param": _variant(_VIA, "Via: SIP/2.0/UDP h.example;rport;rport=1;branch=z9"),
    "via_host_trailing_dot": _variant(_VIA, "Via: SIP/2.0/UDP host.example.;branch=z9hG4bK1"),
    "via_host_leading_dash": _variant(_VIA, "Via: SIP/2.0/UDP -host.example;branch=z9hG4bK1"),
    "via_comma_list": _variant(_VIA, "Via: SIP/2.0/UDP a.example;branch=z9a, SIP/2.0/UDP b"),
    "via_71": wire(_BASE_LINES[0], *[_VIA] * (MAX_VIAS + 1), *_BASE_LINES[2:]),
    "via_70": wire(_BASE_LINES[0], *[_VIA] * MAX_VIAS, *_BASE_LINES[2:]),
    "contact_port_65536": _variant("Contact: <sip:alice@198.51.100.7:5060>",
                                   "Contact: <sip:alice@198.51.100.7:65536>"),
    "contact_list": _variant("Contact: <sip:alice@198.51.100.7:5060>",
                             'Contact: "A, B" <sip:a@h>;q=0.5, <sip:b@h>,<sip:c@h;x=y>;b'),
    "contact_list_addr_spec": _variant("Contact: <sip:alice@198.51.100.7:5060>",
                                       "Contact: <sip:b@h>,sip:c@h"),
    "route_list": _variant("Expires: 60", "Route: <sip:p1.example;lr>,<sip:p2.example;lr>"),
    "contact_list_empty_item": _variant("Contact: <sip:alice@198.51.100.7:5060>",
                                        "Contact: <sip:a@h>, , <sip:b@h>"),
    "contact_list_trailing_comma": _variant("Contact: <sip:alice@198.51.100.7:5060>",
                                            "Contact: <sip:a@h>,"),
    "contact_list_comma_in_uri": _variant("Contact: <sip:alice@198.51.100.7:5060>",
                                          "Contact: <sip:a,b@h>, <sip:c@h>"),
    "contact_list_unbalanced_quote": _variant("Contact: <sip:alice@198.51.100.7:5060>",
                                              'Contact: "a, <sip:a@h>, <sip:b@h>'),
    "contact_star_in_list": _variant("Contact: <sip:alice@198.51.100.7:5060>",
                                     "Contact: *, <sip:b@h>"),
    "contact_star": _variant("Contact: <sip:alice@198.51.100.7:5060>", "Contact: *"),
    "contact_addr_spec": _variant("Contact: <sip:alice@198.51.100.7:5060>",
                                  "Contact: sip:alice@198.51.100.7;expires=5"),
    "contact_empty_display_quotes": _variant("Contact: <sip:alice@198.51.100.7:5060>",
                                             'Contact: "" <sip:alice@198.51.100.7>'),
    "contact_no_space_before_angle": _variant("Contact: <sip:alice@198.51.100.7:5060>",
                                              "Contact: Alice<sip:alice@198.51.100.7>"),
    "contact_escaped_user": _variant("Contact: <sip:alice@198.51.100.7:5060>",
                                     "Contact: <sip:%61lice%00@198.51.100.7>"),
    "contact_bad_escape": _variant("Contact: <sip:alice@198.51.100.7:5060>",
                                   "Contact: <sip:al%6gice@198.51.100.7>"),
    "contact_empty_user": _variant("Contact: <sip:alice@198.51.100.7:5060>",
                                   "Contact: <sip:@198.51.100.7>"),
    "contact_empty_password": _variant("Contact: <sip:alice@198.51.100.7:5060>",
                                       "Contact: <sip:alice:@198.51.100.7>"),
    "contact_empty_headers": _variant("Contact: <sip:alice@198.51.100.7:5060>",
                                      "Contact: <sip:alice@198.51.100.7?>"),
    "contact_upper_scheme": _variant("Contact: <sip:alice@198.51.100.7:5060>",
                                     "Contact: <SIP:alice@198.51.100.7>"),
    "contact_tel": _variant("Contact: <sip:alice@198.51.100.7:5060>",
                            "Contact: <tel:+1-201-555-0123>"),
    "ruri_upper_scheme": _variant(_BASE_LINES[0], "INVITE SIP:bob@example.org SIP/2.0"),
    "ruri_sips_mixed": _variant(_BASE_LINES[0], "INVITE sIpS:bob@example.org SIP/2.0"),
    "ruri_headers": _variant(_BASE_LINES[0], "INVITE sip:bob@example.org?X=1 SIP/2.0"),
    "ruri_port_65536": _variant(_BASE_LINES[0], "INVITE sip:bob@example.org:65536 SIP/2.0"),
    "ruri_ipv6": _variant(_BASE_LINES[0], "INVITE sip:bob@[2001:db8::1]:5060 SIP/2.0"),
    "ruri_long": _variant(_BASE_LINES[0],
                          f"INVITE sip:{'u' * MAX_URI_LENGTH}@example.org SIP/2.0"),
    "version_2_1": _variant(_BASE_LINES[0], "INVITE sip:bob@example.org SIP/2.1"),
    "method_lower": wire("invite sip:bob@example.org SIP/2.0", *_BASE_LINES[1:6],
                         "CSeq: 2 invite", *_BASE_LINES[7:]),
    "from_twice": wire(*_BASE_LINES, _DIALOG[0]),
    **{f"{name.lower()}_missing": wire(*[line for line in _BASE_LINES
                                          if not line.startswith(name + ":")])
       for name in ("Via", "From", "To", "Call-ID", "CSeq", "Max-Forwards")},
    "call_id_space": _variant(_DIALOG[2], "Call-ID: a b"),
    "call_id_empty": _variant(_DIALOG[2], "Call-ID:"),
    "header_name_space": _variant("Expires: 60", "Expires : 60"),
    "header_name_bad_char": _variant("Expires: 60", "X(y): 60"),
    "header_no_colon": _variant("Expires: 60", "Expires 60"),
    "header_value_trailing_space": _variant("Expires: 60", "X-Thing: v  "),
    "header_value_empty": _variant("Expires: 60", "X-Thing:"),
    "header_compact_unknown": _variant("Expires: 60", "k: timer"),
    "header_compact_upper": _variant("Expires: 60", "V: SIP/2.0/UDP h.example;branch=z9hG4bK2"),
    "require": _variant("Expires: 60", "Require: 100rel, timer"),
    "require_bad": _variant("Expires: 60", "Require: 100rel,,timer"),
    "content_length_padded": wire(*_BASE_LINES, "Content-Length: 0000000005", length=False,
                                  body=b"hello"),
    "content_length_over_body": wire(*_BASE_LINES, "Content-Length: 6", length=False,
                                     body=b"hello"),
    "content_length_eleven_digits": wire(*_BASE_LINES, "Content-Length: 00000000005",
                                         length=False, body=b"hello"),
    "content_length_twice": wire(*_BASE_LINES, "Content-Length: 5", "l: 5", length=False,
                                 body=b"hello"),
    "content_length_negative": wire(*_BASE_LINES, "Content-Length: -5", length=False),
    "non_ascii_extra_value": _variant("Expires: 60", "Subject: caf\u00e9"),
    "non_ascii_raw_byte": wire(*_BASE_LINES).replace(b"Alice", b"Al\xffce"),
    "folded_header": wire(*_BASE_LINES).replace(b"Expires: 60", b"Expires:\r\n 60"),
    "tab_after_colon": wire(*_BASE_LINES).replace(b"Expires: 60", b"Expires:\t60"),
    "bare_lf": wire(*_BASE_LINES).replace(b"Expires: 60\r\n", b"Expires: 60\n"),
    "bare_cr": wire(*_BASE_LINES).replace(b"Expires: 60\r\n", b"Expires: 60\r"),
    "no_blank_line": wire(*_BASE_LINES)[:-2],
    "nul_in_call_id": wire(*_BASE_LINES).replace(b"@atlanta", b"\x00atlanta"),
    "headers_at_limit": wire(*_BASE_LINES, *["X-N: 1"] * (MAX_HEADERS - 9)),
    "headers_over_limit": wire(*_BASE_LINES, *["X-N: 1"] * (MAX_HEADERS - 8)),
    "line_at_limit": wire(*_BASE_LINES, "X-L: " + "a" * (MAX_HEADER_LINE - 5)),
    "line_over_limit": wire(*_BASE_LINES, "X-L: " + "a" * (MAX_HEADER_LINE - 4)),
    "size_at_limit": _sized(MAX_MESSAGE_SIZE),
    "size_over_limit": _sized(MAX_MESSAGE_SIZE + 1),
}


@pytest.mark.parametrize("name", sorted(EDGES))
def test_boundary_variants(name: str) -> None:
    for stream in STREAMS:
        differential(EDGES[name], stream)


def test_boundary_variants_cover_both_outcomes() -> None:
    """The limits are exercised from both sides (the pure parser decides which)."""
    for ok, bad in (("cseq_max", "cseq_over"), ("max_forwards_255", "max_forwards_256"),
                    ("via_70", "via_71"), ("headers_at_limit", "headers_over_limit"),
                    ("line_at_limit", "line_over_limit"), ("size_at_limit", "size_over_limit"),
                    ("via_port_65535", "via_port_65536"), ("expires_max", "expires_over")):
        assert pure(EDGES[ok], False) is not None, ok
        assert pure(EDGES[bad], False) is None, bad


# --- generated messages --------------------------------------------------------------------------

_HYP = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
generated = st.one_of(requests(), responses())


@settings(_HYP, max_examples=50)  # generating these is slow; the count test runs 200 more
@given(generated, st.booleans())
def test_generated_messages(msg: Message, stream: bool) -> None:
    differential(serialize(msg), stream)


_ALNUM = string.ascii_letters + string.digits
_word = st.text(_ALNUM, min_size=1, max_size=8)
_id = st.text(_ALNUM + "-.", min_size=1, max_size=12).filter(lambda s: s[0] not in "-.")
_label = st.from_regex(r"[a-z0-9]([a-z0-9\-]{0,6}[a-z0-9])?", fullmatch=True)
_host = st.one_of(
    st.lists(_label, min_size=1, max_size=3).map(".".join),
    st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t))),
)
_port = st.none() | st.integers(1, 65535)
_simple_params = st.lists(
    st.tuples(_word, st.none() | _id), max_size=3, unique_by=lambda kv: kv[0]
).map(lambda kvs: "".join(f";{k}" if v is None else f";{k}={v}" for k, v in kvs))


@st.composite
def _clean_uri(draw: st.DrawFn, *, headers: bool) -> str:
    out = [draw(st.sampled_from(["sip:", "sips:"]))]
    if draw(st.booleans()):
        out.append(draw(_id))
        if draw(st.booleans()):
            out.append(":" + draw(_word))
        out.append("@")
    out.append(draw(_host))
    port = draw(_port)
    out.append("" if port is None else f":{port}")
    out.append(draw(_simple_params))
    if headers and draw(st.booleans()):
        out.append("?" + "&".join(draw(st.lists(
            st.tuples(_word, _word).map("=".join), min_size=1, max_size=2))))
    return "".join(out)


_display = st.one_of(
    st.none(),
    st.lists(_word, min_size=1, max_size=3).map(" ".join),
    st.lists(st.text(_ALNUM + ".'_-", min_size=1, max_size=6), min_size=1, max_size=3).map(
        lambda ws: '"' + " ".join(ws) + '"'),
)


@st.composite
def _clean_name_addr(draw: st.DrawFn) -> str:
    display = draw(_display)
    head = "" if display is None else display + " "
    return f"{head}<{draw(_clean_uri(headers=True))}>{draw(_simple_params)}"


@st.composite
def _clean_via(draw: st.DrawFn) -> str:
    port = draw(_port)
    params = [f"branch=z9hG4bK{draw(_id)}"]
    params += draw(st.lists(st.sampled_from(["rport", "rport=5060", "received=192.0.2.1",
                                             "ttl=16", "maddr=example.net", "alias"]),
                            max_size=2, unique=True))
    transport = draw(st.sampled_from(["UDP", "TCP", "TLS", "WS", "WSS", "SCTP"]))
    host = draw(_host) + ("" if port is None else f":{port}")
    return f"SIP/2.0/{transport} {host};" + ";".join(params)


def _spelled(draw: st.DrawFn, canonical: str, compact: str | None = None) -> str:
    names = [canonical, canonical.lower()] + ([compact] if compact else [])
    return draw(st.sampled_from(names))


_EXTRA = ["User-Agent", "Allow", "Supported", "Server", "Accept", "Subject", "X-Custom",
          "P-Asserted-Identity", "Session-Expires", "Date"]
_extra_value = st.text(_ALNUM + " ,./:;=_-()", min_size=1, max_size=20).map(
    lambda s: s.strip(" ") or "x")


@st.composite
def clean_messages(draw: st.DrawFn) -> bytes:
    """Messages inside the subset the fast path declares (ASCII, no folding or tabs, one Via
    value per line, sip:/sips: URIs, unquoted parameters): all must be accepted."""
    method = draw(st.sampled_from(["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER",
                                   "MESSAGE", "SUBSCRIBE", "NOTIFY"]))
    if draw(st.booleans()):
        start = f"{method} {draw(_clean_uri(headers=False))} SIP/2.0"
    else:
        reason = draw(st.sampled_from(["OK", "Ringing", "Session Progress", "Busy Here",
                                       "Not Found", "Server Internal Error"]))
        start = f"SIP/2.0 {draw(st.integers(100, 699))} {reason}"
    vias = [f"{_spelled(draw, 'Via', 'v')}: {draw(_clean_via())}"
            for _ in range(draw(st.integers(1, 3)))]
    others = [
        f"{_spelled(draw, 'From', 'f')}: {draw(_clean_name_addr())}",
        f"{_spelled(draw, 'To', 't')}: {draw(_clean_name_addr())}",
        f"{_spelled(draw, 'Call-ID', 'i')}: {draw(_id)}" + draw(st.sampled_from(
            ["", "@" + draw(_host)])),
        f"{_spelled(draw, 'CSeq')}: {draw(st.integers(0, 2**32 - 1))} {method}",
    ]
    if draw(st.booleans()):
        others.append(f"{_spelled(draw, 'Max-Forwards')}: {draw(st.integers(0, 255))}")
    if draw(st.booleans()):
        others.append(f"{_spelled(draw, 'Expires')}: {draw(st.integers(0, 2**32 - 1))}")
    for name, compact in (("Route", None), ("Record-Route", None), ("Contact", "m")):
        for _ in range(draw(st.integers(0, 2))):
            # One value per line, or a comma-separated list (§7.3.1).
            values = draw(st.lists(_clean_name_addr(), min_size=1, max_size=2))
            comma = draw(st.sampled_from([",", ", "]))
            others.append(f"{_spelled(draw, name, compact)}: {comma.join(values)}")
    others += [f"{name}: {draw(_extra_value)}" for name in draw(st.lists(
        st.sampled_from(_EXTRA), max_size=3))]
    body = draw(st.binary(max_size=40)) if draw(st.booleans()) else b""
    if body:
        others.append(f"{_spelled(draw, 'Content-Type', 'c')}: application/octet-stream")
    others.append(f"{_spelled(draw, 'Content-Length', 'l')}: {len(body)}")
    lines = [start, *vias, *draw(st.permutations(others))]
    return wire(*lines, length=False, body=body)


@_HYP
@given(clean_messages(), st.booleans())
def test_clean_messages_are_all_accepted(data: bytes, stream: bool) -> None:
    accepted(data, stream)


#: Lower bound on the share of ``requests()``/``responses()`` messages the fast path accepts,
#: over the derandomized (so repeatable) run below.  Measured: 17 of 200 (8.5%); other samples
#: gave 28 of 300 and 39 to 43 of 400 (9.3% to 10.8%).  In one sample of 400, each of the 357
#: declined messages was outside the declared subset (a tel: or other non-SIP URI in 352, a
#: non-ASCII header section in 334, a quoted parameter value in 320, a backslash in a display
#: name in 153) and all 43 inside it were accepted.  5% leaves room for a Hypothesis upgrade
#: drawing another sample (the standard deviation is about 2% at n=200) and still fails when
#: the fast path stops taking one of the common components (token or quoted display names,
#: sips:, URI or header parameters), as nearly every accepted message has several of those.
GENERATED_ACCEPT_SHARE = 0.05
_COUNT_EXAMPLES = 200


def test_fast_path_accepts_a_share_of_generated() -> None:
    """Most generated messages leave the subset somewhere (tel: and other URI schemes, quoted
    parameter values, backslashes in display names, non-ASCII extension values ...), so the
    share is well below 1; it must not be near 0 either, or the differential runs above would
    only ever compare ``None`` with a rejection."""
    counts = {"seen": 0, "accepted": 0}

    @settings(max_examples=_COUNT_EXAMPLES, deadline=None, derandomize=True, database=None,
              phases=[Phase.generate],
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(generated, st.booleans())
    def run(msg: Message, stream: bool) -> None:
        counts["seen"] += 1
        counts["accepted"] += differential(serialize(msg), stream)

    run()
    share = counts["accepted"] / counts["seen"]
    print(f"fast path accepted {counts['accepted']} of {counts['seen']} ({share:.1%})")
    assert counts["seen"] >= _COUNT_EXAMPLES // 2
    assert share >= GENERATED_ACCEPT_SHARE


# --- mutations -----------------------------------------------------------------------------------

_BASES = [*BENCH_SAMPLES.values(), *SHAPES.values(), *_TORTURE.values()]
_INSERTS = [b" ", b"\t", b",", b'"', b"\r", b"\n", b"\r\n", b"\r\n ", b"\xc3\xa9", b"\x80",
            b"\xff", b"\x00", b";", b"<", b">", b":", b"@", b"%", b"=", b"?", b"\\", b"[",
            b"SIP/2.0", b";;", "\u00b2".encode()]
_NUMBERS = [b"0", b"255", b"256", b"65535", b"65536", b"99999", b"4294967295", b"4294967296",
            b"99999999999", b"0000000070", b"-1", b"+1", b"1.5", b"", b"\xc2\xb2"]
_NUMBER_HEADERS = re.compile(
    rb"(?im)^(?:cseq|max-forwards|expires|content-length|l)[ \t]*:[ \t]*([0-9]+)")
_CONTENT_LENGTH = re.compile(rb"(?im)^(?:content-length|l)[ \t]*:[ \t]*([0-9]+)")
_PORTS = re.compile(rb":([0-9]{1,5})(?=[;>\r ,?])")
_SCHEMES = re.compile(rb"(?i)sips?:")
_SEPARATORS = re.compile(rb"[:;=<>@,/]")
_NAMES = re.compile(rb"(?m)(?<=\n)[A-Za-z][A-Za-z0-9\-]*(?=[ \t]*:)")


def _pick(draw: st.DrawFn, pattern: re.Pattern[bytes], data: bytes,
          group: int = 0) -> tuple[int, int] | None:
    spans = [m.span(group) for m in pattern.finditer(data)]
    return draw(st.sampled_from(spans)) if spans else None


def _recase(draw: st.DrawFn, text: bytes) -> bytes:
    how = draw(st.sampled_from(["upper", "lower", "swapcase", "title"]))
    out: bytes = getattr(text, how)()
    return out


def _header_lines(data: bytes) -> tuple[list[bytes], bytes]:
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return data.split(b"\r\n"), b""
    return data[:end].split(b"\r\n"), data[end:]


def _mutate_once(draw: st.DrawFn, data: bytes) -> bytes:
    op = draw(st.sampled_from(["flip", "insert", "truncate", "delete", "name_case",
                               "scheme_case", "duplicate", "drop", "port", "number",
                               "separator", "grow_length"]))
    i = draw(st.integers(0, max(len(data) - 1, 0)))
    span: tuple[int, int] | None = None
    if op == "flip" and data:
        return data[:i] + bytes([data[i] ^ (1 << draw(st.integers(0, 7)))]) + data[i + 1:]
    if op == "insert":
        return data[:i] + draw(st.sampled_from(_INSERTS)) + data[i:]
    if op == "truncate":
        return data[:i]
    if op == "delete":
        return data[:i] + data[i + draw(st.integers(1, 8)):]
    if op in ("duplicate", "drop"):
        lines, rest = _header_lines(data)
        if len(lines) < 2:
            return data
        j = draw(st.integers(1, len(lines) - 1))
        if op == "duplicate":
            lines.insert(draw(st.integers(1, len(lines))), lines[j])
        else:
            del lines[j]
        return b"\r\n".join(lines) + rest
    if op == "grow_length":  # a Content-Length past the end of the body (RFC 4475 clerr)
        lines, rest = _header_lines(data)
        length = b"%d" % (max(len(rest) - 4, 0) + draw(st.integers(1, 9)))
        found = _pick(draw, _CONTENT_LENGTH, data, 1)
        if found is None:
            return b"\r\n".join([*lines, b"Content-Length: " + length]) + rest
        return data[:found[0]] + length + data[found[1]:]
    if op == "name_case":
        span = _pick(draw, _NAMES, data)
    elif op == "scheme_case":
        span = _pick(draw, _SCHEMES, data)
    elif op == "port":
        span = _pick(draw, _PORTS, data, 1)
    elif op == "number":
        span = _pick(draw, _NUMBER_HEADERS, data, 1)
    elif op == "separator":
        around = _pick(draw, _SEPARATORS, data)  # whitespace before or after a separator
        if around is not None:
            pos = draw(st.sampled_from(around))
            return data[:pos] + draw(st.sampled_from([b" ", b"\t", b"  "])) + data[pos:]
    if span is None:
        return data
    start, end = span
    if op in ("name_case", "scheme_case"):
        new = _recase(draw, data[start:end])
    else:
        new = draw(st.sampled_from(_NUMBERS))
    return data[:start] + new + data[end:]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A sample, shape, torture or clean generated message with one to three mutations: byte
    flips, truncations, inserted separators, whitespace, CR/LF and non-ASCII, recased header names
    and URI schemes, duplicated or dropped headers, out-of-range ports and numbers, a
    Content-Length past the body."""
    # Mostly the fixed bases: generating a message costs far more than mutating one.
    fixed = st.sampled_from(_BASES)
    data = draw(st.one_of(fixed, fixed, fixed, clean_messages()))
    for _ in range(draw(st.integers(1, 3))):
        data = _mutate_once(draw, data)
    return data


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(mutated(), st.booleans())
def test_mutated_messages(data: bytes, stream: bool) -> None:
    differential(data, stream)


_FRAGMENTS = st.sampled_from([
    "sip:", "sips:", "SIP:", "tel:", "a", "Z", "0", "9", "-", ".", "_", "!", "~", "*", "'", "(",
    ")", "%", "%41", "%4", "&", "=", "+", "$", ",", ";", "?", "/", ":", "@", "[", "]", "[::1]",
    "<", ">", '"', '\\"', "\\", " ", "  ", "lr", "tag=", "q=0.5", "branch=z9hG4bK",
    "transport=tcp", "5060", "65535", "65536", "192.0.2.1", "example.com", "SIP/2.0/UDP ",
    "\x7f", "`", "{", "|", "#", "^",
])
_TYPED_VALUES = ["Via: SIP/2.0/UDP ", "Via: ", "From: ", "To: ", "Contact: ", "Route: ",
                 "Record-Route: ", "From: <sip:", "Contact: <sip:a@b", 'To: "', "CSeq: 1",
                 "Max-Forwards: ", "Expires: ", "Call-ID: "]


_SUFFIXES = ["", ">", ">;tag=1", "@h>", "@h>;lr", ";lr", ";branch=z9hG4bK1", " INVITE"]


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(_TYPED_VALUES), st.lists(_FRAGMENTS, min_size=1, max_size=12),
       st.sampled_from(_SUFFIXES))
def test_typed_header_values_from_grammar_fragments(prefix: str, parts: list[str],
                                                    suffix: str) -> None:
    """One typed header built from the characters and pieces its grammar gives a meaning to
    (§25.1), the rest of the message clean: probes where the fast path's grammar ends."""
    name = prefix.partition(":")[0]
    lines = [line for line in _BASE_LINES if not line.startswith(name + ":")]
    line = prefix + "".join(parts) + suffix
    for stream in STREAMS:
        differential(wire(*lines[:2], line, *lines[2:]), stream)
        differential(wire(*_BASE_LINES, line), stream)  # also as a second occurrence


# --- robustness ----------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.booleans())
def test_arbitrary_bytes_never_raise(data: bytes, stream: bool) -> None:
    differential(data, stream)  # fast() fails on anything but None or a message


@given(st.binary(max_size=200))
@settings(max_examples=100, deadline=None)
def test_arbitrary_tails_after_a_valid_head(tail: bytes) -> None:
    for stream in STREAMS:
        differential(REGISTER[:-4] + tail, stream)
        differential(REGISTER + tail, stream)


@pytest.mark.parametrize("data", ["REGISTER sip:a SIP/2.0\r\n\r\n", bytearray(REGISTER),
                                  memoryview(REGISTER), None, 42, [REGISTER]],
                         ids=["str", "bytearray", "memoryview", "None", "int", "list"])
def test_non_bytes_raise_type_error(data: object) -> None:
    with pytest.raises(TypeError):
        speedups().parse(data, False)


def test_wrong_arity_raises_type_error() -> None:
    with pytest.raises(TypeError):
        speedups().parse()
    with pytest.raises(TypeError):
        speedups().parse(REGISTER, False, None)


def test_returned_lists_are_fresh_per_call() -> None:
    """The receive path replaces the top Via and appends to lists in place, so two parses of
    the same bytes must never share a list (the pure parser builds new ones every time)."""
    first, second = fast(INVITE_SDP, False), fast(INVITE_SDP, False)
    assert first is not None and second is not None
    for name in ("vias", "routes", "record_routes", "contacts", "require", "proxy_require",
                 "extra"):
        assert getattr(first, name) is not getattr(second, name), name
    first.vias[0] = first.vias[0].with_param("received", "203.0.113.5")
    first.extra.append(("X-Added", "1"))
    assert_same(second, parse_message_pure(INVITE_SDP))


# --- leaks ---------------------------------------------------------------------------------------

#: Distinct messages parsed while measuring; a leak of one small object per parse is > 1 MB.
LEAK_PARSES = 50_000
#: Parses before measuring (distinct from the measured ones).
LEAK_WARMUP = 5_000
#: Allowed growth of traced memory over ``LEAK_PARSES`` parses after the warm-up: room for
#: interpreter-internal noise (free lists, a dict resize) but 25 times less than a per-parse
#: leak of even one 32-byte object (50,000 x 32 = 1.6 MB); a leaked message is ~1 KB.
LEAK_BYTES = 64 * 1024
#: Allowed reference-count drift of the shared objects below over the same run (a per-parse
#: reference leak moves one of them by ``LEAK_PARSES``).
LEAK_REFS = 100

_GENERATORS: tuple[Callable[[int], bytes], ...] = (invite_for_call, ok_for_call,
                                                    register_for_user)


def _distinct(start: int, count: int) -> list[bytes]:
    return [_GENERATORS[i % 3](i) for i in range(start, start + count)]


def _parse_all(messages: list[bytes]) -> None:
    for i, data in enumerate(messages):
        assert fast(data, i % 2 == 0) is not None


def _shared_refcounts() -> list[int]:
    objs: list[object] = [None, True, False, Request, Response, SipURI, NameAddr, Via, CSeq,
                          dict, list, str, int, bytes, tuple]
    return [sys.getrefcount(o) for o in objs]


def test_no_memory_or_reference_growth_over_many_parses() -> None:
    measured = _distinct(0, LEAK_PARSES)  # built before tracing: only parsing is measured
    # Traced from before the warm-up, so that blocks a cache or free list frees later are
    # ones tracemalloc counted; the warm-up uses other distinct messages.
    tracemalloc.start()
    try:
        _parse_all(_distinct(10_000_000, LEAK_WARMUP))
        gc.collect()
        refs_before = _shared_refcounts()
        before, _ = tracemalloc.get_traced_memory()
        _parse_all(measured)
        gc.collect()
        after, _ = tracemalloc.get_traced_memory()
        refs_after = _shared_refcounts()
    finally:
        tracemalloc.stop()
    assert after - before <= LEAK_BYTES, f"traced memory grew {after - before} bytes"
    drift = [b - a for a, b in zip(refs_before, refs_after, strict=True)]
    assert max(map(abs, drift)) <= LEAK_REFS, f"reference counts drifted: {drift}"


# --- memory safety: the same differential run on a build with AddressSanitizer ---------------

_ASAN_RUN = r"""
import pickle, random, sys
root, repo, seeds_file, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
sys.path[:0] = [root, repo]
from protocols.sip import _speedups, parser
from protocols.sip.errors import RemoteProtocolError
from protocols.sip.serializer import serialize
from tests.sanitizers import mutated
assert _speedups.__file__.startswith(root), _speedups.__file__
assert parser.fast_parse is _speedups.parse
with open(seeds_file, "rb") as f:
    seeds = pickle.load(f)
rnd = random.Random(4475)
accepted = mismatches = 0
for _ in range(count):
    data = mutated(rnd, seeds)
    for stream in (False, True):
        got = _speedups.parse(data, stream)
        if got is None:
            continue
        accepted += 1
        try:
            want = parser.parse_message_pure(data, stream=stream)
        except RemoteProtocolError:
            want = None
        if want is None or want != got or serialize(want) != serialize(got):
            mismatches += 1
        if got.wire is not None and hasattr(got, "method"):  # a request: forwarded (edit.py)
            routes = max(len(got.routes) - 1, 0)
            top = got.vias[0].raw or str(got.vias[0])
            out = _speedups.forward(got.wire, routes, "SIP/2.0/UDP p;branch=z9hG4bKa", top, 69,
                                    "Record-Route: <sip:p;lr>\r\n", "sip:u@h", got.body)
            try:  # at a limit, our two lines may take it past (test_edit covers the rest)
                again = None if out is None else parser.parse_message_pure(out)
            except RemoteProtocolError:
                again = got
            if again is None or again is not got and again.max_forwards != 69:
                mismatches += 1
print("accepted", accepted, "mismatches", mismatches)
"""


def test_no_memory_error_under_address_sanitizer(tmp_path: Path) -> None:
    """The extension rebuilt with ASan and UBSan, then mutated messages through it and the
    pure parser side by side: any out-of-bounds read, use after free or undefined behaviour
    aborts the run, and every accepted message must still equal the pure parser's."""
    repo = Path(__file__).resolve().parents[3]
    shutil.copytree(repo / "protocols", tmp_path / "protocols",
                    ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    build_sanitized(sorted((repo / "protocols/sip").glob("_speedups*.c")),
                    tmp_path / "protocols/sip/_speedups")
    seeds = [*SHAPES.values(), INVITE_SDP, OK_200, REGISTER, *torture_corpus().values(),
             *(invite_for_call(i) for i in range(20))]
    accepted, mismatches = run_sanitized(_ASAN_RUN, tmp_path, repo, seeds, 30000)
    assert mismatches == 0
    assert accepted > 5000  # the run reached the fast path, not only its early declines
