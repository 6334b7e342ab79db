"""signaling.gctune: survivors of a young collection are frozen out of the collector's view
(the long-lived compacted transactions of a REGISTER storm are never walked again), still
freed by reference counting, and ``thaw`` reclaims cycles among them."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from protocols.sip.message import Request
from protocols.sip.parser import parse_message
from protocols.sip.summary import response_summary
from protocols.sip.timers import TimerConfig, timer_values
from protocols.sip.transaction import NonInviteServerTransaction, State, new_server_transaction
from protocols.sip.txtable import TransactionTable
from signaling import gctune


@pytest.fixture
def tuned() -> Iterator[None]:
    """``gctune.tune()`` for one test; the pytest process's collector restored after it."""
    thresholds = gc.get_threshold()
    callbacks = list(gc.callbacks)
    gctune.tune()
    try:
        yield
    finally:
        gc.callbacks[:] = callbacks
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def _register(n: int) -> bytes:
    return (f"REGISTER sip:example.com SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKgc{n}\r\n"
            f"From: <sip:u{n}@example.com>;tag=f{n}\r\nTo: <sip:u{n}@example.com>\r\n"
            f"Call-ID: gc-{n}\r\nCSeq: 1 REGISTER\r\n"
            f"Contact: <sip:u{n}@192.0.2.1>\r\nContent-Length: 0\r\n\r\n").encode()


def _completed(table: TransactionTable, n: int) -> NonInviteServerTransaction:
    """A REGISTER's server transaction as a storm leaves it: answered 200 from bytes,
    compacted, in Completed until Timer J (RFC 3261 §17.2.2), held by the table."""
    request = parse_message(_register(n))
    assert isinstance(request, Request)
    txn = new_server_transaction(request, timer_values(TimerConfig(), False), ("192.0.2.1", 5060))
    assert isinstance(txn, NonInviteServerTransaction)
    table.add(txn)
    summary = response_summary(200, "OK", "REGISTER")
    txn.send_response(summary, 0.0)
    txn.cache_bytes(summary, b"SIP/2.0 200 OK\r\n\r\n")
    assert txn.compact() and txn.state is State.COMPLETED
    return txn


def _in_collector_view(obj: object) -> bool:
    """Whether any generation the collector walks holds ``obj`` (frozen ones are in none)."""
    return any(o is obj for o in gc.get_objects())


def test_tune_sets_the_thresholds_and_installs_the_callback_once(tuned: None) -> None:
    assert gc.get_threshold() == (gctune.GC_GEN0_THRESHOLD, gctune.GC_GEN1_THRESHOLD,
                                  gctune.GC_GEN2_THRESHOLD)
    gctune.tune()
    assert gc.callbacks.count(gctune._freeze_survivors) == 1


def test_transactions_surviving_a_young_collection_are_never_walked_again(tuned: None) -> None:
    table = TransactionTable()
    txns = [_completed(table, n) for n in range(50)]
    timers = [t._timers for t in txns]
    assert all(gc.is_tracked(t) for t in txns)  # a __slots__ instance: always tracked
    gc.collect(0)
    assert not any(_in_collector_view(t) for t in txns)
    assert not any(_in_collector_view(t) for t in timers)
    # Neither the middle nor the oldest generation accumulates them.
    gc.collect(1)
    assert not any(_in_collector_view(t) for t in txns)


def test_a_frozen_transaction_is_still_freed_when_its_table_lets_go(tuned: None) -> None:
    table = TransactionTable()
    txns = [_completed(table, n) for n in range(200)]
    gc.collect(0)
    frozen = gc.get_freeze_count()
    del txns
    fired = table.fire_due(32.0)  # Timer J (64*T1 on UDP): terminated, dropped by the table
    assert len(fired) == 200 and len(table) == 0
    del fired
    # The transaction, its timer dict and its heap entry each leave the frozen set.
    assert gc.get_freeze_count() <= frozen - 3 * 200


def test_a_full_collection_does_not_freeze_and_thaw_reclaims_a_frozen_cycle(tuned: None) -> None:
    class Node:
        ref: object = None

    a, b = Node(), Node()
    a.ref, b.ref = b, a
    gc.collect(0)
    assert not _in_collector_view(a)
    del a, b  # a cycle among frozen objects: only a full collection of thawed objects finds it
    assert gc.collect(0) == 0
    assert gctune.thaw() >= 2
    survivor = Node()
    gc.collect(2)
    assert _in_collector_view(survivor)  # a full collection leaves its survivors in view
    gc.collect(0)
    assert not _in_collector_view(survivor)  # the next young pass freezes them


def test_collect_young_freezes_what_survived_since_the_last_pass(tuned: None) -> None:
    table = TransactionTable()
    txns = [_completed(table, n) for n in range(20)]
    assert all(_in_collector_view(t) for t in txns)
    gctune.collect_young()  # what the server's timer runs every YOUNG_INTERVAL
    assert not any(_in_collector_view(t) for t in txns)
