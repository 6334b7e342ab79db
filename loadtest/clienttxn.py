"""The injector's client transaction, as a table (RFC 3261 §17.1.1 INVITE, §17.1.2 non-INVITE).

Rules, in prose, before the table that implements them:

* A request starts in CALLING (the RFC's "Calling" for INVITE, "Trying" for non-INVITE).
* A provisional response moves it to PROCEEDING.  For INVITE, Timer A stops there (§17.1.1.2)
  and Timer B no longer applies: the injector guards a silent PROCEEDING INVITE itself, after
  Timer C's 3 minutes (§16.6 step 11), since a UA would eventually give up too.  For non-INVITE,
  Timer E keeps running but every T2 (§17.1.2.2).
* A final response completes it (DONE).  The injector's UAs hand the ACK of a non-2xx and the
  2xx to the dialog layer; absorbing retransmitted finals (Completed/Accepted, Timers D, K, M)
  happens by recognising them as strays, so DONE is where the table ends.
* Retransmission timer: CALLING doubles the interval (INVITE: without cap, §17.1.1.2;
  non-INVITE: up to T2, §17.1.2.2); PROCEEDING non-INVITE retransmits every T2.
* Timer B/F at 64*T1 times a CALLING transaction (and a non-INVITE PROCEEDING one) out.
* Timers that fire in DONE are stale entries of the engine's lazy timer queues: ignored.

Any (kind, state, input) the table does not list raises ``TransactionTableError``: never a
silent fall-through.

Why not the server's machines (``protocols.sip.transaction``): they are the same RFC rules, but
each transaction there is an object holding its ``Request``, its deadlines and a list of events
per input, in a table with a deadline heap.  At 30,000 transactions per second the injector has
about 30 µs per transaction for everything (sending, matching by a slice of the branch,
statistics), so it keeps bytes, three states and lazily skipped FIFO entries instead; the
RFC's Completed state (Timers D and K, absorbing retransmitted finals) is folded into the
stray count.  What is shared is what costs nothing per transaction: the timer *values* come
from ``protocols.sip.timers`` (``loadtest.timers``), and dialogs are the one model of
``protocols.sip.dialog``.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["TABLE", "TransactionTableError", "TxnAction", "TxnInput", "TxnState", "step"]


class TxnState(IntEnum):
    CALLING = 0
    PROCEEDING = 1
    DONE = 2


class TxnInput(IntEnum):
    PROVISIONAL = 0  # a 1xx arrived
    FINAL = 1  # a 2xx-6xx arrived
    RETRANSMIT_DUE = 2  # Timer A / E fired
    TIMEOUT_DUE = 3  # Timer B / F fired
    GUARD_DUE = 4  # the PROCEEDING INVITE guard fired


class TxnAction(IntEnum):
    IGNORE = 0
    PROVISIONAL = 1  # count it (and for INVITE arm the PROCEEDING guard)
    COMPLETE = 2  # record the final response, pass it to the UA
    RETRANSMIT_DOUBLE = 3  # re-send, next interval 2x (INVITE: uncapped)
    RETRANSMIT_CAPPED = 4  # re-send, next interval min(2x, T2)
    RETRANSMIT_T2 = 5  # re-send, next interval T2
    TIME_OUT = 6  # count a timeout, tell the UA


class TransactionTableError(LookupError):
    """An input the transaction table has no row for in that state."""

    def __init__(self, invite: bool, state: TxnState, inp: TxnInput) -> None:
        kind = "INVITE" if invite else "non-INVITE"
        super().__init__(f"{kind} client transaction: no row for {inp.name} in {state.name}")


_S, _I, _A = TxnState, TxnInput, TxnAction

#: (is INVITE, state, input) -> (action, next state).
TABLE: dict[tuple[bool, TxnState, TxnInput], tuple[TxnAction, TxnState]] = {
    # INVITE, §17.1.1.2
    (True, _S.CALLING, _I.PROVISIONAL): (_A.PROVISIONAL, _S.PROCEEDING),
    (True, _S.CALLING, _I.FINAL): (_A.COMPLETE, _S.DONE),
    (True, _S.CALLING, _I.RETRANSMIT_DUE): (_A.RETRANSMIT_DOUBLE, _S.CALLING),
    (True, _S.CALLING, _I.TIMEOUT_DUE): (_A.TIME_OUT, _S.DONE),
    (True, _S.PROCEEDING, _I.PROVISIONAL): (_A.PROVISIONAL, _S.PROCEEDING),
    (True, _S.PROCEEDING, _I.FINAL): (_A.COMPLETE, _S.DONE),
    (True, _S.PROCEEDING, _I.RETRANSMIT_DUE): (_A.IGNORE, _S.PROCEEDING),  # Timer A stopped
    (True, _S.PROCEEDING, _I.TIMEOUT_DUE): (_A.IGNORE, _S.PROCEEDING),  # Timer B: Calling only
    (True, _S.PROCEEDING, _I.GUARD_DUE): (_A.TIME_OUT, _S.DONE),
    # non-INVITE, §17.1.2.2
    (False, _S.CALLING, _I.PROVISIONAL): (_A.PROVISIONAL, _S.PROCEEDING),
    (False, _S.CALLING, _I.FINAL): (_A.COMPLETE, _S.DONE),
    (False, _S.CALLING, _I.RETRANSMIT_DUE): (_A.RETRANSMIT_CAPPED, _S.CALLING),
    (False, _S.CALLING, _I.TIMEOUT_DUE): (_A.TIME_OUT, _S.DONE),
    (False, _S.PROCEEDING, _I.PROVISIONAL): (_A.PROVISIONAL, _S.PROCEEDING),
    (False, _S.PROCEEDING, _I.FINAL): (_A.COMPLETE, _S.DONE),
    (False, _S.PROCEEDING, _I.RETRANSMIT_DUE): (_A.RETRANSMIT_T2, _S.PROCEEDING),
    (False, _S.PROCEEDING, _I.TIMEOUT_DUE): (_A.TIME_OUT, _S.DONE),
    # Both: whatever reaches a finished transaction is a stale timer entry or a late copy.
    **{(inv, _S.DONE, inp): (_A.IGNORE, _S.DONE) for inv in (True, False) for inp in _I},
}


def step(invite: bool, state: TxnState, inp: TxnInput) -> tuple[TxnAction, TxnState]:
    """The row for this input, or ``TransactionTableError``."""
    row = TABLE.get((invite, state, inp))
    if row is None:
        raise TransactionTableError(invite, state, inp)
    return row
