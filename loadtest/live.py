"""Stats while a run goes: the per-second CSV and the live view.

Both are fed each wall second as it closes (``SecondPoint``).  The CSV, like SIPp's
``-trace_stat`` and Locust's ``--csv``, has one row per second of the run (the drain included),
written and flushed as the second closes so ``tail -f`` follows it.  Its columns:

=================  ===========================================================================
second             wall second of the run, from 0
offered            trace events the schedule made due in this second
sent               new client transactions started (retries included, retransmissions not)
answered           final answers received
1xx .. 6xx         SIP answers received by class (1xx: provisional); Diameter answers count in
                   sent, answered, errors, timeouts and goodput, not in these
timeouts           transactions given up in this second (Timer B/F, 64*T1)
errors             4xx/5xx/6xx finals not --expect'ed, plus timeouts
goodput            2xx answers received in this second within --deadline of their request
p50_ms, p99_ms     latency of the finals received in this second (from a 4096-answer sample)
retransmissions    requests re-sent by the UAs' timers (RFC 3261 §17.1)
inflight           client transactions waiting for a final answer at the end of the second
calls_started      new calls (first INVITEs)
calls_up           calls established and not yet hung up, at the end of the second
lateness_p99_ms    injector lateness against the schedule, P99 of this second's events
lateness_max_ms    and its maximum
=================  ===========================================================================

The live view is a progress bar on a terminal, and otherwise (CI logs, pipes) one line every
``interval`` seconds summing up those seconds.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Callable
from typing import IO, Any

from loadtest.timeline import CLASSES, SecondPoint

__all__ = ["CSV_COLUMNS", "CsvStats", "LiveLines", "LiveView", "ProgressBar", "fan_out"]

CSV_COLUMNS = ("second", "offered", "sent", "answered", *CLASSES, "timeouts", "errors",
               "goodput", "p50_ms", "p99_ms", "retransmissions", "inflight", "calls_started",
               "calls_up", "lateness_p99_ms", "lateness_max_ms")


def _ms(us: float) -> str:
    return f"{us / 1000.0:.3f}"


class CsvStats:
    def __init__(self, path: str) -> None:
        self.fh = open(path, "w", newline="")  # noqa: SIM115 - closed by close()
        self.w = csv.writer(self.fh)
        self.w.writerow(CSV_COLUMNS)

    def second(self, p: SecondPoint, engine: Any) -> None:
        self.w.writerow([p.second, p.offered, p.sent, p.answered,
                         *(p.by_class.get(c, 0) for c in CLASSES), p.timeouts, p.errors,
                         p.good, _ms(p.p50_us), _ms(p.p99_us), p.retransmissions, p.inflight,
                         p.calls_started, p.calls_up, _ms(p.late_p99_us), _ms(p.late_max_us)])
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()


class LiveView:
    """What every live view does with a closed second; ``close`` at the end of the run."""

    def second(self, p: SecondPoint, engine: Any) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class ProgressBar(LiveView):
    """Live line on a terminal: events started, offered and good rate, P99, errors (tqdm)."""

    def __init__(self, total: int) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="ev", dynamic_ncols=True)
        self.last = 0

    def second(self, p: SecondPoint, engine: Any) -> None:
        started = int(engine.idx)
        self.bar.update(started - self.last)
        self.last = started
        self.bar.set_postfix_str(
            f"offered {p.offered}/s good {p.good}/s P99 {p.p99_us / 1000:.1f}ms "
            f"err {p.errors} inflight {p.inflight}")

    def close(self) -> None:
        self.bar.close()


class LiveLines(LiveView):
    """Without a terminal: one line every ``interval`` seconds, for CI logs."""

    def __init__(self, interval: int, out: IO[str] | None = None) -> None:
        self.interval = max(1, interval)
        self.out = out
        self.acc: list[SecondPoint] = []

    def second(self, p: SecondPoint, engine: Any) -> None:
        self.acc.append(p)
        if len(self.acc) >= self.interval:
            self._emit()

    def _emit(self) -> None:
        ps, self.acc = self.acc, []
        n = len(ps)
        out = self.out if self.out is not None else sys.stdout
        offered, sent = sum(p.offered for p in ps) / n, sum(p.sent for p in ps) / n
        print(f"storm: {ps[0].second}-{ps[-1].second + 1}s  offered {offered:.0f}/s"
              f"  sent {sent:.0f}/s  good {sum(p.good for p in ps) / n:.0f}/s"
              f"  errors {sum(p.errors for p in ps)}  timeouts {sum(p.timeouts for p in ps)}"
              f"  P99 {max(p.p99_us for p in ps) / 1000:.1f} ms  inflight {ps[-1].inflight}"
              f"  calls up {ps[-1].calls_up}"
              f"  lateness P99 {max(p.late_p99_us for p in ps) / 1000:.1f} ms",
              file=out, flush=True)

    def close(self) -> None:
        if self.acc:
            self._emit()


def fan_out(*sinks: Callable[[SecondPoint, Any], None]) -> Callable[[SecondPoint, Any], None]:
    def call(p: SecondPoint, engine: Any) -> None:
        for s in sinks:
            s(p, engine)
    return call
