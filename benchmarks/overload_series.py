"""Our server's overload counters through a step, every fifth of a second (``BENCH_VERBOSE``).

What happens at a storm's onset is over within a second, and bench_overload reads /metrics
once at the end of a step: this polls it while the step runs and prints the change per
poll, so that the onset shows (issue 13: admitted REGISTERs past 500 ms at 10x, from the first
second): when the limit closed, when the kernel shed's filter came on and at what share, how
many datagrams the kernel's full queue dropped before that (``kernel``: each one comes back
retransmitted, T1 later), what was refused late.  Besides, SIPp's side of it: how its response
times spread (``rtt_shape``) and when the answers over 500 ms were first sent (``slow_shape``).
"""

from __future__ import annotations

import itertools
import threading
import time
import urllib.request
from collections.abc import Callable

__all__ = ["COLUMNS", "POLL", "SLOW_MS", "CpuSampler", "Series", "counters", "most_busy",
           "rtt_shape", "slow_shape"]

#: Issue 13's P99 target for admitted transactions (ms): BENCH_VERBOSE says when the answers
#: over it were first sent.
SLOW_MS = 500.0

#: Seconds between two reads of /metrics: fine enough for the onset, a few admin requests a
#: second for the server (each ~1 ms of its CPU).
POLL = 0.2
#: The columns printed: (name, metric line prefix, whether it is a gauge, not a counter).
COLUMNS = (
    ("admitted", "signaling_sip_overload_admitted_total", False),
    ("excess503", 'signaling_sip_overload_rejected_total{method="REGISTER",reason="excess"}',
     False),
    ("band503", 'signaling_sip_overload_rejected_total{method="REGISTER",reason="shed_band"}',
     False),
    ("late", "signaling_sip_overload_drain_late_total", False),
    ("pylate", 'signaling_sip_overload_dropped_total{method="REGISTER",reason="receive_delay"}',
     False),
    ("kernel", 'signaling_sip_overload_dropped_total{method="unknown",reason="kernel"}', False),
    ("shed", 'signaling_sip_overload_dropped_total{method="unknown",reason="kernel_shed"}',
     False),
    ("limit", "signaling_sip_admission_limit", True),
    ("share", "signaling_sip_overload_kernel_shed_share", True),
)


def counters(text: str) -> dict[str, float]:
    """The ``COLUMNS`` of one /metrics text (a metric absent: 0; counters of several label
    sets under one prefix added up)."""
    out = {name: 0.0 for name, _, _ in COLUMNS}
    for line in text.splitlines():
        for name, prefix, _ in COLUMNS:
            if line.startswith(prefix) and line[len(prefix):len(prefix) + 1] in ("{", " "):
                out[name] += float(line.rsplit(" ", 1)[1])
    return out


class Series:
    """Polls the admin API's /metrics every ``POLL`` s from ``start`` to ``stop``."""

    def __init__(self, admin_port: int) -> None:
        self.url = f"http://127.0.0.1:{admin_port}/metrics"
        self.rows: list[tuple[float, dict[str, float]]] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._t0 = 0.0

    def start(self) -> Series:
        self._t0 = time.monotonic()
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._done.is_set():
            try:
                with urllib.request.urlopen(self.url, timeout=2) as r:
                    text = r.read().decode()
            except OSError:
                text = ""
            if text:
                self.rows.append((time.monotonic() - self._t0, counters(text)))
            self._done.wait(POLL)

    def stop(self) -> str:
        """Stops polling; the table of changes per poll (gauges as read)."""
        self._done.set()
        self._thread.join(timeout=5)
        return render(self.rows)


def most_busy(samples: list[tuple[float, float]], window: float = 1.0) -> float:
    """The highest share of one core over any ``window`` s of (time, CPU seconds) samples:
    a step's average hid a load generator that saturated in its last seconds (SIPp at 10x:
    89-90% over the step)."""
    best = 0.0
    for i, (t0, c0) in enumerate(samples):
        for t1, c1 in samples[i + 1:]:
            if t1 - t0 >= window - 1e-9:
                best = max(best, (c1 - c0) / (t1 - t0))
                break
    return best


class CpuSampler:
    """``cpu()`` (CPU seconds of the load generators) every ``every`` s in a thread, from
    ``start`` to ``stop``, which returns ``most_busy`` of the samples."""

    def __init__(self, cpu: Callable[[], float], every: float = 0.25) -> None:
        self.cpu, self.every = cpu, every
        self.samples: list[tuple[float, float]] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> CpuSampler:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._done.is_set():
            self.samples.append((time.monotonic(), self.cpu()))
            self._done.wait(self.every)

    def stop(self) -> float:
        self._done.set()
        self._thread.join(timeout=5)
        self.samples.append((time.monotonic(), self.cpu()))
        return most_busy(self.samples)


def render(rows: list[tuple[float, dict[str, float]]]) -> str:
    lines = ["t(s)  " + " ".join(f"{name:>9s}" for name, _, _ in COLUMNS)]
    for (_, before), (t, now) in itertools.pairwise(rows):
        cells = [f"{now[name]:9.2f}" if gauge and name == "share" else
                 f"{now[name]:9.0f}" if gauge else f"{now[name] - before[name]:9.0f}"
                 for name, _, gauge in COLUMNS]
        lines.append(f"{t:5.1f} " + " ".join(cells))
    return "\n".join(lines)


def rtt_shape(rtts: list[float]) -> str:
    """How SIPp's response times (ms) spread: counts per band, the retransmitted ones (over
    T1, 500 ms) apart."""
    bands = (50, 100, 250, 500, 1000, 2000, 32000)
    counts = [0] * (len(bands) + 1)
    for r in rtts:
        counts[next((i for i, b in enumerate(bands) if r <= b), len(bands))] += 1
    return "sipp rtt ms " + " ".join(
        f"<={b}:{c}" for b, c in zip((*bands, "inf"), counts, strict=True))


def slow_shape(created: list[float]) -> str:
    """When the answers over ``SLOW_MS`` (the P99 target) were first sent: counts per quarter
    second of the step (SIPp's clock), so that the onset's share of a P99 shows."""
    counts: dict[int, int] = {}
    for t in created:
        counts[int(t * 4)] = counts.get(int(t * 4), 0) + 1
    return f"sipp answers over {SLOW_MS:g} ms by first send (s): " + " ".join(
        f"{q / 4:g}:{n}" for q, n in sorted(counts.items()))
