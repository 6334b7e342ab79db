"""The injector's timers on a synthetic clock: RFC 3261 §17.1 retransmission schedules,
Timers B/F, the PROCEEDING INVITE guard, and delayed actions."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from loadtest.agents import UA, Txn
from loadtest.clienttxn import TxnInput, TxnState, step
from loadtest.links import Link
from loadtest.metrics import KindStats
from loadtest.sipmsg import Identity
from loadtest.timeline import Timeline
from loadtest.timers import TxnTimers

T1, T2 = 0.5, 4.0


class Wire(Link):
    """A link that keeps what is sent on it."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> None:
        self.sent.append(data)


def _setup(reliable: bool = False) -> tuple[TxnTimers, Wire, list[Txn], dict[bytes, Txn]]:
    wire = Wire()
    timed_out: list[Txn] = []
    txns: dict[bytes, Txn] = {}

    def on_timeout(txn: Txn, now: float) -> None:
        txns.pop(txn.branch, None)
        timed_out.append(txn)

    timers = TxnTimers(T1, T2, 180.0, txns, Timeline(1), on_timeout)
    return timers, wire, timed_out, txns


def _txn(txns: dict[bytes, Txn], wire: Wire, invite: bool, reliable: bool = False) -> Txn:
    ua = UA(Identity(b"a", b"d", b"UDP", b"h:1", b"sip:a@h:1"), wire, reliable)
    txn = Txn(ua, KindStats(), b"z9hG4bK1", b"REQ", 0.0, 0, None, 1, invite)
    txns[txn.branch] = txn
    return txn


def _drive(timers: TxnTimers, wire: Wire, until: float) -> list[float]:
    """Step the clock by 10 ms; the times at which something was re-sent."""
    times = []
    for i in range(int(until * 100) + 1):
        now = i / 100
        before = len(wire.sent)
        timers.run(now)
        if len(wire.sent) > before:
            times.append(round(now, 2))
    return times


def test_non_invite_doubles_to_t2_and_times_out_at_64_t1() -> None:
    timers, wire, timed_out, txns = _setup()
    txn = _txn(txns, wire, invite=False)
    timers.start(txn, 0.0)
    times = _drive(timers, wire, 64 * T1 + 0.1)
    # Timer E: T1, then doubling, capped at T2 (§17.1.2.2): 0.5, 1.5, 3.5, 7.5, 11.5, ...
    assert times[:5] == [0.5, 1.5, 3.5, 7.5, 11.5]
    assert all(b - a == T2 for a, b in itertools.pairwise(times[3:]))
    assert timed_out == [txn] and txn.state is TxnState.DONE
    assert txn.stats.retransmissions == len(times) == timers.timeline.cur.retransmissions


def test_invite_doubles_without_cap_and_a_provisional_stops_it() -> None:
    timers, wire, timed_out, txns = _setup()
    txn = _txn(txns, wire, invite=True)
    timers.start(txn, 0.0)
    assert _drive(timers, wire, 8.0) == [0.5, 1.5, 3.5, 7.5]  # Timer A: 0.5, 1, 2, 4 apart
    _, txn.state = step(True, txn.state, TxnInput.PROVISIONAL)
    timers.proceeding(txn.branch, 8.0)
    assert _drive(timers, wire, 40.0) == []  # PROCEEDING: no more retransmissions
    assert timed_out == []  # nor Timer B: the guard (Timer C) applies now
    timers.run(8.0 + 180.0)
    assert timed_out == [txn]


def test_reliable_transport_never_retransmits_and_times_out_at_64_t1() -> None:
    timers, wire, timed_out, txns = _setup()
    txn = _txn(txns, wire, invite=False, reliable=True)
    timers.start(txn, 0.0)
    assert _drive(timers, wire, 64 * T1 - 0.01) == [] and timed_out == []
    timers.run(64 * T1)
    assert timed_out == [txn]


def test_answered_transactions_are_skipped_and_actions_fire_in_order() -> None:
    timers, wire, timed_out, txns = _setup()
    txn = _txn(txns, wire, invite=False)
    timers.start(txn, 0.0)
    _, txn.state = step(False, txn.state, TxnInput.FINAL)
    assert _drive(timers, wire, 64 * T1 + 1) == [] and timed_out == []
    fired: list[Any] = []
    timers.later(0.0, fired.append, "second", None)
    timers.later(-1.0, fired.append, "first", None)
    timers.run_actions(float("inf"))
    assert fired == ["first", "second"] and timers.actions == []


def test_timer_values_are_the_servers_and_a_bad_t1_is_refused() -> None:
    # protocols.sip.timers derives them: B = F = 64*T1, Timer C the guard.
    timers = TxnTimers(0.02, 0.08, 1.5, {}, Timeline(1), lambda txn, now: None)
    assert (timers.t1, timers.t2, timers.timeout, timers.guard_s) == (0.02, 0.08, 64 * 0.02, 1.5)
    for t1, t2 in ((0.0, 4.0), (0.5, 0.1)):  # T1 must be positive and at most T2
        with pytest.raises(ValueError):
            TxnTimers(t1, t2, 180.0, {}, Timeline(1), lambda txn, now: None)
