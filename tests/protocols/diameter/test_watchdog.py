"""RFC 3539 watchdog: every state x input x condition follows the table or raises."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.diameter.errors import LocalProtocolError, WatchdogStateError
from protocols.diameter.watchdog import (
    JITTER,
    MIN_TW,
    TABLE,
    Watchdog,
    WdAction,
    WdInput,
    WdState,
)


def _state(obj: Any) -> object:
    """The current state, read through a call so mypy does not narrow it."""
    return obj.state



@pytest.mark.parametrize("state", list(WdState))
@pytest.mark.parametrize("event", list(WdInput))
@given(pending=st.booleans(), num_dwa=st.integers(-1, 3), initiator=st.booleans())
def test_every_state_and_input(state: WdState, event: WdInput, pending: bool, num_dwa: int,
                               initiator: bool) -> None:
    wd = Watchdog(6.0, initiator=initiator, rng=random.Random(1))
    wd.state, wd.pending, wd.num_dwa = state, pending, num_dwa
    guard = wd._guard(event)
    row = TABLE.get((state, event, guard))
    if row is None:
        with pytest.raises(WatchdogStateError):
            wd.handle(event, 100.0)
        assert _state(wd) is state
        return
    actions = wd.handle(event, 100.0)
    assert actions == row[0]
    assert _state(wd) is row[1]
    if WdAction.SET_WATCHDOG in actions and not (_state(wd) is WdState.DOWN and not initiator):
        deadline = wd.next_deadline()
        assert deadline is not None and 100 + 6 - JITTER <= deadline <= 100 + 6 + JITTER


def test_okay_suspect_down_path() -> None:
    wd = Watchdog(6.0, rng=random.Random(2))
    wd.handle(WdInput.CONNECTION_UP, 0.0)
    assert _state(wd) is WdState.OKAY
    t = wd.next_deadline()
    assert t is not None
    assert WdAction.SEND_WATCHDOG in wd.handle(WdInput.TIMER_EXPIRES, t)
    assert wd.pending
    t = wd.next_deadline()
    assert t is not None
    assert WdAction.FAILOVER in wd.handle(WdInput.TIMER_EXPIRES, t)
    assert _state(wd) is WdState.SUSPECT
    wd.handle(WdInput.RECEIVE_DWA, t + 1)
    assert _state(wd) is WdState.OKAY and not wd.pending
    wd.handle(WdInput.TIMER_EXPIRES, t + 10)
    wd.handle(WdInput.TIMER_EXPIRES, t + 20)
    assert WdAction.CLOSE_CONNECTION in wd.handle(WdInput.TIMER_EXPIRES, t + 30)
    assert _state(wd) is WdState.DOWN and wd.next_deadline() is None  # responder: no reopen


def test_initiator_reopen_needs_three_dwas() -> None:
    wd = Watchdog(6.0, initiator=True, rng=random.Random(3))
    wd.state = WdState.DOWN
    assert WdAction.ATTEMPT_OPEN in wd.handle(WdInput.TIMER_EXPIRES, 0.0)
    wd.handle(WdInput.CONNECTION_UP, 1.0)
    assert _state(wd) is WdState.REOPEN
    assert WdAction.THROWAWAY in wd.handle(WdInput.RECEIVE_NON_DWA, 1.5)
    for i in range(3):
        wd.handle(WdInput.RECEIVE_DWA, 2.0 + i)
        if i < 2:
            assert _state(wd) is WdState.REOPEN
            wd.handle(WdInput.TIMER_EXPIRES, 3.0 + i)  # !Pending: probe again
    assert _state(wd) is WdState.OKAY


def test_tw_floor() -> None:
    with pytest.raises(LocalProtocolError):
        Watchdog(MIN_TW - 1)
