"""Run reports: a JSON document (msgspec Structs) that the HTML page (``reporthtml``) is built from.

The JSON keeps everything the HTML shows, including each kind's full HDR histogram (its standard
compressed base64 encoding), so ``storm report run.json --html out.html`` rebuilds the page, and
runs can be merged or re-analysed later with any HdrHistogram implementation.

The capacity curve puts each offered second's goodput and P99 against its offered load, in
CAPACITY_BINS bins of offered load (mean goodput, median P99 per bin); the knee is found on the
seconds in time order by ``metrics.find_knee`` and its rule is written into the report.
"""

from __future__ import annotations

import math
import platform
import statistics
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import msgspec

from loadtest.engine import RunResult
from loadtest.metrics import (
    KNEE_LATENCY_FACTOR,
    KNEE_LATENCY_FLOOR_US,
    KNEE_TOLERANCE,
    SUSTAIN_S,
    find_knee,
    is_error,
)

__all__ = [
    "BOUND_LATE_MS",
    "BUSY_CPU",
    "LATE_P99_LIMIT_MS",
    "REPORT_VERSION",
    "CallReport",
    "GeneratorReport",
    "KindReport",
    "KneeReport",
    "RunReport",
    "ThresholdReport",
    "build_report",
    "generator_report",
    "load_report",
    "save_report",
]

REPORT_VERSION = 2
#: Lateness P99 above this, the offered load was not what the trace asked for.
LATE_P99_LIMIT_MS = 10.0
#: Lateness P99 above this, the run measures the injector (``generator_report``): a fifth of
#: T1 (RFC 3261 §17.1.1.1, 500 ms), the grain of every timer the server answers within.  Not
#: the warning's 10 ms: an injector at 27% of a core lagged 24 ms at P99 (its loop's pauses;
#: bench_overload, 12,246 REGISTERs/s), which a step judged against a 1-s deadline does not
#: feel.
BOUND_LATE_MS = 100.0
#: An offered second in which the injector used this share of one core or more: its loop had
#: no time to spare, so the answers waited in its sockets (their latency is partly its own).
BUSY_CPU = 0.9
#: Points of the capacity curve at most: enough to show its shape, few enough to read.
CAPACITY_BINS = 24
KNEE_RULE = (
    f"the last second before, for {SUSTAIN_S} s in a row, goodput (3 s average) fell below "
    f"{100 * (1 - KNEE_TOLERANCE):.0f}% of the offered load, or P99 latency rose above "
    f"{KNEE_LATENCY_FACTOR:.0f}x its low-load value (least-loaded tenth of the seconds) and "
    f"{KNEE_LATENCY_FLOOR_US / 1000:.0f} ms"
)


class KindReport(msgspec.Struct):
    sent: int
    answered: dict[str, int]
    failures: dict[int, int]
    codes: dict[int, int]  # every final answer by exact status (Diameter: Result-Code)
    errors: int  # finals that are errors (not --expect'ed) + timeouts
    provisional: int
    timeouts: int
    retransmissions: int
    lost_simulated: int
    status_503: int
    retry_after_honoured: int
    backoff_retries: int
    abandoned: int
    queued: int
    superseded: int
    latency_us: dict[str, float]
    histogram: str  # HdrHistogram compressed base64 encoding
    offered_per_s: list[int]
    goodput_per_s: list[int]
    challenges_answered: int = 0  # 401/407 answered with credentials: not final answers
    late_finals: int = 0  # final answers after Timer B/F fired
    latency_ok_us: dict[str, float] = msgspec.field(default_factory=dict)  # of 2xx answers


class CallReport(msgspec.Struct):
    attempted: int
    established: int
    failed: int
    completed: int
    abandoned: int


class KneeReport(msgspec.Struct):
    second: int
    offered_per_s: float
    goodput_per_s: float
    max_goodput_per_s: float
    reason: str = "goodput"


class SecondReport(msgspec.Struct, array_like=True):
    """One wall second of the run, as an array in this field order (see ``SecondPoint``)."""

    second: int
    offered: int  # trace events due by the schedule
    sent: int
    answered: int
    by_class: dict[str, int]
    good: int
    errors: int
    timeouts: int
    retransmissions: int
    inflight: int
    calls_started: int
    calls_up: int
    p50_us: float
    p99_us: float
    p999_us: float
    late_p99_us: float
    late_max_us: float
    started: int = 0  # trace events started in this second
    deferred: int = 0  # ticks in which due events waited for --max-inflight
    cpu: float = 0.0  # the injector's CPU, share of one core
    rx_drops: int = 0  # answers the kernel dropped on the injector's sockets
    rx_queued: int = 0  # bytes of answers waiting in its sockets at the second's end


class GeneratorReport(msgspec.Struct):
    """Whether the injector, not only the server, limited the run (``generator_report``)."""

    offered_seconds: int  # seconds of the schedule
    busy_seconds: int  # of them, with the injector at BUSY_CPU of a core or more
    cpu_max: float  # its highest share of one core in an offered second
    rx_drops: int  # answers the kernel dropped on its sockets (buffers full)
    behind_schedule: int  # events not sent, due over --max-lateness ago
    deferred_by_cap: int  # ticks in which due events waited for --max-inflight
    lateness_p99_ms: float
    #: Why its figures measure it as much as the server; empty when it kept up.
    bound: list[str] = []
    #: The most bytes of answers waiting in its sockets at the end of an offered second.
    rx_queued_max: int = 0


class CapacityPoint(msgspec.Struct, array_like=True):
    """[offered transactions/s, goodput/s, P99 ms, seconds in the bin]."""

    offered_per_s: float
    goodput_per_s: float
    p99_ms: float
    seconds: int


class ThresholdReport(msgspec.Struct, array_like=True):
    threshold: str
    observed: float | None  # None: the run has no data for it (fails)
    passed: bool


class RunReport(msgspec.Struct):
    version: int
    started_at: str  # ISO 8601, UTC
    versions: dict[str, str]
    trace: dict[str, Any]
    config: dict[str, Any]
    wall_s: float
    schedule_end_s: float
    events_started: int
    events_skipped: dict[str, int]
    deferred_by_cap: int
    send_errors: int
    stray_responses: int
    transactions_per_s: float
    lateness_us: dict[str, float]
    cpu: dict[str, float]
    kinds: dict[str, KindReport]
    calls: CallReport
    uas: dict[str, Any]
    diameter: dict[str, Any]
    timeline: list[SecondReport]
    knee: KneeReport | None
    knee_rule: str = KNEE_RULE
    offered_per_s: list[int] = []  # trace events due per second by the schedule
    capacity: list[CapacityPoint] = []
    thresholds: list[ThresholdReport] = []
    warnings: list[str] = []
    generator: GeneratorReport | None = None
    started_per_s: list[int] = []  # trace events started per wall second (offered, really)


def _pct(h: Any) -> dict[str, float]:
    if h.get_total_count() == 0:
        return {}
    out = {f"p{p:g}": float(h.get_value_at_percentile(p)) for p in (50.0, 99.0, 99.9)}
    out["max"] = float(h.get_max_value())
    out["mean"] = float(h.get_mean_value())
    out["count"] = float(h.get_total_count())
    return out


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "platform": platform.platform(terse=True)}
    for dist in ("signaling", "hdrhistogram", "msgspec", "uvloop"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "-"
    return out


def _kind_report(k: Any, expected: frozenset[int]) -> KindReport:
    return KindReport(
        sent=k.sent, answered=dict(k.answered), failures=dict(k.failures), codes=dict(k.codes),
        errors=k.timeouts + sum(n for c, n in k.codes.items() if is_error(c, expected)),
        provisional=k.provisional,
        timeouts=k.timeouts, retransmissions=k.retransmissions,
        lost_simulated=k.lost_simulated, status_503=k.status_503,
        retry_after_honoured=k.retry_after_honoured, backoff_retries=k.backoff_retries,
        abandoned=k.abandoned, queued=k.queued, superseded=k.superseded,
        latency_us=k.percentiles(),
        histogram=k.latency.encode().decode("ascii"),
        offered_per_s=list(k.offered.values), goodput_per_s=list(k.goodput.values),
        challenges_answered=k.challenges_answered, late_finals=k.late_finals,
        latency_ok_us=k.percentiles(ok=True),
    )


def _capacity(off: list[int], good: list[int], p99: list[float]) -> list[CapacityPoint]:
    """Seconds with offered load, binned by it: the server's answer to each level of load."""
    pts = sorted((o, g, p) for o, g, p in zip(off, good, p99, strict=False) if o > 0)
    if not pts:
        return []
    lo, hi = pts[0][0], pts[-1][0]
    width = max((hi - lo) / CAPACITY_BINS, 1e-9)
    bins: dict[int, list[tuple[int, int, float]]] = {}
    for pt in pts:
        bins.setdefault(min(int((pt[0] - lo) / width), CAPACITY_BINS - 1), []).append(pt)
    return [
        CapacityPoint(statistics.fmean(o for o, _, _ in b), statistics.fmean(g for _, g, _ in b),
                      statistics.median(p for _, _, p in b) / 1000.0, len(b))
        for _, b in sorted(bins.items())
    ]


def generator_report(res: RunResult, offered_seconds: int) -> GeneratorReport:
    """The injector's own limits in the run: a capacity tester must say when it could not
    offer the rate asked, or read the answers as fast as they came (its CPU at its limit, its
    sockets' buffers overflowing: the answers it lost show as the server's timeouts and
    retransmissions, the answers it read late as the server's latency)."""
    offered = res.timeline[:offered_seconds]
    busy = sum(1 for p in offered if p.cpu >= BUSY_CPU)
    queued = max((p.rx_queued for p in offered), default=0)
    cpu_max = max((p.cpu for p in offered), default=0.0)
    behind = res.events_skipped.get("behind-schedule", 0)
    late = _pct(res.lateness).get("p99", 0.0) / 1000.0
    bound = []
    if busy:
        bound.append(f"CPU at {100 * BUSY_CPU:.0f}%+ of a core in {busy} of {len(offered)} "
                     f"offered s (max {100 * cpu_max:.0f}%): answers read late (up to "
                     f"{queued / 1e6:.1f} MB waiting in its sockets)")
    if res.rx_drops:
        bound.append(f"{res.rx_drops} answers dropped on its sockets (receive buffers full): "
                     "counted as timeouts and retransmissions")
    if late > BOUND_LATE_MS:
        bound.append(f"lateness P99 {late:.1f} ms: sent later than the schedule")
    if behind:
        bound.append(f"{behind} events not sent, due over --max-lateness ago")
    if res.deferred_by_cap:
        bound.append(f"events waited {res.deferred_by_cap} ticks for --max-inflight")
    return GeneratorReport(len(offered), busy, cpu_max, res.rx_drops, behind,
                           res.deferred_by_cap, late, bound, queued)


def build_report(res: RunResult, trace: dict[str, Any], config: dict[str, Any],
                 expected: frozenset[int] = frozenset(), started_at: str | None = None
                 ) -> RunReport:
    kinds = {name: _kind_report(k, expected) for name, k in sorted(res.kinds.items())}
    # The knee is read off the offered seconds only (the drain is not offered load), without
    # the pre-registration, which is set-up rather than load.
    # Every second that was offered, the last partial one included: goodput is credited to
    # the offered second, so the drain's late answers still count where they belong.
    n = math.ceil(res.schedule_end_s - 1e-3)
    off = [0] * n
    good = [0] * n
    for name, k in res.kinds.items():
        if name == "prereg":
            continue
        for i, v in enumerate(k.offered.values[:n]):
            off[i] += v
        for i, v in enumerate(k.goodput.values[:n]):
            good[i] += v
    p99 = [p.p99_us if p.answered else 0.0 for p in res.timeline[:n]]
    knee = find_knee(off, good, p99_us=p99)
    cpu_total = res.cpu_user_s + res.cpu_sys_s
    answered = sum(sum(k.answered.values()) for name, k in res.kinds.items())
    return RunReport(
        version=REPORT_VERSION,
        started_at=started_at or datetime.now(UTC).isoformat(timespec="seconds"),
        versions=versions(),
        trace=trace,
        config=config,
        wall_s=res.wall_s,
        schedule_end_s=res.schedule_end_s,
        events_started=res.events_started,
        events_skipped=res.events_skipped,
        deferred_by_cap=res.deferred_by_cap,
        send_errors=res.send_errors,
        stray_responses=res.stray_responses,
        transactions_per_s=answered / res.wall_s if res.wall_s > 0 else 0.0,
        lateness_us=_pct(res.lateness),
        cpu={"user_s": res.cpu_user_s, "sys_s": res.cpu_sys_s,
             "percent_of_one_core": 100.0 * cpu_total / res.wall_s if res.wall_s else 0.0},
        kinds=kinds,
        calls=CallReport(res.calls.attempted, res.calls.established, res.calls.failed,
                         res.calls.completed, res.calls.abandoned),
        uas={"requests": res.uas.requests,
             "retransmissions_absorbed": res.uas.retransmissions_absorbed,
             "ok_retransmitted": res.uas.ok_retransmitted, "ack_timeouts": res.uas.ack_timeouts,
             "bad": res.uas.bad},
        diameter=res.diameter,
        timeline=[SecondReport(p.second, p.offered, p.sent, p.answered, dict(p.by_class),
                               p.good, p.errors, p.timeouts, p.retransmissions, p.inflight,
                               p.calls_started, p.calls_up, p.p50_us, p.p99_us, p.p999_us,
                               p.late_p99_us, p.late_max_us, p.started, p.deferred, p.cpu,
                               p.rx_drops, p.rx_queued)
                  for p in res.timeline],
        knee=None if knee is None else KneeReport(knee.second, knee.offered_per_s,
                                                  knee.goodput_per_s, knee.max_goodput_per_s,
                                                  knee.reason),
        offered_per_s=list(res.offered_per_s),
        capacity=_capacity(off, good, p99),
        generator=generator_report(res, n),
        started_per_s=[p.started for p in res.timeline],
    )


def save_report(report: RunReport, path: str | Path) -> None:
    Path(path).write_bytes(msgspec.json.format(msgspec.json.encode(report)))


class _Versioned(msgspec.Struct):
    version: int


def load_report(path: str | Path) -> RunReport:
    data = Path(path).read_bytes()
    version = msgspec.json.decode(data, type=_Versioned).version
    if version != REPORT_VERSION:
        raise ValueError(f"{path}: report format version {version}, this storm reads "
                         f"version {REPORT_VERSION}: run the replay again")
    return msgspec.json.decode(data, type=RunReport)
