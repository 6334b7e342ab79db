"""Scaling of ``signaling serve --processes N`` under a CPU quota per worker (issue 16).

A machine with a few cores shared with other work cannot show scaling by load alone: the load
generator competes with the server.  So **each process of the server** (every worker, and the
supervisor with its registry hub) runs in a cgroup of its own whose CPU quota is ``SHARE`` of a
core (cgroup v2 ``cpu.max``, or v1 ``cpu.cfs_quota_us`` where the cpu controller is still on
v1, as here): the same share for each worker, as issue 16 asks, whatever the others do (one
quota for the whole tree would let a busy worker take an idle one's share).  The server starts
without a quota (interpreter start-up at 0.1 core takes long) and is moved into its groups once
every worker answers.  SIPp offers more REGISTERs in steps (a rate per worker, times N): the
highest step served with no failure is the server's capacity at that quota.
``--processes 1`` is the single-process server (no supervisor, in-process registry): the
reference both for the speed-up and for the CPU per REGISTER the multi-process design adds.

Whether the quota or the machine binds: the machine has 2 cores, shared with other work; N
workers at ``SHARE`` each, the supervisor and SIPp offering N times the rate must fit in them.
Each step prints the supervisor's CPU, SIPp's CPU (``RUSAGE_CHILDREN``: it runs pinned to one
core), the load average, and per worker the time it was runnable but not running *beyond* its
quota (``/proc/PID/task/*/schedstat`` run delay minus the group's ``throttled_time``): a step
where a worker waited that way more than ``STARVED`` of the step, or SIPp used more than
``GENERATOR_BOUND`` of its core, is flagged ``MACHINE-BOUND``: its figure is the machine's,
not the design's.  ``--share 0.1`` keeps 4 workers, the supervisor and SIPp inside 2 cores.

SIPp plays ``../shared/reference/sipp/register.xml`` (a new user per call), or complete calls
(``harness/sipp/uac.xml`` to a registered ``uas.xml``: the callee answers from one port, so the
responses and in-dialog requests reach their worker through its slot port), from ``SOURCES``
sockets (``-t un``), so the kernel's hash spreads them over the workers.

    python -m benchmarks.bench_multiproc [--kind register|calls] [--processes 1,2]
                                         [--share 0.25] [--rates R1,R2,...] [--duration 5]

The machine is shared with other engineers' work: the figures are noisy; run it twice.
Targets (issue 16): >= 1.8x for 2 workers, >= 3.4x for 4; <= 10% more CPU per REGISTER.

What makes the comparison fair (session 9; the figures before it used neither):

* **The same overload control on both sides.**  A worker has its slot's own UDP port, so its
  listening socket runs the short kernel queue, the read pace and the excess drain
  (``signaling/transports/udp.py``), and drops unanswered what waited past
  ``max_receive_delay``; a single process runs them only with ``--sip-udp-private``.  Without
  it the reference ran a different, more lenient receive path than the workers it is compared
  with (session 8: the workers dropped thousands of REGISTERs as late, the single process none).
  So ``--processes 1`` runs with ``--sip-udp-private`` (``--reference private``, the default:
  the configuration a server facing storms is told to use, README); ``--reference plain``
  gives the old reference.
* **A 10 ms quota period** (``--period-us``, as ``bench_overload``), not the kernel's 100 ms.
  Under a quota a process runs its share of each period, then is frozen for the rest: at
  0.1 core with 100 ms periods, 10 ms of work then 90 ms of nothing, during which every
  datagram waits.  90 ms is beyond ``--overload-target`` (50 ms), so the admission control,
  which reads the queueing time, took each freeze for a standing queue and refused or
  dropped work a process on a core of its own would have served; with 10 ms periods a freeze
  is at most 9 ms, under the target, and the share is spread as a fraction of a core is on a
  machine whose cores are shared (the scheduler's slices are a few ms).  The price: smaller
  batches per wake-up, so more CPU per REGISTER than with 100 ms periods, on both sides.
* **The server on one core, SIPp on the other** (``taskset``: ``bench_register``'s
  ``SERVER_CPU`` and ``LOAD_CPU``): N workers at 0.1 core and the supervisor fit in one core,
  and SIPp offering N times the rate keeps its own.

What ends a step (session 14, each revision of the admission limit traced): near the quota a
worker's Python collector stalls it (a young-generation collection at
``signaling.cli.GC_GEN0_THRESHOLD`` 50,000 then: 6-25 ms of CPU, about once per
10,000-15,000 new REGISTERs), which at 0.1 core is 50-110 ms of wall time.  Since session 14
(2,000 x 5) the longest pause seen at 0.1 core is 6.3 ms of CPU, 65 ms of wall time, young ones
2.4 ms / 21 ms (the README).  At 90% of the quota the backlog of
such a stall takes about a second to drain, its least wait reads over the 50 ms target, the
limit is cut (at 0.1 core to above the offered rate: 1,349/s against 1,100/s, 1,628 and 1,715
against 1,500) and the read pace, engaged by that cut with a 20 ms burst, refuses the rest of
the backlog in C: 44-234 503s, and a step of 11,000-22,000 REGISTERs counts as failed (4 of 7
traced cuts came 0.2 s after a collection, 2 with none).  So whether a step near capacity
passes is whether a collection landed in it, and N workers have N times the collections a
step: a 0-failure criterion charges that to the workers.  ``--tolerance`` keeps a step with a
few such failures (0.5%: a stall's 503s, not a collapse), and each step prints the busiest
worker's use of its quota and the rate at which it would use all of it at the step's CPU per
request (``CPU-bound``): where the CPU, not the admission control, runs out.

Reading the figures (what this bench does and does not isolate):

* CPU per REGISTER depends on the load, not only on the code: a server near its quota reads
  many datagrams per wake-up and spends far less per REGISTER (one process at 0.1 core:
  ~150 µs at 500/s, ~70 µs at 1,500/s, throttled in every period).  Compare the designs at
  the same rate per worker, below the quota (no or few "throttled" periods).
* Each process is throttled on its own: "throttled" counts the periods (``--period-us``) in
  which the busiest worker used its whole share (500 in a 5 s step at 10 ms: always at its
  quota).
* On this 2-core machine 4 workers, the supervisor and SIPp share 2 cores with other
  tenants: the multi-process server pays context switches and cold caches a server with a
  core per worker would not.  ``--sharing private`` (each worker its own registry) measures
  that part; ``replica`` minus ``private`` is what sharing the registry costs.
* 4 workers at 0.25 core need SIPp to offer ~18,000 REGISTER/s to find their capacity, more
  than it can on this machine next to the server: use ``--share 0.1`` for the 4-worker
  capacity (its steps stop where a worker is throttled in every period, not where SIPp
  falls behind).
* ``benchmarks/bench_instructions.py --processes 4`` counts instructions instead (every
  process, callgrind), unaffected by the machine's load, with one REGISTER at a time (a
  group commit per REGISTER: the worst case of the replica's batching).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import BinaryIO, NamedTuple

from benchmarks.bench_register import (
    CLK_TCK,
    LOAD_CPU,
    REGISTER_XML,
    SERVER_CPU,
    SIPP_LIMIT,
    _int,
    run_sipp,
    tree_cpu_seconds,
)
from benchmarks.cgroups import PERIOD_US, CpuQuota, run_delay
from harness.serverproc import OPEN, free_tcp_port, free_udp_port, options, sip_request
from harness.sipp_runner import Sipp
from harness.sipp_runner import run_sipp as sipp_run
from signaling.supervisor import SHARING_ENV

ROOT = Path(__file__).resolve().parent.parent
#: Source sockets SIPp may hold open (``-t un -max_socket``): as many as the calls it may have
#: outstanding (``bench_register.SIPP_LIMIT``), so that every call has a fresh socket and source
#: port, as every UA has its own address.  With fewer (256 before), SIPp past the budget
#: reuses the sockets it holds open, and those are the ones whose calls have not finished:
#: the sockets hashed to the worker that is behind.  That worker then gets the new calls too,
#: so a step near capacity collapsed onto one worker (2 workers at 0.1 core, 3,000/s offered:
#: 10,555 REGISTERs received by one, 1,211 by the other; with a fresh source per call,
#: 7,522 / 7,478 and 0 failed).
SOURCES = SIPP_LIMIT
START_TIMEOUT = 60.0
#: A worker that waited for a CPU (runnable, within its quota) longer than this share of the
#: step was held back by the machine, not by its quota: the step is flagged.
STARVED = 0.10
#: SIPp runs pinned to one core: past this share of it, it may be what limits the step.
GENERATOR_BOUND = 0.90


class Server:
    def __init__(self, processes: int, start: CpuQuota, sharing: str = "replica",
                 reference: str = "private") -> None:
        self.port = free_udp_port()
        #: the admin API, to read each worker's own count of requests received
        self.admin = free_tcp_port()
        self.dir = Path(tempfile.mkdtemp(prefix="bench-multiproc-"))
        # One process runs the receive path a worker runs (its slot port: the listening
        # socket's short queue, pace and drain) with a private port: see the docstring.
        private = (["--sip-udp-private", f"127.0.0.1:{free_udp_port()}"]
                   if processes == 1 and reference == "private" else [])
        cmd = ["taskset", "-c", str(SERVER_CPU),
               sys.executable, "-m", "signaling", "serve", "--processes", str(processes),
               "--sip-udp", f"127.0.0.1:{self.port}", "--sip-ws", "off",
               "--admin", f"127.0.0.1:{self.admin}",
               "--diameter", "off", "--log-level", "warning", *OPEN, *private,
               "--spool", str(self.dir / "spool.jsonl")]
        env = {**os.environ, SHARING_ENV: sharing}
        with open(self.dir / "log", "wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True, preexec_fn=start.enter,
                                         env=env)
        self.processes = processes

    def wait_ready(self) -> None:
        # Every worker answers: probe from many source ports (each hashes to some worker).
        deadline = time.monotonic() + START_TIMEOUT
        answered = 0
        while answered < 4 * self.processes and time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError((self.dir / "log").read_text()[-2000:])
            if sip_request(self.port, options(self.port), timeout=0.5) is not None:
                answered += 1
        if answered < 4 * self.processes:
            raise RuntimeError("server not ready")
        time.sleep(1.0)  # the last workers finish starting

    def received(self) -> dict[int, Counts]:
        """What each worker (by pid) has received, from its own ``/metrics``: the
        supervisor's front lists the workers' private admin addresses (``/health``)."""
        if self.processes == 1:
            return {self.proc.pid: _received(f"127.0.0.1:{self.admin}")}
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/health", timeout=5) as r:
            workers = json.load(r)["workers"]
        return {w["pid"]: _received(w["admin"]) for w in workers}

    def overload(self) -> str:
        """The whole server's overload counters (the front's ``/metrics`` adds the workers'
        up): what was refused, dropped and why, the admission limit's moves.  Printed per
        step with BENCH_VERBOSE set: a step that collapses shows where its calls went."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/metrics", timeout=5) as r:
            text = r.read().decode()
        keep = ("sip_overload_", "sip_admission_", "sip_shed_total")
        return "\n".join(
            "    " + ln.removeprefix("signaling_") for ln in text.splitlines()
            if any(k in ln for k in keep) and not ln.startswith("#")
            and not ln.endswith((" 0.0", " 0")))

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class Result(NamedTuple):
    per_s: float
    cpu_us: float
    #: the supervisor's own CPU (its registry hub/owner, the admin front) per success
    supervisor_us: float
    #: the busiest worker's share of the workers' CPU (1/N is an even spread)
    busiest: float
    #: the busiest worker's share of the SIP requests the workers received (by its own count)
    received: float
    #: the busiest worker's share of the *new* REGISTERs or INVITEs the workers admitted
    #: (admitted minus retransmissions absorbed): the kernel's spread of new work, apart from
    #: the retransmissions a worker that is behind draws on itself
    new: float
    #: over all workers in the step: retransmissions received, new requests refused (503) and
    #: dropped unanswered by the overload control
    retransmissions: int
    refused: int
    dropped: int
    #: the workers' system time, share of their CPU; their minor page faults and context
    #: switches per success (what callgrind does not see: the kernel's side)
    system: float
    faults: float
    switches: float
    failed: int
    #: quota periods in which the busiest worker used its whole quota
    throttled: int
    #: the supervisor's CPU, in cores (0 for one process)
    supervisor_cores: float
    #: SIPp's CPU (and this process's other children), in cores
    generator_cores: float
    #: the longest a worker was runnable within its quota but not running, share of the step
    starved: float
    #: 1-minute load average at the end of the step
    load: float
    #: the server's core's speed at the step (``pace``): CPU ms for a fixed Python loop
    pace_ms: float = 0.0
    #: the busiest worker's CPU, share of its quota over the step (1.0: it used all of it)
    quota_used: float = 0.0

    @property
    def cpu_bound(self) -> float:
        """The rate at which the busiest worker would use its whole quota at this step's CPU
        per request (``per_s / quota_used``): where the CPU runs out, whatever the admission
        control did.  Optimistic by the batching a higher rate brings, the same on both
        sides; compare it between designs at the same rate per process."""
        return self.per_s / self.quota_used if self.quota_used > 0 else 0.0

    @property
    def machine_bound(self) -> bool:
        return self.starved > STARVED or self.generator_cores > GENERATOR_BOUND


_SAMPLE = re.compile(rb'^signaling_([a-z_]+)_total(?:\{([^}]*)\})? ([0-9.e+]+)$', re.M)


class Counts(NamedTuple):
    """One worker's counters (``/metrics``) that say how the step's work was spread."""

    requests: int = 0
    #: new requests admitted by method, less the retransmissions absorbed (by method)
    new: dict[str, int] = {}
    retransmissions: int = 0
    refused: int = 0
    dropped: int = 0


def _received(admin: str) -> Counts:
    with urllib.request.urlopen(f"http://{admin}/metrics", timeout=5) as r:
        text = r.read()
    requests = retransmissions = refused = dropped = 0
    new: dict[str, int] = {}
    for name, labels, value in _SAMPLE.findall(text):
        n = int(float(value))
        method = re.search(rb'method="([A-Za-z]+)"', labels or b"")
        if name == b"sip_requests_received":
            requests += n
        elif name == b"sip_retransmissions" and b'direction="received"' in labels:
            retransmissions += n
        elif name == b"sip_overload_rejected":
            refused += n
        elif name == b"sip_overload_dropped":
            dropped += n
        elif name in (b"sip_overload_admitted", b"sip_overload_retransmitted") and method:
            key = method.group(1).decode()
            new[key] = new.get(key, 0) + (n if name == b"sip_overload_admitted" else -n)
    return Counts(requests, new, retransmissions, refused, dropped)


def _own_cpu(pid: int) -> float:
    return sum(_kernel_side(pid)[:2])


#: The loop ``pace`` times: pure Python, as the server's work is.
_PACE_LOOP = "import time\nc=time.process_time()\ns=0\nfor i in range(2_000_000): s+=i\n" \
    "print(time.process_time()-c)"


def pace() -> float:
    """CPU milliseconds a fixed Python loop takes on the server's core, now.  This VM's
    vCPUs run at a speed that moves with the host's other work (session 11: the same loop
    took 2.1-3.4 times as long from one run to the next; a call ~2,600 µs of CPU, against
    ~700 µs in session 10), and a CPU quota is counted in the guest's time, so a capacity
    at a quota is only comparable between steps of a similar pace."""
    out = subprocess.run(["taskset", "-c", str(SERVER_CPU), sys.executable, "-c", _PACE_LOOP],
                         capture_output=True, text=True, check=True).stdout
    return float(out) * 1000


def _kernel_side(pid: int) -> tuple[float, float, int, int]:
    """``pid``'s user and system CPU seconds, minor page faults and context switches
    (voluntary: wake-ups after waiting for work; involuntary: preempted): what the kernel
    does for a process, which callgrind does not count."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0, 0.0, 0, 0
    fields = text[text.rindex(")") + 2:].split()
    switches = sum(int(line.split()[1]) for line in status.splitlines()
                   if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")))
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK, int(fields[7]), switches


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                text = (entry / "stat").read_text()
                if int(text[text.rindex(")") + 2:].split()[1]) == pid:
                    out.append(int(entry.name))
    return out


def _generator_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Snapshot(NamedTuple):
    at: float
    tree: float
    own: dict[int, float]
    #: per process: (user s, system s, minor faults, context switches)
    kernel: dict[int, tuple[float, float, int, int]]
    delay: dict[int, float]
    throttled: dict[int, tuple[int, float]]
    generator: float
    received: dict[int, Counts]

    @classmethod
    def take(cls, server: Server, groups: dict[int, CpuQuota], *, start: bool) -> Snapshot:
        """The counters now; the workers' ``/metrics`` first at the ``start`` of a step, last
        at its end, so that neither the time nor the CPU of serving them is the step's.  (A
        worker at 0.1 core takes a while to answer: counted in the step, it put 5 s steps
        served in full under the 95% bar, session 11.)"""
        pid = server.proc.pid
        received = server.received() if start else {}
        snap = cls(time.monotonic(), tree_cpu_seconds(pid),
                   {p: _own_cpu(p) for p in groups}, {p: _kernel_side(p) for p in groups},
                   {p: run_delay(p) for p in groups},
                   {p: (q.throttled_periods(), q.throttled_seconds()) for p, q in groups.items()},
                   _generator_cpu(), received)
        return snap if start else snap._replace(received=server.received())


def step(kind: str, processes: int, share: float, rate: int, duration: float,
         sharing: str = "replica", supervisor_share: float | None = None,
         period_us: int = PERIOD_US, reference: str = "private") -> Result:
    """One step of ``kind`` at ``rate`` against a fresh server of ``processes``, each worker
    (and the supervisor) in a group of ``share`` of a core once it serves."""
    start = CpuQuota(None, "start")
    server = Server(processes, start, sharing, reference)
    groups: dict[int, CpuQuota] = {}
    try:
        server.wait_ready()
        pid = server.proc.pid
        workers = _children(pid) if processes > 1 else [pid]
        for i, p in enumerate(workers):
            groups[p] = CpuQuota(share, f"w{i}", period_us)
        if processes > 1:
            groups[pid] = CpuQuota(supervisor_share or share, "supervisor", period_us)
        for p, group in groups.items():
            group.enter(p)
        calls = int(rate * duration)
        # The callee registers and starts before the step is timed: counted in it, its
        # start-up (~0.3 s at load 14) took a step of 5 s under the 95% bar with 0 failed.
        uas = _callee(server.port, calls, duration) if kind == "calls" else None
        speed = pace()
        time.sleep(0.5)  # the moved processes settle in their groups
        before = Snapshot.take(server, groups, start=True)
        spread = ["-t", "un", "-max_socket", str(SOURCES)]
        if uas is None:
            _, stats, _ = run_sipp(REGISTER_XML, f"127.0.0.1:{server.port}", rate, calls,
                                   duration + 20, [*spread, "-recv_timeout", "4000"])
            ok, failed = _int(stats, "SuccessfulCall(C)"), _int(stats, "FailedCall(C)")
        else:
            try:
                ok, failed = _calls(server.port, uas, rate, calls, duration, spread)
            finally:
                uas.stop()
        after = Snapshot.take(server, groups, start=False)
        if os.environ.get("BENCH_VERBOSE"):
            print(server.overload(), flush=True)
        result = _result(before, after, pid, workers, ok, failed,
                         "REGISTER" if kind == "register" else "INVITE")
        busiest = max(after.own[p] - before.own[p] for p in workers)
        return result._replace(pace_ms=speed,
                               quota_used=busiest / (share * (after.at - before.at)))
    finally:
        server.stop()
        for group in (start, *groups.values()):
            group.close()


def _result(before: Snapshot, after: Snapshot, pid: int, workers: list[int], ok: int,
            failed: int, method: str) -> Result:
    elapsed = after.at - before.at
    used = {p: after.own[p] - before.own[p] for p in before.own}
    sup = used[pid] if pid not in workers else 0.0
    per_worker = [used[p] for p in workers]
    none = Counts()
    was = [before.received.get(p, none) for p in workers]
    now = [after.received.get(p, none) for p in workers]
    received = [b.requests - a.requests for a, b in zip(was, now, strict=True)]
    kernel = [tuple(b - a for a, b in zip(before.kernel[p], after.kernel[p], strict=True))
              for p in workers]
    user, system = sum(k[0] for k in kernel), sum(k[1] for k in kernel)
    new = [b.new.get(method, 0) - a.new.get(method, 0) for a, b in zip(was, now, strict=True)]
    # Held back beyond the quota: the run delay the quota does not explain.
    starved = max((after.delay[p] - before.delay[p])
                  - (after.throttled[p][1] - before.throttled[p][1]) for p in workers)
    return Result(ok / elapsed, (after.tree - before.tree) / max(ok, 1) * 1e6,
                  sup / max(ok, 1) * 1e6, max(per_worker) / max(sum(per_worker), 1e-9),
                  max(received) / max(sum(received), 1), max(new) / max(sum(new), 1),
                  sum(b.retransmissions - a.retransmissions for a, b in zip(was, now, strict=True)),
                  sum(b.refused - a.refused for a, b in zip(was, now, strict=True)),
                  sum(b.dropped - a.dropped for a, b in zip(was, now, strict=True)),
                  system / max(user + system, 1e-9), sum(k[2] for k in kernel) / max(ok, 1),
                  sum(k[3] for k in kernel) / max(ok, 1),
                  failed, max(after.throttled[p][0] - before.throttled[p][0] for p in workers),
                  sup / elapsed, (after.generator - before.generator) / elapsed,
                  max(0.0, starved) / elapsed, os.getloadavg()[0])


def _callee(port: int, calls: int, duration: float) -> Sipp:
    """The UAS (harness/sipp/uas.xml), registered and started; it answers from one port, so
    responses and BYEs rely on the slot ports to find their worker."""
    uas = Sipp("uas", calls=calls, timeout=duration + 30, cpu=LOAD_CPU)
    reg = sipp_run("register", f"127.0.0.1:{port}",
                   keys={"user": "uas", "expires": "3600", "contact": f"127.0.0.1:{uas.port}"})
    if not reg.ok:
        raise RuntimeError(f"UAS registration failed: {reg.errors[-500:]}")
    return uas.start()


def _calls(port: int, uas: Sipp, rate: int, calls: int, duration: float,
           spread: list[str]) -> tuple[int, int]:
    """Complete calls (harness/sipp/uac.xml) to ``uas``: successful and failed."""
    caller = Sipp("uac", f"127.0.0.1:{port}", service="uas", calls=calls, rate=rate,
                  timeout=duration + 30, extra=spread, cpu=LOAD_CPU).start()
    result = caller.wait()
    return result.successful, result.failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=("register", "calls"), default="register")
    parser.add_argument("--processes", default="1,2")
    parser.add_argument("--share", type=float, default=0.25,
                        help="CPU share per worker, in cores")
    parser.add_argument("--rates", default=None,
                        help="rates offered per worker (x N for N workers), in order "
                             "(default: REGISTER 3000..7000/s, calls 200..700/s)")
    parser.add_argument("--supervisor-share", type=float, default=None,
                        help="CPU share of the supervisor (its registry hub), in cores "
                             "(default: --share, one process like a worker)")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--period-us", type=int, default=PERIOD_US,
                        help="cgroup quota period in µs (default 10,000: see the docstring; "
                             "100,000 is the kernel's default, used before session 9)")
    parser.add_argument("--reference", choices=("private", "plain"), default="private",
                        help="--processes 1 with --sip-udp-private, the receive path of a "
                             "worker (default), or without (plain, before session 9)")
    parser.add_argument("--tolerance", type=float, default=0.0,
                        help="a step is kept with failures up to this share of its calls "
                             "(default 0: none); see the docstring, 'What ends a step'")
    parser.add_argument("--poll-idle", action="store_true",
                        help="hold /dev/cpu_dma_latency at 0 during the run: an idle CPU "
                             "polls instead of halting (see ``idle_polling``)")
    parser.add_argument("--sharing", default="replica,owner",
                        help="how the workers share the registry, each measured: replica "
                             "(the default) and owner (signaling/supervisor.py SHARING_ENV); "
                             "private (nothing shared, REGISTER only) is the reference for "
                             "what N processes cost without the sharing")
    args = parser.parse_args()
    rates = args.rates or ("3000,4000,5000,6000,7000" if args.kind == "register"
                           else "200,300,400,500,600,700")
    what = "REGISTER" if args.kind == "register" else "calls"
    print(f"{what} capacity under a CPU quota of {args.share:g} core per worker "
          f"({args.period_us} µs periods; --processes 1: {args.reference}"
          f"{'; idle CPUs poll' if args.poll_idle else ''}): highest rate "
          f"kept with {'0 failures' if not args.tolerance else f'<= {args.tolerance:.2%} failed'} "
          f"({args.duration:g} s steps; shared machine: noisy)")
    # The generator (this process and its SIPp children) competes with the machine's other
    # work at the top weight too, so that it is not what limits the server.
    generator = CpuQuota(None, "generator")
    generator.enter()
    hold = None
    try:
        if args.poll_idle:
            hold = idle_polling()
        _run(args.kind, args.processes, args.share, rates, args.duration,
             args.sharing.split(","), args.supervisor_share, args.period_us, args.reference,
             args.tolerance)
    finally:
        if hold is not None:
            hold.close()
        (generator.path.parent / "cgroup.procs").write_text(f"{os.getpid()}\n")
        generator.close()


def idle_polling() -> BinaryIO | None:
    """Ask for no CPU idle-state exit latency (``/dev/cpu_dma_latency`` at 0, held while the
    returned file stays open): an idle CPU then polls rather than halts.  On this VM (cpuidle
    ``haltpoll``) a halted vCPU is woken by the host, so a server at 0.1 core, idle 90% of
    the time, pays a wake-up at nearly every datagram; how much depends on what else keeps the
    core busy, i.e. on the machine's load, not on the server (benchmarks/README.md,
    ``bench_register_redis``: 54 -> 44 µs per REGISTER in a quiet window).  None (and a word)
    where it cannot be held (not root, no such device)."""
    try:
        hold = open("/dev/cpu_dma_latency", "wb", buffering=0)  # noqa: SIM115 (held open)
        hold.write(struct.pack("i", 0))
    except OSError as exc:
        print(f"  (--poll-idle: cannot hold /dev/cpu_dma_latency: {exc})")
        return None
    return hold


def _run(kind: str, processes: str, share: float, rates: str, duration: float,
         sharings: list[str], supervisor_share: float | None, period_us: int,
         reference: str, tolerance: float = 0.0) -> None:
    what = "REGISTER" if kind == "register" else "calls"
    base: float | None = None
    for n in (int(x) for x in processes.split(",")):
        for sharing in sharings if n > 1 else ["-"]:
            label = f"--processes {n}" + (f" ({sharing})" if n > 1 else "")
            best: tuple[int, float] | None = None
            strict: int | None = None  # the highest step with 0 failures, below ``best``
            bound = failing = False
            for per_worker in (int(x) for x in rates.split(",")):
                offered = per_worker * n
                r = step(kind, n, share, offered, duration, sharing, supervisor_share,
                         period_us, reference)
                print(f"  {label}: offered {offered:6d}/s -> {r.per_s:7.0f}/s, "
                      f"{r.cpu_us:6.1f} µs CPU per {what} (supervisor {r.supervisor_us:4.1f}), "
                      f"busiest worker {r.busiest:4.0%} of CPU, {r.received:4.0%} of requests, "
                      f"{r.new:4.0%} of new ones, {r.quota_used:4.0%} of its quota "
                      f"(CPU-bound ~{r.cpu_bound:5.0f}/s), throttled {r.throttled:2d} periods, "
                      f"{r.failed} failed | retransmissions {r.retransmissions}, "
                      f"503 {r.refused}, dropped {r.dropped} | system {r.system:4.0%}, "
                      f"{r.faults:5.2f} faults, {r.switches:5.2f} switches per {what} | "
                      f"supervisor {r.supervisor_cores:4.2f} core, "
                      f"SIPp {r.generator_cores:4.2f} core, starved {r.starved:4.0%}, "
                      f"load {r.load:4.1f}, pace {r.pace_ms:3.0f} ms"
                      + ("  MACHINE-BOUND" if r.machine_bound else ""), flush=True)
                bound = bound or r.machine_bound
                if r.failed > tolerance * offered * duration or r.per_s < 0.95 * offered:
                    break
                failing = failing or r.failed > 0
                strict = strict if failing else offered
                best = (offered, r.cpu_us)
            if best is None:
                print(f"  {label}: kept no step")
                continue
            base = base or best[0]
            print(f"  => {label}: {best[0]} {what}/s ({best[0] / base:4.2f}x), "
                  f"{best[1]:.1f} µs CPU per {what}"
                  + (f" (0 failed: {strict or 'no step'})" if tolerance else "")
                  + ("  (MACHINE-BOUND steps: the machine's figure, not the design's)"
                     if bound else ""), flush=True)

if __name__ == "__main__":
    main()
