"""Every timer of a run, driven by the engine's periodic tick: no timer handle per transaction.

A timer handle per transaction would cost more than the transaction itself at 30,000/s; instead
each retransmission interval has its own FIFO queue, which stays sorted because every entry in
it was added ``interval`` after "now".  Completed transactions are skipped lazily when their
entry comes up.

* Client transactions follow RFC 3261 §17.1 (the table is ``clienttxn``): over UDP a request is
  retransmitted after T1, the interval doubling (capped at T2 for non-INVITE, §17.1.2.2;
  uncapped for INVITE, §17.1.1.2), and abandoned after 64*T1 (Timers B and F).  Over WebSocket
  nothing is retransmitted: only Timer B/F runs.  The values are the server's, derived by
  ``protocols.sip.timers`` from T1, T2 and Timer C (a bad T1/T2 is refused there too); only
  the queues that run them are the injector's own.
* A PROCEEDING INVITE whose final answer never comes is given up after the guard (Timer C).
* Delayed actions (a BYE after the holding time, a retry after Retry-After, the UAS's 2xx
  retransmissions, Diameter steps) sit in one heap with the stats of the kind they belong to,
  so the ones left at the end are counted as abandoned.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from loadtest.agents import Txn
from loadtest.clienttxn import TxnAction, TxnInput, TxnState, step
from loadtest.metrics import KindStats
from loadtest.timeline import Timeline
from protocols.sip.timers import TimerConfig, timer_values

__all__ = ["Action", "TxnTimers"]

Action = tuple[float, int, Callable[[Any], None], Any, KindStats | None]

_DONE = TxnState.DONE
_IGNORE = TxnAction.IGNORE
_RETRANSMIT = TxnInput.RETRANSMIT_DUE


class TxnTimers:
    """Retransmissions (Timers A/E), Timers B/F, the INVITE guard, and delayed actions."""

    __slots__ = ("actions", "guard_s", "guards", "on_timeout", "reliable_timeouts", "rq",
                 "rq_t1", "seq", "t1", "t2", "timeline", "timeout", "timeouts", "txns")

    def __init__(self, t1: float, t2: float, guard_s: float, txns: dict[bytes, Txn],
                 timeline: Timeline, on_timeout: Callable[[Txn, float], None]) -> None:
        values = timer_values(TimerConfig(t1=t1, t2=t2, timer_c=guard_s), reliable=False)
        # Timers A and E start at T1 on UDP; B and F are the same 64*T1, so one timeout serves.
        self.t1, self.t2, self.timeout, self.guard_s = values.t1, values.t2, values.b, values.c
        self.txns = txns
        self.timeline = timeline
        self.on_timeout = on_timeout
        self.rq: dict[float, deque[tuple[float, Txn]]] = {}
        # Every UDP transaction's first retransmission is T1 after its start: the hot queue.
        self.rq_t1 = self.rq[t1] = deque()
        self.timeouts: list[tuple[float, int, Txn, TxnInput]] = []
        # Timers every entry of which has the same delay from when it was added, so FIFO order is
        # deadline order; they hold branches, not transactions, so a completed transaction is
        # freed at once rather than when its entry comes up.
        self.reliable_timeouts: deque[tuple[float, bytes]] = deque()  # Timer B/F on WebSocket
        self.guards: deque[tuple[float, bytes]] = deque()  # PROCEEDING INVITE guard
        self.actions: list[Action] = []
        self.seq = 0

    def start(self, txn: Txn, now: float) -> None:
        """A new transaction: Timer A/E starts at T1 (§17.1.1.2), or only B/F when reliable."""
        if txn.ua.reliable:
            self.arm(txn, self.t1, now)
        else:
            self.rq_t1.append((now + self.t1, txn))

    def proceeding(self, branch: bytes, now: float) -> None:
        """An INVITE got its first provisional: the guard replaces Timer B."""
        self.guards.append((now + self.guard_s, branch))

    def arm(self, txn: Txn, interval: float, now: float) -> None:
        """Next retransmission, or the Timer B/F entry when it comes first."""
        if txn.ua.reliable:
            self.reliable_timeouts.append((txn.t0 + self.timeout, txn.branch))
            return
        if now + interval >= txn.t0 + self.timeout:
            self.seq += 1
            heapq.heappush(self.timeouts, (txn.t0 + self.timeout, self.seq, txn,
                                           TxnInput.TIMEOUT_DUE))
            return
        dq = self.rq.get(interval)
        if dq is None:
            dq = self.rq[interval] = deque()
        dq.append((now + interval, txn))

    def later(self, delay: float, fn: Callable[[Any], None], arg: Any,
              stats: KindStats | None) -> None:
        self.seq += 1
        heapq.heappush(self.actions, (time.monotonic() + delay, self.seq, fn, arg, stats))

    def run(self, now: float) -> None:
        """Fire everything due by ``now``; delayed actions last, after the transaction timers."""
        self._retransmit(now)
        for fifo, inp in ((self.reliable_timeouts, TxnInput.TIMEOUT_DUE),
                          (self.guards, TxnInput.GUARD_DUE)):
            while fifo and fifo[0][0] <= now:
                live = self.txns.get(fifo.popleft()[1])
                if live is not None:
                    action, live.state = step(live.invite, live.state, inp)
                    if action is TxnAction.TIME_OUT:
                        self.on_timeout(live, now)
        tq = self.timeouts
        while tq and tq[0][0] <= now:
            _, _, txn, inp = heapq.heappop(tq)
            action, txn.state = step(txn.invite, txn.state, inp)
            if action is TxnAction.TIME_OUT:
                self.on_timeout(txn, now)

    def run_actions(self, now: float) -> None:
        aq = self.actions
        while aq and aq[0][0] <= now:
            _, _, fn, arg, _ = heapq.heappop(aq)
            fn(arg)

    def _retransmit(self, now: float) -> None:
        t2 = self.t2
        for interval, dq in list(self.rq.items()):
            while dq and dq[0][0] <= now:
                due, txn = dq.popleft()
                if txn.state is _DONE:
                    continue  # the common case, answered: skip the table lookup
                action, txn.state = step(txn.invite, txn.state, _RETRANSMIT)
                if action is _IGNORE:
                    continue
                txn.ua.link.send(txn.data)
                txn.stats.retransmissions += 1
                self.timeline.cur.retransmissions += 1
                if action is TxnAction.RETRANSMIT_DOUBLE:
                    nxt = 2 * interval
                elif action is TxnAction.RETRANSMIT_T2:
                    nxt = t2
                else:
                    nxt = min(2 * interval, t2)
                # From the due time, not from now: a late tick must not stretch the schedule.
                self.arm(txn, nxt, due)
