"""Diameter side of the injector: one client peer replaying Credit-Control sessions.

The peer is the project's own RFC 6733 §5.6 state machine (``protocols.diameter.peer``) in the
initiator role, with its RFC 3539 watchdog: it sends the CER, checks the CEA, answers and sends
DWR/DWA; this module only moves its commands to and from one TCP connection (framed and decoded
by ``protocols.diameter``) and drives its timer from the engine's tick.

A ``ccr-session`` event is an RFC 4006 session: CCR-Initial, ``updates`` CCR-Update spread
evenly over the holding time, CCR-Termination at its end; each request asks for (and reports)
CC-Time units.  An answer is matched by its Hop-by-Hop Identifier (§3); a request unanswered
after ``TX_TIMEOUT_S`` counts as a timeout (RFC 4006 §13 Tx) and ends its session.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import ipaddress
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from loadtest.metrics import KindStats
from loadtest.timeline import Timeline
from loadtest.trace import CcrSession
from protocols.diameter.builders import request
from protocols.diameter.capabilities import Capabilities
from protocols.diameter.codec import Avp, Message, decode_message, encode_avp
from protocols.diameter.constants import AVP_FLAG_M, AppId, AvpCode, CommandCode
from protocols.diameter.errors import DiameterError
from protocols.diameter.framer import Framer
from protocols.diameter.peer import (
    Closed,
    Connect,
    Deliver,
    Disconnect,
    Dropped,
    Opened,
    PeerMachine,
    Send,
)

__all__ = [
    "MAX_PENDING",
    "TX_TIMEOUT_S",
    "DiameterClient",
    "parse_diameter_target",
]

#: RFC 4006 §13: Tx, how long a client waits for a CCA, default 10 s.
TX_TIMEOUT_S = 10.0
#: Requests awaiting an answer at most; past it a new session is refused and counted rather than
#: queued without bound behind a server that stopped answering.
MAX_PENDING = 100_000
#: How long the CER/CEA exchange may take before the run gives up on the Diameter peer.
OPEN_TIMEOUT_S = 10.0
_U32 = struct.Struct("!I")
_CONN = 1  # the machine names connections by integers: we have one
_KIND = {1: "ccr-i", 2: "ccr-u", 3: "ccr-t"}
_SUBSCRIPTION_ID_TYPE = 450  # RFC 4006 §8.47, END_USER_IMSI = 1
_SUBSCRIPTION_ID_DATA = 444


class _Host(Protocol):
    """What the client needs from the engine: stats, the timeline, delayed actions, the run's
    clock and the goodput deadline."""

    @property
    def start(self) -> float: ...

    @property
    def deadline(self) -> float: ...

    @property
    def timeline(self) -> Timeline: ...

    def stats_for(self, kind: str) -> KindStats: ...

    def later(self, delay: float, fn: Callable[[Any], None], arg: Any,
              stats: KindStats | None) -> None: ...


def parse_diameter_target(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme != "tcp" or not parts.hostname or not parts.port:
        raise ValueError(f"Diameter target must look like tcp://host:port, got {url!r}")
    return parts.hostname, parts.port


@dataclass(slots=True)
class _Session:
    event: CcrSession
    sid: bytes
    number: int = 0
    done: bool = False


@dataclass(slots=True)
class _Pending:
    session: _Session
    kind: str
    t0: float
    second: int


def _u32(code: int, value: int) -> Avp:
    return Avp(code, AVP_FLAG_M, _U32.pack(value))


class DiameterClient:
    """One Diameter peer connection carrying every replayed Credit-Control session."""

    def __init__(self, host: _Host, target: tuple[str, int], origin_host: str,
                 origin_realm: str, *, tw: float = 30.0) -> None:
        self.host = host
        self.target = target
        self.local = Capabilities(
            origin_host=origin_host, origin_realm=origin_realm,
            host_ip_addresses=(ipaddress.IPv4Address("127.0.0.1"),),
            product_name="storm", auth_application_ids=frozenset({AppId.CREDIT_CONTROL}),
        )
        self.machine = PeerMachine(self.local, tw=tw, initiator=True)
        self.framer = Framer()
        self.writer: asyncio.StreamWriter | None = None
        self.reader_task: asyncio.Task[None] | None = None
        self.opened: asyncio.Future[None] | None = None
        self.dest_realm = origin_realm
        self.pending: dict[int, _Pending] = {}
        self.deadlines: list[tuple[float, int]] = []
        self.sessions_started = 0
        self.sessions_completed = 0
        self.sessions_failed = 0
        self.dropped = 0
        self.closed_reason: str | None = None
        self._run_id = os.urandom(4).hex()
        self._n = 0

    # ------------------------------------------------------------ connection

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self.opened = loop.create_future()
        self.machine.start(time.monotonic())
        await self._pump()
        await asyncio.wait_for(self.opened, OPEN_TIMEOUT_S)

    async def _pump(self) -> None:
        """Carry out the machine's commands (connect, send, deliver, close)."""
        for cmd in self.machine.take_outbox():
            if isinstance(cmd, Connect):
                await self._connect()
            else:
                self._command(cmd)

    async def _connect(self) -> None:
        now = time.monotonic()
        try:
            reader, self.writer = await asyncio.open_connection(*self.target)
        except OSError as exc:
            self.machine.connect_failed(now)
            self._fail(f"connect: {exc}")
            return
        self.reader_task = asyncio.create_task(self._read(reader))
        self.machine.connected(_CONN, time.monotonic())
        for cmd in self.machine.take_outbox():
            self._command(cmd)

    def _command(self, cmd: Any) -> None:
        if isinstance(cmd, Send):
            if self.writer is not None and not self.writer.is_closing():
                self.writer.write(cmd.message.encode())
        elif isinstance(cmd, Deliver):
            self._on_answer(cmd.message)
        elif isinstance(cmd, Opened):
            self.dest_realm = cmd.remote.origin_realm
            if self.opened is not None and not self.opened.done():
                self.opened.set_result(None)
        elif isinstance(cmd, Dropped):
            self.dropped += 1
        elif isinstance(cmd, Disconnect):
            if self.writer is not None:
                self.writer.close()
        elif isinstance(cmd, Closed):
            self._fail(cmd.reason)

    def _fail(self, reason: str) -> None:
        self.closed_reason = reason
        if self.opened is not None and not self.opened.done():
            self.opened.set_exception(ConnectionError(f"Diameter peer: {reason}"))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while data := await reader.read(65536):
            try:
                frames = self.framer.feed(data)
            except DiameterError as exc:
                self._fail(f"framing: {exc}")
                break
            for frame in frames:
                self._receive(frame)
        with contextlib.suppress(DiameterError):
            self.machine.disconnected(_CONN, time.monotonic())
            for cmd in self.machine.take_outbox():
                if not isinstance(cmd, Connect):  # no reconnect within a run
                    self._command(cmd)

    def _receive(self, frame: bytes) -> None:
        try:
            msg = decode_message(frame)
            self.machine.receive(_CONN, msg, time.monotonic())
        except DiameterError:
            self.dropped += 1  # a broken or unexpected message: counted, never fatal
            return
        for cmd in self.machine.take_outbox():
            if not isinstance(cmd, Connect):
                self._command(cmd)

    async def close(self) -> None:
        with contextlib.suppress(DiameterError):
            self.machine.stop(time.monotonic())
            for cmd in self.machine.take_outbox():
                if not isinstance(cmd, Connect):
                    self._command(cmd)
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError, ConnectionError):
                await self.writer.wait_closed()
        if self.reader_task is not None:
            self.reader_task.cancel()

    # ------------------------------------------------------------ timers

    def tick(self, now: float) -> None:
        """Watchdog and state timers of the peer, and the Tx timeouts of requests."""
        deadline = self.machine.next_deadline()
        if deadline is not None and now >= deadline:
            with contextlib.suppress(DiameterError):
                self.machine.on_timer(now)
            for cmd in self.machine.take_outbox():
                if not isinstance(cmd, Connect):
                    self._command(cmd)
        dl = self.deadlines
        while dl and dl[0][0] <= now:
            _, hbh = heapq.heappop(dl)
            p = self.pending.pop(hbh, None)
            if p is not None:
                self.host.stats_for(p.kind).timeouts += 1
                cur = self.host.timeline.cur
                cur.timeouts += 1
                cur.errors += 1
                self._session_failed(p.session)

    @property
    def busy(self) -> bool:
        return bool(self.pending)

    def abandon(self) -> None:
        for p in self.pending.values():
            self.host.stats_for(p.kind).abandoned += 1
        self.pending.clear()

    # ------------------------------------------------------------ sessions

    def start_session(self, ev: CcrSession, now: float, second: int) -> None:
        self._n += 1
        sid = f"{self.local.origin_host};{self._run_id};{self._n}".encode()
        session = _Session(ev, sid)
        self.sessions_started += 1
        self._send(session, 1, now, second)

    def _send(self, s: _Session, rtype: int, now: float, second: int) -> None:
        kind = _KIND[rtype]
        stats = self.host.stats_for(kind)
        if len(self.pending) >= MAX_PENDING or self.machine.open_conn is None:
            stats.abandoned += 1
            self._session_failed(s)
            return
        hbh = self.machine.next_hop_by_hop()
        msg = self._ccr(s, rtype, hbh)
        s.number += 1
        self.pending[hbh] = _Pending(s, kind, now, second)
        heapq.heappush(self.deadlines, (now + TX_TIMEOUT_S, hbh))
        stats.sent += 1
        stats.offered.add(second)
        self.host.timeline.cur.sent += 1
        try:
            self.machine.send(msg, now)
        except DiameterError:
            self.pending.pop(hbh, None)
            stats.abandoned += 1
            self._session_failed(s)
            return
        for cmd in self.machine.take_outbox():
            if not isinstance(cmd, Connect):
                self._command(cmd)

    def _ccr(self, s: _Session, rtype: int, hbh: int) -> Message:
        ev = s.event
        sub = encode_avp(_SUBSCRIPTION_ID_TYPE, AVP_FLAG_M, _U32.pack(1)) + encode_avp(
            _SUBSCRIPTION_ID_DATA, AVP_FLAG_M, ev.user.encode())
        avps = [
            Avp(AvpCode.SESSION_ID, AVP_FLAG_M, s.sid),
            Avp(AvpCode.ORIGIN_HOST, AVP_FLAG_M, self.local.origin_host.encode()),
            Avp(AvpCode.ORIGIN_REALM, AVP_FLAG_M, self.local.origin_realm.encode()),
            Avp(AvpCode.DESTINATION_REALM, AVP_FLAG_M, self.dest_realm.encode()),
            _u32(AvpCode.AUTH_APPLICATION_ID, AppId.CREDIT_CONTROL),
            Avp(AvpCode.SERVICE_CONTEXT_ID, AVP_FLAG_M, ev.service_context.encode()),
            _u32(AvpCode.CC_REQUEST_TYPE, rtype),
            _u32(AvpCode.CC_REQUEST_NUMBER, s.number),
            Avp(AvpCode.SUBSCRIPTION_ID, AVP_FLAG_M, sub),
        ]
        slice_s = max(1, round(ev.hold / (ev.updates + 1)))
        if rtype != 3:  # §8.18: ask for the next slice of time
            avps.append(Avp(AvpCode.REQUESTED_SERVICE_UNIT, AVP_FLAG_M,
                            encode_avp(AvpCode.CC_TIME, AVP_FLAG_M, _U32.pack(slice_s))))
        if rtype != 1:  # §8.19: report what the last slice used
            avps.append(Avp(AvpCode.USED_SERVICE_UNIT, AVP_FLAG_M,
                            encode_avp(AvpCode.CC_TIME, AVP_FLAG_M, _U32.pack(slice_s))))
        return request(CommandCode.CREDIT_CONTROL, AppId.CREDIT_CONTROL, hbh,
                       self.machine.next_end_to_end(), avps, proxiable=True)

    def _on_answer(self, msg: Message) -> None:
        p = self.pending.pop(msg.hop_by_hop, None)
        if p is None or msg.is_request:
            self.dropped += 1
            return
        now = time.monotonic()
        rc_avp = msg.find(AvpCode.RESULT_CODE)
        rc = _U32.unpack(rc_avp.data)[0] if rc_avp is not None and len(rc_avp.data) == 4 else 0
        stats = self.host.stats_for(p.kind)
        key = f"{rc // 1000}xxx"
        stats.answered[key] = stats.answered.get(key, 0) + 1
        stats.codes[rc] = stats.codes.get(rc, 0) + 1
        if not 2000 <= rc < 3000:
            stats.failures[rc] = stats.failures.get(rc, 0) + 1
        lat = now - p.t0
        stats.pending.append(int(lat * 1e6))
        cur = self.host.timeline.cur
        cur.answered += 1
        if 2000 <= rc < 3000:
            if lat <= self.host.deadline:
                stats.goodput.add(p.second)
                cur.good += 1
            self._next_step(p, now)
        else:
            cur.errors += 1
            self._session_failed(p.session)

    def _next_step(self, p: _Pending, now: float) -> None:
        s = p.session
        ev = s.event
        if p.kind == "ccr-t":
            s.done = True
            self.sessions_completed += 1
            return
        step = ev.hold / (ev.updates + 1)
        rtype = 2 if s.number <= ev.updates else 3
        self.host.later(step, self._step, (s, rtype), self.host.stats_for(_KIND[rtype]))

    def _step(self, arg: tuple[_Session, int]) -> None:
        s, rtype = arg
        now = time.monotonic()
        self._send(s, rtype, now, int(now - self.host.start))

    def _session_failed(self, s: _Session) -> None:
        if not s.done:
            s.done = True
            self.sessions_failed += 1
