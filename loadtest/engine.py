"""The storm engine: replays a trace as real user agents would, on asyncio + uvloop.

Shape (why it is built this way): one periodic tick (``TICK_S``) does all time-driven work: it
starts the events that fell due, fires the timers (``timers``), closes seconds into the timeline
(``timeline``) and flushes the histograms.  The parts it drives are modules of their own:

* ``links``: UDP sockets and WebSocket connections toward the server;
* ``uac``: the UAs, their client transactions (RFC 3261 §17.1) and calls, retries and back-off;
* ``uas``: what our UAs answer as callees when the server routes requests to them;
* ``timers``: retransmission FIFOs, Timers B/F, the INVITE guard and delayed actions;
* ``timeline``: the per-second series and the injector's lateness against its schedule;
* ``diameter``: the Diameter client for ``ccr-session`` events.
"""

from __future__ import annotations

import asyncio
import gc
import resource
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from hdrh.histogram import HdrHistogram

from loadtest.agents import DEFAULT_EXPIRES, UA
from loadtest.auth import Passwords
from loadtest.diameter import DiameterClient
from loadtest.links import open_udp, open_ws
from loadtest.metrics import KindStats
from loadtest.timeline import SecondPoint, Timeline
from loadtest.trace import Call, CcrSession, Event
from loadtest.uac import MAX_ATTEMPTS, CallStats, Uac, UacConfig
from loadtest.uas import Uas, UasStats
from protocols.sip.timers import DEFAULT_TIMERS

__all__ = [
    "MAX_ATTEMPTS",
    "TICK_S",
    "CallStats",
    "Engine",
    "EngineConfig",
    "RunResult",
    "SecondPoint",
    "UasStats",
    "parse_target",
    "schedule_offsets",
]

#: The tick: 1 ms keeps lateness against the schedule to about a millisecond while costing only
#: a thousand wake-ups a second.
TICK_S = 0.001
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
#: Rounds of the pre-registration: the callees not bound after one are registered again.
PREREG_ROUNDS = 6
#: Wait before the next round when the refusals gave no Retry-After (or none was refused).
PREREG_RETRY_S = 1.0
#: The longest wait between rounds: a Retry-After of an hour (``MAX_RETRY_AFTER_S``) would
#: park the set-up for hours; past this the round goes anyway (64*T1, Timer F's span).
PREREG_WAIT_MOST = 32.0
#: Allocations between young-generation collections during a run (default 700): transactions
#: are acyclic and freed by reference counting, so the cyclic collector has little to find.
GC_GEN0_THRESHOLD = 100_000
#: Flush interval: ten small flushes a second instead of one long one keep the loop's stalls
#: (and so the lateness tail) short.
FLUSH_S = 0.1
#: Lateness values collected before a flush is forced.
MAX_LATE_PENDING = 100_000


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
    #: An event due longer ago than this (seconds) when the injector gets to it is not sent
    #: but counted (``events_skipped["behind-schedule"]``): a rate test then offers what it
    #: can within the schedule rather than stretching it.  None: every event is sent, late.
    max_lateness: float | None = None
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
    expected: frozenset[int] = frozenset()  # final codes the scenario expects: not errors
    passwords: Passwords | None = None  # answer 401/407 with credentials (loadtest.auth)
    #: Called with each second as it closes (the CSV writer, the live view).
    on_second: Callable[[SecondPoint, Engine], None] | None = None


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
    events_total: int = 0
    schedule_s: float = 0.0  # when the last event was due, by the schedule
    offered_per_s: list[int] = field(default_factory=list)  # events due per second, by schedule
    rx_drops: int = 0  # answers the kernel dropped on our sockets, their buffers full


class Engine:
    """Replays events; ``run()`` returns the measurements."""

    def __init__(self, events: list[Event], config: EngineConfig) -> None:
        self.events = events
        self.cfg = config
        self.offsets = schedule_offsets([e.t for e in events], config.speed, config.ramp_up)
        self.kinds: dict[str, KindStats] = {}
        on_second = config.on_second
        self.timeline = Timeline(config.seed, None if on_second is None
                                 else lambda p: on_second(p, self))
        ucfg = UacConfig(deadline=config.deadline, ws_share=config.ws_share,
                         backoff=config.backoff, backoff_base=config.backoff_base,
                         backoff_max=config.backoff_max, expected=config.expected,
                         passwords=config.passwords)
        self.uac = Uac(ucfg, self.stats_for, self.timeline, self._on_request, config.t1,
                       config.t2, config.invite_guard, config.seed)
        self.timers = self.uac.timers
        self.uas = Uas(self.uac.users_by_name, self.timers)
        self.idx = 0
        self.deferred = 0
        self.sched_end = 0.0
        self.next_flush = 0.0
        self.sched_done = False
        self.finish_at: float | None = None
        self.done: asyncio.Future[None] | None = None
        self.max_hold = max((e.hold for e in events if isinstance(e, Call | CcrSession)),
                            default=0.0)
        self.dia: DiameterClient | None = None
        # The injector's own load, sampled as each second closes (``_sample_self``).
        self.self_wall = self.self_cpu = 0.0
        self.self_drops = 0
        self.closed_drops: int | None = None  # the total, read before the sockets closed
        # Events due per second by the schedule (the offered load, whatever the server does).
        self.offered: list[int] = []
        for off in self.offsets:
            sec = int(off)
            if config.duration is not None and off > config.duration:
                break
            if sec >= len(self.offered):
                self.offered.extend([0] * (sec + 1 - len(self.offered)))
            self.offered[sec] += 1

    # ---------------------------------------------------------------- what others use

    @property
    def start(self) -> float:
        return self.uac.start

    @property
    def deadline(self) -> float:
        return self.cfg.deadline

    def stats_for(self, kind: str) -> KindStats:
        s = self.kinds.get(kind)
        if s is None:
            s = self.kinds[kind] = KindStats()
        return s

    def later(self, delay: float, fn: Callable[[Any], None], arg: Any,
              stats: KindStats | None) -> None:
        self.timers.later(delay, fn, arg, stats)

    def inflight(self) -> int:
        return len(self.uac.txns) + (len(self.dia.pending) if self.dia is not None else 0)

    def _on_request(self, data: bytes, addr: Any, link: Any) -> None:
        self.uas.on_request(data, addr, link)

    # ---------------------------------------------------------------- setup

    async def _open(self) -> None:
        cfg, uac = self.cfg, self.uac
        if cfg.target is not None:
            uac.local_ip, uac.udp = await open_udp(uac, cfg.target, cfg.sockets, cfg.bind_host)
        if cfg.ws_url is not None:
            uac.ws = await open_ws(uac, cfg.ws_url, cfg.ws_connections)
        if cfg.diameter is not None:
            self.dia = DiameterClient(self, cfg.diameter, cfg.diameter_origin_host,
                                      cfg.diameter_realm, tw=cfg.diameter_tw)
            await self.dia.open()

    def _close(self) -> None:
        for link in (*self.uac.udp, *self.uac.ws):
            link.close()

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
            self.uac.start = time.monotonic()
            self.timeline.restart()  # the pre-registration is set-up: its own kind, not second 0
            self._sample_self()
            loop.call_soon(self._tick)
            await self.done
        finally:
            gc.set_threshold(*thresholds)
            gc.unfreeze()
            self.closed_drops = self.rx_drops()
            self._close()
            if self.dia is not None:
                await self.dia.close()
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        wall = time.monotonic() - self.start
        self._roll(int(wall) + 1)
        self._flush()
        uac = self.uac
        return RunResult(
            kinds=self.kinds,
            calls=uac.calls,
            uas=self.uas.stats,
            lateness=self.timeline.lateness,
            timeline=self.timeline.points,
            wall_s=wall,
            schedule_end_s=self.sched_end,
            cpu_user_s=r1.ru_utime - r0.ru_utime,
            cpu_sys_s=r1.ru_stime - r0.ru_stime,
            events_started=self.idx,
            events_skipped=uac.skipped,
            stray_responses=uac.stray,
            deferred_by_cap=self.deferred,
            send_errors=uac.send_errors(),
            diameter=self._diameter_summary(),
            events_total=len(self.events),
            schedule_s=self.offsets[-1] if self.offsets else 0.0,
            offered_per_s=self.offered,
            rx_drops=self.rx_drops(),
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
        """Bind every callee before the schedule starts: a flash crowd calls users who are
        registered already.  A REGISTER refused (a 503 of a server whose admission control
        reads the set-up's bursts as a storm) is sent again once the longest Retry-After
        given is over (RFC 3261 §21.5.4), in up to PREREG_ROUNDS rounds; a callee left
        unbound would turn its calls into 404s that say nothing of the storm, so those are
        counted (``events_skipped["callee-not-registered"]``)."""
        uac = self.uac
        uas = [ua for key in sorted({(e.callee, e.callee_domain or e.domain, e.transport)
                                     for e in self.events if isinstance(e, Call)})
               if (ua := uac.ua(*key)) is not None]
        if not uas:
            return
        stats = self.stats_for("prereg")
        uac.start = time.monotonic()
        for _ in range(PREREG_ROUNDS):
            todo = [ua for ua in uas if not ua.bound]
            if not todo:
                return
            uac.setup_wait = 0.0
            await self._register_round(todo, stats)
            if any(not ua.bound for ua in todo):
                await self._idle(min(uac.setup_wait or PREREG_RETRY_S, PREREG_WAIT_MOST))
        unbound = sum(1 for ua in uas if not ua.bound)
        if unbound:
            uac.skipped["callee-not-registered"] = unbound

    async def _register_round(self, uas: list[UA], stats: KindStats) -> None:
        """One REGISTER for each of ``uas`` at PREREG_RATE; back when all are answered or
        timed out."""
        uac = self.uac
        for i, ua in enumerate(uas):
            uac.send_register(ua, stats, DEFAULT_EXPIRES, None, 1, False, 0, time.monotonic())
            if i % PREREG_BURST == PREREG_BURST - 1:
                await self._idle(PREREG_BURST / PREREG_RATE)
        deadline = time.monotonic() + self.timers.timeout
        while uac.txns and time.monotonic() < deadline:
            await self._idle(PREREG_POLL_S)

    async def _idle(self, seconds: float) -> None:
        """Sleep ``seconds`` while the transactions' timers run (retransmissions, Timer F)."""
        end = time.monotonic() + seconds
        while (now := time.monotonic()) < end:
            await asyncio.sleep(min(PREREG_POLL_S, end - now))
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
        if sec != self.timeline.second:
            self._roll(sec)
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
        txns = self.uac.txns
        late = self.timeline.late_pending
        cur = self.timeline.cur
        behind = self.cfg.max_lateness
        i = start = self.idx
        skipped = 0
        while i < n and offs[i] <= el:
            if dur is not None and offs[i] > dur:
                break
            if behind is not None and el - offs[i] > behind:
                skipped += 1  # past saving: the injector could not offer it in time
                i += 1
                continue
            if len(txns) >= cap:
                self.deferred += 1
                cur.deferred += 1
                break
            late.append(int((el - offs[i]) * 1e6))
            self._start_event(events[i], int(offs[i]), now)
            i += 1
        self.idx = i
        cur.started += i - start - skipped
        if skipped:
            sk = self.uac.skipped
            sk["behind-schedule"] = sk.get("behind-schedule", 0) + skipped
        if len(late) >= MAX_LATE_PENDING:
            self.timeline.flush()
        if i >= n or (dur is not None and el >= dur):
            self._end_schedule(now, el)

    def _start_event(self, ev: Event, second: int, now: float) -> None:
        if not isinstance(ev, CcrSession):
            self.uac.start_event(ev, 1, second, now)
        elif self.dia is None:
            skipped = self.uac.skipped
            skipped["ccr-session"] = skipped.get("ccr-session", 0) + 1
        else:
            self.dia.start_session(ev, now, second)

    def _end_schedule(self, now: float, el: float) -> None:
        self.sched_done = True
        self.sched_end = el
        drain = self.cfg.drain if self.cfg.drain is not None else self.timers.timeout
        if self.cfg.duration is not None:
            self.uac.no_retries = True
        if self.cfg.duration is not None and el >= self.cfg.duration:
            # The run is over: every caller hangs up now (§15.1.1), the rest is abandoned.
            self.uac.hang_up_all(now)
            self.finish_at = now + drain
        else:
            self.finish_at = now + drain + self.max_hold

    def _finished(self, now: float) -> bool:
        assert self.finish_at is not None
        if now >= self.finish_at:
            return True
        busy = self.dia is not None and self.dia.busy
        uac = self.uac
        return not uac.txns and not self.timers.actions and not uac.dialogs and not busy

    def _abandon_rest(self) -> None:
        self.uac.abandon_rest()
        if self.dia is not None:
            self.dia.abandon()

    def _timers(self, now: float) -> None:
        self.timers.run(now)
        if self.dia is not None:
            self.dia.tick(now)
        self.timers.run_actions(now)

    def _flush(self) -> None:
        """Move the values the hot path collected into the HDR histograms, grouped by value."""
        self.timeline.flush()
        for k in self.kinds.values():
            k.flush()

    def rx_drops(self) -> int:
        """Answers the kernel dropped on the UDP sockets so far (``UdpLink.rx_drops``)."""
        if self.closed_drops is not None:
            return self.closed_drops
        return sum(link.rx_drops() for link in self.uac.udp)

    def _sample_self(self) -> tuple[float, int]:
        """The injector's share of one core and the answers dropped on its sockets since the
        last sample: a generator at its limit reads its answers late or loses them, and the
        run then measures it as much as the server."""
        ru = resource.getrusage(resource.RUSAGE_SELF)
        wall, cpu, drops = time.monotonic(), ru.ru_utime + ru.ru_stime, self.rx_drops()
        share = (cpu - self.self_cpu) / max(wall - self.self_wall, 1e-6)
        dropped = drops - self.self_drops
        self.self_wall, self.self_cpu, self.self_drops = wall, cpu, drops
        return share, dropped

    def _roll(self, sec: int) -> None:
        tl = self.timeline
        if tl.second < sec:
            cpu, tl.cur.rx_drops = self._sample_self()
            if self.closed_drops is None:
                tl.cur.rx_queued = sum(link.rx_queued() for link in self.uac.udp)
        while tl.second < sec:
            s = tl.second
            if s < len(self.offered):
                tl.cur.offered = self.offered[s]
            tl.roll(s + 1, self.inflight(), self.uac.up, cpu)
