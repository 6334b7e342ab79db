"""Goodput under overload: 2x, 5x and 10x of capacity, calls and REGISTERs, ours beside Kamailio.

Issue 13's measurement.  The server under test (ours, or Kamailio with the reference
configuration ``../shared/reference/kamailio/kamailio.cfg``) runs pinned to core 1 and held to
``--quota`` of that core by a CPU quota (cgroup v2 ``cpu.max`` where the machine has it, else
cgroup v1 ``cpu.cfs_quota_us``; a 10 ms period so the server runs in short slices rather than
stalling 75 ms at a time).  SIPp runs on core 0, open loop (``-l`` far above the load), with the
reference scenarios read in place from ``../shared/reference/sipp/``: ``uac-proxy.xml`` against
``uas-rr.xml`` for calls (INVITE/180/200/ACK/BYE/200 through the proxy) and ``register.xml``
(one new user per REGISTER; past 12,000/s several SIPp processes share the rate, each with
users of its own, since one SIPp falls behind its schedule there).

First the capacity of each server is found for each load generator (doubling the offered rate
while goodput stays above 90% of it, a failed probe tried once more since one stall of a
neighbour can fail it, then two bisection steps between the last rate kept up with and the
first one not), then 2x, 5x and 10x of that capacity are offered, by SIPp and by the project's
own storm injector (``storm replay`` of a steady trace, on SIPp's core), which honours
Retry-After: a client refused with 503 waits that long and tries again (RFC 3261 §21.5.4), as
real phones do and SIPp does not.  Each generator's steps are held against the capacity probed
with it (its traffic costs the server more or less per request: see ``capacity``), and the
summary gives the share of the other's too.  Per step: offered (what SIPp or the injector
actually sent per second within the step: SIPp's own per-second counts, not the calls it was
asked for), goodput (calls or REGISTERs sent within the step and completed whose INVITE->200
or REGISTER->200 took at most ``--deadline``), P50/P99 of those
response times (SIPp's -trace_rtt; the injector's latency of answered attempts),
retransmissions per attempt, failed attempts, our server's 503s and unanswered drops (its
/metrics; Kamailio has no such counters), datagrams the kernel dropped on the server's socket,
the server's CPU (share of one core), the longest request -> final answer a client saw and the
final answers that came after the client's Timer B/F (RFC 3261 §17.1.1.2, 64*T1: the injector
counts answers to transactions it timed out; SIPp's response times over 32 s count, seen only
with ``--watch-late``, since SIPp otherwise stops listening 12 s after the load).  A PNG of
goodput against offered load is written.

The machine is shared: figures move with the neighbours' load; compare the two servers within
one run, not across runs.  The server's cgroup and the generators' have the top CPU weight, so
the quota, not the neighbours, is what holds the server back; each step prints the load average
and ``wait``, the share of the step the server was runnable but not running beyond its quota's
throttling (schedstat), marked when a neighbour took its core long enough to make the step
suspect.  Needs root (the cgroup) and sipp, kamailio.

    python -m benchmarks.bench_overload [--kinds call,register] [--duration 6] [--quota 0.25]
                                        [--only ours|kamailio] [--load sipp,storm]
                                        [--capacity call=400,register=3000]
                                        [--ours-args '--overload-read-share 0'] [--no-private]
                                        [--ours-args '--processes 2' --sipp-sources 5000]
                                        [--watch-late 40] [--png bench_overload.png]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.bench_calls import _socket_drops
from benchmarks.bench_register import REFERENCE, ServerUnderTest, tree_cpu_seconds
from benchmarks.cgroups import CpuQuota, process_tree, run_delay
from benchmarks.overload_series import SLOW_MS, CpuSampler, Series, rtt_shape, slow_shape
from harness.serverproc import free_tcp_port, free_udp_port, sip_request
from harness.sipp_runner import KILL_GRACE, Sipp
from loadtest.report import BUSY_CPU

SIPP_DIR = REFERENCE / "sipp"
SIPP_CPU = 0
MULTIPLES = (2, 5, 10)
#: The most one SIPp UAC is asked to offer: a higher rate is split over several SIPp
#: processes on the generator core.  One SIPp sent 23,500 REGISTERs in its first second when
#: asked for 24,000/s, then fell to ~13,000/s as unanswered calls piled up in it (session 10);
#: 12,000/s each keeps every process ahead of its schedule while the answers come back.
PER_SIPP = {"call": 6_000, "register": 12_000}
#: The most the generators are asked to offer; a higher target is capped (and the cap
#: printed).  What they really sent within the step is measured (``_created_within``), and a
#: step whose generators fell behind is printed as such ("short"), never read as offered.
MAX_OFFER = {"call": 6_000, "register": 60_000}
#: A step whose generators sent less than this share of the target within it is "short".
SHORT = 0.9
FIRST_PROBE = {"call": 100, "register": 200}
#: More options for our server (``--ours-args``), to compare settings in one run.
OUR_ARGS: list[str] = []
#: Whether our server runs with --sip-udp-private (``--no-private`` compares without).
PRIVATE_PORT = [True]
#: SIPp's source sockets (``--sipp-sources N``: ``-t un -max_socket N``); empty: one socket
#: (``-t u1``).  A multi-process server (``--ours-args '--processes 2'``) needs many: the
#: kernel hashes each source address and port to one worker's socket (``SO_REUSEPORT``), so
#: SIPp's one socket loads one worker alone.
SIPP_SOURCES: list[str] = []
#: The load generators' cgroup (no quota, top weight), set by ``main``.
GENERATORS: list[CpuQuota] = []
#: RFC 3261 Timer B and F, 64*T1: a final answer later than this reaches a client that gave up.
TIMER_B = 32.0
#: Seconds SIPp keeps listening after the offered load (``--watch-late``), so that a final
#: answer after Timer B could be seen at all.
WATCH_LATE = [0.0]


class Starvation:
    """Share of a step's wall time the server waited for a CPU beyond its quota's throttling:
    near 0 when the quota is all that held it back, large when the neighbours took its core.

    Per process, the most of any: the group's ``throttled_time`` is wall time, which every
    runnable process of the group waits through, so with several processes (``--ours-args
    '--processes 2'``: the supervisor and its workers, one quota) their delays added up
    counted the throttling once per process and read as starvation (session 13)."""

    def __init__(self, pid: int, quota: CpuQuota) -> None:
        self.pid, self.quota = pid, quota
        self.t0, self.d0 = time.monotonic(), self._delays()
        self.q0 = quota.throttled_seconds()

    def share(self) -> float:
        throttled = self.quota.throttled_seconds() - self.q0
        waited = max((d - self.d0.get(p, 0.0) - throttled
                      for p, d in self._delays().items()), default=0.0)
        return max(0.0, waited) / max(time.monotonic() - self.t0, 1e-6)

    def _delays(self) -> dict[int, float]:
        return {p: run_delay(p) for p in process_tree(self.pid)}


# -- one step -----------------------------------------------------------------------------------


@dataclass
class Step:
    system: str
    kind: str
    label: str  # the step, and "storm" when the storm injector offered it
    offered: float
    goodput: float
    p50_ms: float
    p99_ms: float
    retrans: float  # SIPp retransmissions per attempt
    failed: int
    rejected: int | None
    dropped: int | None
    kernel_drops: int
    cpu: float  # share of one core
    max_ms: float = 0.0  # the longest request -> final answer a client saw
    late: int = 0  # final answers a client saw later than Timer B/F
    load: float = 0.0  # the machine's 1-minute load average at the end of the step
    wait: float = 0.0  # share of the step the server waited for a CPU beyond its throttling
    #: Why the load generator, not only the server, limited the step (the injector's own
    #: verdict, ``loadtest.report.generator_report``); empty when it kept up.
    bound: str = ""

    def line(self) -> str:
        def opt(v: int | None) -> str:
            return "n/a" if v is None else str(v)
        return (f"{self.system:8s} {self.kind:8s} {self.label:14s} {self.offered:8.0f} "
                f"{self.goodput:8.0f} {self.p50_ms:7.0f} {self.p99_ms:7.0f} {self.max_ms:7.0f} "
                f"{self.late:5d} {self.retrans:6.2f} {self.failed:7d} {opt(self.rejected):>7s} "
                f"{opt(self.dropped):>7s} {self.kernel_drops:7d} {100 * self.cpu:5.1f}% "
                f"{100 * self.wait:4.0f}%{'*' if self.starved else ' '} {self.load:5.2f}"
                + (" GENERATOR-BOUND" if self.bound else ""))

    @property
    def starved(self) -> bool:
        return self.wait > STARVED


HEADER = (f"{'system':8s} {'kind':8s} {'step':14s} {'offered':>8s} {'goodput':>8s} "
          f"{'P50ms':>7s} {'P99ms':>7s} {'maxms':>7s} {'late':>5s} {'retx':>6s} {'failed':>7s} "
          f"{'503s':>7s} {'drops':>7s} {'kdrops':>7s} {'cpu':>6s} {'wait':>6s} {'load':>5s}")
LEGEND = ("maxms: longest request->final answer a client saw; late: final answers seen after "
          "Timer B/F (32 s; SIPp listens --watch-late s after the load, the injector runs its "
          "transactions to B/F); cpu: the server's, share of one core (over the whole step: the "
          "injector's pre-registration included); wait: share of the step it was runnable but "
          "not running beyond its quota's throttling, * = over 5%: starved by the machine, "
          "suspect the step; load: 1-min load average; GENERATOR-BOUND: the load generator "
          "was at its own limit (SIPp: its processes at 90%+ of their core; the injector: its "
          "CPU, answers lost on its sockets, sent late or not at all): the step measures it "
          "as much as the server")
#: A step whose server waited for a CPU (beyond its quota) longer than this share is suspect.
STARVED = 0.05


def _starved(step: Step, wait: float) -> Step:
    step.wait = wait
    step.load = os.getloadavg()[0]
    return step


def _finish(s: Sipp, window: float | None = None,
            slow: list[float] | None = None) -> tuple[dict[str, str], list[float]]:
    """Wait for SIPp; its cumulative statistics and every response time (ms).

    With ``window`` (seconds from SIPp's start): the response times of the calls SIPp created
    within it alone (created = the time of the answer, ``-trace_rtt``'s Date_ms, less the
    response time), and ``stats["created_within"]``, the calls it created within it
    (``_created_within``): a SIPp asked for more than it can send falls behind its schedule
    and sends the rest after the step, which ``TotalCallCreated / duration`` read as offered.
    """
    assert s.proc is not None
    try:
        s.proc.communicate(timeout=s.timeout + KILL_GRACE)
    except subprocess.TimeoutExpired:
        s.proc.kill()
        s.proc.communicate()
    stats: dict[str, str] = {}
    rows: list[list[str]] = []
    if s.stat_file.exists():
        with s.stat_file.open(newline="", errors="replace") as f:
            rows = list(csv.reader(f, delimiter=";"))
        if len(rows) >= 2:
            stats = dict(zip(rows[0], rows[-1], strict=False))
    rtts: list[float] = []
    for path in s.dir.glob("*_rtt.csv"):
        for row in csv.reader(path.open(errors="replace"), delimiter=";"):
            with contextlib.suppress(IndexError, ValueError):
                rtt = float(row[1])
                if window is None or float(row[0]) - rtt <= window * 1000:
                    rtts.append(rtt)
                    if slow is not None and rtt > SLOW_MS:
                        slow.append((float(row[0]) - rtt) / 1000)
    if window is not None:
        stats["created_within"] = str(_created_within(rows, window))
    shutil.rmtree(s.dir, ignore_errors=True)
    return stats, rtts


def _epoch(field: str) -> float:
    """SIPp's time stamp (``date<TAB>time<TAB>epoch.micros``) as epoch seconds."""
    return float(field.split("\t")[-1])


def _created_within(rows: list[list[str]], window: float) -> int:
    """Calls SIPp created within ``window`` seconds of its start, from its statistics file
    (``-fd 1``: a cumulative row about every second; interpolated between the two rows
    around the window's end, the last one when it ended earlier)."""
    if len(rows) < 2:
        return 0
    head = rows[0]
    try:
        start, now, total = (head.index(k) for k in ("StartTime", "CurrentTime",
                                                     "TotalCallCreated"))
        points = [(_epoch(r[now]) - _epoch(r[start]), int(r[total])) for r in rows[1:]]
    except (ValueError, IndexError):
        return 0
    before = (0.0, 0)
    for t, n in points:
        if t >= window:
            t0, n0 = before
            return int(n0 + (n - n0) * (window - t0) / max(t - t0, 1e-9))
        before = (t, n)
    return before[1]


def _num(stats: dict[str, str], name: str) -> int:
    v = stats.get(name, "0").strip()
    return int(v) if v.isdigit() else 0


def _our_counts(admin_port: int | None) -> tuple[int, int] | None:
    if admin_port is None:
        return None
    text = _metrics(admin_port)
    rejected = dropped = 0.0
    for line in text.decode().splitlines():
        if line.startswith("signaling_sip_overload_rejected_total"):
            rejected += float(line.rsplit(" ", 1)[1])
        elif (line.startswith("signaling_sip_overload_dropped_total")
              and "ack_of_503" not in line  # our 503s' ACKs, absorbed: not requests
              and 'reason="kernel' not in line):  # the kdrops column
            dropped += float(line.rsplit(" ", 1)[1])
        elif line.startswith('signaling_sip_shed_total{reason="queue_full"}'):
            rejected += float(line.rsplit(" ", 1)[1])
    return int(rejected), int(dropped)


def _metrics(admin_port: int) -> bytes:
    """The server's /metrics; the admin listener may come up a moment after SIP answers."""
    for _ in range(50):
        with contextlib.suppress(ConnectionRefusedError, urllib.error.URLError):
            return bytes(urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics",
                                                timeout=5).read())
        time.sleep(0.1)
    return bytes(urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics",
                                        timeout=5).read())


def _register_uas(port: int, uas_port: int) -> None:
    req = (f"REGISTER sip:127.0.0.1:{port} SIP/2.0\r\n"
           f"Via: SIP/2.0/UDP 127.0.0.1:{uas_port};rport"
           f";branch=z9hG4bKbenchreg{time.monotonic_ns()}\r\n"
           "Max-Forwards: 70\r\nFrom: <sip:uas@127.0.0.1>;tag=r1\r\nTo: <sip:uas@127.0.0.1>\r\n"
           f"Call-ID: bench-uas-{time.monotonic_ns()}\r\nCSeq: 1 REGISTER\r\n"
           f"Contact: <sip:uas@127.0.0.1:{uas_port}>\r\nExpires: 3600\r\n"
           "Content-Length: 0\r\n\r\n").encode()
    answer = sip_request(port, req, timeout=5.0)
    if answer is None or not answer.startswith(b"SIP/2.0 200"):
        raise RuntimeError(f"UAS registration failed: {answer!r}")


def _server(system: str, quota: CpuQuota) -> tuple[ServerUnderTest, int | None]:
    admin = free_tcp_port() if system == "ours" else None
    extra = ["--admin", f"127.0.0.1:{admin}", *OUR_ARGS] if admin else []
    if admin and PRIVATE_PORT[0]:
        # responses and in-dialog requests on our own port, never behind new requests
        extra += ["--sip-udp-private", f"127.0.0.1:{free_udp_port()}"]
    server = ServerUnderTest(system, extra).start()
    if admin:
        _ready(admin)
    quota.add_tree(server.pid)
    return server, admin


def _ready(admin_port: int) -> None:
    """Wait for the admin API's ``/ready``: with ``--processes N`` the supervisor's says so
    once every worker serves.  ``ServerUnderTest`` waits for one answer to OPTIONS, which
    one worker gives while another still imports; the step then started (and the quota,
    under which a start takes seconds, held the late one) with that worker's share of the
    load queued on its socket: session 13, 2 workers, P99 196-504 ms at 200-400
    REGISTERs/s against 0-4 ms for one process."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with (contextlib.suppress(OSError, urllib.error.URLError),
              urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/ready", timeout=5) as r):
            if r.status == 200:
                return
        time.sleep(0.1)
    raise RuntimeError("the server did not report ready")


def _verbose(admin: int | None, detail: str = "") -> None:
    """With BENCH_VERBOSE set: the server's overload counters, its queue sojourn histogram,
    and what the load generator saw (``detail``)."""
    if not os.environ.get("BENCH_VERBOSE"):
        return
    if admin is not None:
        text = _metrics(admin).decode()
        print("\n".join(ln for ln in text.splitlines() if ln.startswith("signaling_") and (
            "limit" in ln or "overload" in ln or "shed" in ln or "sojourn" in ln)
            and not ln.endswith(" 0.0")), flush=True)
    if detail:
        print(detail, flush=True)


def _register_scenarios(n: int, directory: Path) -> list[Path]:
    """The reference REGISTER scenario for each of ``n`` SIPp processes: itself for one; for
    several, copies whose users are apart (``u[call_number]`` made ``u[call_number]pI``),
    since ``[call_number]`` counts from 1 in every process and the same AOR registered by
    each would be a binding update, not a new user per REGISTER."""
    reference = SIPP_DIR / "register.xml"
    if n == 1:
        return [reference]
    text = reference.read_text()
    assert "u[call_number]" in text, "reference scenario changed: no u[call_number]"
    out = []
    for i in range(n):
        path = directory / f"register-{i}.xml"
        path.write_text(text.replace("u[call_number]", f"u[call_number]p{i}"))
        out.append(path)
    return out


def run_step(system: str, kind: str, rate: float, duration: float, deadline: float,
             quota: CpuQuota, label: str) -> Step:
    server, admin = _server(system, quota)
    remote = f"127.0.0.1:{server.port}"
    calls = max(1, int(rate * duration))
    uas: Sipp | None = None
    try:
        if kind == "call":
            uas = Sipp(str(SIPP_DIR / "uas-rr.xml"), calls=calls * 2,
                       timeout=duration + 30 + WATCH_LATE[0], cpu=SIPP_CPU,
                       port=free_udp_port()).start()
            _generator(uas)
            _register_uas(server.port, uas.port)
            uac = Sipp(str(SIPP_DIR / "uac-proxy.xml"), remote, service="uas", calls=calls,
                       rate=rate, timeout=duration + 12 + WATCH_LATE[0], cpu=SIPP_CPU,
                       extra=["-l", "1000000", "-trace_rtt", "-rtt_freq", "1", "-fd", "1",
                              *SIPP_SOURCES])
            uacs = [uac]
        else:
            # SIPp's default on an unexpected answer (a 503) is to abort the "call" with a
            # BYE; a phone whose REGISTER was refused sends none (RFC 3261 §10.2: a REGISTER
            # makes no dialog), and those BYEs cost both servers work for nothing (6-10% of
            # our goodput at 12,000/s offered, measured in session 9).  Past ``PER_SIPP``,
            # several SIPp processes share the rate, each with its own users
            # (``_register_scenarios``); their Call-IDs and From tags carry their pids.
            n = max(1, math.ceil(rate / PER_SIPP[kind]))
            uacs = [Sipp(str(scenario), remote, calls=max(1, calls // n), rate=rate / n,
                         timeout=duration + 12 + WATCH_LATE[0], cpu=SIPP_CPU,
                         extra=["-l", "1000000", "-trace_rtt", "-rtt_freq", "1",
                                "-default_behaviors", "all,-bye", "-fd", "1", *SIPP_SOURCES])
                    for scenario in _register_scenarios(n, server.dir)]
        before = _our_counts(admin)
        starvation = Starvation(server.pid, quota)
        series = Series(admin).start() if admin and os.environ.get("BENCH_VERBOSE") else None
        cpu0, t0 = server.cpu(), time.monotonic()
        for uac in uacs:
            _generator(uac.start())
        sampler = CpuSampler(lambda: sum(_cpu_seconds(u) for u in uacs)).start()
        time.sleep(duration)  # the CPU is measured while the load is offered
        cpu1, elapsed = server.cpu(), time.monotonic() - t0
        wait = starvation.share()
        sipp_cpu, sipp_most = sum(_cpu_seconds(u) for u in uacs) / elapsed, sampler.stop()
        sipp_drops = sum(_socket_drops(u.port) for u in uacs)  # its main sockets'
        slow: list[float] = []
        results = [_finish(uac, duration, slow) for uac in uacs]
        stats = {name: str(sum(_num(st, name) for st, _ in results))
                 for name in ("TotalCallCreated", "SuccessfulCall(C)", "FailedCall(C)",
                              "Retransmissions(C)", "created_within")}
        rtts = [r for _, rs in results for r in rs]
        after = _our_counts(admin)
        _verbose(admin, f"sipp cpu {100 * sipp_cpu:.0f}% of core {SIPP_CPU} over the step, "
                        f"{100 * sipp_most:.0f}% in its busiest second, "
                        f"dropped on its sockets {sipp_drops}\n"
                 + rtt_shape(rtts) + "\n" + slow_shape(slow)
                 + ("\n" + series.stop() if series is not None else ""))
        kdrops = _socket_drops(server.port)
    finally:
        if uas is not None:
            uas.stop()
        server.stop()
    created = _num(stats, "TotalCallCreated")
    within = _num(stats, "created_within")
    ok = _num(stats, "SuccessfulCall(C)")
    in_time = sorted(r for r in rtts if r <= deadline * 1000)
    good = min(ok, len(in_time))
    rej = drp = None
    if before is not None and after is not None:
        rej, drp = after[0] - before[0], after[1] - before[1]

    def pct(q: float) -> float:
        return in_time[min(len(in_time) - 1, int(q * len(in_time)))] if in_time else 0.0

    return _starved(Step(
        system, kind, label, within / duration, good / duration, pct(0.5), pct(0.99),
        _num(stats, "Retransmissions(C)") / max(created, 1), _num(stats, "FailedCall(C)"), rej,
        drp, kdrops, (cpu1 - cpu0) / elapsed, max(rtts, default=0.0),
        sum(1 for r in rtts if r > TIMER_B * 1000), bound=_sipp_bound(sipp_most, sipp_drops)),
        wait)


def _cpu_seconds(s: Sipp) -> float:
    with contextlib.suppress(OSError, ValueError, IndexError):
        return tree_cpu_seconds(s.proc.pid) if s.proc is not None else 0.0
    return 0.0


def _sipp_bound(share: float, drops: int = 0) -> str:
    """SIPp's verdict on a step, as the injector's (``loadtest.report.generator_report``):
    its processes at ``BUSY_CPU`` or more of their one core (``SIPP_CPU``) in a second of
    the step (``share``, ``overload_series.most_busy``) read the answers
    late (a response time is then partly SIPp's own) and fall behind their schedule; an
    answer dropped on its sockets (their buffers full) is retransmitted for, T1 later, and
    answered again from the server's transaction: a response time past T1 that is SIPp's."""
    why = [f"SIPp at {100 * share:.0f}% of core {SIPP_CPU}: answers read late"] \
        if share >= BUSY_CPU else []
    why += [f"{drops} datagrams dropped on SIPp's sockets"] if drops else []
    return "; ".join(why)


def _generator(s: Sipp) -> None:
    if GENERATORS and s.proc is not None:
        GENERATORS[0].add_tree(s.proc.pid)


def storm_step(system: str, kind: str, rate: float, duration: float, deadline: float,
               quota: CpuQuota, label: str) -> Step:
    """``rate`` offered by the storm injector, which waits out a 503's Retry-After and tries
    again; goodput counts 2xx within ``deadline`` of the attempt that got them."""
    work = Path(tempfile.mkdtemp(prefix="bench-overload-storm-"))
    trace, report = work / "trace.jsonl", work / "run.json"
    storm = [sys.executable, "-m", "loadtest.cli"]
    subprocess.run([*storm, "synth", "steady", "--out", str(trace), "--kind", kind,
                    "--rate", str(rate), "--duration", str(duration), "--hold", "1",
                    "--users", str(max(1000, int(rate * duration)))],
                   check=True, stdout=subprocess.DEVNULL)
    server, admin = _server(system, quota)
    try:
        before = _our_counts(admin)
        starvation = Starvation(server.pid, quota)
        cpu0, t0 = server.cpu(), time.monotonic()
        # As many transactions in flight as the step offers (SIPp's ``-l``): the default cap
        # turned the injector into a closed loop once the server dropped (60,000/s for 32 s
        # each), and an event due over ``deadline`` ago is not sent: the step offers what the
        # injector can within it, measured (``started_per_s``), instead of stretching its
        # schedule past the bench's wait (session 13: over a minute behind at 10x).
        proc = subprocess.Popen(
            ["taskset", "-c", str(SIPP_CPU), *storm, "replay", str(trace), "--target",
             f"udp://127.0.0.1:{server.port}", "--deadline", str(deadline), "--json",
             str(report), "--live-interval", "0", "--threshold", "error_rate<=1",
             "--max-inflight", str(max(100_000, int(rate * duration) + 1000)),
             "--max-lateness", str(deadline)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if GENERATORS:
            GENERATORS[0].add_tree(proc.pid)
        time.sleep(duration)
        cpu1, elapsed = server.cpu(), time.monotonic() - t0
        wait = starvation.share()
        try:
            _, err = proc.communicate(timeout=duration + 120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
        after = _our_counts(admin)
        _verbose(admin)
        kdrops = _socket_drops(server.port)
    finally:
        server.stop()
    if not report.exists():
        raise RuntimeError(f"storm replay wrote no report: {err.decode(errors='replace')}")
    run = json.loads(report.read_text())
    shutil.rmtree(work, ignore_errors=True)
    k = run["kinds"]["invite" if kind == "call" else "register"]
    # Over the scheduled seconds only: retries after Retry-After go on after them, and the
    # whole run's totals over ``duration`` overstated both rates (2x offered read as 5x).
    window = max(1, int(duration))
    offered, good = _injector_offered(run, k, window), sum(k["goodput_per_s"][:window])
    rej = drp = None
    if before is not None and after is not None:
        rej, drp = after[0] - before[0], after[1] - before[1]
    # Of the 2xx answers: the admitted transactions (the 503s' own latency is in latency_us).
    lat = k.get("latency_ok_us") or k["latency_us"]
    _verbose(None, "storm " + " ".join(f"{n}={k[n]}" for n in (
        "sent", "status_503", "timeouts", "retransmissions", "retry_after_honoured",
        "backoff_retries", "abandoned", "late_finals")) + f" codes={k['codes']} "
        f"offered/s={k['offered_per_s'][:window + 3]} goodput/s={k['goodput_per_s'][:window + 3]}"
        f" latency_ok={lat} latency_all={k['latency_us']} injector cpu={run['cpu']} "
        f"lateness={run['lateness_us']} wall={run['wall_s']:.1f} "
        f"generator={run.get('generator')} warnings={run['warnings']}")
    return _starved(Step(
        system, kind, f"{label} storm", offered / window, good / window,
        lat.get("p50", 0.0) / 1000, lat.get("p99", 0.0) / 1000,
        k["retransmissions"] / max(k["sent"], 1), sum(k["failures"].values()) + k["timeouts"],
        rej, drp, kdrops, (cpu1 - cpu0) / elapsed, lat.get("max", 0.0) / 1000,
        int(k.get("late_finals", 0)), bound=_injector_bound(run)), wait)


def _injector_offered(run: dict[str, Any], kind: dict[str, Any], window: int) -> int:
    """Transactions the injector really started within the step's first ``window`` seconds
    (``started_per_s``, by wall second), not the ones its schedule made due there: one
    behind its schedule sends them later, or not at all (``--max-lateness``).  A report
    without the series (an older injector): by the schedule."""
    started = run.get("started_per_s")
    if started:
        return int(sum(started[:window]))
    return int(sum(kind["offered_per_s"][:window]))


def _injector_bound(run: dict[str, Any]) -> str:
    """The injector's own verdict on the step (``generator.bound``): "" when it kept up."""
    return "; ".join((run.get("generator") or {}).get("bound") or [])


def capacity(system: str, kind: str, duration: float, deadline: float, quota: CpuQuota,
             steps: list[Step], run: StepRun | None = None) -> float:
    """The highest goodput seen at an offered rate the server kept up with (>= 90% of it),
    offered by ``run`` (SIPp's ``run_step`` by default, or the injector's ``storm_step``).

    Each load generator's steps are held against the capacity probed with that generator:
    the server's capacity depends on the traffic, and the injector's costs it more per
    REGISTER than SIPp's (a User-Agent header and ``rport`` in every REGISTER, arrivals
    spread over 1 ms ticks from 64 ports where SIPp's come in bursts: 1,816 wakeups of the
    server for 6,000 REGISTERs at 2,000/s against 594; in one window of session 10, 57-67 µs
    of the server's CPU per REGISTER saturated against SIPp's 44-45, capacity 4,525/s
    against 5,087/s), so its goodput held against SIPp's capacity read the traffic's cost as
    overload's.

    On a shared machine one probe can fail for a neighbour's burst: a failed rate is tried
    once more before it counts.  Doubling brackets the capacity within a factor of two; two
    bisection steps (geometric) narrow that to about 19%.
    """
    step_run = run or run_step

    def kept_up(rate: float) -> float | None:
        for _ in range(2):
            step = step_run(system, kind, rate, duration, deadline, quota, "probe")
            print(step.line(), flush=True)
            steps.append(step)
            if step.goodput >= 0.9 * step.offered:
                return step.goodput
        return None

    rate, best, failed = float(FIRST_PROBE[kind]), 0.0, None
    while rate <= MAX_OFFER[kind]:
        good = kept_up(rate)
        if good is None:
            failed = rate
            break
        best = max(best, good)
        rate *= 2
    if failed is not None and best:
        low, high = failed / 2, failed
        for _ in range(2):
            mid = math.sqrt(low * high)
            good = kept_up(mid)
            if good is None:
                high = mid
            else:
                best, low = max(best, good), mid
    return best


StepRun = Callable[[str, str, float, float, float, CpuQuota, str], Step]


def plot(steps: list[Step], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    kinds = sorted({s.kind for s in steps})
    fig, axes = plt.subplots(1, len(kinds), figsize=(6 * len(kinds), 4.5), squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=True):
        for system, style in (("ours", "o-"), ("kamailio", "s--")):
            pts = sorted((s.offered, s.goodput) for s in steps
                         if s.kind == kind and s.system == system)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=system)
        ax.set_xscale("log")
        ax.set_xlabel(f"offered {kind}s/s")
        ax.set_ylabel(f"goodput {kind}s/s (within deadline)")
        ax.set_title(f"{kind}: goodput vs offered load")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kinds", default="call,register")
    ap.add_argument("--duration", type=float, default=6.0)
    ap.add_argument("--probe-duration", type=float, default=4.0)
    ap.add_argument("--deadline", type=float, default=1.0,
                    help="seconds from request to 200 for an attempt to count as goodput")
    ap.add_argument("--quota", type=float, default=0.25, help="share of one core")
    ap.add_argument("--only", choices=["ours", "kamailio"])
    ap.add_argument("--load", default="sipp,storm",
                    help="who offers the steps: sipp, storm (the injector, honours Retry-After)")
    ap.add_argument("--ours-args", default="", help="more options for our server, e.g. "
                    "'--overload-reject-share 1'")
    ap.add_argument("--sipp-sources", type=int, default=0,
                    help="SIPp sends from up to N sockets (-t un -max_socket N), not one: "
                    "for a multi-process server (--ours-args '--processes 2' with --quota "
                    "covering every worker), whose kernel spreads sources over the workers")
    ap.add_argument("--no-private", action="store_true",
                    help="run our server without --sip-udp-private (to compare)")
    ap.add_argument("--capacity", default="",
                    help="skip the probe: e.g. call=400,register=3000 (both servers, every "
                    "load); register-storm=2500 for the injector's steps alone (else they "
                    "are held against the one given for the kind)")
    ap.add_argument("--watch-late", type=float, default=0.0,
                    help="seconds SIPp keeps listening after the load, so that final answers "
                    "later than Timer B (32 s) could be seen (e.g. 40; the injector always "
                    "runs its transactions to Timer B/F)")
    ap.add_argument("--multiples", default=",".join(map(str, MULTIPLES)),
                    help="multiples of capacity offered (default 2,5,10)")
    ap.add_argument("--png", default="bench_overload.png")
    a = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("needs root for the cgroup CPU quota")
        return 2
    systems = [a.only] if a.only else ["ours", "kamailio"]
    OUR_ARGS[:] = a.ours_args.split()
    PRIVATE_PORT[0] = not a.no_private
    SIPP_SOURCES[:] = ["-t", "un", "-max_socket", str(a.sipp_sources)] if a.sipp_sources else []
    given = {k: float(v) for k, _, v in (p.partition("=") for p in a.capacity.split(",") if p)}
    loads: dict[str, StepRun] = {"sipp": run_step, "storm": storm_step}
    offer = [(name, loads[name]) for name in a.load.split(",")]
    WATCH_LATE[0] = a.watch_late
    quota = CpuQuota(a.quota)
    GENERATORS[:] = [CpuQuota(None, name="load")]
    print(f"server on core 1 under a CPU quota of {quota.describe}; SIPp and the injector on "
          f"core {SIPP_CPU} ({GENERATORS[0].describe}); deadline {a.deadline:g} s; "
          f"load average {os.getloadavg()[0]:.2f} (shared machine: figures are noisy)",
          flush=True)
    print(LEGEND, flush=True)
    print(HEADER, flush=True)
    steps: list[Step] = []
    summary: list[str] = []
    try:
        for kind in a.kinds.split(","):
            for system in systems:
                # Each generator's capacity, probed with it (see ``capacity``).
                caps = {name: given.get(f"{kind}-{name}") or given.get(kind) or capacity(
                    system, kind, a.probe_duration, a.deadline, quota, steps, run)
                    for name, run in offer}
                for m in (float(x) for x in a.multiples.split(",")):
                    for name, run in offer:
                        cap = caps[name]
                        rate = min(cap * m, MAX_OFFER[kind])
                        label = f"{m:g}x" + ("(cap)" if rate < cap * m else "")
                        step = run(system, kind, rate, a.duration, a.deadline, quota, label)
                        print(step.line(), flush=True)
                        steps.append(step)
                        other = "".join(
                            f", {100 * step.goodput / c:.1f}% of {n}'s {c:.0f}/s"
                            for n, c in caps.items() if n != name and c != cap)
                        summary.append(
                            f"{system:8s} {kind:8s} capacity {cap:6.0f}/s  {step.label:14s} "
                            f"goodput {step.goodput:6.0f}/s = "
                            f"{100 * step.goodput / cap if cap else 0:5.1f}% of capacity{other}, "
                            f"P50/P99 {step.p50_ms:.0f}/{step.p99_ms:.0f} ms, "
                            f"late finals {step.late}, load {step.load:.2f}"
                            + (" STARVED" if step.starved else "")
                            + (f" GENERATOR-BOUND ({step.bound})" if step.bound else "")
                            + (f" SHORT: {step.offered:.0f}/s sent of {rate:.0f}/s asked"
                               if step.offered < SHORT * rate else ""))
    finally:
        quota.close()
        for g in GENERATORS:
            g.close()
    print("\n".join(["", "goodput as a share of each server's own capacity "
                     "(target >= 90% at 2x, 5x, 10x):", *summary]))
    plot(steps, Path(a.png))
    print(f"plot: {a.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
