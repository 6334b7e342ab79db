"""REGISTER per second into the in-memory registry, side by side with Kamailio (issue 3).

SIPp plays ``../shared/reference/sipp/register.xml`` (one REGISTER per call, a unique user per
call number, expects 200) pinned to core 0; the server under test is pinned to core 1.  For each
offered rate a fresh server is started (so every user of the step is new to the registry),
SIPp offers ``rate * duration`` REGISTERs, and the script prints successful and failed
registrations, the achieved rate (SIPp's own cumulative call rate), the mean response time, the
server's CPU use and its CPU time per REGISTER (utime + stime from /proc/PID/stat of the server
and every process it forked, divided by the successful REGISTERs).

Kamailio runs the reference ``../shared/reference/kamailio/kamailio.cfg`` (registrar with usrloc
in memory, one UDP worker).  That file fixes 127.0.0.1:5060 and the ctl socket
/tmp/kamailio_ctl, which other benchmarks on this machine use at the same time; so it is read in
place and run from a private temporary copy in which only those two lines differ (a private
port and socket).  Nothing else is changed; it gets 512 MB of shared memory (``-m``, see
``KAMAILIO_SHM_MB``) so its in-memory location table can hold every user of a step.

    python -m benchmarks.bench_register [--rates 5000,8000,10000,12000,15000,18000]
                                        [--duration 8] [--only ours|kamailio]

Target (issue 3): >= 15,000 REGISTER/s with 0 failures on one core.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness.serverproc import free_udp_port, options, sip_request

__all__ = ["ServerUnderTest", "Step", "main", "report", "run_sipp", "run_step",
           "tree_cpu_seconds"]

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT.parent / "shared" / "reference"
REGISTER_XML = REFERENCE / "sipp" / "register.xml"
KAMAILIO_CFG = REFERENCE / "kamailio" / "kamailio.cfg"
SERVER_CPU = 1
LOAD_CPU = 0
DEFAULT_RATES = "5000,8000,10000,12000,15000,18000"
#: SIPp gives up this long after the nominal end of a step: a REGISTER that never gets its
#: answer must count as failed, not hang the benchmark.
GRACE = 15.0
#: SIPp's socket buffers: at 18k/s a 64 kB default overflows whenever SIPp is descheduled.
SIPP_BUFFER = 4 * 1024 * 1024
#: Concurrent REGISTERs SIPp may have outstanding (its -l).  At 18k/s and a 1 ms answer a few
#: dozen are in flight; 5000 lets a slow server show up as latency first, then as failures.
SIPP_LIMIT = 5000
CLK_TCK = os.sysconf("SC_CLK_TCK")
#: Kamailio's shared memory (its -m, MB).  usrloc keeps every contact there; the default 64 MB
#: fills at ~55,000 contacts (seen here: every REGISTER beyond the 55,528th failed), fewer
#: than one 8 s step at 8,000/s registers.  Our server's registry has no such preset cap.
KAMAILIO_SHM_MB = 512
#: A step "kept up" when SIPp's achieved rate is at least this share of the offered rate: SIPp
#: itself lands a little under its target (it paces in 1 ms slots), a server that is behind
#: lands far under it, with latency past T1 and retransmissions.
KEPT_UP = 0.95
START_TIMEOUT = 20.0


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) of ``pid`` and all its descendants (Kamailio forks)."""
    children: dict[int, list[int]] = {}
    own: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()  # the name may contain spaces
        children.setdefault(int(fields[1]), []).append(int(entry.name))
        own[int(entry.name)] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += own.get(p, 0.0)
        todo.extend(children.get(p, []))
    return total


class ServerUnderTest:
    """Our server or Kamailio, pinned to ``SERVER_CPU``, in its own session."""

    def __init__(self, system: str, extra: Sequence[str] = ()) -> None:
        self.system = system
        self.port = free_udp_port()
        self.extra = list(extra)
        self.proc: subprocess.Popen[bytes] | None = None
        self.dir = Path(tempfile.mkdtemp(prefix=f"bench-{system}-"))
        self.log_path = self.dir / "server.log"

    def command(self) -> list[str]:
        if self.system == "kamailio":
            return ["kamailio", "-f", str(self._kamailio_cfg()), "-DD", "-E",
                    "-Y", str(self.dir), "-m", str(KAMAILIO_SHM_MB)]
        return [sys.executable, "-m", "signaling", "serve", "--processes", "1", "--sip-udp",
                f"127.0.0.1:{self.port}", "--sip-ws", "off", "--admin", "off",
                "--diameter", "off", "--log-level", "warning", "--auth", "off", "--pike-rate", "0",
                "--spool", str(self.dir / "spool.jsonl"), *self.extra]

    def _kamailio_cfg(self) -> Path:
        text = KAMAILIO_CFG.read_text()
        for old, new in (("listen=udp:127.0.0.1:5060", f"listen=udp:127.0.0.1:{self.port}"),
                         ("unix:/tmp/kamailio_ctl", f"unix:{self.dir}/kamailio_ctl")):
            assert old in text, f"reference config changed: no {old!r}"
            text = text.replace(old, new)
        cfg = self.dir / "kamailio.cfg"
        cfg.write_text(text)
        return cfg

    def start(self, **popen: object) -> ServerUnderTest:
        with open(self.log_path, "wb") as log:
            # Its own session, so stop() reaches every process Kamailio forks; the log goes
            # to a file, never to a pipe nobody reads.
            self.proc = subprocess.Popen(  # type: ignore[call-overload]
                ["taskset", "-c", str(SERVER_CPU), *self.command()], cwd=ROOT, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True, **popen)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.system} exited {self.proc.returncode}: "
                                   f"{self.log()[-2000:]}")
            if sip_request(self.port, options(self.port), timeout=0.2) is not None:
                return self
        raise RuntimeError(f"{self.system} did not answer OPTIONS: {self.log()[-2000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return int(self.proc.pid)

    def cpu(self) -> float:
        return tree_cpu_seconds(self.pid)

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(15)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)  # stragglers of the session
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class Step:
    system: str
    offered: int
    calls: int
    successful: int
    failed: int
    rate: float          # SIPp's cumulative call rate, CallRate(C)
    response_ms: float   # SIPp's mean response time
    seconds: float
    cpu_seconds: float
    sipp_rc: int
    #: SIPp's response-time distribution (the scenario's ``ResponseTimeRepartition``): answered
    #: REGISTERs per bucket, as (upper bound in ms or None for the last, count), in order.
    rtt: list[tuple[int | None, int]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.sipp_rc == 0 and self.failed == 0 and self.successful == self.calls

    @property
    def kept_up(self) -> bool:
        """0 failures and the offered rate achieved (within ``KEPT_UP``)."""
        return self.ok and self.rate >= KEPT_UP * self.offered

    def line(self) -> str:
        cpu = 100.0 * self.cpu_seconds / self.seconds if self.seconds else 0.0
        per = 1e6 * self.cpu_seconds / self.successful if self.successful else 0.0
        return (f"{self.system:8s} offered {self.offered:6d}/s  ok {self.successful:7d}  "
                f"failed {self.failed:6d}  achieved {self.rate:8.0f}/s  "
                f"mean rtt {self.response_ms:6.2f} ms  server cpu {cpu:5.1f}%  "
                f"{per:6.1f} us/REGISTER  "
                f"{'FAIL' if not self.ok else 'OK' if self.kept_up else 'OK-BEHIND'}")

    def distribution(self) -> str:
        """Request -> 200 times: the share in each bucket and where P50/P90/P99/P99.9 fall."""
        total = sum(n for _, n in self.rtt)
        if not total:
            return "response times: none"
        labels, below = [], 0
        for bound, _ in self.rtt:
            labels.append(f"<{bound}" if bound is not None else f">={below}")
            below = bound if bound is not None else below
        shares = "  ".join(f"{label} ms {100 * n / total:.1f}%"
                           for label, (_, n) in zip(labels, self.rtt, strict=True) if n)
        marks, seen = [], 0
        quantiles = [0.5, 0.9, 0.99, 0.999]
        for label, (_, n) in zip(labels, self.rtt, strict=True):
            seen += n
            while quantiles and seen >= quantiles[0] * total:
                marks.append(f"P{100 * quantiles.pop(0):g} {label} ms")
        return f"response times: {shares}; {', '.join(marks)}"


def run_sipp(scenario: Path, target: str, rate: int, calls: int, timeout: float,
             extra: Sequence[str] = ()) -> tuple[int, dict[str, str], str]:
    """One SIPp UAC on ``LOAD_CPU``; returns its exit status, last stats row and output."""
    with tempfile.TemporaryDirectory(prefix="bench-sipp-") as tmp:
        stat = Path(tmp) / "stat.csv"
        cmd = ["taskset", "-c", str(LOAD_CPU), "sipp", target, "-sf", str(scenario),
               "-i", "127.0.0.1", "-p", str(free_udp_port()), "-m", str(calls),
               "-r", str(rate), "-rp", "1000", "-l", str(SIPP_LIMIT), "-nostdin",
               "-trace_stat", "-stf", str(stat), "-fd", "1", "-buff_size", str(SIPP_BUFFER),
               "-timeout", f"{timeout:g}s", "-timeout_error", *extra]
        proc = subprocess.run(cmd, cwd=tmp, capture_output=True, timeout=timeout + GRACE,
                              env={**os.environ, "TERM": "dumb"}, check=False)
        rows = list(csv.reader(stat.open(newline="", errors="replace"), delimiter=";")) \
            if stat.exists() else []
    last = dict(zip(rows[0], rows[-1], strict=False)) if len(rows) >= 2 else {}
    return proc.returncode, last, proc.stdout.decode(errors="replace")


def _int(stats: dict[str, str], name: str) -> int:
    v = stats.get(name, "0").strip()
    return int(v) if v.isdigit() else 0


def _float(stats: dict[str, str], name: str) -> float:
    try:
        return float(stats.get(name, "0").strip())
    except ValueError:
        return 0.0


def _repartition(stats: dict[str, str]) -> list[tuple[int | None, int]]:
    """SIPp's ``ResponseTimeRepartition1_<N`` / ``_>=N`` columns, cumulative over the run."""
    out: list[tuple[int | None, int]] = []
    for name, value in stats.items():
        if name.startswith("ResponseTimeRepartition1_"):
            bound = name.removeprefix("ResponseTimeRepartition1_")
            count = int(value) if value.strip().isdigit() else 0
            out.append((int(bound[1:]) if bound.startswith("<") else None, count))
    return out


def _ms(text: str) -> float:
    """SIPp's ``HH:MM:SS:mmmmmm`` durations, in milliseconds."""
    parts = text.strip().split(":")
    if len(parts) != 4 or not all(p.isdigit() for p in parts):
        return 0.0
    h, m, s, us = (int(p) for p in parts)
    return ((h * 60 + m) * 60 + s) * 1000 + us / 1000


def run_step(system: str, rate: int, duration: float,
             make_server: Callable[[str], ServerUnderTest] = ServerUnderTest) -> Step:
    calls = int(rate * duration)
    server = make_server(system).start()
    try:
        cpu0, t0 = server.cpu(), time.monotonic()
        rc, stats, _ = run_sipp(REGISTER_XML, f"127.0.0.1:{server.port}", rate, calls,
                                  duration + GRACE)
        t1, cpu1 = time.monotonic(), server.cpu()
        if not server.alive():
            print(f"  ({system} died during the step: {server.log()[-500:]})", flush=True)
    finally:
        server.stop()
    successful = _int(stats, "SuccessfulCall(C)")
    return Step(system, rate, calls, successful, _int(stats, "FailedCall(C)")
                + (calls - successful - _int(stats, "FailedCall(C)")),
                _float(stats, "CallRate(C)"), _ms(stats.get("ResponseTime1(C)", "")),
                t1 - t0, cpu1 - cpu0, rc, _repartition(stats))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rates", default=DEFAULT_RATES)
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--only", choices=["ours", "kamailio"])
    args = ap.parse_args(argv)
    rates = [int(r) for r in args.rates.split(",")]
    systems = [args.only] if args.only else ["ours", "kamailio"]
    print(f"REGISTER, unique users, in-memory registry; {args.duration:g} s per rate; server "
          f"on core {SERVER_CPU}, SIPp on core {LOAD_CPU}; load average before: "
          f"{os.getloadavg()[0]:.2f}", flush=True)
    steps: list[Step] = []
    for rate in rates:
        for system in systems:
            steps.append(run_step(system, rate, args.duration))
            print(steps[-1].line(), flush=True)
    report(steps, systems)


def report(steps: list[Step], systems: list[str]) -> None:
    """The highest rate each system kept up with 0 failures, and the ratio."""
    best = {system: _best(steps, system) for system in systems}
    print("highest offered rate kept up with 0 failures (achieved rate, CPU per REGISTER):")
    for system, top in best.items():
        if top is None:
            print(f"  {system:8s} none")
        else:
            print(f"  {system:8s} {top.offered:6d}/s offered, {top.rate:8.0f}/s achieved, "
                  f"{1e6 * top.cpu_seconds / top.successful:.1f} us CPU per REGISTER "
                  f"(one full core: {top.successful / top.cpu_seconds:.0f}/s)")
    ours, kam = best.get("ours"), best.get("kamailio")
    if ours is not None and kam is not None:
        cpu_ratio = (ours.cpu_seconds / ours.successful) / (kam.cpu_seconds / kam.successful)
        print(f"ratio ours/kamailio: {ours.rate / kam.rate:.2f} (achieved rates); CPU per "
              f"REGISTER ours/kamailio: {cpu_ratio:.2f}")


def _best(steps: list[Step], system: str) -> Step | None:
    kept = [s for s in steps if s.system == system and s.kept_up]
    return max(kept, key=lambda s: s.rate) if kept else None


if __name__ == "__main__":
    main()
