"""What a call's CPU is made of, ours beside Kamailio's, under ``bench_calls``' load (issue 18).

``bench_calls`` says how much CPU a call costs each server; this says where it goes, the two
side by side in the same window, so that a gap can be put down to user space (the code) or to
the kernel (syscalls, loopback delivery, waking SIPp).  The set-up is ``bench_calls``' (the
server pinned to core 1, both SIPp instances to core 0, a fresh server per run, INVITE / 100 /
180 / 200 / ACK / BYE / 200 per call), plus two things:

* cgroups at the kernel's top CPU weight, the server's held to one core's quota, SIPp's
  unlimited (``benchmarks.cgroups.CpuQuota``): on this machine other engineers' work shares the
  cores, and at the default weight a server gets a slice of its core and SIPp fails calls
  (at load 6: 2,267 of 5,000 calls for ours, 2,610 for Kamailio), which measures the
  neighbours;
* ``perf stat`` attached to the server's processes over the calls: per call, the syscalls by
  kind, wake-ups the server caused (``sched:sched_waking``: each loopback datagram to a
  sleeping SIPp is one), context switches and softirqs; utime and stime from /proc beside
  them.

Runs alternate between the systems (``--runs``): the load changes from minute to minute, so
only figures from the same window compare.

    python -m benchmarks.bench_calls_gap [--rate 1000] [--duration 5] [--runs 2]
                                         [--only ours|kamailio]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks import bench_calls
from benchmarks.bench_register import CLK_TCK
from benchmarks.cgroups import CpuQuota, process_tree
from harness.sipp_runner import Sipp, run_sipp

__all__ = ["EVENTS", "main", "run"]

#: What ``perf stat`` counts on the server, in the order printed.
EVENTS = ("task-clock", "context-switches", "sched:sched_waking", "raw_syscalls:sys_enter",
          "syscalls:sys_enter_sendto", "syscalls:sys_enter_recvfrom",
          "syscalls:sys_enter_recvmsg", "syscalls:sys_enter_recvmmsg",
          "syscalls:sys_enter_epoll_wait",
          "syscalls:sys_enter_epoll_pwait", "irq:softirq_entry")
_SHORT = {"task-clock": "cpu ms", "context-switches": "cswitch",
          "sched:sched_waking": "wakes", "raw_syscalls:sys_enter": "syscalls",
          "irq:softirq_entry": "softirq"}


def _user_sys(pids: list[int]) -> tuple[float, float]:
    user = system = 0
    for p in pids:
        with contextlib.suppress(OSError):
            text = Path(f"/proc/{p}/stat").read_text()
            fields = text[text.rindex(")") + 2:].split()
            user, system = user + int(fields[11]), system + int(fields[12])
    return user / CLK_TCK, system / CLK_TCK


def _perf_counts(path: Path) -> dict[str, float]:
    counts: dict[str, float] = {}
    for line in path.read_text().splitlines():
        fields = line.split(",")  # perf stat -x, : value,unit,event,...
        if len(fields) > 2 and fields[0][:1].isdigit():
            counts[fields[2]] = float(fields[0])
    return counts


def run(system: str, rate: int, duration: float, quota: CpuQuota) -> str:
    """One run: the line of per-call figures."""
    calls = int(rate * duration)
    server = bench_calls._Server(system).start()
    assert server.proc is not None
    pids = process_tree(server.proc.pid)  # taskset execs the server: its pid is the server's
    for p in pids:
        quota.enter(p)
    remote = f"127.0.0.1:{server.port}"
    out = Path(tempfile.mkdtemp(prefix="bench-callgap-")) / "perf.csv"
    perf: subprocess.Popen[bytes] | None = None
    try:
        uas = Sipp("uas", calls=calls, timeout=duration + bench_calls.GRACE,
                   cpu=bench_calls.SIPP_CPU)
        reg = run_sipp("register", remote, keys={"user": "uas", "expires": "3600",
                                                 "contact": f"127.0.0.1:{uas.port}"})
        if not reg.ok:
            raise RuntimeError(f"registration failed: {reg.errors[-1000:]}")
        uas.start()
        time.sleep(0.3)
        if shutil.which("perf"):
            perf = subprocess.Popen(["perf", "stat", "-x,", "-o", str(out), "-e",
                                     ",".join(EVENTS), "-p", ",".join(map(str, pids))],
                                    stderr=subprocess.DEVNULL)
            time.sleep(0.3)
        user0, sys0 = _user_sys(pids)
        caller = Sipp("uac", remote, service="uas", calls=calls, rate=rate,
                      timeout=duration + bench_calls.GRACE, cpu=bench_calls.SIPP_CPU).start()
        result = caller.wait()
        user1, sys1 = _user_sys(pids)
        if perf is not None:
            perf.send_signal(signal.SIGINT)
            perf.wait()
        uas.stop()
    finally:
        if perf is not None and perf.poll() is None:
            perf.kill()
        server.stop()
    ok = max(result.successful, 1)
    line = (f"{system:9s} ok {result.successful:5d}/{calls}  user {1e6 * (user1 - user0) / ok:4.0f}"
            f" sys {1e6 * (sys1 - sys0) / ok:3.0f} us/call")
    if perf is not None and out.exists():
        counts = _perf_counts(out)
        for event in EVENTS:
            name = _SHORT.get(event, event.removeprefix("syscalls:sys_enter_"))
            line += f"  {name} {counts.get(event, 0.0) / ok:.2f}"
        with contextlib.suppress(OSError):
            out.unlink()
            out.parent.rmdir()
    return line + f"  (load {os.getloadavg()[0]:.2f})"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--only", choices=["ours", "kamailio"])
    args = ap.parse_args(argv)
    systems = [args.only] if args.only else ["ours", "kamailio"]
    print(f"per call at {args.rate}/s, {args.duration:g} s per run, server on core "
          f"{bench_calls.SERVER_CPU} (a core's quota, top weight), SIPp on core "
          f"{bench_calls.SIPP_CPU}; load average before: {os.getloadavg()[0]:.2f}", flush=True)
    generator, quota = CpuQuota(None, "callgap-sipp"), CpuQuota(1.0, "callgap-server")
    generator.enter()
    try:
        for _ in range(args.runs):
            for system in systems:
                print(run(system, args.rate, args.duration, quota), flush=True)
    finally:
        (generator.path.parent / "cgroup.procs").write_text(f"{os.getpid()}\n")
        generator.close()
        quota.close()


if __name__ == "__main__":
    main()
