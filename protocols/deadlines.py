"""One deadline per key, in a binary heap with lazy deletion: ``DeadlineHeap``.

Transactions, dialogs, registry bindings, Credit-Control Tcc timers and session stores all need
the same thing: many keys, each with at most one pending deadline that is moved often (every
request re-arms Tcc, every retransmission moves a transaction timer), the earliest one asked for
by a single timer, and everything due popped in deadline order.

Moving a deadline inside a heap is O(n); instead a reschedule pushes a new entry and leaves the
old one behind, recognised as stale when it surfaces (lazy deletion).  The live entry of each key
is kept in a dict and compared by identity, so staleness costs one dict lookup and keys need only
be hashable (not orderable: entries carry a sequence number that breaks deadline ties, which also
keeps equal deadlines in push order).

Bounded slack: stale entries are dropped by a compaction (O(n) rebuild from the live entries)
once the heap holds more than ``live + live // 2 + slack`` entries.  Each compaction removes at
least ``live // 2 + slack`` stale entries, so its cost is amortised O(1) per push, cancel or pop,
and after any of them the heap holds at most ``live + live // 2 + slack`` entries (a stale entry
is ~80 bytes: at most half of that again per live key, plus the slack).

Sans-I/O: no clock is read; ``now`` is passed in.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

__all__ = ["DEFAULT_SLACK", "DeadlineHeap"]

# Stale entries tolerated on top of the live ones before compaction.  A few thousand keeps
# small heaps from rebuilding on every burst of reschedules while bounding the waste (an entry
# is a 3-tuple, ~80 bytes) to a few hundred kB.
DEFAULT_SLACK = 4096

K = TypeVar("K", bound=Hashable)

# (deadline, sequence, key): the sequence orders equal deadlines and spares comparing keys.
_Entry = tuple[float, int, K]


class DeadlineHeap(Generic[K]):
    """Keys with one deadline each; ``next_deadline()`` and ``pop_due(now)`` in deadline order."""

    __slots__ = ("_heap", "_live", "_seq", "slack")

    def __init__(self, slack: int = DEFAULT_SLACK) -> None:
        if slack < 0:
            raise ValueError("slack must not be negative")
        self.slack = slack
        self._heap: list[_Entry[K]] = []
        self._live: dict[K, _Entry[K]] = {}
        self._seq = itertools.count()

    def __len__(self) -> int:
        """Keys with a pending deadline (stale heap entries not counted)."""
        return len(self._live)

    def __contains__(self, key: object) -> bool:
        return key in self._live

    def push(self, key: K, deadline: float, limit: int | None = None) -> bool:
        """Schedule ``key`` at ``deadline``, replacing any deadline it had (a reschedule).

        With ``limit``, a key not yet scheduled is refused (False) while ``limit`` keys are:
        the bound of the table the heap serves, checked without a second lookup.
        """
        live = self._live
        old = live.get(key)
        if old is None:
            if limit is not None and len(live) >= limit:
                return False
        elif old[0] == deadline:
            return True  # unchanged: no new entry, no stale one
        entry = (deadline, next(self._seq), key)
        live[key] = entry
        heap = self._heap
        heapq.heappush(heap, entry)
        n = len(live)  # _bound() inlined: this is the per-request path of every timer table
        if len(heap) > n + (n >> 1) + self.slack:
            self.compact()
        return True

    reschedule = push

    def cancel(self, key: K) -> float | None:
        """Forget ``key``'s deadline; returns it, or None if there was none."""
        live = self._live
        entry = live.pop(key, None)
        if entry is None:
            return None
        n = len(live)  # _bound() inlined, as in push
        if len(self._heap) > n + (n >> 1) + self.slack:
            self.compact()
        return entry[0]

    def deadline(self, key: K) -> float | None:
        entry = self._live.get(key)
        return entry[0] if entry is not None else None

    def next_deadline(self) -> float | None:
        """The earliest pending deadline, or None; stale entries on top are discarded."""
        heap, live = self._heap, self._live
        while heap:
            top = heap[0]
            if live.get(top[2]) is top:
                return top[0]
            heapq.heappop(heap)
        return None

    def pop_due(self, now: float, limit: int | None = None) -> list[K]:
        """Keys whose deadline is ``<= now``, earliest first; they are no longer scheduled.

        ``limit`` bounds how many are returned (the rest stay due for the next call), so one
        sweep never holds its caller for long.
        """
        heap, live = self._heap, self._live
        out: list[K] = []
        if not heap or heap[0][0] > now:
            return out  # the common case of a check on every request: nothing due
        while heap and heap[0][0] <= now and (limit is None or len(out) < limit):
            entry = heapq.heappop(heap)
            key = entry[2]
            if live.get(key) is entry:
                del live[key]
                out.append(key)
        if out:  # popping only stale entries cannot break the bound
            self._bound()
        return out

    def items(self) -> Iterator[tuple[K, float]]:
        """(key, deadline) of every scheduled key, in no particular order."""
        for key, entry in self._live.items():
            yield key, entry[0]

    def clear(self) -> None:
        self._heap.clear()
        self._live.clear()

    def _bound(self) -> None:
        # Stale entries beyond ``live // 2 + slack``: each one removed paid for itself when it
        # was made (by a push, a cancel or a pop of the live one), so the rebuild is amortised
        # O(1).
        live = len(self._live)
        if len(self._heap) > live + live // 2 + self.slack:
            self.compact()

    def compact(self) -> None:
        """Drop every stale entry now (O(live))."""
        self._heap = list(self._live.values())
        heapq.heapify(self._heap)

    def heap_size(self) -> int:
        """Entries in the heap, stale ones included (at most ``1.5 * len(self) + slack``)."""
        return len(self._heap)
