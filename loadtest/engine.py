"""The storm engine: replays a trace as real user agents would, on asyncio + uvloop.

Shape (why it is built this way):

* One periodic tick (``TICK_S``) does all time-driven work: it starts the events that fell due,
  fires retransmissions, timeouts and delayed actions.  A timer handle per transaction would cost
  more than the transaction itself at 30,000/s; instead each retransmission interval has its own
  FIFO queue, which stays sorted because every entry in it was added ``interval`` after "now".
  Completed transactions are skipped lazily when their entry comes up.
* Client transactions follow RFC 3261 §17.1: over UDP a request is retransmitted after T1, the
  interval doubling (capped at T2 for non-INVITE, §17.1.2.2; uncapped for INVITE, §17.1.1.2),
  and abandoned after 64*T1 (Timers B and F).  A provisional response stops INVITE
  retransmissions and moves non-INVITE ones to T2.  Over WebSocket nothing is retransmitted.
* UAs send from a pool of UDP sockets (a UA always from the same one, as a real UA keeps its
  port) so per-source limits and SO_REUSEPORT hashing on the server see many sources.
* Responses are matched by slicing the fixed-length branch (``sipmsg.scan_response``); only INVITE
  dialogs, 503s and requests reaching our UAS side are parsed with ``protocols.sip``.
* 503 with Retry-After: the UA waits that long and sends again (RFC 3261 §21.5.4); a REGISTER that
  failed without one backs off as RFC 5626 §4.5 says.  Retries are bounded by MAX_ATTEMPTS.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import heapq
import math
import os
import random
import resource
import socket
import time
import zlib
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

from hdrh.histogram import HdrHistogram

from loadtest.clienttxn import TxnAction, TxnInput, TxnState, step
from loadtest.diameter import DiameterClient
from loadtest.metrics import (
    MAX_SERIES_SECONDS,
    KindStats,
    new_histogram,
    record_batch,
)
from loadtest.sipmsg import (
    SDP_OFFER,
    BranchFactory,
    Identity,
    UaTemplates,
    render_ack,
    render_bye,
    render_invite,
    retry_after,
    scan_response,
)
from loadtest.synth import backoff_wait
from loadtest.trace import Call, CcrSession, Event, Options, Register
from protocols.sip.builders import make_response
from protocols.sip.errors import RemoteProtocolError
from protocols.sip.message import NameAddr, Request, Response, SipURI
from protocols.sip.parser import parse_message
from protocols.sip.serializer import serialize
from protocols.sip.timers import DEFAULT_TIMERS
from protocols.sip.uri import parse_uri

__all__ = [
    "MAX_ATTEMPTS",
    "MAX_SOCKETS",
    "TICK_S",
    "CallStats",
    "Engine",
    "EngineConfig",
    "RunResult",
    "UasStats",
    "parse_target",
    "schedule_offsets",
]

#: The tick: 1 ms keeps lateness against the schedule to about a millisecond while costing only
#: a thousand wake-ups a second.
TICK_S = 0.001
#: Source sockets at most: each is a file descriptor, and a thousand ports already defeat any
#: per-source accounting on the server.
MAX_SOCKETS = 1024
#: First attempt + retries after 503/Retry-After or back-off: a UA that keeps failing four times
#: has shown what there is to show, and the bound keeps a dead server from growing our state.
MAX_ATTEMPTS = 4
#: Requests answered by our UAS side whose responses we keep for retransmitted requests
#: (RFC 3261 §17.2): a few seconds' worth at full rate.
MAX_UAS_CACHE = 65_536
#: Socket buffers asked of the kernel: a 10 ms burst at 30k/s of 500-byte messages is 150 KB;
#: 4 MB absorbs scheduling hiccups of the responder without drops.
SOCKET_BUFFER = 4 * 1024 * 1024
#: WebSocket connections at most, and frames waiting per connection before we count a drop.
MAX_WS_CONNECTIONS = 1000
WS_QUEUE_MAX = 10_000
#: A proceeding INVITE whose final answer never comes is given up after this long; RFC 3261
#: §16.6 step 11 bounds the proxy side the same way (Timer C, more than 3 minutes).
INVITE_PROCEEDING_GUARD_S = DEFAULT_TIMERS.timer_c
#: Callees are registered before the run at this rate so the pre-registration is not itself a
#: storm (unless the trace asks for one).
PREREG_RATE = 2000.0
#: Callee registrations sent per burst of the pre-registration: 50 ms of PREREG_RATE.
PREREG_BURST = 100
#: Poll interval while waiting for the pre-registration's answers.
PREREG_POLL_S = 0.01
#: Default Expires of a UA's REGISTER: RFC 3261 §10.2.1.1 suggests an hour.
DEFAULT_EXPIRES = 3600
#: Resolution of --ws-share: UAs are split by a hash of their user in 1/10000 steps.
WS_SHARE_STEPS = 10_000

#: Allocations between young-generation collections during a run (default 700): transactions
#: are acyclic and freed by reference counting, so the cyclic collector has little to find.
GC_GEN0_THRESHOLD = 100_000
#: Values collected by the hot path before they go into the HDR histograms; flushed every
#: FLUSH_S anyway.  Bounds both memory and the length of one flush (a stall of the loop).
MAX_SECOND_SAMPLES = 100_000
#: Flush interval: ten small flushes a second instead of one long one keep the loop's stalls
#: (and so the lateness tail) short.
FLUSH_S = 0.1
#: Per-second latency percentiles (the timeline) come from a uniform sample of at most this many
#: answers of that second (reservoir sampling): sorting 4096 values takes a fraction of a
#: millisecond.  The per-kind histograms stay exact.
SECOND_SAMPLE = 4096

_DONE = TxnState.DONE
_IGNORE = TxnAction.IGNORE
_RETRANSMIT = TxnInput.RETRANSMIT_DUE
_FINAL = TxnInput.FINAL
_CLASSES = [f"{i}xx" for i in range(10)]


def parse_target(url: str) -> tuple[str, int]:
    """``udp://host:port`` (or tcp://) to an address; the host is resolved once."""
    parts = urlsplit(url)
    if parts.scheme not in ("udp", "tcp") or not parts.hostname or not parts.port:
        raise ValueError(f"target must look like udp://host:port, got {url!r}")
    info = socket.getaddrinfo(parts.hostname, parts.port, socket.AF_INET, socket.SOCK_DGRAM)
    host, port = info[0][4][:2]
    return str(host), int(port)


def schedule_offsets(times: list[float], speed: float, ramp_up: float) -> list[float]:
    """Wall-clock offsets of trace times at ``speed``, with a linear ramp of the rate.

    During the ramp the rate factor grows linearly from 0 to 1 over ``ramp_up`` wall seconds, so
    trace time advances as w^2 / (2R); inverting gives w = sqrt(2 R tau) for tau < R/2, and
    tau + R/2 after.
    """
    if speed <= 0:
        raise ValueError("speed must be positive")
    out: list[float] = []
    r = ramp_up
    for t in times:
        tau = t / speed
        if r > 0 and tau < r / 2:
            out.append((2 * r * tau) ** 0.5)
        else:
            out.append(tau + r / 2 if r > 0 else tau)
    return out


@dataclass(slots=True)
class EngineConfig:
    target: tuple[str, int] | None = None
    ws_url: str | None = None
    ws_share: float = 1.0  # share of UAs on WebSocket when both --target and --ws are given
    ws_connections: int = 50
    speed: float = 1.0
    duration: float | None = None
    ramp_up: float = 0.0
    max_inflight: int = 100_000
    sockets: int = 64
    bind_host: str = "0.0.0.0"
    deadline: float = 1.0  # an answer within this many seconds counts as goodput
    t1: float = DEFAULT_TIMERS.t1
    t2: float = DEFAULT_TIMERS.t2
    register_callees: bool = True
    backoff: bool = True
    backoff_base: float = 30.0  # RFC 5626 §4.5 base-time when all flows failed
    backoff_max: float = 1800.0  # RFC 5626 §4.5 max-time
    drain: float | None = None  # default 64*T1
    diameter: tuple[str, int] | None = None
    diameter_origin_host: str = "storm.invalid"
    diameter_realm: str = "invalid"
    invite_guard: float = INVITE_PROCEEDING_GUARD_S
    diameter_tw: float = 30.0  # RFC 3539 §3.4.1 Tw: 30 s default, at least 6 s
    seed: int = 1
    progress: Callable[[dict[str, float]], None] | None = None


@dataclass(slots=True)
class CallStats:
    attempted: int = 0
    established: int = 0
    failed: int = 0
    completed: int = 0  # BYE answered
    abandoned: int = 0  # still up or setting up when the run ended


@dataclass(slots=True)
class UasStats:
    """Requests that reached our user agents as callees (via the server)."""

    requests: dict[str, int] = field(default_factory=dict)
    retransmissions_absorbed: int = 0
    ok_retransmitted: int = 0  # our 2xx re-sent while no ACK came (RFC 3261 §13.3.1.4)
    ack_timeouts: int = 0
    bad: int = 0  # unparseable datagrams: counted drops


@dataclass(slots=True)
class SecondPoint:
    second: int
    offered: int = 0
    answered: int = 0
    good: int = 0
    errors: int = 0  # timeouts + 5xx/6xx finals
    retransmissions: int = 0
    p50_us: float = 0.0
    p99_us: float = 0.0
    p999_us: float = 0.0


@dataclass(slots=True)
class RunResult:
    kinds: dict[str, KindStats]
    calls: CallStats
    uas: UasStats
    lateness: HdrHistogram
    timeline: list[SecondPoint]
    wall_s: float
    schedule_end_s: float
    cpu_user_s: float
    cpu_sys_s: float
    events_started: int
    events_skipped: dict[str, int]
    stray_responses: int
    deferred_by_cap: int
    send_errors: int  # ICMP errors on UDP, WebSocket frames dropped on a full or dead connection
    diameter: dict[str, Any]


class _Link:
    """Where a UA's messages go: a UDP socket toward the target, or a WebSocket."""

    __slots__ = ()

    def send(self, data: bytes) -> None:
        raise NotImplementedError

    def reply(self, data: bytes, addr: Any) -> None:
        raise NotImplementedError


class _UdpLink(_Link, asyncio.DatagramProtocol):
    __slots__ = ("addr", "engine", "local", "tr")

    def __init__(self, engine: Engine, target: tuple[str, int]) -> None:
        self.engine = engine
        self.addr = target
        self.tr: asyncio.DatagramTransport | None = None
        self.local: tuple[str, int] = ("0.0.0.0", 0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport does not subclass asyncio.DatagramTransport: a cast, no check.
        self.tr = cast(asyncio.DatagramTransport, transport)
        sock = transport.get_extra_info("socket")
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
        # (ICMP errors are not asked for with IP_RECVERR: uvloop 0.23 crashes reading the
        # socket's error queue.  An unreachable server shows as timeouts instead.)
        self.local = sock.getsockname()[:2]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.engine.on_message(data, addr, self)

    def error_received(self, exc: Exception) -> None:
        self.engine.send_errors += 1  # ICMP unreachable etc.: the timers will notice

    def send(self, data: bytes) -> None:
        self.tr.sendto(data, self.addr)  # type: ignore[union-attr]

    def reply(self, data: bytes, addr: Any) -> None:
        self.tr.sendto(data, addr)  # type: ignore[union-attr]


class _WsLink(_Link):
    """One WebSocket connection (RFC 7118, subprotocol "sip") shared by the UAs hashed to it."""

    __slots__ = ("engine", "host", "out", "task", "wake", "ws")

    def __init__(self, engine: Engine, index: int) -> None:
        self.engine = engine
        self.out: deque[bytes] = deque()
        self.wake = asyncio.Event()
        self.ws: Any = None
        self.host = b"st%05d.invalid" % index  # RFC 7118 §5.2: a random .invalid Via host
        self.task: asyncio.Task[None] | None = None

    def send(self, data: bytes) -> None:
        if len(self.out) >= WS_QUEUE_MAX or (self.task is not None and self.task.done()):
            self.engine.send_errors += 1
            return
        self.out.append(data)
        self.wake.set()

    def reply(self, data: bytes, addr: Any) -> None:
        self.send(data)

    async def run(self, url: str, ready: asyncio.Future[None]) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed

        async with connect(url, subprotocols=["sip"]) as ws:  # type: ignore[list-item]
            self.ws = ws
            if not ready.done():
                ready.set_result(None)
            reader = asyncio.create_task(self._read(ws))
            try:
                while not reader.done():
                    await self.wake.wait()
                    self.wake.clear()
                    while self.out:
                        await ws.send(self.out.popleft().decode("utf-8", "replace"))
            except ConnectionClosed:
                pass  # the reader sees the same close
            finally:
                reader.cancel()
        # The server closed the connection: this task ends, later sends count as errors and
        # the transactions on it time out (no reconnect within a run).
        self.engine.send_errors += len(self.out)
        self.out.clear()

    async def _read(self, ws: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        with contextlib.suppress(ConnectionClosed):
            async for msg in ws:
                data = msg.encode() if isinstance(msg, str) else bytes(msg)
                self.engine.on_message(data, None, self)
        self.wake.set()  # let the writer loop see the end


class _UA:
    __slots__ = ("failures", "from_tag", "ident", "link", "reg_call_id", "reg_cseq", "reg_next",
                 "reg_txn", "reliable", "tpl")

    def __init__(self, ident: Identity, link: _Link, reliable: bool) -> None:
        rnd = os.urandom(6).hex().encode()
        self.ident = ident
        self.link = link
        self.reliable = reliable
        self.reg_call_id = b"r" + rnd + b"@storm"
        self.from_tag = rnd
        self.reg_cseq = 0
        self.failures = 0
        # RFC 3261 §10.2: no new REGISTER before the previous one is answered or timed out; the
        # latest one due meanwhile waits here (an older waiting one is superseded by it).
        self.reg_txn: _Txn | None = None
        self.reg_next: tuple[KindStats, int, Register | None, int, bool, int] | None = None
        self.tpl = UaTemplates(ident, self.reg_call_id, self.from_tag, DEFAULT_EXPIRES)


class _Txn:
    __slots__ = ("attempt", "branch", "data", "dialog", "event", "invite", "second", "state",
                 "stats", "t0", "ua")

    def __init__(self, ua: _UA, stats: KindStats, branch: bytes, data: bytes, now: float,
                 second: int, event: Event | None, attempt: int, invite: bool) -> None:
        self.ua = ua
        self.stats = stats
        self.branch = branch
        self.data = data
        self.t0 = now
        self.second = second
        self.event = event
        self.attempt = attempt
        self.invite = invite
        self.state = TxnState.CALLING
        self.dialog: _Dialog | None = None


class _Dialog:
    """Caller side of a call (RFC 3261 §12.1.2, §13.2.2.4, §15.1.1)."""

    __slots__ = ("ack", "call_id", "event", "from_tag", "hold", "remote_target", "routes",
                 "ruri", "to", "ua")

    def __init__(self, ua: _UA, event: Call, ruri: bytes, to: bytes) -> None:
        self.ua = ua
        self.event = event
        self.call_id = os.urandom(8).hex().encode() + b"@storm"
        self.from_tag = os.urandom(5).hex().encode()
        self.ruri = ruri
        self.to = to
        self.remote_target = ruri
        self.routes: list[bytes] = []
        self.hold = event.hold
        self.ack = b""


class _UasDialog:
    __slots__ = ("acked", "addr", "interval", "link", "ok", "started")

    def __init__(self, ok: bytes, link: _Link, addr: Any, now: float, t1: float) -> None:
        self.ok = ok
        self.link = link
        self.addr = addr
        self.acked = False
        self.interval = t1
        self.started = now


class Engine:
    """Replays events; ``run()`` returns the measurements."""

    def __init__(self, events: list[Event], config: EngineConfig) -> None:
        self.events = events
        self.cfg = config
        self.offsets = schedule_offsets([e.t for e in events], config.speed, config.ramp_up)
        self.rng = random.Random(config.seed)
        self.branch = BranchFactory()
        self.kinds: dict[str, KindStats] = {}
        self.calls = CallStats()
        self.uas_stats = UasStats()
        self.lateness = new_histogram()
        self.late_pending: list[int] = []  # lateness (µs) not yet in the histogram
        self.txns: dict[bytes, _Txn] = {}
        self.dialogs: dict[str, _Dialog] = {}
        self.uas_dialogs: dict[str, _UasDialog] = {}
        self.uas_cache: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self.uas: dict[tuple[str, str], _UA] = {}
        self.users_by_name: dict[str, _UA] = {}
        self.udp: list[_UdpLink] = []
        self.ws: list[_WsLink] = []
        t1, t2 = config.t1, config.t2
        self.t1, self.t2, self.timeout = t1, t2, 64 * t1
        self.rq: dict[float, deque[tuple[float, _Txn]]] = {}
        # Every UDP transaction's first retransmission is T1 after its start: the hot queue.
        self.rq_t1 = self.rq[t1] = deque()
        self.timeouts: list[tuple[float, int, _Txn, TxnInput]] = []
        # Timers every entry of which has the same delay from when it was added, so FIFO order is
        # deadline order; they hold branches, not transactions, so a completed transaction is
        # freed at once rather than when its entry comes up.
        self.reliable_timeouts: deque[tuple[float, bytes]] = deque()  # Timer B/F on WebSocket
        self.guards: deque[tuple[float, bytes]] = deque()  # PROCEEDING INVITE guard
        self.actions: list[tuple[float, int, Callable[[Any], None], Any, KindStats | None]] = []
        self.seq = 0
        self.idx = 0
        self.start = 0.0
        self.local_ip = "127.0.0.1"
        self.send_errors = 0
        self.stray = 0
        self.deferred = 0
        self.skipped: dict[str, int] = {}
        self.timeline: list[SecondPoint] = []
        self.cur = SecondPoint(0)
        self.cur_second = 0
        self.sched_end = 0.0
        # This second's latencies: sorted once at the end of the second for its percentiles,
        # cheaper per answer than a second HDR histogram.
        self.cur_lat: list[int] = []
        self.sample_rng = random.Random(config.seed)
        self.next_flush = 0.0
        self.sched_done = False
        self.finish_at: float | None = None
        self.done: asyncio.Future[None] | None = None
        self.max_hold = max((e.hold for e in events if isinstance(e, Call | CcrSession)),
                            default=0.0)
        self.dia: DiameterClient | None = None

    # ---------------------------------------------------------------- setup

    def stats_for(self, kind: str) -> KindStats:
        return self._stats(kind)

    def later(self, delay: float, fn: Callable[[Any], None], arg: Any,
              stats: KindStats | None) -> None:
        self._later(delay, fn, arg, stats)

    def _stats(self, kind: str) -> KindStats:
        s = self.kinds.get(kind)
        if s is None:
            s = self.kinds[kind] = KindStats()
        return s

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        cfg = self.cfg
        if cfg.target is not None:
            probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                probe.connect(cfg.target)  # no packet: just asks the kernel for the source IP
                self.local_ip = probe.getsockname()[0]
            finally:
                probe.close()
            n = max(1, min(cfg.sockets, MAX_SOCKETS))
            for _ in range(n):
                link = _UdpLink(self, cfg.target)
                await loop.create_datagram_endpoint(_factory(link), local_addr=(cfg.bind_host, 0))
                self.udp.append(link)
        if cfg.ws_url is not None:
            n = max(1, min(cfg.ws_connections, MAX_WS_CONNECTIONS))
            readies = []
            for i in range(n):
                link_ws = _WsLink(self, i)
                ready: asyncio.Future[None] = loop.create_future()
                link_ws.task = asyncio.create_task(link_ws.run(cfg.ws_url, ready))
                link_ws.task.add_done_callback(functools.partial(_fail_ready, ready=ready))
                readies.append(ready)
                self.ws.append(link_ws)
            await asyncio.gather(*readies)
        if cfg.diameter is not None:
            self.dia = DiameterClient(self, cfg.diameter, cfg.diameter_origin_host,
                                      cfg.diameter_realm, tw=cfg.diameter_tw)
            await self.dia.open()

    def _close(self) -> None:
        for link in self.udp:
            if link.tr is not None:
                link.tr.close()
        for w in self.ws:
            if w.task is not None:
                w.task.cancel()

    def _ua(self, user: str, domain: str, transport: str | None) -> _UA | None:
        key = (user, domain)
        ua = self.uas.get(key)
        if ua is not None:
            return ua
        h = zlib.crc32(user.encode())
        use_ws = transport == "ws" or (
            transport is None
            and self.ws
            and (not self.udp or (h % WS_SHARE_STEPS) < self.cfg.ws_share * WS_SHARE_STEPS)
        )
        ub, db = user.encode(), domain.encode()
        if use_ws:
            if not self.ws:
                return None
            ws = self.ws[h % len(self.ws)]
            contact = b"sip:" + ub + b"@" + ws.host + b";transport=ws"
            ident = Identity(ub, db, b"WS", ws.host, contact)
            ua = _UA(ident, ws, True)
        else:
            if not self.udp:
                return None
            link = self.udp[h % len(self.udp)]
            hp = b"%s:%d" % (self.local_ip.encode(), link.local[1])
            ua = _UA(Identity(ub, db, b"UDP", hp, b"sip:" + ub + b"@" + hp), link, False)
        self.uas[key] = ua
        self.users_by_name.setdefault(user, ua)
        return ua

    # ---------------------------------------------------------------- run

    async def run(self) -> RunResult:
        loop = asyncio.get_running_loop()
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        thresholds = gc.get_threshold()
        try:
            await self._open()
            if self.cfg.register_callees:
                await self._preregister()
            self.done = loop.create_future()
            # The trace and the UAs are long-lived: freeze them out of the cyclic GC, and make
            # young collections rare.  A full collection over a million live objects stalls the
            # loop for tens of milliseconds, which would show up as lateness against the schedule.
            gc.collect()
            gc.freeze()
            gc.set_threshold(GC_GEN0_THRESHOLD, thresholds[1], thresholds[2])
            self.start = time.monotonic()
            self.cur_second = 0
            loop.call_soon(self._tick)
            await self.done
        finally:
            gc.set_threshold(*thresholds)
            gc.unfreeze()
            self._close()
            if self.dia is not None:
                await self.dia.close()
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        wall = time.monotonic() - self.start
        self._roll_second(int(wall) + 1)
        self._flush()
        return RunResult(
            kinds=self.kinds,
            calls=self.calls,
            uas=self.uas_stats,
            lateness=self.lateness,
            timeline=self.timeline,
            wall_s=wall,
            schedule_end_s=self.sched_end,
            cpu_user_s=r1.ru_utime - r0.ru_utime,
            cpu_sys_s=r1.ru_stime - r0.ru_stime,
            events_started=self.idx,
            events_skipped=self.skipped,
            stray_responses=self.stray,
            deferred_by_cap=self.deferred,
            send_errors=self.send_errors,
            diameter=self._diameter_summary(),
        )

    def _diameter_summary(self) -> dict[str, Any]:
        d = self.dia
        if d is None:
            return {}
        return {"sessions_started": d.sessions_started,
                "sessions_completed": d.sessions_completed,
                "sessions_failed": d.sessions_failed, "dropped": d.dropped,
                "dwr_sent": d.machine.sent_dwr, "dwa_received": d.machine.received_dwa,
                "closed": d.closed_reason}

    async def _preregister(self) -> None:
        callees = sorted({(e.callee, e.callee_domain or e.domain, e.transport)
                          for e in self.events if isinstance(e, Call)})
        if not callees:
            return
        stats = self._stats("prereg")
        self.start = time.monotonic()
        for i, (user, domain, transport) in enumerate(callees):
            ua = self._ua(user, domain, transport)
            if ua is None:
                continue
            self._send_register(ua, stats, DEFAULT_EXPIRES, None, 1, False, 0, time.monotonic())
            if i % PREREG_BURST == PREREG_BURST - 1:
                await asyncio.sleep(PREREG_BURST / PREREG_RATE)
                self._timers(time.monotonic())
        deadline = time.monotonic() + self.timeout
        while self.txns and time.monotonic() < deadline:
            await asyncio.sleep(PREREG_POLL_S)
            self._timers(time.monotonic())

    def _tick(self) -> None:
        """One tick; a bug inside ends the run with its exception instead of hanging it."""
        assert self.done is not None
        try:
            self._tick_body()
        except Exception as exc:  # handed to run(), which re-raises it
            if not self.done.done():
                self.done.set_exception(exc)

    def _tick_body(self) -> None:
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        el = now - self.start
        sec = int(el)
        if sec != self.cur_second:
            self._roll_second(sec)
        if not self.sched_done:
            self._start_due(el, now)
        self._timers(now)
        if now >= self.next_flush:
            self._flush()
            self.next_flush = now + FLUSH_S
        if self.sched_done and self._finished(now):
            self._abandon_rest()
            assert self.done is not None
            if not self.done.done():
                self.done.set_result(None)
            return
        loop.call_at(loop.time() + TICK_S, self._tick)

    def _start_due(self, el: float, now: float) -> None:
        offs, events, n = self.offsets, self.events, len(self.events)
        cap = self.cfg.max_inflight
        dur = self.cfg.duration
        late = self.late_pending
        i = self.idx
        while i < n and offs[i] <= el:
            if dur is not None and offs[i] > dur:
                break
            if len(self.txns) >= cap:
                self.deferred += 1
                break
            late.append(int((el - offs[i]) * 1e6))
            self._start_event(events[i], 1, int(offs[i]), now)
            i += 1
        self.idx = i
        if len(late) >= MAX_SECOND_SAMPLES:
            self._flush()
        if i >= n or (dur is not None and el >= dur):
            self._end_schedule(now, el)

    def _end_schedule(self, now: float, el: float) -> None:
        self.sched_done = True
        self.sched_end = el
        drain = self.cfg.drain if self.cfg.drain is not None else self.timeout
        if self.cfg.duration is not None and el >= self.cfg.duration:
            # The run is over: every caller hangs up now (§15.1.1), the rest is abandoned.
            for d in list(self.dialogs.values()):
                if d.ack:
                    self._send_bye(d, now)
            self.finish_at = now + drain
        else:
            self.finish_at = now + drain + self.max_hold

    def _finished(self, now: float) -> bool:
        assert self.finish_at is not None
        if now >= self.finish_at:
            return True
        busy = self.dia is not None and self.dia.busy
        return not self.txns and not self.actions and not self.dialogs and not busy

    def _abandon_rest(self) -> None:
        for txn in self.txns.values():
            txn.stats.abandoned += 1
        for _, _, _, _, stats in self.actions:
            if stats is not None:
                stats.abandoned += 1
        self.calls.abandoned += len(self.dialogs)
        for ua in self.uas.values():
            if ua.reg_next is not None:
                ua.reg_next[0].abandoned += 1
        if self.dia is not None:
            self.dia.abandon()

    # ---------------------------------------------------------------- timers

    def _timers(self, now: float) -> None:
        t2 = self.t2
        for interval, dq in list(self.rq.items()):
            while dq and dq[0][0] <= now:
                due, txn = dq.popleft()
                if txn.state is _DONE:
                    continue  # the common case, answered: skip the table lookup
                action, txn.state = step(txn.invite, txn.state, _RETRANSMIT)
                if action is _IGNORE:
                    continue
                txn.ua.link.send(txn.data)
                txn.stats.retransmissions += 1
                self.cur.retransmissions += 1
                if action is TxnAction.RETRANSMIT_DOUBLE:
                    nxt = 2 * interval
                elif action is TxnAction.RETRANSMIT_T2:
                    nxt = t2
                else:
                    nxt = min(2 * interval, t2)
                # From the due time, not from now: a late tick must not stretch the schedule.
                self._arm(txn, nxt, due)
        for fifo, inp in ((self.reliable_timeouts, TxnInput.TIMEOUT_DUE),
                          (self.guards, TxnInput.GUARD_DUE)):
            while fifo and fifo[0][0] <= now:
                live = self.txns.get(fifo.popleft()[1])
                if live is not None:
                    action, live.state = step(live.invite, live.state, inp)
                    if action is TxnAction.TIME_OUT:
                        self._on_timeout(live, now)
        tq = self.timeouts
        while tq and tq[0][0] <= now:
            _, _, txn, inp = heapq.heappop(tq)
            action, txn.state = step(txn.invite, txn.state, inp)
            if action is TxnAction.TIME_OUT:
                self._on_timeout(txn, now)
        if self.dia is not None:
            self.dia.tick(now)
        aq = self.actions
        while aq and aq[0][0] <= now:
            _, _, fn, arg, _ = heapq.heappop(aq)
            fn(arg)

    def _arm(self, txn: _Txn, interval: float, now: float) -> None:
        """Next retransmission, or the Timer B/F entry when it comes first."""
        if txn.ua.reliable:
            self.reliable_timeouts.append((txn.t0 + self.timeout, txn.branch))
            return
        if now + interval >= txn.t0 + self.timeout:
            self._arm_timeout(txn, txn.t0 + self.timeout, TxnInput.TIMEOUT_DUE)
            return
        dq = self.rq.get(interval)
        if dq is None:
            dq = self.rq[interval] = deque()
        dq.append((now + interval, txn))

    def _arm_timeout(self, txn: _Txn, at: float, inp: TxnInput) -> None:
        self.seq += 1
        heapq.heappush(self.timeouts, (at, self.seq, txn, inp))

    def _later(self, delay: float, fn: Callable[[Any], None], arg: Any,
               stats: KindStats | None) -> None:
        self.seq += 1
        heapq.heappush(self.actions, (time.monotonic() + delay, self.seq, fn, arg, stats))

    def _on_timeout(self, txn: _Txn, now: float) -> None:
        self.txns.pop(txn.branch, None)
        if txn.ua.reg_txn is txn:
            self._register_done(txn.ua, now)
        txn.stats.timeouts += 1
        self.cur.errors += 1
        txn.data = b""
        if txn.dialog is not None:
            self._call_failed(txn.dialog)
        elif isinstance(txn.event, Register):
            self._backoff(txn)

    # ---------------------------------------------------------------- sending

    def _start_txn(self, ua: _UA, stats: KindStats, branch: bytes, data: bytes, now: float,
                   second: int, event: Event | None, attempt: int, invite: bool,
                   lose: bool) -> _Txn:
        txn = _Txn(ua, stats, branch, data, now, second, event, attempt, invite)
        self.txns[branch] = txn
        stats.sent += 1
        stats.offered.add(second)
        self.cur.offered += 1
        if lose:
            stats.lost_simulated += 1
        else:
            ua.link.send(data)
        if ua.reliable:
            self._arm(txn, self.t1, now)
        else:
            self.rq_t1.append((now + self.t1, txn))  # Timer A/E starts at T1 (§17.1.1.2)
        return txn

    def _start_event(self, ev: Event, attempt: int, second: int, now: float) -> None:
        if isinstance(ev, CcrSession):
            if self.dia is None:
                self.skipped["ccr-session"] = self.skipped.get("ccr-session", 0) + 1
            else:
                self.dia.start_session(ev, now, second)
            return
        ua = self._ua(ev.user, ev.domain, ev.transport)
        if ua is None:
            self.skipped["no-transport"] = self.skipped.get("no-transport", 0) + 1
            return
        lose = ev.lose_first and attempt == 1
        if isinstance(ev, Register):
            self._send_register(ua, self._stats("register"), ev.expires, ev, attempt, lose,
                                second, now)
        elif isinstance(ev, Options):
            self._send_options(ua, ev, attempt, lose, second, now)
        else:
            self._send_invite(ua, ev, attempt, lose, second, now)

    def _send_register(self, ua: _UA, stats: KindStats, expires: int, ev: Register | None,
                       attempt: int, lose: bool, second: int, now: float) -> None:
        if ua.reg_txn is not None:
            if ua.reg_next is not None:
                ua.reg_next[0].superseded += 1
            ua.reg_next = (stats, expires, ev, attempt, lose, second)
            stats.queued += 1
            return
        ua.reg_cseq += 1
        br = self.branch()
        a, b, c = ua.tpl.register_parts
        if expires != DEFAULT_EXPIRES:
            c = c.replace(b"Expires: %d\r\n" % DEFAULT_EXPIRES, b"Expires: %d\r\n" % expires)
        ua.reg_txn = self._start_txn(ua, stats, br, a + br + b + b"%d" % ua.reg_cseq + c, now,
                                     second, ev, attempt, False, lose)

    def _register_done(self, ua: _UA, now: float) -> None:
        """The UA's REGISTER is answered or timed out: send the one that waited, if any."""
        ua.reg_txn = None
        nxt, ua.reg_next = ua.reg_next, None
        if nxt is not None:
            stats, expires, ev, attempt, lose, second = nxt
            self._send_register(ua, stats, expires, ev, attempt, lose, second, now)

    def _send_options(self, ua: _UA, ev: Options, attempt: int, lose: bool, second: int,
                      now: float) -> None:
        br = self.branch()
        data = ua.tpl.options_request(br, br[-12:] + b"@storm")
        if ev.target is not None:
            data = data.replace(b"OPTIONS sip:" + ua.ident.domain,
                                b"OPTIONS sip:" + ev.target.encode() + b"@" + ua.ident.domain, 1)
        self._start_txn(ua, self._stats("options"), br, data, now, second, ev, attempt, False,
                        lose)

    def _send_invite(self, ua: _UA, ev: Call, attempt: int, lose: bool, second: int,
                     now: float) -> None:
        uri = b"sip:%s@%s" % (ev.callee.encode(), (ev.callee_domain or ev.domain).encode())
        d = _Dialog(ua, ev, uri, b"<" + uri + b">")
        br = self.branch()
        data = render_invite(ua.ident, br, uri, d.to, d.call_id, d.from_tag)
        self.dialogs[d.call_id.decode()] = d
        if attempt == 1:
            self.calls.attempted += 1
        txn = self._start_txn(ua, self._stats("invite"), br, data, now, second, ev, attempt,
                              True, lose)
        txn.dialog = d

    def _send_bye(self, d: _Dialog, now: float) -> None:
        if not d.ack or d.call_id.decode() not in self.dialogs:
            return
        d.ack = b""  # no BYE twice: the dialog is terminating
        br = self.branch()
        data = render_bye(d.ua.ident, br, d.remote_target, d.routes, d.to, d.call_id,
                          d.from_tag, 2)
        sec = int(now - self.start)
        txn = self._start_txn(d.ua, self._stats("bye"), br, data, now, sec, None, 1, False, False)
        txn.dialog = d

    # ---------------------------------------------------------------- receiving

    def on_message(self, data: bytes, addr: Any, link: _Link) -> None:
        """Every datagram or WebSocket message; the hot path for responses is inlined."""
        r = scan_response(data)
        if r is None:
            if data[:8] == b"SIP/2.0 ":
                self.stray += 1
            else:
                self._on_request(data, addr, link)
            return
        status, br = r
        txn = self.txns.get(br)
        if txn is None:
            self._on_stray(status, data)
            return
        now = time.monotonic()
        stats = txn.stats
        if status < 200:
            was = txn.state
            _, txn.state = step(txn.invite, was, TxnInput.PROVISIONAL)
            stats.provisional += 1
            if txn.invite and was is TxnState.CALLING:
                self.guards.append((now + self.cfg.invite_guard, br))
            return
        _, txn.state = step(txn.invite, txn.state, _FINAL)
        del self.txns[br]
        if txn.ua.reg_txn is txn:
            self._register_done(txn.ua, now)
        lat = now - txn.t0
        lat_us = int(lat * 1e6)
        key = _CLASSES[status // 100]
        answered = stats.answered
        answered[key] = answered.get(key, 0) + 1
        cur = self.cur
        cur.answered += 1
        stats.pending.append(lat_us)
        sample = self.cur_lat
        if len(sample) < SECOND_SAMPLE:
            sample.append(lat_us)
        else:  # reservoir sampling (Algorithm R): every answer equally likely to be kept
            j = int(self.sample_rng.random() * cur.answered)
            if j < SECOND_SAMPLE:
                sample[j] = lat_us
        if len(stats.pending) >= MAX_SECOND_SAMPLES:
            stats.flush()
        if status < 300 and txn.ua.failures:
            txn.ua.failures = 0  # RFC 5626 §4.5: the back-off restarts after a success
        if status < 300 and lat <= self.cfg.deadline:
            cur.good += 1
            stats.goodput.add(txn.second)
        elif status >= 500:
            cur.errors += 1
            if status == 503:
                stats.status_503 += 1
        if status >= 300:
            stats.failures[status] = stats.failures.get(status, 0) + 1
        d = txn.dialog
        if d is not None and not txn.invite:
            # BYE answered: the call is over whatever the status (§15.1.1); nothing to parse.
            if self.dialogs.pop(d.call_id.decode(), None) is not None:
                self.calls.completed += 1
        elif txn.invite or status >= 300:
            self._on_final_slow(txn, status, data, now)
        txn.data = b""

    def _on_final_slow(self, txn: _Txn, status: int, data: bytes, now: float) -> None:
        try:
            msg = parse_message(data)
        except RemoteProtocolError:
            self.stray += 1
            return
        if not isinstance(msg, Response):
            return
        d = txn.dialog
        if txn.invite and d is not None:
            if status < 300:
                self._established(d, msg, now)
                return
            # §17.1.1.3: ACK a non-2xx on the INVITE's branch, with the response's To.
            ack = render_ack(d.ua.ident, txn.branch, d.ruri, [], str(msg.to).encode(),
                             d.call_id, d.from_tag)
            d.ua.link.send(ack)
        if status >= 300 and not self._retry(txn, msg) and d is not None:
            self._call_failed(d)

    def _established(self, d: _Dialog, msg: Response, now: float) -> None:
        # §12.1.2: route set = Record-Route reversed; remote target = Contact.
        d.to = str(msg.to).encode()
        d.routes = [str(rr).encode() for rr in reversed(msg.record_routes)]
        if msg.contacts:
            d.remote_target = str(msg.contacts[0].uri).encode()
        d.ack = render_ack(d.ua.ident, self.branch(), d.remote_target, d.routes, d.to,
                           d.call_id, d.from_tag)
        d.ua.link.send(d.ack)
        self.calls.established += 1
        self._later(d.hold, lambda dd: self._send_bye(dd, time.monotonic()), d,
                    self._stats("bye"))

    def _call_failed(self, d: _Dialog) -> None:
        self.dialogs.pop(d.call_id.decode(), None)
        self.calls.failed += 1

    def _retry(self, txn: _Txn, msg: Response) -> bool:
        """503 + Retry-After (§21.5.4) or REGISTER back-off (RFC 5626 §4.5); True if retried."""
        if txn.event is None or txn.attempt >= MAX_ATTEMPTS:
            return False
        if msg.status == 503:
            ra = retry_after(msg.headers("Retry-After"))
            if ra is not None:
                if txn.dialog is not None:
                    self.dialogs.pop(txn.dialog.call_id.decode(), None)
                self._later(ra, self._resend, (txn, True), txn.stats)
                return True
        if isinstance(txn.event, Register) and msg.status >= 500:
            return self._backoff(txn)
        return False

    def _backoff(self, txn: _Txn) -> bool:
        if not self.cfg.backoff or txn.attempt >= MAX_ATTEMPTS:
            return False
        txn.ua.failures += 1
        wait = backoff_wait(self.rng, txn.ua.failures, self.cfg.backoff_base,
                            self.cfg.backoff_max)
        self._later(wait, self._resend, (txn, False), txn.stats)
        return True

    def _resend(self, arg: tuple[_Txn, bool]) -> None:
        txn, honoured = arg
        if self.sched_done and self.cfg.duration is not None:
            txn.stats.abandoned += 1
            return
        if honoured:
            txn.stats.retry_after_honoured += 1
        else:
            txn.stats.backoff_retries += 1
        now = time.monotonic()
        assert txn.event is not None
        self._start_event(txn.event, txn.attempt + 1, int(now - self.start), now)

    def _on_stray(self, status: int, data: bytes) -> None:
        """A response with no live transaction: a retransmitted 2xx to our INVITE gets its ACK
        again (§13.2.2.4); everything else is counted and dropped."""
        self.stray += 1
        if status >= 300 or b"INVITE" not in data:
            return
        try:
            msg = parse_message(data)
        except RemoteProtocolError:
            return
        d = self.dialogs.get(msg.call_id)
        if d is not None and d.ack and msg.cseq.method == "INVITE":
            d.ua.link.send(d.ack)

    # ---------------------------------------------------------------- UAS side

    def _on_request(self, data: bytes, addr: Any, link: _Link) -> None:
        try:
            req = parse_message(data)
        except RemoteProtocolError:
            self.uas_stats.bad += 1
            return
        if not isinstance(req, Request):
            return
        st = self.uas_stats
        st.requests[req.method] = st.requests.get(req.method, 0) + 1
        key = (req.vias[0].branch or "", req.method)
        cached = self.uas_cache.get(key)
        if cached is not None:
            st.retransmissions_absorbed += 1
            link.reply(cached, addr)
            return
        if req.method == "ACK":
            ud = self.uas_dialogs.get(req.call_id)
            if ud is not None:
                ud.acked = True
            return
        resp = self._answer(req, link, addr)
        if resp is None:
            return
        out = serialize(resp)
        self.uas_cache[key] = out
        if len(self.uas_cache) > MAX_UAS_CACHE:
            self.uas_cache.popitem(last=False)
        link.reply(out, addr)

    def _answer(self, req: Request, link: _Link, addr: Any) -> Response | None:
        tag = os.urandom(5).hex()
        if req.method == "INVITE":
            return self._answer_invite(req, link, tag, addr)
        if req.method == "BYE":
            self.uas_dialogs.pop(req.call_id, None)
            return make_response(req, 200, to_tag=tag)
        if req.method in ("OPTIONS", "CANCEL"):
            return make_response(req, 200, to_tag=tag)
        return make_response(req, 501, to_tag=tag)

    def _answer_invite(self, req: Request, link: _Link, tag: str, addr: Any) -> Response:
        user = req.uri.user if isinstance(req.uri, SipURI) else None
        ua = self.users_by_name.get(user or "")
        if ua is None:
            return make_response(req, 404, to_tag=tag)
        # A real phone rings first; the 180 also stops the caller's INVITE retransmissions.
        link.reply(serialize(make_response(req, 180, to_tag=tag)), addr)
        resp = make_response(req, 200, to_tag=tag)
        # §12.1.1: the UAS copies Record-Route into the 2xx and gives its Contact.
        resp.record_routes = list(req.record_routes)
        resp.contacts = [NameAddr(parse_uri(ua.ident.contact.decode()))]
        resp.content_type = "application/sdp"
        resp.body = SDP_OFFER
        ok = serialize(resp)
        if not ua.reliable and len(self.uas_dialogs) < MAX_UAS_CACHE:
            ud = _UasDialog(ok, link, addr, time.monotonic(), self.t1)
            self.uas_dialogs[req.call_id] = ud
            self._later(self.t1, self._retransmit_ok, (req.call_id, ud), None)
        return resp

    def _retransmit_ok(self, arg: tuple[str, _UasDialog]) -> None:
        """§13.3.1.4: re-send the 2xx at T1 doubling to T2 until the ACK; give up at 64*T1."""
        call_id, ud = arg
        if ud.acked or self.uas_dialogs.get(call_id) is not ud:
            return
        if time.monotonic() - ud.started >= self.timeout:
            self.uas_stats.ack_timeouts += 1
            self.uas_dialogs.pop(call_id, None)
            return
        ud.link.reply(ud.ok, ud.addr)
        self.uas_stats.ok_retransmitted += 1
        ud.interval = min(2 * ud.interval, self.t2)
        self._later(ud.interval, self._retransmit_ok, arg, None)

    # ---------------------------------------------------------------- per second

    def _flush(self) -> None:
        """Move the values the hot path collected into the HDR histograms, grouped by value."""
        record_batch(self.lateness, self.late_pending)
        self.late_pending = []
        for k in self.kinds.values():
            k.flush()

    def _roll_second(self, sec: int) -> None:
        """Close the current second (and any skipped ones) into the timeline."""
        while self.cur_second < sec:
            cur, lats = self.cur, self.cur_lat
            if lats:
                lats.sort()
                cur.p50_us, cur.p99_us, cur.p999_us = (
                    float(lats[min(len(lats) - 1, math.ceil(p * len(lats)) - 1)])
                    for p in (0.5, 0.99, 0.999))
                self.cur_lat = []
            if len(self.timeline) < MAX_SERIES_SECONDS:
                self.timeline.append(cur)
            if self.cfg.progress is not None:
                self.cfg.progress({
                    "second": float(cur.second), "offered": float(cur.offered),
                    "good": float(cur.good), "p99_ms": cur.p99_us / 1000.0,
                    "errors": float(cur.errors), "started": float(self.idx),
                    "inflight": float(len(self.txns)),
                })
            self.cur_second += 1
            self.cur = SecondPoint(self.cur_second)


def _factory(link: _UdpLink) -> Callable[[], _UdpLink]:
    return lambda: link


def _fail_ready(task: asyncio.Task[None], ready: asyncio.Future[None]) -> None:
    if ready.done():
        return
    exc = task.exception() if not task.cancelled() else asyncio.CancelledError()
    ready.set_exception(exc or ConnectionError("WebSocket closed"))
