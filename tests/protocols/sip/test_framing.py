"""SIP stream framing (RFC 3261 §18.3, RFC 5626 §3.5.1): messages, pings and closes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.sip.errors import RemoteProtocolError
from protocols.sip.framing import (
    BAD_CONTENT_LENGTH,
    GARBAGE,
    NO_CONTENT_LENGTH,
    PING,
    PONG,
    TOO_LARGE,
    Framed,
    SipStream,
    StreamClosed,
    content_lengths,
)
from protocols.sip.message import Request, Response
from protocols.sip.parser import MAX_MESSAGE_SIZE, parse_message
from protocols.sip.serializer import serialize
from tests.sanitizers import build_sanitized, run_sanitized

from .conftest import messages, torture, torture_corpus

BASE = (
    "OPTIONS sip:bob@example.com SIP/2.0\r\n"
    "Via: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bK776asdhds\r\n"
    "From: Alice <sip:alice@example.com>;tag=1928301774\r\n"
    "To: Bob <sip:bob@example.com>\r\n"
    "Call-ID: a84b4c76e66710@pc33.example.com\r\n"
    "CSeq: 314159 OPTIONS\r\n"
    "Max-Forwards: 70\r\n"
)


def msg(*headers: str, body: bytes = b"", base: str = BASE) -> bytes:
    return (base + "".join(h + "\r\n" for h in headers) + "\r\n").encode() + body


WIRE = msg("Content-Length: 5", body=b"hello")
RESPONSE = msg("Content-Length: 0", base=BASE.replace("OPTIONS sip:bob@example.com SIP/2.0",
                                                       "SIP/2.0 200 OK"))


def feed(stream: SipStream, data: bytes, size: int) -> list[Framed]:
    out: list[Framed] = []
    for i in range(0, len(data), size):
        out += stream.receive(data[i : i + size])
    return out


def closed(out: list[Framed]) -> StreamClosed:
    assert out and isinstance(out[-1], StreamClosed), out
    return out[-1]


# --- messages ---------------------------------------------------------------------------------


def test_one_message_in_one_read() -> None:
    s = SipStream()
    assert s.receive(WIRE) == [WIRE]
    assert s.buffered == 0 and not s.in_message and s.closed is None


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 1000])
def test_messages_split_anywhere_byte_by_byte_included(size: int) -> None:
    stream = b"\r\n" + WIRE + RESPONSE + b"\r\n" + WIRE
    s = SipStream()
    assert feed(s, stream, size) == [WIRE, RESPONSE, WIRE]
    assert s.buffered == 0
    parsed = parse_message(WIRE, stream=True)
    assert isinstance(parsed, Request) and parsed.body == b"hello"


def test_several_messages_in_one_chunk_and_a_partial_one() -> None:
    s = SipStream()
    assert s.receive(WIRE * 5 + WIRE[:20]) == [WIRE] * 5
    assert s.in_message and s.buffered == 20
    assert s.receive(WIRE[20:]) == [WIRE]


def test_body_bytes_that_look_like_a_message_stay_in_the_body() -> None:
    inner = msg("Content-Length: 0")
    outer = msg(f"Content-Length: {len(inner)}", body=inner)
    assert SipStream().receive(outer) == [outer]


def test_compact_and_spaced_content_length() -> None:
    wire = msg("l :5", body=b"abcde")
    s = SipStream()
    assert s.receive(wire + b"INV") == [wire]
    assert s.buffered == 3 and s.in_message


#: The specification ``content_lengths`` implements by scanning (its docstring).
_CL_REGEX = re.compile(rb"(?im)^(?:content-length|l)[ \t]*:[ \t]*([^\r\n]*?)[ \t]*\r?$")
_CL_PIECES = [b"Content-Length", b"content-LENGTH", b"l", b"L", b"lx", b"Content-Lengthy", b":",
              b" ", b"\t", b"\r", b"\n", b"\r\n", b"12", b"0", b"x", b"X", b"Via", b"SIP/2.0"]


@settings(max_examples=3000, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(_CL_PIECES), max_size=30))
def test_content_lengths_equal_their_regex(pieces: list[bytes]) -> None:
    head = b"".join(pieces) + b"\r\n"
    assert content_lengths(head) == [v.lower() for v in _CL_REGEX.findall(head)]


def test_content_lengths_of_real_messages() -> None:
    for wire in (msg("Content-Length: 5", body=b"abcde"), msg("l :5", body=b"abcde"),
                 msg("CONTENT-length:\t 12 \t", body=b"x" * 12),
                 msg("Content-Length: 1\r\nl: 2")):
        head = wire[:wire.index(b"\r\n\r\n") + 2]
        assert content_lengths(head) == [v.lower() for v in _CL_REGEX.findall(head)]
        assert content_lengths(head)


def test_a_body_fed_byte_by_byte_is_not_rescanned() -> None:
    """A large body trickling in costs linear time: the header section is read once."""
    body = b"x" * 60_000
    wire = msg(f"Content-Length: {len(body)}", body=body)
    s = SipStream()
    out = feed(s, wire, 1)
    assert out == [wire]


def test_rfc4475_messages_frame_after_serialization() -> None:
    """Every torture message that parses frames on a stream once serialized (which gives
    it a Content-Length), split or whole, and parses the same there."""
    framed = 0
    for data in torture_corpus().values():
        try:
            wire = serialize(parse_message(data))
        except RemoteProtocolError:
            continue
        s = SipStream()
        assert s.receive(b"\r\n\r\n" + wire + wire[:10]) == [PING, wire]
        assert s.receive(wire[10:]) == [wire]
        assert parse_message(wire, stream=True) == parse_message(wire)
        framed += 1
    assert framed >= 20


def test_clerr_waits_for_the_rest_of_its_body() -> None:
    """RFC 4475 clerr: Content-Length larger than what follows; on a stream the rest may come."""
    data = torture("clerr")
    s = SipStream()
    assert s.receive(data) == []
    assert s.buffered == len(data) and s.in_message


# --- keep-alives (RFC 5626 §3.5.1) --------------------------------------------------------------


def test_double_crlf_is_a_ping_single_crlfs_are_skipped() -> None:
    s = SipStream()
    assert s.receive(b"\r\n\r\n") == [PING]
    assert s.receive(b"\r\n") == [] and s.buffered == 0 and not s.in_message
    assert s.receive(WIRE) == [WIRE]  # the lone CRLF was skipped, not part of a ping
    assert s.receive(b"\r") == [] and not s.in_message
    assert s.receive(b"\n") == []
    assert s.receive(b"\r\n") == [PING]
    assert PONG == b"\r\n"


def test_ping_split_byte_by_byte() -> None:
    assert feed(SipStream(), b"\r\n\r\n", 1) == [PING]


def test_pings_between_messages_keep_their_place() -> None:
    s = SipStream()
    assert s.receive(WIRE + b"\r\n\r\n" + WIRE + b"\r\n\r\n") == [WIRE, PING, WIRE, PING]


def test_a_ping_flood_in_one_read_is_answered_once() -> None:
    s = SipStream()
    assert s.receive(b"\r\n\r\n" * 10_000) == [PING]
    assert s.buffered == 0


# --- closes -----------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 5, 100_000])
def test_ten_megabyte_message_closes_before_it_is_buffered(size: int) -> None:
    body = b"v=0\r\n" * (2 * 1024 * 1024)
    wire = msg(f"Content-Length: {len(body)}", body=body)
    assert len(wire) > 10_000_000
    s = SipStream()
    out: list[Framed] = []
    fed = 0
    while s.closed is None:
        out += s.receive(wire[fed : fed + size])
        fed += size
        assert s.buffered <= MAX_MESSAGE_SIZE + size
    assert fed < len(msg()) + 100 + size  # closed as soon as the header section was read
    event = closed(out)
    assert event.reason == TOO_LARGE
    # A request whose headers were read gets its 513 (§21.5.14) before the close.
    assert event.answer is not None
    answer = parse_message(event.answer)
    assert isinstance(answer, Response) and answer.status == 513
    assert answer.call_id == "a84b4c76e66710@pc33.example.com"
    assert s.receive(b"more") == [] and s.buffered == 0


def test_endless_header_section_closes_at_the_size_limit() -> None:
    s = SipStream()
    chunk = b"X-Filler: " + b"a" * 8_000 + b"\r\n"
    out = s.receive(b"OPTIONS sip:a@b SIP/2.0\r\n")
    while s.closed is None:
        out += s.receive(chunk)
        assert s.buffered <= MAX_MESSAGE_SIZE + len(chunk)
    event = closed(out)
    assert event.reason == TOO_LARGE and event.answer is None


def test_oversized_response_is_closed_without_an_answer() -> None:
    body = b"x" * MAX_MESSAGE_SIZE
    head = RESPONSE.replace(b"Content-Length: 0", f"Content-Length: {len(body)}".encode())
    event = closed(SipStream().receive(head))
    assert event.reason == TOO_LARGE and event.answer is None  # §18.1.2


def test_smaller_limit_is_honoured() -> None:
    s = SipStream(max_size=len(WIRE))
    assert s.receive(WIRE) == [WIRE]
    big = msg("Content-Length: 6", body=b"hello!")
    assert closed(s.receive(big)).reason == TOO_LARGE


@pytest.mark.parametrize("garbage", [
    b"\x00\x01\x02\x03", b"\x16\x03\x01\x02\x00\x01", b"hello world\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\r\x00", b"A" * 70, b" OPTIONS sip:a SIP/2.0\r\n",
])
def test_garbage_after_a_valid_message_closes_after_delivering_it(garbage: bytes) -> None:
    s = SipStream()
    out = s.receive(WIRE + garbage)
    assert out[0] == WIRE
    assert closed(out).reason == GARBAGE and len(out) == 2
    assert s.buffered == 0


def test_garbage_is_recognised_before_its_first_line_ends() -> None:
    s = SipStream()
    event = closed(feed(s, b"\x16\x03\x01" + b"\x00" * 1000, 1))  # a TLS ClientHello on TCP
    assert event.reason == GARBAGE


def test_endless_first_line_is_garbage() -> None:
    s = SipStream()
    out = feed(s, b"OPTIONS sip:" + b"a" * 20_000, 1000)
    assert closed(out).reason == GARBAGE


@pytest.mark.parametrize(("data", "reason"), [
    (msg(body=b""), NO_CONTENT_LENGTH),
    (msg("Content-Length: 1", "Content-Length: 1", body=b"x"), BAD_CONTENT_LENGTH),
    (msg("Content-Length: -1"), BAD_CONTENT_LENGTH),
    (msg("Content-Length: ten"), BAD_CONTENT_LENGTH),
    (msg("Content-Length: 12345678901"), BAD_CONTENT_LENGTH),
])
def test_missing_or_ambiguous_content_length_closes(data: bytes, reason: str) -> None:
    assert closed(SipStream().receive(data)).reason == reason


@pytest.mark.parametrize("name", ["ncl", "mcl01"])
def test_rfc4475_unframeable_messages_close(name: str) -> None:
    event = closed(SipStream().receive(torture(name)))
    assert event.reason in (NO_CONTENT_LENGTH, BAD_CONTENT_LENGTH)


# --- Hypothesis -------------------------------------------------------------------------------

_SETTINGS = settings(max_examples=150, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(messages, st.integers(min_value=1, max_value=300))
def test_any_serialized_message_frames_however_split(m: Request | Response, size: int) -> None:
    wire = serialize(m)
    assert feed(SipStream(), wire + b"\r\n\r\n" + wire, size) == [wire, PING, wire]


@_SETTINGS
@given(st.lists(st.binary(min_size=1, max_size=200), max_size=8), messages)
def test_arbitrary_bytes_never_raise_and_stay_bounded(chunks: list[bytes],
                                                      m: Request | Response) -> None:
    s = SipStream()
    out: list[Framed] = []
    for chunk in [*chunks, serialize(m)]:
        out += s.receive(chunk)
        assert s.buffered <= MAX_MESSAGE_SIZE + 200 + len(serialize(m))
    closes = [e for e in out if isinstance(e, StreamClosed)]
    assert len(closes) <= 1 and (not closes or out[-1] is closes[0])
    for e in out:
        if isinstance(e, bytes):
            assert b"SIP/" in e.split(b"\r\n", 1)[0]


# --- the clean-message scan in C (_framing.c) against its Python original ------------------------

#: Start lines, header lines (Content-Length in every shape the scans judge) and line ends that
#: generated streams are made of, so they reach every branch of both scans, clean ones included.
_STARTS = [b"REGISTER sip:a SIP/2.0", b"SIP/2.0 200 OK", b"INVITE sip:b SIP/2.0", b"OPTIONS sip:a",
           b"GET / HTTP/1.1", b"x" * 65 + b" sip:a SIP/2.0", b"l: 5 SIP/2.0", b"", b"\xff SIP/2.0"]
_HEADERS = [b"Via: a", b"Content-Length: 5", b"l:5", b"L :\t5 ", b"Content-Length: 0",
            b"CONTENT-length: 12", b"Content-Length: x", b"Content-Length: 5\r5", b"lx: 5",
            b"Content-Lengthy: 5", b"Content-Length: 00000000005", b"Content-Length: 0000000005",
            b"Content-Length:", b"l: 1 2", b"l: 5\r", b" l: 5", b"SIP/2.0"]
_EOLS = [b"\r\n"] * 6 + [b"\n", b"\r"]
_message = st.builds(
    lambda start, eol, lines, body: start + eol + b"".join(lines) + b"\r\n" + body,
    st.sampled_from(_STARTS), st.sampled_from(_EOLS),
    st.lists(st.builds(bytes.__add__, st.sampled_from(_HEADERS), st.sampled_from(_EOLS)),
             max_size=4),
    st.one_of(st.sampled_from([b"", b"hello", b"x" * 12]), st.binary(max_size=14)))
#: Messages that frame, Content-Length in the shapes a scan must take.
_clean = st.builds(
    lambda start, name, blanks, via, body: b"%s\r\n%s%s:%s%d%s\r\n%s\r\n%s" % (
        start, via, name, blanks, len(body), blanks, via, body),
    st.sampled_from(_STARTS[:3]),
    st.sampled_from([b"Content-Length", b"l", b"L", b"content-LENGTH"]),
    st.sampled_from([b"", b" ", b" \t"]), st.sampled_from([b"", b"Via: a\r\n"]),
    st.binary(max_size=20))


def _both_scans(data: bytes, max_size: int, max_line: int) -> None:
    from protocols.sip import _framing
    from protocols.sip.framing import _whole_messages_py
    c_out: list[Framed] = []
    py_out: list[Framed] = []
    assert _framing.whole_messages(data, max_size, max_line, c_out) == \
        _whole_messages_py(data, max_size, max_line, py_out)
    assert c_out == py_out


def test_the_c_scan_is_built_and_used() -> None:
    """The test command builds the extensions (SIGNALING_REQUIRE_SPEEDUPS=1): a missing build
    must fail here, not pass the comparisons below by skipping them."""
    from protocols.sip import _framing, framing
    assert framing._whole_messages is _framing.whole_messages


@settings(max_examples=4000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(_clean, _message), min_size=1, max_size=4), st.binary(max_size=6),
       st.one_of(st.integers(min_value=1, max_value=200), st.just(MAX_MESSAGE_SIZE)),
       st.sampled_from([8, 30, 16_384]))
def test_the_c_scan_equals_the_python_one(messages_: list[bytes], tail: bytes, max_size: int,
                                          max_line: int) -> None:
    _both_scans(b"".join(messages_) + tail, max_size, max_line)


@_SETTINGS
@given(st.lists(messages, min_size=1, max_size=4), st.integers(min_value=0, max_value=40))
def test_the_c_scan_takes_serialized_messages_as_python_does(ms: list[Request | Response],
                                                             cut: int) -> None:
    data = b"".join(serialize(m) for m in ms)
    for chunk in (data, data[:len(data) - cut], data + b"\r\n\r\n" + data):
        _both_scans(chunk, MAX_MESSAGE_SIZE, 16_384)


def test_the_c_scan_on_messages_of_every_content_length_shape() -> None:
    for wire in (WIRE, RESPONSE, WIRE + RESPONSE + WIRE[:-3], msg("l :5", body=b"abcde"),
                 msg("CONTENT-length:\t 5 \t", body=b"abcde"), msg("Content-Length: 1\r\nl: 2"),
                 msg("Content-Length: 5\rx", body=b"abcde"), msg("Content-Length: 5 5"),
                 msg("Content-Length:", body=b""), msg("Content-Length: 00000000005"),
                 msg("Content-Length: 0000000005", body=b"abcde"), b"\r\n" + WIRE):
        for max_size, max_line in ((MAX_MESSAGE_SIZE, 16_384), (len(WIRE), 16_384),
                                   (len(WIRE) - 1, 16_384), (MAX_MESSAGE_SIZE, 10)):
            _both_scans(wire, max_size, max_line)


_ASAN_RUN = r"""
import pickle, random, sys
build, repo, seeds_file, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
sys.path[:0] = [build, repo]
import _framing
from tests.sanitizers import mutated
assert _framing.__file__.startswith(build), _framing.__file__
with open(seeds_file, "rb") as f:
    seeds = pickle.load(f)
rnd = random.Random(3261)
framed = 0
for _ in range(count):
    # whole messages with mutated ones among them, as a stream carries them
    data = b"".join(rnd.choice(seeds) if rnd.random() < 0.5 else mutated(rnd, seeds)
                    for _ in range(rnd.randint(1, 4)))
    out = []
    taken = _framing.whole_messages(data, rnd.choice([64, 300, 65535, 65535]),
                                    rnd.choice([30, 16384, 16384]), out)
    assert 0 <= taken <= len(data) and sum(map(len, out)) == taken, (taken, len(data))
    framed += len(out)
print("framed", framed)
"""


def test_no_memory_error_under_address_sanitizer(tmp_path: Path) -> None:
    """The C scan rebuilt with ASan and UBSan takes streams of mutated messages (what a peer
    sends over TCP, TLS or WebSocket, cut and glued anywhere): any out-of-bounds access or
    undefined behaviour aborts the run, and what it frames covers exactly what it took."""
    repo = Path(__file__).resolve().parents[3]
    build_sanitized([repo / "protocols/sip/_framing.c"], tmp_path / "_framing")
    seeds = [msg(), msg("Content-Length: 5", body=b"hello"), msg("l: 0"),
             msg("Content-Length: 00000000005", body=b"hello"), b"\r\n\r\n",
             b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"]
    (framed,) = run_sanitized(_ASAN_RUN, tmp_path, repo, seeds, 30000)
    assert framed > 5000  # the run reached the framing, not only refusals
