"""The client transaction table: every state gets every input (Hypothesis), RFC rows checked."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loadtest.clienttxn import (
    TABLE,
    TransactionTableError,
    TxnAction,
    TxnInput,
    TxnState,
    step,
)

A, In, S = TxnAction, TxnInput, TxnState


@given(st.booleans(), st.sampled_from(TxnState), st.sampled_from(TxnInput))
def test_every_pair_is_a_row_or_a_typed_error(invite: bool, state: TxnState,
                                              inp: TxnInput) -> None:
    try:
        action, nxt = step(invite, state, inp)
    except TransactionTableError as exc:
        assert (invite, state, inp) not in TABLE
        assert inp.name in str(exc) and state.name in str(exc)
        return
    assert isinstance(action, TxnAction) and isinstance(nxt, TxnState)
    if state is S.DONE:
        assert (action, nxt) == (A.IGNORE, S.DONE)  # a finished transaction stays finished


@given(st.booleans(), st.lists(st.sampled_from(TxnInput), max_size=30))
def test_any_input_sequence_ends_done_after_a_final_and_never_leaves_done(
    invite: bool, inputs: list[TxnInput]
) -> None:
    state = S.CALLING
    for inp in inputs:
        if (invite, state, inp) not in TABLE:
            continue
        before = state
        _, state = step(invite, state, inp)
        if inp is In.FINAL:
            assert state is S.DONE
        if before is S.DONE:
            assert state is S.DONE


def test_the_only_missing_rows_are_the_invite_guard_on_non_invite() -> None:
    missing = {(inv, s, i) for inv in (True, False) for s in S for i in In} - set(TABLE)
    assert missing == {(False, S.CALLING, In.GUARD_DUE), (False, S.PROCEEDING, In.GUARD_DUE),
                       (True, S.CALLING, In.GUARD_DUE)}
    with pytest.raises(TransactionTableError):
        step(False, S.CALLING, In.GUARD_DUE)


@pytest.mark.parametrize(
    ("invite", "state", "inp", "row"),
    [
        # §17.1.1.2: a provisional stops Timer A, Timer B only runs in Calling.
        (True, S.CALLING, In.RETRANSMIT_DUE, (A.RETRANSMIT_DOUBLE, S.CALLING)),
        (True, S.PROCEEDING, In.RETRANSMIT_DUE, (A.IGNORE, S.PROCEEDING)),
        (True, S.PROCEEDING, In.TIMEOUT_DUE, (A.IGNORE, S.PROCEEDING)),
        (True, S.CALLING, In.TIMEOUT_DUE, (A.TIME_OUT, S.DONE)),
        # §17.1.2.2: non-INVITE doubles to T2, then every T2 once proceeding; Timer F always.
        (False, S.CALLING, In.RETRANSMIT_DUE, (A.RETRANSMIT_CAPPED, S.CALLING)),
        (False, S.PROCEEDING, In.RETRANSMIT_DUE, (A.RETRANSMIT_T2, S.PROCEEDING)),
        (False, S.PROCEEDING, In.TIMEOUT_DUE, (A.TIME_OUT, S.DONE)),
        (False, S.CALLING, In.PROVISIONAL, (A.PROVISIONAL, S.PROCEEDING)),
    ],
)
def test_rfc3261_rows(invite: bool, state: TxnState, inp: TxnInput,
                      row: tuple[TxnAction, TxnState]) -> None:
    assert step(invite, state, inp) == row
