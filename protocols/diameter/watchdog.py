"""The transport watchdog of RFC 3539 §3.4 (DWR/DWA, RFC 6733 §5.5) as a table.

States and inputs follow RFC 3539 §3.4.1.  Some rows of that table depend on a condition
(``Pending``, ``NumDWA``); the condition is computed first and becomes part of the key, so the
table stays a plain ``(state, input, guard) -> (actions, next state)`` mapping and a key that is
not listed raises ``WatchdogStateError``.

Timing: every SetWatchdog arms the timer Tw = Twinit ± jitter.  Twinit defaults to 30 s and
MUST NOT be below 6 s; the jitter is uniform in ±2 s so that peers do not synchronise their
probes (§3.4.1).  The clock is never read: each entry point takes ``now``.

A responder does not reopen connections (the peer does), so its DOWN state arms no timer and
``reset()`` returns it to INITIAL for the peer's next connection; an initiator walks the full
DOWN -> REOPEN -> OKAY path with three DWAs before failing back.
"""

from __future__ import annotations

import random

from protocols.diameter.errors import LocalProtocolError, WatchdogStateError
from protocols.diameter.fastenum import FastEnum

__all__ = [
    "DEFAULT_TW",
    "JITTER",
    "MIN_TW",
    "REOPEN_DWAS",
    "TABLE",
    "Guard",
    "Watchdog",
    "WdAction",
    "WdInput",
    "WdState",
]

# RFC 3539 §3.4.1: Twinit default 30 s, at least 6 s, jitter uniformly ±2 s.
DEFAULT_TW = 30.0
MIN_TW = 6.0
JITTER = 2.0
# RFC 3539 §3.4.1: three watchdog answers in REOPEN before the connection is used again.
REOPEN_DWAS = 3


class WdState(FastEnum):
    INITIAL = "INITIAL"
    OKAY = "OKAY"
    SUSPECT = "SUSPECT"
    DOWN = "DOWN"
    REOPEN = "REOPEN"


class WdInput(FastEnum):
    CONNECTION_UP = "connection up"
    CONNECTION_DOWN = "connection down"
    RECEIVE_DWA = "receive DWA"
    RECEIVE_NON_DWA = "receive non-DWA"
    TIMER_EXPIRES = "timer expires"


class Guard(FastEnum):
    """The condition column of the RFC 3539 table."""

    ANY = "-"
    PENDING = "Pending"
    NOT_PENDING = "!Pending"
    LAST_DWA = "Pending and NumDWA+1 == 3"
    MORE_DWAS = "Pending and NumDWA+1 < 3"
    STRAY_DWA = "!Pending"
    PENDING_NEG = "Pending and NumDWA < 0"
    PENDING_NONNEG = "Pending and NumDWA >= 0"


class WdAction(FastEnum):
    SET_WATCHDOG = "SetWatchdog"
    SEND_WATCHDOG = "SendWatchdog"
    SET_PENDING = "Pending = TRUE"
    CLEAR_PENDING = "Pending = FALSE"
    FAILOVER = "Failover"
    FAILBACK = "Failback"
    CLOSE_CONNECTION = "CloseConnection"
    ATTEMPT_OPEN = "AttemptOpen"
    RESET_NUM_DWA = "NumDWA = 0"
    INC_NUM_DWA = "NumDWA++"
    NEG_NUM_DWA = "NumDWA = -1"
    THROWAWAY = "Throwaway"


_S, _I, _G, _A = WdState, WdInput, Guard, WdAction

TABLE: dict[tuple[WdState, WdInput, Guard], tuple[tuple[WdAction, ...], WdState]] = {
    (_S.INITIAL, _I.CONNECTION_UP, _G.ANY): ((_A.RESET_NUM_DWA, _A.SET_WATCHDOG), _S.OKAY),
    (_S.OKAY, _I.RECEIVE_DWA, _G.ANY): ((_A.CLEAR_PENDING, _A.SET_WATCHDOG), _S.OKAY),
    (_S.OKAY, _I.RECEIVE_NON_DWA, _G.ANY): ((_A.SET_WATCHDOG,), _S.OKAY),
    (_S.OKAY, _I.TIMER_EXPIRES, _G.NOT_PENDING): (
        (_A.SEND_WATCHDOG, _A.SET_WATCHDOG, _A.SET_PENDING), _S.OKAY),
    (_S.OKAY, _I.TIMER_EXPIRES, _G.PENDING): ((_A.FAILOVER, _A.SET_WATCHDOG), _S.SUSPECT),
    (_S.OKAY, _I.CONNECTION_DOWN, _G.ANY): ((_A.FAILOVER, _A.SET_WATCHDOG), _S.DOWN),
    (_S.SUSPECT, _I.RECEIVE_DWA, _G.ANY): (
        (_A.CLEAR_PENDING, _A.FAILBACK, _A.SET_WATCHDOG), _S.OKAY),
    (_S.SUSPECT, _I.RECEIVE_NON_DWA, _G.ANY): ((_A.FAILBACK, _A.SET_WATCHDOG), _S.OKAY),
    (_S.SUSPECT, _I.TIMER_EXPIRES, _G.ANY): ((_A.CLOSE_CONNECTION, _A.SET_WATCHDOG), _S.DOWN),
    (_S.SUSPECT, _I.CONNECTION_DOWN, _G.ANY): ((_A.CLOSE_CONNECTION, _A.SET_WATCHDOG), _S.DOWN),
    (_S.DOWN, _I.TIMER_EXPIRES, _G.ANY): ((_A.ATTEMPT_OPEN, _A.SET_WATCHDOG), _S.DOWN),
    (_S.DOWN, _I.CONNECTION_UP, _G.ANY): (
        (_A.RESET_NUM_DWA, _A.SEND_WATCHDOG, _A.SET_WATCHDOG, _A.SET_PENDING), _S.REOPEN),
    (_S.REOPEN, _I.RECEIVE_DWA, _G.MORE_DWAS): ((_A.CLEAR_PENDING, _A.INC_NUM_DWA), _S.REOPEN),
    (_S.REOPEN, _I.RECEIVE_DWA, _G.LAST_DWA): (
        (_A.CLEAR_PENDING, _A.INC_NUM_DWA, _A.FAILBACK), _S.OKAY),
    # A DWA nobody waits for (a late duplicate) changes nothing.
    (_S.REOPEN, _I.RECEIVE_DWA, _G.STRAY_DWA): ((), _S.REOPEN),
    (_S.REOPEN, _I.RECEIVE_NON_DWA, _G.ANY): ((_A.THROWAWAY,), _S.REOPEN),
    (_S.REOPEN, _I.TIMER_EXPIRES, _G.NOT_PENDING): (
        (_A.SEND_WATCHDOG, _A.SET_WATCHDOG, _A.SET_PENDING), _S.REOPEN),
    (_S.REOPEN, _I.TIMER_EXPIRES, _G.PENDING_NEG): (
        (_A.CLOSE_CONNECTION, _A.SET_WATCHDOG), _S.DOWN),
    (_S.REOPEN, _I.TIMER_EXPIRES, _G.PENDING_NONNEG): (
        (_A.NEG_NUM_DWA, _A.SET_WATCHDOG), _S.REOPEN),
    (_S.REOPEN, _I.CONNECTION_DOWN, _G.ANY): ((_A.CLOSE_CONNECTION, _A.SET_WATCHDOG), _S.DOWN),
}


class Watchdog:
    """One peer connection's watchdog.  Feed inputs, read back the actions to carry out."""

    def __init__(
        self, tw: float = DEFAULT_TW, *, initiator: bool = False, rng: random.Random | None = None
    ) -> None:
        if tw < MIN_TW:
            raise LocalProtocolError(f"Tw {tw} below the RFC 3539 minimum of {MIN_TW} s")
        self.tw = tw
        self.initiator = initiator
        self.state = WdState.INITIAL
        self.pending = False
        self.num_dwa = 0
        self.deadline: float | None = None
        self._rng = rng or random.Random()

    def next_deadline(self) -> float | None:
        return self.deadline

    def reset(self) -> None:
        """Back to INITIAL for a responder's next connection (see module doc)."""
        self.state = WdState.INITIAL
        self.pending = False
        self.num_dwa = 0
        self.deadline = None

    def handle(self, event: WdInput, now: float) -> tuple[WdAction, ...]:
        """Apply one input; returns the actions the caller must carry out (send, close...)."""
        guard = self._guard(event)
        row = TABLE.get((self.state, event, guard))
        if row is None:
            raise WatchdogStateError(self.state, (event, guard))
        actions, next_state = row
        for action in actions:
            self._apply(action, now)
        self.state = next_state
        if next_state is WdState.DOWN and not self.initiator:
            self.deadline = None  # a responder never reopens (module doc)
        return actions

    def _guard(self, event: WdInput) -> Guard:
        if event is WdInput.TIMER_EXPIRES and self.state in (WdState.OKAY, WdState.REOPEN):
            if not self.pending:
                return Guard.NOT_PENDING
            if self.state is WdState.OKAY:
                return Guard.PENDING
            return Guard.PENDING_NEG if self.num_dwa < 0 else Guard.PENDING_NONNEG
        if event is WdInput.RECEIVE_DWA and self.state is WdState.REOPEN:
            if not self.pending:
                return Guard.STRAY_DWA
            return Guard.LAST_DWA if self.num_dwa + 1 >= REOPEN_DWAS else Guard.MORE_DWAS
        return Guard.ANY

    def _apply(self, action: WdAction, now: float) -> None:
        if action is WdAction.SET_WATCHDOG:
            self.deadline = now + self.tw + self._rng.uniform(-JITTER, JITTER)
        elif action is WdAction.SET_PENDING:
            self.pending = True
        elif action is WdAction.CLEAR_PENDING:
            self.pending = False
        elif action is WdAction.RESET_NUM_DWA:
            self.num_dwa = 0
        elif action is WdAction.INC_NUM_DWA:
            self.num_dwa += 1
        elif action is WdAction.NEG_NUM_DWA:
            self.num_dwa = -1
