"""signaling/dialogs.py: the proxy's dialog record and the bounded dialog table.

Every (state, input) pair either follows the one dialog table (``protocols.sip.dialog.TABLE``)
or raises ``DialogError`` and
leaves the state alone (the h2 rule); Hypothesis feeds every state every input and random
input sequences.  The table is checked against a plain-dict model: bounds, lookup by either
tag, and deadlines (rescheduled ones fire once, at their latest value).
"""

from __future__ import annotations

import asyncio
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from protocols.sip.dialog import TABLE
from signaling.dialogs import (
    DialogError,
    DialogInfo,
    DialogInput,
    DialogState,
    DialogTable,
    DialogTableFull,
    ProxyDialog,
    dialog_key,
    intern_peer,
)
from signaling.transports.base import Peer

CALLER = Peer("udp", "127.0.0.1", 5061)
_ids = itertools.count()


def dialog(deadline: float = 100.0, call_id: str | None = None, tag: str = "a") -> ProxyDialog:
    cid = call_id or f"call-{next(_ids)}"
    return ProxyDialog(f"{cid};{tag}", cid, tag, f"<sip:a@x>;tag={tag}", "<sip:b@x>", CALLER,
                       "sip:a@127.0.0.1:5061", 1, 0.0, 1_700_000_000.0, deadline)


def _next(state: DialogState, inp: DialogInput) -> DialogState | None:
    row = TABLE.get((state, inp))
    return None if row is None else row[1]


def in_state(state: DialogState) -> ProxyDialog:
    d = dialog()
    d.state = state
    return d


# -- the state table -----------------------------------------------------------------------------

@pytest.mark.parametrize("state", list(DialogState))
@pytest.mark.parametrize("inp", list(DialogInput))
def test_every_pair_follows_the_table_or_raises(state: DialogState, inp: DialogInput) -> None:
    d = in_state(state)
    expected = _next(state, inp)
    if expected is None:
        with pytest.raises(DialogError):
            d.handle(inp)
        assert d.state is state  # a refused input changes nothing
    else:
        assert d.handle(inp) is expected
        assert d.state is expected


@given(st.sampled_from(list(DialogState)), st.lists(st.sampled_from(list(DialogInput))))
def test_random_sequences_follow_the_table(start: DialogState,
                                           inputs: list[DialogInput]) -> None:
    d = in_state(start)
    model = start
    for inp in inputs:
        nxt = _next(model, inp)
        if nxt is None:
            with pytest.raises(DialogError):
                d.handle(inp)
        else:
            d.handle(inp)
            model = nxt
        assert d.state is model


def test_terminated_is_absorbing() -> None:
    """Late retransmissions after the end never revive a dialog."""
    for inp in DialogInput:
        nxt = _next(DialogState.TERMINATED, inp)
        assert nxt in (None, DialogState.TERMINATED)


def test_the_normal_call() -> None:
    d = dialog()
    for inp, state in [(DialogInput.PROVISIONAL, DialogState.EARLY),
                       (DialogInput.SUCCESS, DialogState.WAIT_ACK),
                       (DialogInput.SUCCESS, DialogState.WAIT_ACK),  # 2xx retransmission
                       (DialogInput.ACK, DialogState.CONFIRMED),
                       (DialogInput.TARGET_REFRESH, DialogState.CONFIRMED),
                       (DialogInput.BYE, DialogState.TERMINATED)]:
        assert d.handle(inp) is state


def test_reinvite_before_ack_is_refused() -> None:
    with pytest.raises(DialogError):
        in_state(DialogState.WAIT_ACK).handle(DialogInput.TARGET_REFRESH)


def test_info_is_the_read_only_view() -> None:
    d = dialog(call_id="c1", tag="t1")
    d.handle(DialogInput.SUCCESS)
    info = d.info()
    assert isinstance(info, DialogInfo)
    assert (info.id, info.call_id, info.state, info.from_tag) == ("c1;t1", "c1", "wait_ack", "t1")


# -- the table ---------------------------------------------------------------------------------

def test_bounded() -> None:
    table = DialogTable(3)
    for _ in range(3):
        table.add(dialog())
    with pytest.raises(DialogTableFull):
        table.add(dialog())
    assert len(table) == 3


def test_room_again_after_remove() -> None:
    table = DialogTable(1)
    d = dialog()
    table.add(d)
    table.remove(d)
    table.add(dialog())
    assert len(table) == 1


def test_find_by_either_tag() -> None:
    """Caller to callee: the caller's tag is in From; callee to caller: it is in To."""
    table = DialogTable(10)
    d = dialog(call_id="c", tag="caller")
    table.add(d)
    assert table.find("c", "caller", "callee") is d
    assert table.find("c", "callee", "caller") is d
    assert table.find("c", "caller", None) is d
    assert table.find("c", "someone", "else") is None
    assert table.find("other", "caller", "callee") is None
    assert table.by_id("c;caller") is d
    assert table.get("c;caller") == d.info()
    assert table.get("nope") is None


def test_remove_keeps_a_newer_dialog_with_the_same_key() -> None:
    """An INVITE that loops back through us creates a second dialog with the same key."""
    table = DialogTable(10)
    old, new = dialog(call_id="c", tag="t"), dialog(call_id="c", tag="t")
    table.add(old)
    table.add(new)
    table.remove(old)
    assert table.find("c", "t", None) is new


def test_id_must_be_the_lookup_key() -> None:
    d = dialog(call_id="c", tag="t")
    assert d.id == dialog_key("c", "t")
    d.id = "something-else"
    with pytest.raises(ValueError):
        DialogTable(10).add(d)


def test_answered_dialogs_do_not_keep_their_ring_deadline_entries() -> None:
    """Each answer reschedules (ring -> maximum duration): the stale entries are compacted."""
    table = DialogTable(100_000)
    ds = [dialog(deadline=180.0) for _ in range(20_000)]
    for d in ds:
        table.add(d)
        d.deadline = 7200.0
        table.schedule(d)
    table.due(1.0)
    assert table._deadlines.heap_size() <= len(ds) + len(ds) // 2 + 1024
    assert table.due(7200.0) == ds  # every dialog still fires once, at its live deadline


def test_peers_are_interned() -> None:
    a, b = Peer("udp", "10.0.0.1", 5060), Peer("udp", "10.0.0.1", 5060)
    assert a is not b
    assert intern_peer(a) is intern_peer(b)
    assert dialog().caller_peer is intern_peer(CALLER)


def test_due_and_rescheduling() -> None:
    table = DialogTable(10)
    a, b = dialog(deadline=5.0), dialog(deadline=10.0)
    table.add(a)
    table.add(b)
    assert table.due(4.9) == []
    a.deadline = 20.0  # answered: a new deadline; the old heap entry must not fire
    table.schedule(a)
    assert table.due(10.0) == [b]
    assert table.due(10.0) == []
    assert table.due(25.0) == [a]


def test_same_deadline_scheduled_twice_fires_once() -> None:
    table = DialogTable(10)
    d = dialog(deadline=5.0)
    table.add(d)
    table.schedule(d)
    assert table.due(6.0) == [d]


def test_removed_dialog_never_comes_due() -> None:
    table = DialogTable(10)
    d = dialog(deadline=1.0)
    table.add(d)
    table.remove(d)
    assert table.due(2.0) == []


def test_heap_is_compacted_under_rescheduling_churn() -> None:
    table = DialogTable(10)
    d = dialog(deadline=1e9)
    table.add(d)
    for i in range(5000):
        d.deadline = 1e9 + i
        table.schedule(d)
    table.due(0.0)
    assert table._deadlines.heap_size() <= len(table) + len(table) // 2 + 1024


def test_counts_and_listing() -> None:
    table = DialogTable(10)
    ds = [dialog() for _ in range(4)]
    for d in ds:
        table.add(d)
    ds[0].handle(DialogInput.PROVISIONAL)
    ds[1].handle(DialogInput.SUCCESS)
    counts = table.counts_by_state()
    assert counts == {"initial": 2, "early": 1, "wait_ack": 1, "confirmed": 0, "terminated": 0}
    assert [i.id for i in table.list(1, 2)] == [ds[1].id, ds[2].id]


async def test_terminate_through_the_proxy_hook() -> None:
    table = DialogTable(10)
    d = dialog()
    table.add(d)
    assert await table.terminate(d.id) is False  # no hook set
    ended: list[ProxyDialog] = []

    def hook(x: ProxyDialog) -> bool:
        ended.append(x)
        return True

    table.on_terminate = hook
    assert await table.terminate(d.id) is True
    assert await table.terminate("unknown") is False
    assert ended == [d]
    await asyncio.sleep(0)


class TableModel(RuleBasedStateMachine):
    """DialogTable against a dict: bound, lookups and deadlines under any operation order."""

    BOUND = 8

    def __init__(self) -> None:
        super().__init__()
        self.table = DialogTable(self.BOUND)
        self.model: dict[str, ProxyDialog] = {}
        self.now = 0.0

    @rule(delay=st.floats(0.0, 50.0))
    def add(self, delay: float) -> None:
        d = dialog(deadline=self.now + delay)
        if len(self.model) >= self.BOUND:
            with pytest.raises(DialogTableFull):
                self.table.add(d)
            return
        self.table.add(d)
        self.model[d.id] = d

    @precondition(lambda self: self.model)
    @rule(pick=st.integers(0, 100))
    def remove(self, pick: int) -> None:
        d = list(self.model.values())[pick % len(self.model)]
        self.table.remove(d)
        del self.model[d.id]

    @precondition(lambda self: self.model)
    @rule(pick=st.integers(0, 100), delay=st.floats(0.0, 50.0))
    def reschedule(self, pick: int, delay: float) -> None:
        d = list(self.model.values())[pick % len(self.model)]
        d.deadline = self.now + delay
        self.table.schedule(d)

    @rule(step=st.floats(0.0, 30.0))
    def advance(self, step: float) -> None:
        self.now += step
        fired = self.table.due(self.now)
        expected = {d.id for d in self.model.values() if d.deadline <= self.now}
        assert {d.id for d in fired} == expected
        assert len(fired) == len(expected)  # each due dialog once
        for d in fired:  # the proxy removes or reschedules what came due; model: remove
            self.table.remove(d)
            del self.model[d.id]

    @invariant()
    def same_contents(self) -> None:
        assert len(self.table) == len(self.model)
        for d in self.model.values():
            assert self.table.find(d.call_id, d.caller_tag, None) is d
            assert self.table.find(d.call_id, "x", d.caller_tag) is d


TestTableModel = TableModel.TestCase
TestTableModel.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)
