"""Trace format: decoding, bad-line reporting, strict mode, validation at the edge."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from loadtest.trace import (
    FORMAT_NAME,
    FORMAT_VERSION,
    MAX_BAD_LINES_KEPT,
    MAX_LINE_BYTES,
    Call,
    CcrSession,
    Event,
    Header,
    Options,
    Register,
    TraceFormatError,
    decode_lines,
    encode_event,
    read_trace,
    validate_event,
    write_trace,
)

HEADER = b'{"format":"storm-trace","version":1}'


def test_round_trip_through_a_file(tmp_path: Path) -> None:
    events: list[Event] = [
        Register(t=0.0, user="alice", domain="example.com", expires=600),
        Options(t=0.5, user="bob", domain="example.com", target="carol"),
        Call(t=1.25, user="alice", domain="example.com", callee="bob", hold=30.0,
             transport="ws", lose_first=True),
        CcrSession(t=2.0, user="001010123456789", domain="example.com", hold=60.0, updates=3),
    ]
    path = tmp_path / "t.jsonl"
    header = Header(format=FORMAT_NAME, version=FORMAT_VERSION, source="test", seed=7)
    assert write_trace(path, header, events) == 4
    trace = read_trace(path)
    assert trace.header == header
    assert trace.events == events
    assert trace.errors == [] and trace.bad_lines == 0
    assert trace.duration == 2.0
    # Every line is tagged with its kind, the first with format and version.
    lines = path.read_bytes().splitlines()
    assert msgspec.json.decode(lines[0])["version"] == FORMAT_VERSION
    assert [msgspec.json.decode(x)["kind"] for x in lines[1:]] == [
        "register", "options", "call", "ccr-session"]


def test_bad_lines_are_reported_with_number_and_reason_and_skipped() -> None:
    lines = [
        HEADER,
        b'{"kind":"register","t":1,"user":"a","domain":"example.com"}',
        b"not json",
        b'{"kind":"teleport","t":1,"user":"a","domain":"x"}',
        b'{"kind":"register","t":-1,"user":"a","domain":"x"}',
        b'{"kind":"call","t":1,"user":"a","domain":"x"}',
        b"",
        b'{"kind":"options","t":2,"user":"b","domain":"x","colour":"red"}',
        b'{"kind":"options","t":3,"user":"b","domain":"x"}',
    ]
    trace = decode_lines(lines)
    assert [e.t for e in trace.events] == [1.0, 3.0]
    assert [e.line for e in trace.errors] == [3, 4, 5, 6, 8]
    reasons = [e.reason for e in trace.errors]
    assert "malformed" in reasons[0]
    assert "teleport" in reasons[1]
    assert ">= 0" in reasons[2]
    assert "callee" in reasons[3]
    assert "colour" in reasons[4]
    assert trace.bad_lines == 5


def test_strict_stops_at_the_first_bad_line() -> None:
    lines = [HEADER, b'{"kind":"register","t":1,"user":"a","domain":"x"}', b"{", b"also bad"]
    with pytest.raises(TraceFormatError) as exc:
        decode_lines(lines, strict=True)
    assert exc.value.line == 3


@pytest.mark.parametrize(
    "first",
    [b"", b"[]", b'{"format":"pcap","version":1}', b'{"format":"storm-trace","version":99}',
     b'{"kind":"register","t":1,"user":"a","domain":"x"}'],
)
def test_a_missing_or_unknown_header_is_fatal(first: bytes) -> None:
    with pytest.raises(TraceFormatError) as exc:
        decode_lines([first, b'{"kind":"register","t":1,"user":"a","domain":"x"}'])
    assert exc.value.line == 1


def test_empty_file_is_fatal() -> None:
    with pytest.raises(TraceFormatError):
        decode_lines([])


@pytest.mark.parametrize(
    "user", ["a\r\nVia: evil", "a b", "<a>", "a@b", "", "x" * 65, "a\x00"],
)
def test_identities_that_would_inject_into_sip_are_refused(user: str) -> None:
    line = msgspec.json.encode({"kind": "register", "t": 0, "user": user, "domain": "x"})
    trace = decode_lines([HEADER, line])
    assert trace.events == [] and trace.errors[0].line == 2
    with pytest.raises(msgspec.ValidationError):
        validate_event(Register(t=0, user=user, domain="x"))


def test_events_out_of_order_are_sorted_stably() -> None:
    lines = [HEADER] + [
        msgspec.json.encode({"kind": "options", "t": t, "user": u, "domain": "x"})
        for t, u in [(2, "a"), (1, "b"), (2, "c"), (0, "d")]
    ]
    assert [e.user for e in decode_lines(lines).events] == ["d", "b", "a", "c"]


def test_overlong_lines_and_error_list_are_bounded() -> None:
    long = b'{"kind":"options","t":1,"user":"a","domain":"x","target":"' + b"a" * MAX_LINE_BYTES
    bad = [b"x"] * (MAX_BAD_LINES_KEPT + 10)
    trace = decode_lines([HEADER, long + b'"}', *bad])
    assert trace.errors[0].line == 2 and "longer" in trace.errors[0].reason
    assert len(trace.errors) == MAX_BAD_LINES_KEPT
    assert trace.bad_lines == MAX_BAD_LINES_KEPT + 11


users = st.from_regex(r"[A-Za-z0-9_.~-]{1,20}", fullmatch=True)
times = st.floats(min_value=0, max_value=1e5, allow_nan=False)
events = st.one_of(
    st.builds(Register, t=times, user=users, domain=st.just("example.com"),
              expires=st.integers(0, 100_000), lose_first=st.booleans()),
    st.builds(Options, t=times, user=users, domain=st.just("a.example"),
              target=st.none() | users),
    st.builds(Call, t=times, user=users, domain=st.just("x.org"), callee=users,
              hold=st.floats(0, 3600), transport=st.sampled_from([None, "udp", "ws"])),
    st.builds(CcrSession, t=times, user=users, domain=st.just("x.org"),
              updates=st.integers(0, 10)),
)


@given(st.lists(events, max_size=20))
def test_any_valid_event_survives_encode_decode(evs: list[Event]) -> None:
    trace = decode_lines([HEADER, *(encode_event(e) for e in evs)])
    assert trace.events == sorted(evs, key=lambda e: e.t)
    assert trace.errors == []


@given(st.binary(max_size=300))
def test_garbage_lines_never_raise_outside_strict(data: bytes) -> None:
    trace = decode_lines([HEADER, data.replace(b"\n", b" ")])
    assert len(trace.events) + trace.bad_lines <= 1
