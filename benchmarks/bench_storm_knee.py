"""The knee of the server's goodput curve under a ramped registration storm.

Starts ``signaling serve`` (pinned to CPU 1 with taskset, in-memory registry), ramps a
constant-rate REGISTER trace from 0 to ``--rate`` over ``--seconds`` with the storm engine
(pinned to CPU 0), and prints the per-second offered load and goodput (answered 2xx within the
deadline, credited to the second the request was offered in) and the knee with the rule that
found it (``loadtest.report.KNEE_RULE``): the last second before goodput fell for good below
95% of what was offered, or P99 latency rose for good above 10x its low-load value and 20 ms.

    python -m benchmarks.bench_storm_knee [--rate 12000] [--seconds 12] [--deadline 0.5]
"""

from __future__ import annotations

import argparse
import os
import sys

import uvloop

from harness.serverproc import ServerProcess
from loadtest.engine import Engine, EngineConfig
from loadtest.report import build_report
from loadtest.synth import SynthParams, synthesize


class _PinnedServer(ServerProcess):
    """The server on CPU 1, the injector keeps CPU 0."""

    def args(self) -> list[str]:
        return ["taskset", "-c", "1", *super().args()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=12_000)
    ap.add_argument("--seconds", type=float, default=12.0)
    ap.add_argument("--deadline", type=float, default=0.5)
    a = ap.parse_args(argv)
    two_cores = (os.cpu_count() or 1) >= 2
    cls = _PinnedServer if two_cores else ServerProcess
    server = cls("--domain", "example.com", "--log-level", "warning", ws=False)
    if two_cores:
        os.sched_setaffinity(0, {0})
    server.start()
    try:
        # Trace time runs at half speed during a ramp of R (tau = w^2 / 2R): a trace of
        # rate * seconds / 2 events ramps to ``rate`` exactly at the end.
        header, events = synthesize("steady", SynthParams(
            kind="register", rate=a.rate, duration=a.seconds / 2, users=50_000,
            domain="example.com"))
        cfg = EngineConfig(target=("127.0.0.1", server.udp_port), ramp_up=a.seconds,
                           duration=a.seconds, deadline=a.deadline, drain=2.0,
                           register_callees=False)
        res = uvloop.run(Engine(events, cfg).run())
    finally:
        server.stop()
    rep = build_report(res, {"source": header.source}, {})
    reg = rep.kinds["register"]
    print(f"ramp 0 -> {a.rate:.0f} REGISTER/s over {a.seconds:.0f} s, deadline {a.deadline} s")
    print("second  offered/s  goodput/s")
    for i, off in enumerate(reg.offered_per_s[: int(a.seconds)]):
        good = reg.goodput_per_s[i] if i < len(reg.goodput_per_s) else 0
        print(f"{i:6d}  {off:9d}  {good:9d}")
    print(f"answered {reg.answered}  non-2xx {reg.failures}  timeouts {reg.timeouts}  "
          f"retransmissions {reg.retransmissions}  503 {reg.status_503}")
    if rep.knee is None:
        print("knee: not reached (goodput kept up with the whole ramp)")
    else:
        print(f"knee ({rep.knee.reason} rule) at second {rep.knee.second}: "
              f"offered {rep.knee.offered_per_s:.0f}/s, "
              f"goodput {rep.knee.goodput_per_s:.0f}/s; "
              f"max goodput {rep.knee.max_goodput_per_s:.0f}/s")
    print(f"injector CPU {rep.cpu['percent_of_one_core']:.0f}% of one core")
    return 0


if __name__ == "__main__":
    sys.exit(main())
