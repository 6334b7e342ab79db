"""Complete calls per second through the proxy with dialog tracking, side by side with Kamailio.

Each call is INVITE, 100, 180, 200, ACK, BYE, 200 (SIPp scenarios harness/sipp/uac.xml and
uas.xml, the UAS registered first with harness/sipp/register.xml).  The server under test is
pinned to core 1, both SIPp instances to core 0 (the issue's set-up: "SIPp UAC and UAS on one
core, server pinned to the other").  For each offered rate the server is started fresh, the
UAC places ``rate * duration`` calls, and the script prints successful and failed calls, the
achieved rate and the server's CPU use (utime + stime from /proc, all its processes).

Kamailio runs ``../shared/reference/kamailio/kamailio.cfg`` in place (registrar + tm + rr +
dialog, one UDP worker, 127.0.0.1:5060), the same way.

    python -m benchmarks.bench_calls [--rates 1000,1500,2000,2500] [--duration 10]
                                     [--only ours|kamailio]

Target (issue 4): >= 1,500 calls/s with 0 failed calls on one core.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.bench_register import tree_cpu_seconds
from harness.serverproc import free_udp_port, options, sip_request
from harness.sipp_runner import Sipp, SippResult, run_sipp

__all__ = ["Measure", "main", "run_rate"]

ROOT = Path(__file__).resolve().parent.parent
KAMAILIO_CFG = ROOT.parent / "shared" / "reference" / "kamailio" / "kamailio.cfg"
KAMAILIO_PORT = 5060  # fixed by the reference configuration
#: Kamailio's shared memory (MB).  Its 64 MB default runs out after ~2,000 calls with tm and
#: dialog state (every later INVITE gets "500 No error (2/SL)"); 512 MB holds a 10 s run.
KAMAILIO_SHM_MB = 512
SERVER_CPU = 1
SIPP_CPU = 0
#: Seconds beyond the nominal run before SIPp gives up: failed calls must show as failed, not
#: as a hung benchmark.
GRACE = 20.0


@dataclass
class Measure:
    system: str
    offered: int
    calls: int
    successful: int
    failed: int
    seconds: float
    cpu_seconds: float
    udp_drops: int  # machine-wide UDP receive-buffer overflows during the run
    server_drops: int  # of which on the server's own socket
    sipp_cpu_seconds: float  # both SIPp processes: core 0 must not be the bottleneck

    def line(self) -> str:
        rate = self.successful / self.seconds if self.seconds else 0.0
        cpu = 100.0 * self.cpu_seconds / self.seconds if self.seconds else 0.0
        per_call = 1e6 * self.cpu_seconds / self.successful if self.successful else 0.0
        return (f"{self.system:9s} offered {self.offered:5d}/s  calls {self.calls:6d}  "
                f"ok {self.successful:6d}  failed {self.failed:5d}  "
                f"achieved {rate:6.0f}/s  server cpu {cpu:5.1f}% ({per_call:3.0f} us/call)  "
                f"sipp cpu {100.0 * self.sipp_cpu_seconds / self.seconds:5.1f}%  "
                f"udp drops {self.udp_drops} (server socket {self.server_drops})")


def _udp_receive_errors() -> int:
    """RcvbufErrors from /proc/net/snmp: datagrams the kernel dropped on a full socket."""
    lines = [ln.split() for ln in Path("/proc/net/snmp").read_text().splitlines()
             if ln.startswith("Udp:")]
    return int(dict(zip(lines[0], lines[1], strict=True))["RcvbufErrors"])


def _socket_drops(port: int) -> int:
    """Datagrams dropped on the UDP sockets bound to 127.0.0.1:``port`` (/proc/net/udp): all
    of them, since a multi-process server binds one per worker (``SO_REUSEPORT``), each with
    its own count; the first alone read one worker's (session 13)."""
    total = 0
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == f"0100007F:{port:04X}":
            total += int(fields[-1])
    return total


class _Server:
    """A server under test pinned to SERVER_CPU: ours or Kamailio."""

    def __init__(self, system: str) -> None:
        self.system = system
        self.port = KAMAILIO_PORT if system == "kamailio" else free_udp_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> _Server:
        if self.system == "kamailio":
            cmd = ["kamailio", "-f", str(KAMAILIO_CFG), "-DD", "-E", "-m", str(KAMAILIO_SHM_MB)]
        else:
            cmd = [sys.executable, "-m", "signaling", "serve", "--processes", "1", "--sip-udp",
                   f"127.0.0.1:{self.port}", "--sip-ws", "off", "--admin", "off",
                   "--diameter", "off", "--log-level", "warning",
                   "--auth", "off", "--pike-rate", "0"]  # beside Kamailio without auth
        # Its own session, so stop() reaches every process Kamailio forks; the log goes to a
        # file (a pipe nobody reads would block the server once full).
        # The file lives as long as the server: closed in stop(), not in a with block.
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115
            prefix=f"bench-{self.system}-", suffix=".log")
        self.proc = subprocess.Popen(["taskset", "-c", str(SERVER_CPU), *cmd], cwd=ROOT,
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = Path(self.log.name).read_text(errors="replace")
                raise RuntimeError(f"{self.system} exited {self.proc.returncode}: {err[-2000:]}")
            if sip_request(self.port, options(self.port), timeout=0.2) is not None:
                return self
        raise RuntimeError(f"{self.system} did not answer OPTIONS")

    def cpu(self) -> float:
        assert self.proc is not None
        return tree_cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(15)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # stragglers of the group
        self.proc.wait()
        self.log.close()


def run_rate(system: str, rate: int, duration: float) -> Measure:
    calls = int(rate * duration)
    server = _Server(system).start()
    remote = f"127.0.0.1:{server.port}"
    try:
        uas = Sipp("uas", calls=calls, timeout=duration + GRACE, cpu=SIPP_CPU)
        reg = run_sipp("register", remote, keys={"user": "uas", "expires": "3600",
                                                 "contact": f"127.0.0.1:{uas.port}"})
        if not reg.ok:
            raise RuntimeError(f"registration failed: {reg.errors[-1000:]}")
        uas.start()
        time.sleep(0.3)
        drops0 = _udp_receive_errors()
        cpu0, t0 = server.cpu(), time.monotonic()
        caller = Sipp("uac", remote, service="uas", calls=calls, rate=rate,
                      timeout=duration + GRACE, cpu=SIPP_CPU).start()
        uac: SippResult = caller.wait()
        t1, cpu1 = time.monotonic(), server.cpu()
        assert caller.proc is not None and uas.proc is not None
        sipp_cpu = tree_cpu_seconds(uas.proc.pid) + caller.cpu_seconds
        drops = _udp_receive_errors() - drops0
        server_drops = _socket_drops(server.port)  # while the server still holds it
        alive = server.proc is not None and server.proc.poll() is None
        uas.stop()
    finally:
        server.stop()
    if uac.successful < calls and os.environ.get("BENCH_VERBOSE"):
        print(uac.errors[:3000], flush=True)
    if not alive:
        print(f"  ({system} died during the run: results invalid)", flush=True)
    return Measure(system, rate, calls, uac.successful, calls - uac.successful,
                   t1 - t0, cpu1 - cpu0, drops, server_drops, sipp_cpu)


def _kamailio_usable() -> str | None:
    if shutil.which("kamailio") is None:
        return "kamailio not installed (apt-get install kamailio)"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", KAMAILIO_PORT))
        except OSError:
            return f"127.0.0.1:{KAMAILIO_PORT} is in use"
    return None


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", default="1000,1500,2000,2500")
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--only", choices=["ours", "kamailio"])
    args = ap.parse_args(argv)
    rates = [int(r) for r in args.rates.split(",")]
    systems = [args.only] if args.only else ["ours", "kamailio"]
    print(f"complete calls (INVITE/100/180/200/ACK/BYE/200), {args.duration:g} s per rate; "
          f"server on core {SERVER_CPU}, SIPp UAC+UAS on core {SIPP_CPU}; "
          f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
    for rate in rates:
        for system in systems:
            if system == "kamailio" and (why := _kamailio_usable()) is not None:
                print(f"kamailio  offered {rate:5d}/s  NOT RUN: {why}", flush=True)
                continue
            print(run_rate(system, rate, args.duration).line(), flush=True)


if __name__ == "__main__":
    main()
