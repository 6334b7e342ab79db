"""REGISTER per second over TCP beside UDP, ours and Kamailio side by side (issue 15).

The method of ``bench_register`` (SIPp on core 0 playing the shared reference scenario
``register.xml``, one REGISTER per call and a unique user per call number; the server alone
on core 1; a fresh server per step), with SIPp over one persistent TCP connection (``-t t1``)
as well as over UDP.  Kamailio runs the shared reference configuration with one more listen
line, ``listen=tcp:`` on the same private port (it forks ``tcp_children`` processes of its own
for TCP; their CPU is counted with the rest of its process tree).

    python -m benchmarks.bench_register_tcp [--rates 2000,4000,6000] [--duration 6]
                                            [--only ours|kamailio]

Target (issue 15): ours over TCP at >= 0.9x ours over UDP.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from benchmarks.bench_register import (
    GRACE,
    LOAD_CPU,
    REGISTER_XML,
    SERVER_CPU,
    ServerUnderTest,
    Step,
    _float,
    _int,
    _ms,
    run_sipp,
)
from harness.serverproc import free_tcp_port

__all__ = ["main"]


class StreamServer(ServerUnderTest):
    """The server under test with a TCP listener on the port of its UDP one."""

    def __init__(self, system: str) -> None:
        super().__init__(system)
        self.tcp_port = free_tcp_port()
        if system == "ours":
            self.extra = ["--sip-tcp", f"127.0.0.1:{self.tcp_port}"]

    def _kamailio_cfg(self) -> Path:
        cfg = super()._kamailio_cfg()
        text = cfg.read_text()
        udp = f"listen=udp:127.0.0.1:{self.port}"
        cfg.write_text(text.replace(udp, f"{udp}\nlisten=tcp:127.0.0.1:{self.tcp_port}"))
        return cfg


def run_step(system: str, transport: str, rate: int, duration: float) -> Step:
    calls = int(rate * duration)
    server = StreamServer(system)
    server.start()
    try:
        port = server.tcp_port if transport == "tcp" else server.port
        cpu0, t0 = server.cpu(), time.monotonic()
        rc, stats, _ = run_sipp(REGISTER_XML, f"127.0.0.1:{port}", rate, calls,
                                duration + GRACE,
                                ["-t", "t1"] if transport == "tcp" else [])
        t1, cpu1 = time.monotonic(), server.cpu()
    finally:
        server.stop()
    successful = _int(stats, "SuccessfulCall(C)")
    return Step(f"{system}/{transport}", rate, calls, successful,
                calls - successful, _float(stats, "CallRate(C)"),
                _ms(stats.get("ResponseTime1(C)", "")), t1 - t0, cpu1 - cpu0, rc)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rates", default="2000,4000,6000")
    ap.add_argument("--duration", type=float, default=6.0)
    ap.add_argument("--only", choices=["ours", "kamailio"])
    args = ap.parse_args(argv)
    systems = [args.only] if args.only else ["ours", "kamailio"]
    print(f"REGISTER over UDP and TCP (one SIPp connection), unique users, in-memory "
          f"registry; {args.duration:g} s per rate; server on core {SERVER_CPU}, SIPp on core "
          f"{LOAD_CPU}; load average before: {os.getloadavg()[0]:.2f}", flush=True)
    best: dict[str, float] = {}
    for rate in (int(r) for r in args.rates.split(",")):
        for system in systems:
            for transport in ("udp", "tcp"):
                step = run_step(system, transport, rate, args.duration)
                print(step.line(), flush=True)
                if step.kept_up:
                    best[step.system] = max(best.get(step.system, 0.0), step.rate)
    print("highest achieved rate kept up with 0 failures:")
    for name, top in sorted(best.items()):
        print(f"  {name:14s} {top:8.0f}/s")
    for system in systems:
        udp, tcp = best.get(f"{system}/udp"), best.get(f"{system}/tcp")
        if udp and tcp:
            print(f"  {system}: TCP / UDP = {tcp / udp:.2f}")


if __name__ == "__main__":
    main()
