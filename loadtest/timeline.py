"""The run's timeline: one ``SecondPoint`` per wall second, and the injector's lateness.

The hot path (the UAC's answer handling, the schedule) adds to ``cur`` directly; ``roll`` closes
seconds into ``points`` and hands each closed second to the ``on_second`` callback (the CSV
writer and the live view).  Per-second latency percentiles come from a uniform sample of at most
SECOND_SAMPLE answers of that second (reservoir sampling, filled by the UAC): sorting 4096 values
takes a fraction of a millisecond.  The per-kind HDR histograms stay exact.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from hdrh.histogram import HdrHistogram

from loadtest.metrics import MAX_SERIES_SECONDS, new_histogram, record_batch

__all__ = ["CLASSES", "SECOND_SAMPLE", "SecondPoint", "Timeline"]

SECOND_SAMPLE = 4096
#: Lateness values kept per second for its P99 (its maximum is exact): at 30k events/s, about
#: the first second's worth; beyond that the second's P99 is that of its first values.
LATE_SAMPLE = 32_768
#: Final status classes in the order of the CSV columns.
CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx", "6xx")


@dataclass(slots=True)
class SecondPoint:
    """What happened during one wall second of the run."""

    second: int
    offered: int = 0  # trace events the schedule made due in this second
    sent: int = 0  # new client transactions started (retries included, retransmissions not)
    answered: int = 0  # final answers received
    by_class: dict[str, int] = field(default_factory=dict)  # final answers by class, "1xx": 1xx
    good: int = 0  # 2xx within --deadline
    errors: int = 0  # timeouts + 4xx/5xx/6xx finals
    timeouts: int = 0
    retransmissions: int = 0
    inflight: int = 0  # client transactions in flight at the end of the second
    calls_started: int = 0  # INVITEs of new calls
    calls_up: int = 0  # established calls at the end of the second
    p50_us: float = 0.0
    p99_us: float = 0.0
    p999_us: float = 0.0
    late_p99_us: float = 0.0
    late_max_us: float = 0.0
    started: int = 0  # trace events started in this second (whenever they were due)
    deferred: int = 0  # ticks in which due events waited for --max-inflight
    cpu: float = 0.0  # the injector's own CPU, share of one core
    rx_drops: int = 0  # answers the kernel dropped on the injector's sockets
    rx_queued: int = 0  # bytes of answers waiting in its sockets at the second's end


def _pick(values: list[int], p: float) -> float:
    return float(values[min(len(values) - 1, math.ceil(p * len(values)) - 1)])


class Timeline:
    __slots__ = ("cur", "late", "late_pending", "lateness", "on_second", "points", "rng",
                 "sample", "second")

    def __init__(self, seed: int,
                 on_second: Callable[[SecondPoint], None] | None = None) -> None:
        self.points: list[SecondPoint] = []
        self.cur = SecondPoint(0)
        self.second = 0
        # This second's latencies: sorted once at the end of the second for its percentiles,
        # cheaper per answer than a second HDR histogram.
        self.sample: list[int] = []
        self.rng = random.Random(seed)
        self.lateness: HdrHistogram = new_histogram()
        self.late_pending: list[int] = []  # lateness (µs) not yet in the histogram
        self.late: list[int] = []  # this second's lateness (µs), at most LATE_SAMPLE values
        self.on_second = on_second

    def restart(self) -> None:
        """Second 0 starts now: what was counted before (set-up) is dropped from the series."""
        self.second = 0
        self.cur = SecondPoint(0)
        self.sample = []

    def flush(self) -> None:
        """Move collected lateness into the histogram (and this second's sample)."""
        pending = self.late_pending
        if not pending:
            return
        late = self.late
        if len(late) < LATE_SAMPLE:
            late.extend(pending[: LATE_SAMPLE - len(late)])
        m = max(pending)
        if m > self.cur.late_max_us:
            self.cur.late_max_us = float(m)
        record_batch(self.lateness, pending)
        self.late_pending = []

    def roll(self, sec: int, inflight: int, calls_up: int, cpu: float = 0.0) -> None:
        """Close the current second (and any skipped ones, a stall of the loop) into the
        timeline; ``cpu``, the injector's share of one core over them, goes to each."""
        if sec > self.second:
            self.flush()  # what is pending belongs to the second being closed
        while self.second < sec:
            cur = self.cur
            lats = self.sample
            if lats:
                lats.sort()
                cur.p50_us, cur.p99_us, cur.p999_us = (_pick(lats, p) for p in (0.5, 0.99, 0.999))
                self.sample = []
            if self.late:
                self.late.sort()
                cur.late_p99_us = _pick(self.late, 0.99)
                self.late = []
            cur.inflight, cur.calls_up, cur.cpu = inflight, calls_up, cpu
            if len(self.points) < MAX_SERIES_SECONDS:
                self.points.append(cur)
            if self.on_second is not None:
                self.on_second(cur)
            self.second += 1
            self.cur = SecondPoint(self.second)
