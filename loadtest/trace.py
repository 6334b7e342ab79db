"""The storm trace format: versioned JSON Lines, one event per line (docs/trace-format.md).

Line 1 is a :class:`Header` naming the format and its version; every further line is one event,
a msgspec tagged union keyed by ``kind``.  Identities are validated by pattern here, at the edge,
because the injector pastes them into pre-rendered SIP templates: a user name carrying CR LF
would otherwise inject headers (RFC 3261 §25.1 ``user`` is a restricted character set anyway).

A bad line is reported with its number and the reason and skipped; ``strict=True`` stops at the
first one instead.  A missing or unknown header is always fatal: without it the lines cannot be
read with any confidence.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import msgspec

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MAX_BAD_LINES_KEPT",
    "MAX_HOLD_S",
    "MAX_LINE_BYTES",
    "MAX_TRACE_EVENTS",
    "Call",
    "CcrSession",
    "Event",
    "Header",
    "LineError",
    "Options",
    "Register",
    "Trace",
    "TraceFormatError",
    "decode_lines",
    "encode_event",
    "read_trace",
    "validate_event",
    "write_trace",
]

FORMAT_NAME = "storm-trace"
#: Bumped on any incompatible change; readers refuse a newer major version.
FORMAT_VERSION = 1
#: One event is a few hundred bytes; a longer line is garbage, not an event.
MAX_LINE_BYTES = 4096
#: Ten million events is ~1 GB of JSON and a few GB of memory: past that, split the trace.
MAX_TRACE_EVENTS = 10_000_000
#: Keep the first errors with their line numbers, count the rest: a wholly broken trace must not
#: build an unbounded error list.
MAX_BAD_LINES_KEPT = 1000
#: A day: longer "calls" in a trace are data errors, and dialog state must stay bounded.
MAX_HOLD_S = 86_400.0
MAX_EXPIRES_S = 2**31 - 1  # RFC 3261 §20.19: delta-seconds fits 32 bits

# RFC 3261 §25.1 user: unreserved / escaped / user-unreserved; no CR, LF, space, '<' or '@'.
UserStr = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9\-_.!~*'()&=+$,;?/%]{1,64}$")]
# A hostname or IPv4 literal (RFC 3261 §25.1 host, without IPv6 references: none in traces yet).
DomainStr = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9]([A-Za-z0-9\-.]{0,252})$")]
TimeS = Annotated[float, msgspec.Meta(ge=0.0, le=10 * 86_400.0)]
HoldS = Annotated[float, msgspec.Meta(ge=0.0, le=MAX_HOLD_S)]
Transport = Literal["udp", "ws"]


class Header(msgspec.Struct, forbid_unknown_fields=False):
    """First line: what this file is, and where it came from."""

    format: str
    version: int
    source: str = ""
    seed: int | None = None
    meta: dict[str, str | int | float | bool] = {}


class Register(msgspec.Struct, tag="register", tag_field="kind", forbid_unknown_fields=True):
    """One UA registering its contact (RFC 3261 §10); ``expires`` 0 removes it."""

    t: TimeS
    user: UserStr
    domain: DomainStr
    proto: Literal["sip"] = "sip"
    expires: Annotated[int, msgspec.Meta(ge=0, le=MAX_EXPIRES_S)] = 3600
    transport: Transport | None = None
    #: The network drops the first copy: the UA's retransmission timer must recover it.
    lose_first: bool = False


class Options(msgspec.Struct, tag="options", tag_field="kind", forbid_unknown_fields=True):
    """An OPTIONS ping (RFC 3261 §11) from ``user``, to the server or to ``target``."""

    t: TimeS
    user: UserStr
    domain: DomainStr
    proto: Literal["sip"] = "sip"
    target: UserStr | None = None
    transport: Transport | None = None
    lose_first: bool = False


class Call(msgspec.Struct, tag="call", tag_field="kind", forbid_unknown_fields=True):
    """A call: INVITE, ACK, then BYE from the caller ``hold`` seconds after the answer."""

    t: TimeS
    user: UserStr
    domain: DomainStr
    callee: UserStr
    proto: Literal["sip"] = "sip"
    callee_domain: DomainStr | None = None
    hold: HoldS = 0.0
    transport: Transport | None = None
    lose_first: bool = False


class CcrSession(msgspec.Struct, tag="ccr-session", tag_field="kind", forbid_unknown_fields=True):
    """A Diameter Credit-Control session (RFC 4006 §5): CCR-I, ``updates`` CCR-U, CCR-T."""

    t: TimeS
    user: UserStr
    domain: DomainStr
    proto: Literal["diameter"] = "diameter"
    hold: HoldS = 0.0
    updates: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 0
    service_context: str = "32251@3gpp.org"


Event = Register | Options | Call | CcrSession

_header_decoder = msgspec.json.Decoder(Header)
_event_decoder = msgspec.json.Decoder(Event)
_encoder = msgspec.json.Encoder()


class TraceFormatError(ValueError):
    """The trace cannot be read (fatal) or, in strict mode, one line is bad."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason


@dataclass(frozen=True, slots=True)
class LineError:
    """A skipped line: its 1-based number and why."""

    line: int
    reason: str


@dataclass(slots=True)
class Trace:
    header: Header
    events: list[Event] = field(default_factory=list)
    errors: list[LineError] = field(default_factory=list)
    bad_lines: int = 0  # every bad line, including those past MAX_BAD_LINES_KEPT

    @property
    def duration(self) -> float:
        return self.events[-1].t if self.events else 0.0


def _check_header(raw: bytes) -> Header:
    try:
        header = _header_decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise TraceFormatError(1, f"not a trace header: {exc}") from None
    if header.format != FORMAT_NAME:
        raise TraceFormatError(1, f"format is {header.format!r}, expected {FORMAT_NAME!r}")
    if not 1 <= header.version <= FORMAT_VERSION:
        raise TraceFormatError(1, f"unsupported version {header.version}")
    return header


def _decode_event(raw: bytes) -> Event:
    if len(raw) > MAX_LINE_BYTES:
        raise ValueError(f"line longer than {MAX_LINE_BYTES} bytes")
    event: Event = _event_decoder.decode(raw)
    if not math.isfinite(event.t):
        raise ValueError("t is not finite")
    return event


def decode_lines(lines: Iterable[bytes], *, strict: bool = False) -> Trace:
    """Decode a trace from its lines; bad event lines are recorded (or raised when strict)."""
    it: Iterator[tuple[int, bytes]] = enumerate(lines, start=1)
    first = next(it, None)
    if first is None:
        raise TraceFormatError(1, "empty file: no header")
    trace = Trace(header=_check_header(first[1].strip()))
    for lineno, line in it:
        raw = line.strip()
        if not raw:
            continue  # blank lines carry nothing; tolerated as JSON Lines readers do
        try:
            event = _decode_event(raw)
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
            if strict:
                raise TraceFormatError(lineno, str(exc)) from None
            trace.bad_lines += 1
            if len(trace.errors) < MAX_BAD_LINES_KEPT:
                trace.errors.append(LineError(lineno, str(exc)))
            continue
        if len(trace.events) >= MAX_TRACE_EVENTS:
            raise TraceFormatError(lineno, f"more than {MAX_TRACE_EVENTS} events")
        trace.events.append(event)
    # Stable sort: a merged or hand-edited trace may be out of order; the engine needs time order.
    trace.events.sort(key=lambda e: e.t)
    return trace


def read_trace(path: str | Path, *, strict: bool = False) -> Trace:
    with open(path, "rb") as fh:
        return decode_lines(fh, strict=strict)


def validate_event(event: Event) -> Event:
    """Check an event built in code against the same constraints a decoded one meets.

    msgspec validates on decode only; importers run their events through this so a capture with
    an identity a trace cannot carry is refused (``msgspec.ValidationError``), not written.
    """
    checked: Event = _event_decoder.decode(_encoder.encode(event))
    return checked


def encode_event(event: Event) -> bytes:
    return _encoder.encode(event)


def write_trace(path: str | Path, header: Header, events: Iterable[Event]) -> int:
    """Write a header and events (sorted by time by the caller); returns the event count."""
    n = 0
    with open(path, "wb") as fh:
        fh.write(_encoder.encode(header) + b"\n")
        for event in events:
            fh.write(_encoder.encode(event) + b"\n")
            n += 1
    return n
