"""What a storm run measures, per kind of transaction, and the knee of the goodput curve.

Latencies are microseconds in HDR histograms (the ``hdrhistogram`` package): percentiles to
P99.9 with 3 significant digits whatever the spread, which SIPp's fixed buckets cannot give.
Goodput is credited to the second the request was *offered* in, so offered and goodput series
line up and their ratio says what share of that second's load the server handled in time.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from hdrh.histogram import HdrHistogram

__all__ = [
    "HIST_MAX_US",
    "KNEE_TOLERANCE",
    "MAX_SERIES_SECONDS",
    "KindStats",
    "Knee",
    "SecondSeries",
    "find_knee",
    "is_error",
    "new_histogram",
    "record_batch",
    "status_class",
]

#: Longest latency recorded: Timer B/F is 64*T1 = 32 s (RFC 3261 §17.1.1.2); a minute leaves room
#: for Retry-After delays without clamping.
HIST_MAX_US = 60_000_000
#: Three significant digits keep P99.9 honest at 0.1% resolution.
HIST_DIGITS = 3
#: Per-second series are kept for at most a day of run: beyond, a run is not a storm test.
MAX_SERIES_SECONDS = 86_400
#: A second is "at the knee" once goodput falls this far below what was offered.
KNEE_TOLERANCE = 0.05
#: Consecutive bad seconds that make a knee rather than a blip.
SUSTAIN_S = 2
#: Percentiles reported everywhere.
PERCENTILES = (50.0, 99.0, 99.9)


def new_histogram() -> HdrHistogram:
    return HdrHistogram(1, HIST_MAX_US, HIST_DIGITS)


def record_batch(h: HdrHistogram, values: list[int]) -> None:
    """Record many values at once: same histogram as one ``record_value`` each, fewer calls."""
    for v, n in Counter(values).items():
        h.record_value(_clamp_us(v), n)


def is_error(code: int, expected: frozenset[int] | set[int]) -> bool:
    """SIP 4xx-6xx, Diameter Result-Codes outside 2xxx (RFC 6733 §7.1), unless expected."""
    if code in expected:
        return False
    return not 2000 <= code < 3000 if code >= 1000 else code >= 400


def status_class(status: int) -> str:
    return f"{status // 100}xx"


def _clamp_us(us: int) -> int:
    return 1 if us < 1 else HIST_MAX_US if us > HIST_MAX_US else us


@dataclass(slots=True)
class SecondSeries:
    """Counts per whole second of the run, grown on demand up to MAX_SERIES_SECONDS."""

    values: list[int] = field(default_factory=list)

    def add(self, second: int, n: int = 1) -> None:
        if second < 0 or second >= MAX_SERIES_SECONDS:
            return
        if second >= len(self.values):
            self.values.extend([0] * (second + 1 - len(self.values)))
        self.values[second] += n


@dataclass(slots=True)
class KindStats:
    """Counters of one kind of transaction (register, options, invite, bye, ...)."""

    sent: int = 0  # new transactions started (not counting retransmissions)
    answered: dict[str, int] = field(default_factory=dict)  # final responses by status class
    failures: dict[int, int] = field(default_factory=dict)  # non-2xx finals by exact status
    codes: dict[int, int] = field(default_factory=dict)  # every final by exact status
    provisional: int = 0
    timeouts: int = 0  # Timer B/F fired (RFC 3261 §17.1.1.2, §17.1.2.2)
    #: Final answers that came after Timer B/F had fired: the server answered a client that had
    #: given up (issue 13 asks for none).
    late_finals: int = 0
    retransmissions: int = 0
    lost_simulated: int = 0  # first copies withheld to model network loss
    status_503: int = 0
    retry_after_honoured: int = 0  # re-sent after the Retry-After delay (RFC 3261 §21.5.4)
    backoff_retries: int = 0  # re-sent after the RFC 5626 §4.5 back-off
    challenges_answered: int = 0  # 401/407 answered with credentials (loadtest.auth)
    abandoned: int = 0  # still in flight, or waiting to retry, when the run ended
    queued: int = 0  # REGISTERs that waited for the UA's previous one (RFC 3261 §10.2)
    superseded: int = 0  # waiting REGISTERs replaced by a later one of the same UA
    latency: HdrHistogram = field(default_factory=new_histogram)
    #: Latencies of the 2xx answers alone: the admitted transactions (a 503 or a timeout
    #: says how fast the server refused, not how long what it took waited; issue 13's P99
    #: is of what was admitted).
    latency_ok: HdrHistogram = field(default_factory=new_histogram)
    offered: SecondSeries = field(default_factory=SecondSeries)
    goodput: SecondSeries = field(default_factory=SecondSeries)
    #: Latencies (µs) not yet in ``latency``: the hot path appends, ``flush`` records them
    #: grouped by value (one ``record_value(v, count)`` per distinct value, far fewer calls).
    pending: list[int] = field(default_factory=list)
    #: The same for ``latency_ok``.
    pending_ok: list[int] = field(default_factory=list)

    def flush(self) -> None:
        record_batch(self.latency, self.pending)
        record_batch(self.latency_ok, self.pending_ok)
        self.pending = []
        self.pending_ok = []

    def record_final(self, status: int, latency_us: int, good: bool, offered_second: int) -> None:
        key = status_class(status)
        self.answered[key] = self.answered.get(key, 0) + 1
        self.codes[status] = self.codes.get(status, 0) + 1
        self.pending.append(latency_us)
        if status < 300:
            self.pending_ok.append(latency_us)
        if good:
            self.goodput.add(offered_second)

    def percentiles(self, ok: bool = False) -> dict[str, float]:
        """Of every final answer, or (``ok``) of the 2xx answers alone."""
        self.flush()
        h = self.latency_ok if ok else self.latency
        if h.get_total_count() == 0:
            return {}
        out = {f"p{p:g}": float(h.get_value_at_percentile(p)) for p in PERCENTILES}
        out["max"] = float(h.get_max_value())
        out["mean"] = float(h.get_mean_value())
        return out


@dataclass(frozen=True, slots=True)
class Knee:
    """Where the server stopped following the offered load."""

    second: int  # last second still within tolerance
    offered_per_s: float
    goodput_per_s: float
    max_goodput_per_s: float
    #: "goodput" or "latency": which rule found it; ", from the start" when the server did not
    #: keep up even in the first offered second (no load level it handled).
    reason: str = "goodput"


#: Latency rule of the knee: P99 above this many times its low-load value ...
KNEE_LATENCY_FACTOR = 10.0
#: ... and above this many microseconds (a 0.2 ms P99 doubling to 2 ms is no knee).
KNEE_LATENCY_FLOOR_US = 20_000.0


def _smooth(values: list[int], width: int) -> list[float]:
    out: list[float] = []
    acc = 0
    for i, v in enumerate(values):
        acc += v
        if i >= width:
            acc -= values[i - width]
        out.append(acc / min(i + 1, width))
    return out


def _low_load_p99(offered: list[int], p99_us: list[float]) -> float:
    """Median P99 of the least-loaded tenth of the seconds that had answers."""
    busy = sorted((o, p) for o, p in zip(offered, p99_us, strict=False) if o > 0 and p > 0)
    if not busy:
        return 0.0
    low = sorted(p for _, p in busy[: max(1, len(busy) // 10)])
    return low[len(low) // 2]


def find_knee(
    offered: list[int], goodput: list[int], *, tolerance: float = KNEE_TOLERANCE, width: int = 3,
    p99_us: list[float] | None = None,
) -> Knee | None:
    """The knee of the server's response to a rising offered load (a ramp or steps).

    Walking the seconds in order, the knee is the last second before, for ``SUSTAIN_S`` seconds
    in a row, either goodput (smoothed over ``width`` s) falls below (1 - tolerance) of the
    offered load, or (when ``p99_us`` is given) that second's P99 latency exceeds
    KNEE_LATENCY_FACTOR times its low-load value and KNEE_LATENCY_FLOOR_US: one bad second is
    noise, a sustained one is the server giving up.  ``None`` when neither happened (the ramp
    did not reach the knee).  The caller drops the final, partial seconds whose answers are
    still on their way.
    """
    n = min(len(offered), len(goodput))
    off = _smooth(offered[:n], width)
    good = _smooth(goodput[:n], width)
    bad_good = [o > 0 and g < (1.0 - tolerance) * o for o, g in zip(off, good, strict=True)]
    bad_lat = [False] * n
    if p99_us is not None:
        limit = max(KNEE_LATENCY_FACTOR * _low_load_p99(offered[:n], p99_us[:n]),
                    KNEE_LATENCY_FLOOR_US)
        bad_lat = [i < len(p99_us) and offered[i] > 0 and p99_us[i] > limit for i in range(n)]
    for i in range(n - SUSTAIN_S + 1):
        for bad, reason in ((bad_good, "goodput"), (bad_lat, "latency")):
            if all(bad[i : i + SUSTAIN_S]):
                # Detection runs on the smoothed series; the figures reported are that second's.
                # Bad from the first offered second on: the server never kept up at all.
                first = next((j for j in range(n) if offered[j] > 0), 0)
                k = max(i - 1, 0)
                why = reason + (", from the start" if i <= first else "")
                return Knee(k, float(offered[k]), float(goodput[k]), float(max(goodput[:n])),
                            why)
    return None
