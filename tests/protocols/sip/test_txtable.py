"""protocols/sip/txtable.py (and the keys of txkeys.py it files transactions under): matching
(§17.1.3, §17.2.3 with the RFC 2543 fallback), bounds, deadlines and removal of terminated
transactions."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.sip.builders import make_response
from protocols.sip.errors import SipError, TransactionError
from protocols.sip.message import Request
from protocols.sip.parser import parse_message
from protocols.sip.timers import TimerConfig, timer_values
from protocols.sip.transaction import (
    ClientTransaction,
    Event,
    Input,
    InviteClientTransaction,
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    ServerTransaction,
    State,
    Transaction,
    build_ack,
    build_cancel,
    new_server_transaction,
    server_key,
)
from protocols.sip.txtable import HEAP_SLACK, TransactionTable, TransactionTableFull
from tests.protocols.sip.test_transaction import (
    END,
    MACHINES,
    RFC4475,
    SEND,
    TCP,
    TO,
    UDP,
    feed,
    kinds,
    make,
    request,
    response,
)


def test_rfc2543_fallback_matching_via_table() -> None:
    table = TransactionTable()
    inv = request("INVITE", branch=None)
    key = server_key(inv)
    assert key is not None and key[0] == "2543"
    txn = InviteServerTransaction(inv, UDP)
    table.add(txn)
    retrans = request("INVITE", branch=None)
    assert table.find_server(retrans) is txn
    # Any field of the fallback key differing means another transaction.
    assert table.find_server(request("INVITE", branch=None, seq=2)) is None
    assert table.find_server(request("INVITE", branch=None, call_id="other")) is None
    assert table.find_server(request("INVITE", branch=None, host="10.9.9.9")) is None
    assert table.find_server(request("INVITE", branch=None, to_tag="x")) is None
    reject = response(inv, 486, to_tag="srv")
    txn.send_response(reject, 0.0)
    # The ACK matches by the To tag of the response it acknowledges.
    good_ack = build_ack(request("INVITE", branch=None), reject)
    assert table.find_server(good_ack) is txn
    assert table.find_server(request("ACK", branch=None, to_tag="wrong")) is None
    cancel = build_cancel(inv)
    assert table.find_cancel_target(cancel) is txn
    txn.receive_request(good_ack, 0.1)
    assert txn.state is State.CONFIRMED


def test_ack_before_any_response_does_not_match_2543() -> None:
    table = TransactionTable()
    txn = InviteServerTransaction(request("INVITE", branch=None), UDP)
    table.add(txn)
    assert table.find_server(request("ACK", branch=None)) is None


def test_rfc4475_badbranch_is_a_2543_transaction() -> None:
    """RFC 4475 §3.1.2.? badbranch: branch is exactly the cookie; policy: 2543 fallback."""
    msg = parse_message((RFC4475 / "badbranch.dat").read_bytes())
    assert isinstance(msg, Request)
    assert msg.vias[0].branch == "z9hG4bK"
    key = server_key(msg)
    assert key is not None and key[0] == "2543"
    table = TransactionTable()
    txn = new_server_transaction(msg, UDP)
    table.add(txn)
    again = parse_message((RFC4475 / "badbranch.dat").read_bytes())
    assert isinstance(again, Request)
    assert table.find_server(again) is txn
    # It can still be answered and run to completion.
    events = txn.send_response(make_response(msg, 200, to_tag="t"), 0.0)
    assert kinds(events) == [SEND]


def test_table_removes_terminated_and_fires_in_deadline_order() -> None:
    table = TransactionTable()
    servers = []
    for i in range(5):
        txn = NonInviteServerTransaction(request(branch=f"z9hG4bKs{i}"), UDP)
        table.add(txn)
        txn.send_response(response(txn.request, 200), float(i))  # Timer J at i + 32
        servers.append(txn)
    client = NonInviteClientTransaction(request(branch="z9hG4bKc"), UDP)
    client.start(0.0)
    table.add(client)
    assert len(table) == 6 and set(table) == {*servers, client}
    assert table.next_deadline() == 0.5  # the client's Timer E
    fired = table.fire_due(0.5)
    assert [(t, kinds(ev)) for t, ev in fired] == [(client, [SEND])]
    assert table.find_client(response(client.request, 200)) is client
    client.receive_response(response(client.request, 200), 1.0)  # K at 6.0, E, F dropped
    assert table.next_deadline() == 6.0
    assert [t for t, _ in table.fire_due(6.0)] == [client]
    assert table.find_client(response(client.request, 200)) is None
    assert len(table) == 5
    assert table.next_deadline() == 32.0
    fired = table.fire_due(33.5)
    assert [t for t, _ in fired] == servers[:2]
    assert len(table) == 3 and table.find_server(servers[0].request) is None
    assert table.find_server(servers[2].request) is servers[2]
    table.fire_due(1000.0)
    assert len(table) == 0 and table.next_deadline() is None


def test_table_bounded() -> None:
    table = TransactionTable(max_size=3)
    for i in range(3):
        table.add(NonInviteServerTransaction(request(branch=f"z9hG4bKb{i}"), UDP))
    with pytest.raises(TransactionTableFull):
        table.add(NonInviteServerTransaction(request(branch="z9hG4bKb9"), UDP))
    assert len(table) == 3
    assert issubclass(TransactionTableFull, SipError)


def test_table_rejects_duplicates_and_terminated() -> None:
    table = TransactionTable()
    table.add(NonInviteServerTransaction(request(), UDP))
    with pytest.raises(TransactionError):
        table.add(NonInviteServerTransaction(request(), UDP))
    done = NonInviteServerTransaction(request(branch="z9hG4bKdone"), TCP)
    done.send_response(response(done.request, 200), 0.0)
    assert done.terminated
    with pytest.raises(TransactionError):
        table.add(done)
    # A client and a server transaction may share a key: separate namespaces.
    client = NonInviteClientTransaction(request(), UDP)
    table.add(client)
    assert len(table) == 2


def test_table_remove_by_hand() -> None:
    table = TransactionTable()
    txn = NonInviteClientTransaction(request(), UDP)
    table.add(txn)
    txn.start(0.0)
    assert table.next_deadline() == 0.5
    table.remove(txn)
    assert len(table) == 0 and table.next_deadline() is None
    table.remove(txn)  # idempotent


def test_heap_stays_bounded_under_churn() -> None:
    """Stale deadline entries are compacted: the heap stays O(live transactions).

    A proxy's Timer C restarts on every provisional (§16.7 step 2), so a UAS that keeps
    sending 180s moves one deadline 180 s ahead again and again without any entry expiring.
    """
    table = TransactionTable()
    txn = InviteClientTransaction(request("INVITE"), UDP, proxy=True)
    table.add(txn)
    txn.start(0.0)
    ringing = response(txn.request, 180)
    for n in range(3 * HEAP_SLACK):
        txn.receive_response(ringing, 1.0 + n * 0.001)
        assert table.heap_size() <= 2 * len(table) + HEAP_SLACK + 1
    assert table.next_deadline() == txn.next_deadline()
    assert [t for t, ev in table.fire_due(1000.0)] == [txn]
    assert isinstance(table.fire_due(1000.0), list)


def test_table_lookups_that_miss() -> None:
    table = TransactionTable()
    no_via = request("INVITE")
    no_via.vias = []
    assert table.find_server(no_via) is None
    assert table.find_cancel_target(no_via) is None
    assert table.find_cancel_target(build_cancel(request("BYE"))) is None
    orphan = response(request("INVITE"), 200)
    orphan.vias = []
    assert table.find_client(orphan) is None
    nist = NonInviteServerTransaction(request("BYE"), UDP)
    table.add(nist)
    # A CANCEL for a non-INVITE finds nothing to cancel (§9.2: it has no effect).
    assert table.find_cancel_target(build_cancel(request("BYE"))) is None
    inv = InviteServerTransaction(request("INVITE", branch=None), UDP)
    table.add(inv)
    wrong_tag = build_cancel(request("INVITE", branch=None, to_tag="zzz"))
    assert table.find_cancel_target(wrong_tag) is None
    assert "InviteServerTransaction PROCEEDING" in repr(inv)


def test_fire_due_with_equal_deadlines() -> None:
    """Timers G and H can coincide (T1 = T2 = 0.5): one heap entry fires both in order."""
    timers = timer_values(TimerConfig(t1=0.5, t2=0.5, t4=0.5), reliable=False)
    table = TransactionTable()
    txn = InviteServerTransaction(request("INVITE"), timers)
    table.add(txn)
    txn.send_response(response(txn.request, 486), 0.0)
    fired = table.fire_due(32.0)
    assert txn.terminated and len(table) == 0
    # G retransmissions every 0.5 s until H at 32 s: G fired at 32 too, or H first.
    assert kinds(fired[-1][1])[-2:] == [TO, END]


@settings(max_examples=100, deadline=None)
@given(
    steps=st.lists(st.tuples(st.integers(0, 7), st.integers(0, 3),
                             st.floats(0, 20, allow_nan=False)), max_size=60),
)
def test_random_table_runs(steps: list[tuple[int, int, float]]) -> None:
    """Table invariants: live == not terminated; deadlines never in the past; no leaks."""
    table = TransactionTable()
    txns: list[Transaction] = []
    now = 0.0
    ops: list[Callable[[Transaction, float], list[Event]]] = [
        lambda t, n: feed(t, Input.SEND_1XX, n),
        lambda t, n: feed(t, Input.SEND_2XX, n),
        lambda t, n: feed(t, Input.SEND_300_699, n),
        lambda t, n: feed(t, Input.REQUEST_RETRANSMISSION, n),
    ]
    for kind, op, dt in steps:
        now += dt
        if kind < 4:
            cls = MACHINES[kind]
            branch = f"z9hG4bK{len(txns)}"
            method = "INVITE" if kind in (0, 2) else "OPTIONS"
            txn = make(cls, request(method, branch=branch), UDP)
            table.add(txn)
            if isinstance(txn, ClientTransaction):
                txn.start(now)
            txns.append(txn)
        elif kind < 6 and txns:
            txn = txns[op % len(txns)]
            try:
                if isinstance(txn, ServerTransaction):
                    ops[op](txn, now)
                else:
                    feed(txn, [Input.RECV_1XX, Input.RECV_2XX, Input.RECV_300_699,
                               Input.TRANSPORT_ERROR][op], now)
            except TransactionError:
                pass
        else:
            table.fire_due(now)
            d = table.next_deadline()
            assert d is None or d > now
        live = {t for t in txns if not t.terminated}
        assert set(table) == live
    table.fire_due(now + 1000.0)
    assert table.next_deadline() is None
    # Only machines waiting on someone else, with no timer by the RFC, outlive every timer:
    # a server whose TU has not answered, an INVITE client that got a 1xx (no Timer C in a UA).
    for txn in table:
        assert not txn.armed_timers()
        assert (type(txn), txn.state) in {
            (InviteServerTransaction, State.PROCEEDING),
            (NonInviteServerTransaction, State.TRYING),
            (NonInviteServerTransaction, State.PROCEEDING),
            (InviteClientTransaction, State.PROCEEDING),
        }


def test_a_key_computed_once_matches_and_creates_as_without_it() -> None:
    # The receive path computes server_key once: to look the request up, then to create its
    # transaction.  Both must behave as the key-less calls, for RFC 3261 and 2543 keys.
    for branch in ("z9hG4bKonce", None):
        table = TransactionTable()
        req = request("OPTIONS", branch=branch)
        key = server_key(req)
        assert key is not None
        assert table.find_server_by_key(key, req) is None
        txn = new_server_transaction(req, UDP, key=key)
        assert isinstance(txn, NonInviteServerTransaction)
        assert txn.key == key == new_server_transaction(req, UDP).key
        table.add(txn)
        again = request("OPTIONS", branch=branch)
        assert table.find_server_by_key(key, again) is txn is table.find_server(again)
        if branch is None:  # 2543: the To tag is still checked after the lookup
            other = request("OPTIONS", branch=None, to_tag="x")
            assert table.find_server_by_key(key, other) is None
    inv = request("INVITE")
    assert new_server_transaction(inv, UDP, key=server_key(inv)).key == server_key(inv)
