"""Scaling of ``signaling serve --processes N`` under a CPU quota per worker (issue 16).

A machine with a few cores shared with other work cannot show scaling by load alone: the load
generator competes with the server.  So the server (supervisor, its shared registry and its
workers) runs in a cgroup whose CPU quota is ``N x SHARE`` of a core (cgroup v2 ``cpu.max``, or
v1 ``cpu.cfs_quota_us`` where the cpu controller is still on v1, as here), and SIPp offers more
REGISTERs in steps (a rate per worker, times N): the highest step served with no failure is
the server's capacity at that quota.  The quota covers the supervisor too, so the shared
registry's cost counts against the workers' share, as it would on a full machine.
``--processes 1`` is the single-process server (no supervisor, in-process registry): the
reference both for the speed-up and for the CPU per REGISTER the multi-process design adds.

SIPp plays ``../shared/reference/sipp/register.xml`` (a new user per call), or complete calls
(``harness/sipp/uac.xml`` to a registered ``uas.xml``: the callee answers from one port, so the
responses and in-dialog requests reach their worker through its slot port), from ``SOURCES``
sockets (``-t un``), so the kernel's hash spreads them over the workers.

    python -m benchmarks.bench_multiproc [--kind register|calls] [--processes 1,2]
                                         [--share 0.25] [--rates R1,R2,...] [--duration 5]

The machine is shared with other engineers' work: the figures are noisy; run it twice.
Targets (issue 16): >= 1.8x for 2 workers, >= 3.4x for 4; <= 10% more CPU per REGISTER.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.bench_register import REGISTER_XML, _int, run_sipp, tree_cpu_seconds
from harness.serverproc import free_udp_port, options, sip_request
from harness.sipp_runner import Sipp
from harness.sipp_runner import run_sipp as sipp_run

__all__ = ["CpuQuota", "main"]

ROOT = Path(__file__).resolve().parent.parent
CGROUP = Path("/sys/fs/cgroup")
#: cgroup CPU period (µs): the quota is enforced per 100 ms, the kernel default.
PERIOD_US = 100_000
#: Source sockets SIPp spreads the calls over (``-max_socket``).
SOURCES = 64
START_TIMEOUT = 60.0


class CpuQuota:
    """A fresh cgroup limited to ``cores`` of CPU time (v2 ``cpu.max`` or v1 CFS quota)."""

    def __init__(self, cores: float) -> None:
        name = f"bench-multiproc-{os.getpid()}"
        quota = int(cores * PERIOD_US)
        controllers = CGROUP / "cgroup.controllers"
        if controllers.exists() and "cpu" in controllers.read_text().split():
            self.path = CGROUP / name
            self.path.mkdir()
            (self.path / "cpu.max").write_text(f"{quota} {PERIOD_US}\n")
        else:
            self.path = CGROUP / "cpu" / name
            self.path.mkdir()
            (self.path / "cpu.cfs_period_us").write_text(f"{PERIOD_US}\n")
            (self.path / "cpu.cfs_quota_us").write_text(f"{quota}\n")

    def enter(self) -> None:
        """Move the calling process (a child before exec) into the cgroup."""
        (self.path / "cgroup.procs").write_text(f"{os.getpid()}\n")

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            self.path.rmdir()


class Server:
    def __init__(self, processes: int, quota: CpuQuota) -> None:
        self.port = free_udp_port()
        self.dir = Path(tempfile.mkdtemp(prefix="bench-multiproc-"))
        cmd = [sys.executable, "-m", "signaling", "serve", "--processes", str(processes),
               "--sip-udp", f"127.0.0.1:{self.port}", "--sip-ws", "off", "--admin", "off",
               "--diameter", "off", "--log-level", "warning",
               "--spool", str(self.dir / "spool.jsonl")]
        with open(self.dir / "log", "wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True, preexec_fn=quota.enter)
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

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def step(kind: str, processes: int, share: float, rate: int,
         duration: float) -> tuple[float, float, int]:
    """(successful per second, CPU µs per success, failed) of ``kind`` at ``processes``."""
    quota = CpuQuota(processes * share)
    server = Server(processes, quota)
    try:
        server.wait_ready()
        cpu0, t0 = tree_cpu_seconds(server.proc.pid), time.monotonic()
        calls = int(rate * duration)
        spread = ["-t", "un", "-max_socket", str(SOURCES)]
        if kind == "register":
            _, stats, _ = run_sipp(REGISTER_XML, f"127.0.0.1:{server.port}", rate, calls,
                                   duration + 20, [*spread, "-recv_timeout", "4000"])
            ok, failed = _int(stats, "SuccessfulCall(C)"), _int(stats, "FailedCall(C)")
        else:
            ok, failed = _calls(server.port, rate, calls, duration, spread)
        elapsed = time.monotonic() - t0
        cpu = tree_cpu_seconds(server.proc.pid) - cpu0
        return ok / elapsed, cpu / max(ok, 1) * 1e6, failed
    finally:
        server.stop()
        quota.remove()


def _calls(port: int, rate: int, calls: int, duration: float,
           spread: list[str]) -> tuple[int, int]:
    """Complete calls (harness/sipp/uac.xml and uas.xml, the UAS registered first); the UAS
    answers from one port, so responses and BYEs rely on the slot ports to find their
    worker."""
    remote = f"127.0.0.1:{port}"
    uas = Sipp("uas", calls=calls, timeout=duration + 30)
    reg = sipp_run("register", remote, keys={"user": "uas", "expires": "3600",
                                              "contact": f"127.0.0.1:{uas.port}"})
    if not reg.ok:
        raise RuntimeError(f"UAS registration failed: {reg.errors[-500:]}")
    uas.start()
    try:
        caller = Sipp("uac", remote, service="uas", calls=calls, rate=rate,
                      timeout=duration + 30, extra=spread).start()
        result = caller.wait()
    finally:
        uas.stop()
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
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args()
    rates = args.rates or ("3000,4000,5000,6000,7000" if args.kind == "register"
                           else "200,300,400,500,600,700")
    what = "REGISTER" if args.kind == "register" else "calls"
    print(f"{what} capacity under a CPU quota of {args.share:g} core per worker: highest rate "
          f"kept with 0 failures ({args.duration:g} s steps; shared machine: noisy)")
    base: float | None = None
    for n in (int(x) for x in args.processes.split(",")):
        best: tuple[int, float] | None = None
        for per_worker in (int(x) for x in rates.split(",")):
            offered = per_worker * n
            per_s, cpu_us, failed = step(args.kind, n, args.share, offered, args.duration)
            print(f"  --processes {n}: offered {offered:6d}/s -> {per_s:7.0f}/s, "
                  f"{cpu_us:6.1f} µs CPU per {what}, {failed} failed")
            if failed or per_s < 0.95 * offered:
                break
            best = (offered, cpu_us)
        if best is None:
            print(f"  --processes {n}: kept no step")
            continue
        base = base or best[0]
        print(f"  => --processes {n}: {best[0]} {what}/s ({best[0] / base:4.2f}x), "
              f"{best[1]:.1f} µs CPU per {what}")


if __name__ == "__main__":
    main()
