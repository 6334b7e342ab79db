"""CPU instructions the server spends per REGISTER and per stateless OPTIONS (issues 2 and 3).

Why instructions: on this shared 2-core machine the per-second figures of ``bench_register``
and ``bench_options`` move by 2x between runs (other tenants), while the number of
instructions the server executes per message is the same from run to run.  It is the figure to
compare two versions of the server by, or the C parser against the pure-Python one.

How: the server runs under ``valgrind --tool=callgrind`` (which counts every instruction the
process executes, on any machine); once it answers, the counters are zeroed
(``callgrind_control -z``), ``--messages`` requests are sent, the counters are dumped
(``callgrind_control -d``) and the dump's total is divided by the number sent.  The count
includes everything the process does meanwhile: the event loop, timers, metrics, the
sweeper.  Each request waits for its answer before the next is sent (valgrind runs the server
~50x slower; a queue would only add retransmissions), so this is the cost per message
without batching: an upper bound of what a loaded server spends.

- REGISTER: SIPp (``../shared/reference/sipp/register.xml``, a new user per call) at a rate
  low enough for the server under valgrind, then SIPp's own count of successful calls;
- OPTIONS: to the server itself (stateless 200), from a Python socket, one at a time.

Each is run twice, with the C fast path of the parser and with ``--sip-parser python``, side
by side in the same run.

    python -m benchmarks.bench_instructions [--messages 1000] [--parser both|c|python]

To compare with an older version of the server, run this file from a checkout of it (the
server is started from the tree the file is in): ``--parser c`` uses no option the older
server may lack.
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
from collections.abc import Sequence
from pathlib import Path

from tests.serverproc import free_udp_port, options, sip_request

__all__ = ["main"]

ROOT = Path(__file__).resolve().parents[1]
REGISTER_XML = ROOT.parent / "shared" / "reference" / "sipp" / "register.xml"
#: REGISTERs per second offered to the server under valgrind: well below what it answers
#: there, so SIPp never retransmits (a retransmission would be counted as work).
REGISTER_RATE = 40
START_TIMEOUT = 120.0


class ServerUnderCallgrind:
    def __init__(self, pure: bool) -> None:
        self.port = free_udp_port()
        self.dir = Path(tempfile.mkdtemp(prefix="bench-instr-"))
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={self.dir}/cg.%p",
               sys.executable, "-m", "signaling", "serve",
               "--sip-udp", f"127.0.0.1:{self.port}", "--sip-ws", "off", "--admin", "off",
               "--diameter", "off", "--log-level", "warning",
               "--spool", str(self.dir / "spool.jsonl"),
               # the default is "c": a server from before the option existed runs too
               *(["--sip-parser", "python"] if pure else [])]
        self.log = open(self.dir / "server.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while sip_request(self.port, options(self.port), timeout=1.0) is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start: {self.dir / 'server.log'}")

    def control(self, flag: str) -> None:
        subprocess.run(["callgrind_control", flag, str(self.proc.pid)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def measured(self) -> int:
        """Instructions between the last zero and the dump just taken."""
        dumps = [p for p in self.dir.glob(f"cg.{self.proc.pid}.*") if p.suffix != ".log"]
        newest = max(dumps, key=lambda p: int(p.name.rsplit(".", 1)[1]))
        for line in newest.read_text(errors="replace").splitlines():
            if line.startswith("summary:"):
                return int(line.split()[1])
        raise RuntimeError(f"no summary in {newest}")

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def send_registers(port: int, n: int) -> int:
    """SIPp REGISTERs with new users; returns SIPp's count of successful ones."""
    with tempfile.TemporaryDirectory() as tmp:
        stats = Path(tmp) / "stats.csv"
        subprocess.run(["sipp", f"127.0.0.1:{port}", "-sf", str(REGISTER_XML), "-m", str(n),
                        "-r", str(REGISTER_RATE), "-l", "1", "-nostdin", "-trace_stat",
                        "-stf", str(stats), "-timeout", str(n // REGISTER_RATE + 120)],
                       cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       check=False)
        rows = [r.split(";") for r in stats.read_text().splitlines() if r]
        header, last = rows[0], rows[-1]
        return int(last[header.index("SuccessfulCall(C)")])


def send_options(port: int, n: int) -> int:
    """OPTIONS to the server, one at a time; returns the 200s received."""
    ok = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5.0)
        s.bind(("127.0.0.1", 0))
        local = s.getsockname()[1]
        for i in range(n):
            branch = f"z9hG4bKi{i}x"
            s.sendto(options(port, branch=branch, local_port=local), ("127.0.0.1", port))
            with contextlib.suppress(TimeoutError):
                answer = s.recv(65535)
                # options() appends a random number to the branch: match on the prefix
                ok += answer.startswith(b"SIP/2.0 200 ") and f"branch={branch}".encode() in answer
    return ok


def measure(kind: str, pure: bool, n: int) -> tuple[int, int]:
    """(answered, instructions per message) for ``n`` messages of ``kind``."""
    server = ServerUnderCallgrind(pure)
    try:
        server.control("-z")
        answered = (send_registers if kind == "REGISTER" else send_options)(server.port, n)
        server.control("-d")
        time.sleep(0.5)
        return answered, server.measured() // max(answered, 1)
    finally:
        server.stop()


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=1000)
    ap.add_argument("--parser", choices=["both", "c", "python"], default="both",
                    help="which parser(s) to measure (default: both, side by side)")
    args = ap.parse_args(argv)
    for tool in ("valgrind", "callgrind_control", "sipp"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found (Debian: valgrind, sip-tester)")
    print(f"instructions executed by the server per message (callgrind), "
          f"{args.messages} messages each")
    modes = {"both": (False, True), "c": (False,), "python": (True,)}[args.parser]
    for kind in ("REGISTER", "OPTIONS"):
        results = {}
        for pure in modes:
            answered, per = measure(kind, pure, args.messages)
            results[pure] = per
            label = "pure-Python parser" if pure else "C fast path"
            print(f"  {kind:<8} {label:<19} answered {answered:>6}/{args.messages}  "
                  f"{per:>10,} instructions each")
        if len(results) == 2:
            print(f"  {kind:<8} C fast path / pure: {results[False] / results[True]:.2f}")


if __name__ == "__main__":
    main()
