"""A reload under load: failures and the latency bump (issue 16).

``signaling serve --processes 2`` takes REGISTERs (SIPp, ``../shared/reference/sipp/register.xml``)
at ``--register-rate`` and complete calls (``harness/sipp/uac.xml`` to a registered ``uas.xml``)
at ``--call-rate``, both from 64 source sockets, for ``--duration`` seconds; ``signaling reload``
runs at a third of the way.  Printed: what SIPp counted as failed (target 0), and the response
time SIPp measured second by second (REGISTER -> 200, INVITE -> 200), its median over the run
and its worst second, which is the bump the reload causes.

    python -m benchmarks.bench_reload [--register-rate 1000] [--call-rate 200] [--duration 15]

The machine is shared with other work: the figures are noisy, the failure count is not.
"""

from __future__ import annotations

import argparse
import csv
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.bench_register import REGISTER_XML
from benchmarks.reload_trace import Tracer
from harness.serverproc import ServerProcess
from harness.sipp_runner import Sipp, run_sipp

__all__ = ["main"]

SPREAD = ["-t", "un", "-max_socket", "64"]
_ERROR_LINE = re.compile(r"\d{4}-\d\d-\d\d\s+[\d:.]+\s+[\d.]+:\s*")


def _ms(text: str) -> float:
    parts = text.strip().split(":")
    if len(parts) != 4 or not all(p.isdigit() for p in parts):
        return 0.0
    h, m, s, us = (int(p) for p in parts)
    return ((h * 60 + m) * 60 + s) * 1000 + us / 1000


class Load:
    """One SIPp UAC whose per-second statistics are kept (``Sipp`` removes its files)."""

    def __init__(self, sipp: Sipp) -> None:
        self.sipp = sipp
        self.proc = subprocess.Popen([*sipp.args(), "-fd", "1"], cwd=sipp.dir,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     stdin=subprocess.DEVNULL)

    def finish(self, timeout: float) -> tuple[int, int, list[float], list[str]]:
        """(successful, failed, response time of each second in ms, why calls failed)."""
        self.proc.wait(timeout)
        rows = list(csv.DictReader(self.sipp.stat_file.open(errors="replace"), delimiter=";"))
        last = rows[-1] if rows else {}
        per_second = [_ms(r.get("ResponseTime1(P)", "")) for r in rows[1:]]
        # SIPp's own failure counts by kind (a call that timed out or ran out of
        # retransmissions is not in its error file).
        kinds = [f"{v} x {k[6:-3]}" for k, v in last.items() if k.startswith("Failed")
                 and k.endswith("(C)") and k != "FailedCall(C)" and v and v.isdigit()
                 and int(v)]
        return (int(last.get("SuccessfulCall(C)", 0) or 0),
                int(last.get("FailedCall(C)", 0) or 0), per_second,
                kinds + _reasons(self.sipp.error_file))


def _reasons(error_file: Path) -> list[str]:
    """SIPp's error lines, counted by their text without the call's numbers, most frequent
    first: a failure count alone does not say whether the server refused, lost or was late."""
    if not error_file.exists():
        return []
    counts: dict[str, int] = {}
    for line in error_file.read_text(errors="replace").splitlines():
        # An error line: "2026-12-04\t23:59:58.123456\t1733356798.123456: Aborting call on
        # ..."; the message SIPp quotes after it is left out.
        stamp = _ERROR_LINE.match(line)
        if stamp is None:
            continue
        text = re.sub(r"\d+", "N", line[stamp.end():])[:150]
        counts[text] = counts.get(text, 0) + 1
    return [f"{n} x {text}" for text, n in sorted(counts.items(), key=lambda kv: -kv[1])[:3]]


def _warnings(log: str) -> list[str]:
    """The server's WARNING and ERROR lines, counted by their text without numbers."""
    counts: dict[str, int] = {}
    for line in log.splitlines():
        for level in (" WARNING ", " ERROR "):
            if level in line:
                text = re.sub(r"\d+", "N", line[line.index(level):])[:150]
                counts[text] = counts.get(text, 0) + 1
    return [f"{n} x {text}" for text, n in sorted(counts.items(), key=lambda kv: -kv[1])[:5]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--register-rate", type=int, default=1000)
    parser.add_argument("--call-rate", type=int, default=200)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--no-reload", action="store_true",
                        help="the same load without the reload: the control (what fails "
                             "without it is the load's, not the reload's)")
    parser.add_argument("--series", action="store_true",
                        help="print each second's response time too (whether a bump drains)")
    parser.add_argument("--trace", action="store_true",
                        help="print each second's socket queues and drops, each worker's CPU "
                             "and the reload's log lines beside SIPp's response times "
                             "(benchmarks/reload_trace.py)")
    parser.add_argument("--server-args", default="",
                        help="more options for the server, e.g. '--overload-kernel-shed off'")
    args = parser.parse_args()
    pid_file = Path(tempfile.mkdtemp(prefix="bench-reload-")) / "signaling.pid"
    calls = int(args.call_rate * args.duration)
    registers = int(args.register_rate * args.duration)
    # Log level info: the supervisor's "reload done" line marks the end of the reload.
    with ServerProcess("--processes", "2", "--pid-file", str(pid_file),
                       *args.server_args.split(), ws=False) as server:
        remote = f"127.0.0.1:{server.udp_port}"
        uas = Sipp("uas", calls=calls, timeout=args.duration + 60)
        reg = run_sipp("register", remote, keys={"user": "uas", "expires": "3600",
                                                  "contact": f"127.0.0.1:{uas.port}"})
        assert reg.ok, reg.errors
        uas.start()
        time.sleep(1.0)
        assert server.proc is not None
        tracer = Tracer(server.proc.pid, server.udp_port) if args.trace else None
        if tracer is not None:
            tracer.start(time.time())
        loads = {
            "REGISTER": Load(Sipp(REGISTER_XML.as_posix(), remote, calls=registers,
                                  rate=args.register_rate, timeout=args.duration + 60,
                                  extra=SPREAD)),
            "call": Load(Sipp("uac", remote, service="uas", calls=calls, rate=args.call_rate,
                              timeout=args.duration + 60, extra=SPREAD)),
        }
        time.sleep(args.duration / 3)
        t0 = time.monotonic()
        if not args.no_reload:
            subprocess.run([sys.executable, "-m", "signaling", "reload", "--pid-file",
                            str(pid_file)], check=True, capture_output=True)
            while "reload done" not in server.read_log() and time.monotonic() - t0 < 60:
                time.sleep(0.1)
        reload_s = time.monotonic() - t0
        results = {name: load.finish(args.duration + 90) for name, load in loads.items()}
        if tracer is not None:
            tracer.stop()
        uas.stop()
    what = "no reload (control)" if args.no_reload else \
        f"rolling reload took {reload_s:.1f} s"
    print(f"reload under {args.register_rate} REGISTER/s and {args.call_rate} calls/s, "
          f"--processes 2 ({what}; shared machine: noisy)")
    for name, (ok, failed, series, reasons) in results.items():
        times = [t for t in series if t > 0]  # a second with no answer measured says nothing
        median = statistics.median(times) if times else 0.0
        worst = max(times) if times else 0.0
        print(f"  {name:8}: {ok} successful, {failed} failed; response time per second: "
              f"median {median:.2f} ms, worst {worst:.2f} ms")
        for reason in reasons if failed else []:
            print(f"      {reason}")
        if args.series:
            print(f"      each second (ms): {' '.join(f'{t:.0f}' for t in series)}")
    if tracer is not None:
        for line in tracer.table({name: r[2] for name, r in results.items()}, server.log):
            print(line)
    if args.series or args.trace:
        for line in _warnings(server.log):
            print(f"  server: {line}")


if __name__ == "__main__":
    main()
