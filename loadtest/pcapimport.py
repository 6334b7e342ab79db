"""``storm import``: turn a pcap or pcapng capture into a trace, keeping the original timing.

Reading is dpkt's (pcap and pcapng; Ethernet, Linux cooked v1/v2, BSD loopback and raw IP link
types).  SIP over UDP is decoded with the project's own parser (``protocols.sip``); Diameter over
TCP is reassembled per stream (in-order segments by sequence number, retransmitted bytes
dropped) and framed and decoded with ``protocols.diameter``.

What becomes an event, at the time its first packet was seen:

* REGISTER -> ``register`` (To is the address of record, RFC 3261 §10.2; Expires or the
  Contact's expires parameter);
* OPTIONS -> ``options``;
* an initial INVITE (no To tag, §12.1) -> ``call``; its holding time is from the first 2xx to the
  first BYE of the same Call-ID;
* a CCR-Initial (RFC 4006 §8.3) -> ``ccr-session``; CCR-Update counts updates and CCR-Termination
  sets the holding time; a CCR-Event is a session of zero length.

A request seen several times (UDP retransmissions, or the two legs of a proxied request, which
share Call-ID and CSeq, §16.6) is one event.  Messages that cannot be decoded, or whose
identities a trace cannot carry, are counted, never silently lost.
"""

from __future__ import annotations

import os
import struct
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dpkt

from loadtest.trace import (
    FORMAT_NAME,
    FORMAT_VERSION,
    MAX_TRACE_EVENTS,
    Call,
    CcrSession,
    Event,
    Header,
    Options,
    Register,
    validate_event,
    write_trace,
)
from protocols.diameter.codec import Message as DiameterMessage
from protocols.diameter.codec import decode_avps, decode_message
from protocols.diameter.constants import AvpCode, CommandCode
from protocols.diameter.errors import DiameterError
from protocols.diameter.framer import Framer
from protocols.sip.errors import RemoteProtocolError
from protocols.sip.message import Request, Response, SipURI
from protocols.sip.parser import parse_message

__all__ = ["MAX_STREAMS", "ImportResult", "import_capture", "read_packets"]

_PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
#: Link types dpkt decodes for us, by their LINKTYPE_ number (tcpdump.org/linktypes.html).
_LINKTYPES: dict[int, Any] = {
    1: dpkt.ethernet.Ethernet,
    113: dpkt.sll.SLL,
    276: dpkt.sll2.SLL2,
    0: dpkt.loopback.Loopback,
    108: dpkt.loopback.Loopback,
    101: dpkt.ip.IP,
    228: dpkt.ip.IP,
    229: dpkt.ip6.IP6,
}
#: TCP streams tracked at once: each holds a framer buffer of at most one message; a capture with
#: more concurrent Diameter connections than this is not a peer-to-peer capture.
MAX_STREAMS = 10_000
#: Out-of-order segments held per stream waiting for the gap to fill.
MAX_PENDING_SEGMENTS = 64
#: Requests remembered to recognise retransmissions and proxied copies.
MAX_SEEN_REQUESTS = 1_000_000
_CCR_INITIAL, _CCR_UPDATE, _CCR_TERMINATION, _CCR_EVENT = 1, 2, 3, 4
_SUBSCRIPTION_ID_DATA = 444  # RFC 4006 §8.48
_USER_NAME = 1  # RFC 6733 §8.14


@dataclass(slots=True)
class ImportResult:
    packets: int = 0
    sip_messages: int = 0
    diameter_messages: int = 0
    undecodable: int = 0  # packets or messages our codecs rejected
    unrepresentable: int = 0  # decoded, but identities a trace cannot carry (no user, IPv6...)
    events: int = 0
    #: Packets on ports the import did not look at, by (transport, lower port of the pair):
    #: what an empty import names so the user can pick --sip-ports / --diameter-ports.
    other_ports: Counter[tuple[str, int]] = field(default_factory=Counter)

    def busiest_other_ports(self, n: int = 5) -> list[tuple[str, int, int]]:
        return [(proto, port, count) for (proto, port), count in self.other_ports.most_common(n)]


@dataclass(slots=True)
class _Stream:
    framer: Framer = field(default_factory=Framer)
    next_seq: int | None = None
    pending: dict[int, bytes] = field(default_factory=dict)
    failed: bool = False


def read_packets(path: str | Path) -> Iterator[tuple[float, Any]]:
    """(timestamp, IP packet) for each IPv4/IPv6 packet in a pcap or pcapng file."""
    with open(path, "rb") as fh:
        magic = fh.read(4)
        fh.seek(0)
        try:
            reader: Any = (dpkt.pcapng.Reader(fh) if magic == _PCAPNG_MAGIC
                           else dpkt.pcap.Reader(fh))
        except (ValueError, dpkt.Error, struct.error) as exc:
            raise ValueError(f"{path}: not a pcap or pcapng capture ({exc})") from None
        link = _LINKTYPES.get(reader.datalink())
        if link is None:
            raise ValueError(f"unsupported link type {reader.datalink()}")
        for ts, buf in reader:
            try:
                frame = link(buf)
            except (dpkt.UnpackError, struct.error, IndexError):
                yield float(ts), None
                continue
            ip = frame if isinstance(frame, dpkt.ip.IP | dpkt.ip6.IP6) else frame.data
            yield float(ts), ip if isinstance(ip, dpkt.ip.IP | dpkt.ip6.IP6) else None


class _Importer:
    def __init__(self, sip_ports: set[int] | None, diameter_ports: set[int]) -> None:
        self.sip_ports = sip_ports
        self.dia_ports = diameter_ports
        self.res = ImportResult()
        self.t0: float | None = None
        self.events: list[Event] = []
        self.seen: set[tuple[str, int, str]] = set()
        self.calls: dict[str, tuple[Call, list[float | None]]] = {}
        self.sessions: dict[str, tuple[CcrSession, float]] = {}
        self.streams: dict[tuple[Any, ...], _Stream] = {}

    def packet(self, ts: float, ip: Any) -> None:
        self.res.packets += 1
        if self.t0 is None:
            self.t0 = ts
        if ip is None:
            self.res.undecodable += 1
            return
        l4 = ip.data
        if isinstance(l4, dpkt.udp.UDP):
            if self.sip_ports is None or l4.sport in self.sip_ports or l4.dport in self.sip_ports:
                self._sip(ts, bytes(l4.data))
            else:
                self.res.other_ports["udp", min(l4.sport, l4.dport)] += 1
        elif isinstance(l4, dpkt.tcp.TCP):
            if l4.sport in self.dia_ports or l4.dport in self.dia_ports:
                self._tcp(ts, (ip.src, l4.sport, ip.dst, l4.dport), l4)
            else:
                self.res.other_ports["tcp", min(l4.sport, l4.dport)] += 1

    # ------------------------------------------------------------ SIP

    def _sip(self, ts: float, data: bytes) -> None:
        if not data.strip():
            return  # RFC 5626 §4.4.1 CRLF keep-alives carry nothing
        try:
            msg = parse_message(data)
        except RemoteProtocolError:
            self.res.undecodable += 1
            return
        self.res.sip_messages += 1
        t = round(ts - (self.t0 or ts), 6)
        if isinstance(msg, Response):
            self._sip_response(t, msg)
            return
        key = (msg.call_id, msg.cseq.seq, msg.method)
        if key in self.seen:
            return
        if len(self.seen) < MAX_SEEN_REQUESTS:
            self.seen.add(key)
        try:
            self._sip_request(t, msg)
        except ValueError:  # msgspec-validated constructors refuse what a trace cannot carry
            self.res.unrepresentable += 1

    def _sip_request(self, t: float, msg: Request) -> None:
        if msg.method == "REGISTER":
            user, domain = _user_host(msg.to.uri)
            expires = msg.expires
            if expires is None and msg.contacts:
                e = msg.contacts[0].params.get("expires")
                expires = int(e) if e and e.isdigit() else None
            if msg.contact_star:
                expires = 0
            self._add(Register(t=t, user=user, domain=domain,
                               expires=3600 if expires is None else expires))
        elif msg.method == "OPTIONS":
            user, domain = _user_host(msg.from_.uri)
            target = msg.uri.user if isinstance(msg.uri, SipURI) else None
            host = msg.uri.host if isinstance(msg.uri, SipURI) else domain
            self._add(Options(t=t, user=user, domain=host, target=target))
        elif msg.method == "INVITE" and msg.to.tag is None:
            user, domain = _user_host(msg.from_.uri)
            callee, cdomain = _user_host(msg.to.uri)
            call = Call(t=t, user=user, domain=domain, callee=callee,
                        callee_domain=None if cdomain == domain else cdomain)
            if msg.call_id not in self.calls:
                self.calls[msg.call_id] = (call, [None, None])
        elif msg.method == "BYE":
            entry = self.calls.get(msg.call_id)
            if entry is not None and entry[1][1] is None:
                entry[1][1] = t

    def _sip_response(self, t: float, msg: Response) -> None:
        if msg.cseq.method != "INVITE" or not 200 <= msg.status < 300:
            return
        entry = self.calls.get(msg.call_id)
        if entry is not None and entry[1][0] is None:
            entry[1][0] = t

    def _add(self, event: Event) -> None:
        if len(self.events) >= MAX_TRACE_EVENTS:
            raise OverflowError(f"capture has more than {MAX_TRACE_EVENTS} events")
        try:
            self.events.append(validate_event(event))
        except ValueError:  # msgspec.ValidationError: e.g. a user part a trace cannot carry
            self.res.unrepresentable += 1

    # ------------------------------------------------------------ Diameter over TCP

    def _tcp(self, ts: float, key: tuple[Any, ...], seg: Any) -> None:
        st = self.streams.get(key)
        if st is None:
            if len(self.streams) >= MAX_STREAMS:
                self.res.undecodable += 1
                return
            st = self.streams[key] = _Stream()
        if seg.flags & dpkt.tcp.TH_SYN:
            st.next_seq = (seg.seq + 1) & 0xFFFFFFFF
            return
        data = bytes(seg.data)
        if not data or st.failed:
            return
        if st.next_seq is None:
            st.next_seq = seg.seq  # capture started mid-stream: trust the first segment
        if seg.seq != st.next_seq:
            if _seq_after(seg.seq, st.next_seq) and len(st.pending) < MAX_PENDING_SEGMENTS:
                st.pending[seg.seq] = data  # a gap: hold it until the missing bytes come
            return  # else a retransmission of bytes already taken
        self._feed(ts, st, data)
        while st.next_seq in st.pending:
            self._feed(ts, st, st.pending.pop(st.next_seq))

    def _feed(self, ts: float, st: _Stream, data: bytes) -> None:
        assert st.next_seq is not None
        st.next_seq = (st.next_seq + len(data)) & 0xFFFFFFFF
        try:
            frames = st.framer.feed(data)
        except DiameterError:
            st.failed = True  # framing lost: nothing later in this stream can be trusted
            self.res.undecodable += 1
            return
        for frame in frames:
            try:
                msg = decode_message(frame)
            except DiameterError:
                self.res.undecodable += 1
                continue
            self.res.diameter_messages += 1
            if msg.command_code == CommandCode.CREDIT_CONTROL and msg.is_request:
                try:
                    self._ccr(round(ts - (self.t0 or ts), 6), msg)
                except (ValueError, DiameterError, struct.error):
                    self.res.unrepresentable += 1

    def _ccr(self, t: float, msg: DiameterMessage) -> None:
        sid_avp = msg.find(AvpCode.SESSION_ID)
        rtype_avp = msg.find(AvpCode.CC_REQUEST_TYPE)
        if sid_avp is None or rtype_avp is None:
            raise ValueError("CCR without Session-Id or CC-Request-Type")
        sid = sid_avp.data.decode("utf-8", "replace")
        rtype = struct.unpack("!I", rtype_avp.data)[0]
        if rtype in (_CCR_INITIAL, _CCR_EVENT):
            if sid in self.sessions:
                return  # a retransmitted CCR-I (T flag, RFC 6733 §3)
            realm = msg.find(AvpCode.ORIGIN_REALM)
            ev = CcrSession(t=t, user=_subscriber(msg),
                            domain=realm.data.decode() if realm else "invalid", hold=0.0)
            self.sessions[sid] = (ev, t)
            if rtype == _CCR_EVENT:
                self._add(ev)
                self.sessions[sid] = (ev, -1.0)
        elif rtype == _CCR_UPDATE and sid in self.sessions:
            ev, start = self.sessions[sid]
            if start >= 0:
                self.sessions[sid] = (_replace(ev, updates=ev.updates + 1), start)
        elif rtype == _CCR_TERMINATION and sid in self.sessions:
            ev, start = self.sessions.pop(sid)
            if start >= 0:
                self._add(_replace(ev, hold=round(t - start, 3)))

    # ------------------------------------------------------------ finish

    def finish(self) -> list[Event]:
        for call, (answered, bye) in self.calls.values():
            hold = round(bye - answered, 3) if answered is not None and bye is not None else 0.0
            self._add(_replace(call, hold=max(0.0, hold)))
        for ev, start in self.sessions.values():
            if start >= 0:  # never terminated within the capture: keep what was seen
                self._add(ev)
        self.events.sort(key=lambda e: e.t)
        return self.events


def _replace(ev: Any, **changes: Any) -> Any:
    import msgspec

    return msgspec.structs.replace(ev, **changes)


def _seq_after(a: int, b: int) -> bool:
    """TCP sequence comparison modulo 2^32 (RFC 9293 §3.4)."""
    return 0 < ((a - b) & 0xFFFFFFFF) < 0x80000000


def _user_host(uri: Any) -> tuple[str, str]:
    if not isinstance(uri, SipURI) or not uri.user:
        raise ValueError("no user part")
    return uri.user, uri.host


def _subscriber(msg: DiameterMessage) -> str:
    sub = msg.find(AvpCode.SUBSCRIPTION_ID)
    if sub is not None:
        for avp in decode_avps(sub.data):
            if avp.code == _SUBSCRIPTION_ID_DATA:
                return avp.data.decode("utf-8")
    name = msg.find(_USER_NAME)
    if name is not None:
        return name.data.decode("utf-8")
    raise ValueError("CCR without Subscription-Id or User-Name")


def import_capture(
    capture: str | Path,
    out: str | Path,
    *,
    sip_ports: set[int] | None = None,
    diameter_ports: frozenset[int] | set[int] = frozenset({3868}),
) -> ImportResult:
    """Read ``capture``, write the trace to ``out``; ``sip_ports`` None means any UDP port."""
    imp = _Importer(sip_ports, set(diameter_ports))
    for ts, ip in read_packets(capture):
        imp.packet(ts, ip)
    events = imp.finish()
    header = Header(format=FORMAT_NAME, version=FORMAT_VERSION,
                    source=f"import {os.path.basename(str(capture))}",
                    meta={"packets": imp.res.packets, "undecodable": imp.res.undecodable,
                          "unrepresentable": imp.res.unrepresentable})
    imp.res.events = write_trace(out, header, events)
    return imp.res
