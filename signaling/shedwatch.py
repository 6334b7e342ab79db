"""A log line when the server starts shedding load and one when it stops.

Shedding (503 + Retry-After for SIP, DIAMETER_TOO_BUSY for Diameter) is counted per request on
the hot path; an operator reading the log should still see "the node is overloaded since
14:02:11" without a line per request.  This watcher reads the shed counters once per
``INTERVAL`` (no cost on the hot path) and logs: when shedding starts (the reasons), every
``SUMMARY_INTERVAL`` while it lasts (how many), and when a whole ``QUIET`` period passed
without a shed (how long it lasted, how many in total, by reason).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from signaling.metrics import FastCounter
from signaling.periodic import Periodic

__all__ = ["INTERVAL", "QUIET", "SUMMARY_INTERVAL", "ShedWatch"]

log = logging.getLogger(__name__)

#: Seconds between reads of the counters.
INTERVAL = 1.0
#: Seconds without a shed after which shedding is over (a client's Retry-After is 5 s by
#: default: shorter would log start/stop pairs for every retry wave).
QUIET = 10.0
#: Seconds between "still shedding" lines.
SUMMARY_INTERVAL = 60.0


def _by_reason(counters: Sequence[tuple[str, FastCounter]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, counter in counters:
        for labels, value in counter.values.items():
            key = "/".join((name, *labels))
            out[key] = out.get(key, 0.0) + value
    return out


def _delta(now: dict[str, float], then: dict[str, float]) -> dict[str, int]:
    return {k: int(v - then.get(k, 0.0)) for k, v in now.items() if v > then.get(k, 0.0)}


def _text(counts: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))


class ShedWatch:
    """Watches ``counters`` (name, counter) pairs; ``clock`` is injectable for tests."""

    def __init__(self, counters: Sequence[tuple[str, FastCounter]],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.counters = list(counters)
        self.clock = clock
        self.shedding = False
        self._last = _by_reason(self.counters)
        self._episode_start: dict[str, float] = {}
        self._started = 0.0
        self._last_shed = 0.0
        self._last_summary = 0.0
        self._ticker = Periodic("shed-watch", INTERVAL, self.check)

    def check(self) -> None:
        """One read of the counters (the task calls it every ``INTERVAL``)."""
        now = self.clock()
        previous, current = self._last, _by_reason(self.counters)
        new = _delta(current, previous)
        self._last = current
        if new:
            self._last_shed = now
            if not self.shedding:
                self.shedding = True
                self._started = self._last_summary = now
                self._episode_start = previous
                log.warning("overload: shedding load (%s)", _text(new))
            elif now - self._last_summary >= SUMMARY_INTERVAL:
                self._last_summary = now
                log.warning("overload: still shedding after %.0f s (%s in total)",
                            now - self._started, _text(self._episode(current)))
        elif self.shedding and now - self._last_shed >= QUIET:
            self.shedding = False
            log.warning("overload over: shed for %.0f s (%s)", self._last_shed - self._started,
                        _text(self._episode(current)))

    def _episode(self, current: dict[str, float]) -> dict[str, int]:
        return _delta(current, self._episode_start)

    def start(self) -> None:
        self._ticker.start()

    async def close(self) -> None:
        await self._ticker.close()
