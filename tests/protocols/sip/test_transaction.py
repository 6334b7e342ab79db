"""Transaction state machines, matching and the table (RFC 3261 §17, RFC 6026).

A fake clock throughout: ``now`` is a float the test moves, so Timer B (32 s) or Timer C
(180 s) fire in microseconds.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.sip.builders import make_response
from protocols.sip.errors import TransactionError
from protocols.sip.message import CSeq, NameAddr, Request, Response, SipURI, Via
from protocols.sip.parser import parse_message
from protocols.sip.serializer import serialize
from protocols.sip.summary import ResponseSummary, response_summary
from protocols.sip.timers import DEFAULT_TIMERS, TimerConfig, TimerValues, timer_values
from protocols.sip.transaction import (
    Action,
    ClientTransaction,
    Event,
    Input,
    InviteClientTransaction,
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    PassToTU,
    SendMessage,
    State,
    TimerCFired,
    Transaction,
    TransactionTerminated,
    TransactionTimedOut,
    TransportFailed,
    build_ack,
    build_cancel,
    cancel_target_key,
    client_key,
    new_client_transaction,
    new_server_transaction,
    server_key,
)

UDP = timer_values(DEFAULT_TIMERS, reliable=False)
TCP = timer_values(DEFAULT_TIMERS, reliable=True)
RFC4475 = Path(__file__).resolve().parents[3] / ".." / "shared" / "conformance" / "sip" / "rfc4475"

MACHINES: list[type[Transaction]] = [
    InviteClientTransaction,
    NonInviteClientTransaction,
    InviteServerTransaction,
    NonInviteServerTransaction,
]


# ---------------------------------------------------------------------------------------------
# Messages, built with the model classes.


def request(method: str = "OPTIONS", branch: str | None = "z9hG4bKabc123", *,
            host: str = "10.0.0.1", port: int | None = 5060, to_tag: str | None = None,
            seq: int = 1, call_id: str = "call-1@10.0.0.1") -> Request:
    params = {} if branch is None else {"branch": branch}
    to_params = {} if to_tag is None else {"tag": to_tag}
    return Request(
        method=method,
        uri=SipURI("sip", "example.com", user="bob"),
        vias=[Via("UDP", host, port, params)],
        from_=NameAddr(SipURI("sip", "example.com", user="alice"), params={"tag": "fromtag"}),
        to=NameAddr(SipURI("sip", "example.com", user="bob"), params=to_params),
        call_id=call_id,
        cseq=CSeq(seq, method),
        max_forwards=70,
        routes=[NameAddr(SipURI("sip", "proxy.example.com", params={"lr": None}))],
    )


def response(req: Request, status: int, to_tag: str = "totag") -> Response:
    return make_response(req, status, to_tag=None if status == 100 else to_tag)


def sends(events: list[Event]) -> list[Request | Response | ResponseSummary]:
    return [e.message for e in events if isinstance(e, SendMessage)]


def kinds(events: list[Event]) -> list[str]:
    return [type(e).__name__ for e in events]


def make(cls: type[Transaction], req: Request, timers: TimerValues, **kw: bool) -> Transaction:
    """Construct any machine class (the base class's constructor differs from theirs)."""
    factory = cast(Callable[..., Transaction], cls)
    return factory(req, timers, **kw)


def new(cls: type[Transaction], timers: TimerValues = UDP, now: float = 0.0,
        **kw: bool) -> Transaction:
    """A machine of ``cls`` in its initial state (client machines started at ``now``)."""
    method = "INVITE" if cls in (InviteClientTransaction, InviteServerTransaction) else "OPTIONS"
    txn = make(cls, request(method), timers, **kw)
    if isinstance(txn, ClientTransaction):
        txn.start(now)
    return txn


def message_for(txn: Transaction, inp: Input) -> Request | Response | None:
    """A plausible message for ``inp`` on ``txn``."""
    req = txn.request
    status = {Input.SEND_1XX: 180, Input.RECV_1XX: 180, Input.SEND_2XX: 200,
              Input.RECV_2XX: 200, Input.SEND_300_699: 486, Input.RECV_300_699: 486}
    if inp in status:
        return response(req, status[inp])
    if inp is Input.REQUEST_RETRANSMISSION:
        return req
    if inp is Input.ACK:
        last = txn.last_response
        return build_ack(req, last if isinstance(last, Response) else response(req, 486))
    return None


def feed(txn: Transaction, inp: Input, now: float = 0.0) -> list[Event]:
    return txn.handle(inp, now, message_for(txn, inp))


#: Inputs that lead each machine from its initial state to each state (unreliable transport).
PATHS: dict[type[Transaction], dict[State, list[Input]]] = {
    InviteClientTransaction: {
        State.CALLING: [],
        State.PROCEEDING: [Input.RECV_1XX],
        State.COMPLETED: [Input.RECV_300_699],
        State.ACCEPTED: [Input.RECV_2XX],
        State.TERMINATED: [Input.TIMER_B],
    },
    NonInviteClientTransaction: {
        State.TRYING: [],
        State.PROCEEDING: [Input.RECV_1XX],
        State.COMPLETED: [Input.RECV_2XX],
        State.TERMINATED: [Input.TIMER_F],
    },
    InviteServerTransaction: {
        State.PROCEEDING: [],
        State.COMPLETED: [Input.SEND_300_699],
        State.CONFIRMED: [Input.SEND_300_699, Input.ACK],
        State.ACCEPTED: [Input.SEND_2XX],
        State.TERMINATED: [Input.TRANSPORT_ERROR],
    },
    NonInviteServerTransaction: {
        State.TRYING: [],
        State.PROCEEDING: [Input.SEND_1XX],
        State.COMPLETED: [Input.SEND_2XX],
        State.TERMINATED: [Input.SEND_2XX, Input.TIMER_J],
    },
}


def in_state(cls: type[Transaction], state: State, timers: TimerValues = UDP) -> Transaction:
    txn = new(cls, timers)
    for inp in PATHS[cls][state]:
        if txn.state is state:  # a zero timer on a reliable transport got there early
            break
        feed(txn, inp)
    assert txn.state is state
    return txn


# ---------------------------------------------------------------------------------------------
# Every documented transition, written from the RFC figures independently of the tables:
# (machine, state, input) -> (next state, event kinds).

SEND, TU, TO, TF, TC, END = (
    "SendMessage", "PassToTU", "TransactionTimedOut", "TransportFailed", "TimerCFired",
    "TransactionTerminated")
ICT, NICT, IST, NIST = MACHINES
S, I = State, Input  # noqa: E741 - short names keep the table below one row per transition
EXPECTED: dict[tuple[type[Transaction], State, Input], tuple[State, list[str]]] = {
    # INVITE client, RFC 3261 Figure 5 as updated by RFC 6026 Figure 5.
    (ICT, S.CALLING, I.TIMER_A): (S.CALLING, [SEND]),
    (ICT, S.CALLING, I.TIMER_B): (S.TERMINATED, [TO, END]),
    (ICT, S.CALLING, I.TIMER_C): (S.CALLING, [TC]),
    (ICT, S.CALLING, I.RECV_1XX): (S.PROCEEDING, [TU]),
    (ICT, S.CALLING, I.RECV_2XX): (S.ACCEPTED, [TU]),
    (ICT, S.CALLING, I.RECV_300_699): (S.COMPLETED, [SEND, TU]),
    (ICT, S.CALLING, I.TRANSPORT_ERROR): (S.TERMINATED, [TF, END]),
    (ICT, S.PROCEEDING, I.RECV_1XX): (S.PROCEEDING, [TU]),
    (ICT, S.PROCEEDING, I.RECV_2XX): (S.ACCEPTED, [TU]),
    (ICT, S.PROCEEDING, I.RECV_300_699): (S.COMPLETED, [SEND, TU]),
    (ICT, S.PROCEEDING, I.TIMER_C): (S.PROCEEDING, [TC]),
    (ICT, S.PROCEEDING, I.TRANSPORT_ERROR): (S.TERMINATED, [TF, END]),
    (ICT, S.COMPLETED, I.RECV_300_699): (S.COMPLETED, [SEND]),
    (ICT, S.COMPLETED, I.RECV_1XX): (S.COMPLETED, []),
    (ICT, S.COMPLETED, I.TIMER_D): (S.TERMINATED, [END]),
    (ICT, S.COMPLETED, I.TRANSPORT_ERROR): (S.TERMINATED, [TF, END]),
    (ICT, S.ACCEPTED, I.RECV_2XX): (S.ACCEPTED, [TU]),
    (ICT, S.ACCEPTED, I.RECV_1XX): (S.ACCEPTED, []),
    (ICT, S.ACCEPTED, I.TIMER_M): (S.TERMINATED, [END]),
    # Non-INVITE client, Figure 6.
    (NICT, S.TRYING, I.TIMER_E): (S.TRYING, [SEND]),
    (NICT, S.TRYING, I.TIMER_F): (S.TERMINATED, [TO, END]),
    (NICT, S.TRYING, I.TRANSPORT_ERROR): (S.TERMINATED, [TF, END]),
    (NICT, S.TRYING, I.RECV_1XX): (S.PROCEEDING, [TU]),
    (NICT, S.TRYING, I.RECV_2XX): (S.COMPLETED, [TU]),
    (NICT, S.TRYING, I.RECV_300_699): (S.COMPLETED, [TU]),
    (NICT, S.PROCEEDING, I.TIMER_E): (S.PROCEEDING, [SEND]),
    (NICT, S.PROCEEDING, I.TIMER_F): (S.TERMINATED, [TO, END]),
    (NICT, S.PROCEEDING, I.TRANSPORT_ERROR): (S.TERMINATED, [TF, END]),
    (NICT, S.PROCEEDING, I.RECV_1XX): (S.PROCEEDING, [TU]),
    (NICT, S.PROCEEDING, I.RECV_2XX): (S.COMPLETED, [TU]),
    (NICT, S.PROCEEDING, I.RECV_300_699): (S.COMPLETED, [TU]),
    (NICT, S.COMPLETED, I.RECV_1XX): (S.COMPLETED, []),
    (NICT, S.COMPLETED, I.RECV_2XX): (S.COMPLETED, []),
    (NICT, S.COMPLETED, I.RECV_300_699): (S.COMPLETED, []),
    (NICT, S.COMPLETED, I.TIMER_K): (S.TERMINATED, [END]),
    # INVITE server, Figure 7 as updated by RFC 6026 Figure 7.
    (IST, S.PROCEEDING, I.REQUEST_RETRANSMISSION): (S.PROCEEDING, []),  # no 1xx sent yet
    (IST, S.PROCEEDING, I.SEND_1XX): (S.PROCEEDING, [SEND]),
    (IST, S.PROCEEDING, I.SEND_2XX): (S.ACCEPTED, [SEND]),
    (IST, S.PROCEEDING, I.SEND_300_699): (S.COMPLETED, [SEND]),
    (IST, S.PROCEEDING, I.TRANSPORT_ERROR): (S.TERMINATED, [TF, END]),
    (IST, S.COMPLETED, I.REQUEST_RETRANSMISSION): (S.COMPLETED, [SEND]),
    (IST, S.COMPLETED, I.TIMER_G): (S.COMPLETED, [SEND]),
    (IST, S.COMPLETED, I.ACK): (S.CONFIRMED, []),
    (IST, S.COMPLETED, I.TIMER_H): (S.TERMINATED, [TO, END]),
    (IST, S.COMPLETED, I.TRANSPORT_ERROR): (S.TERMINATED, [TF, END]),
    (IST, S.CONFIRMED, I.ACK): (S.CONFIRMED, []),
    (IST, S.CONFIRMED, I.REQUEST_RETRANSMISSION): (S.CONFIRMED, []),
    (IST, S.CONFIRMED, I.TIMER_I): (S.TERMINATED, [END]),
    (IST, S.ACCEPTED, I.REQUEST_RETRANSMISSION): (S.ACCEPTED, []),
    (IST, S.ACCEPTED, I.SEND_2XX): (S.ACCEPTED, [SEND]),
    (IST, S.ACCEPTED, I.ACK): (S.ACCEPTED, [TU]),
    (IST, S.ACCEPTED, I.TIMER_L): (S.TERMINATED, [END]),
    (IST, S.ACCEPTED, I.TRANSPORT_ERROR): (S.ACCEPTED, [TF]),
    # Non-INVITE server, Figure 8.
    (NIST, S.TRYING, I.REQUEST_RETRANSMISSION): (S.TRYING, []),
    (NIST, S.TRYING, I.SEND_1XX): (S.PROCEEDING, [SEND]),
    (NIST, S.TRYING, I.SEND_2XX): (S.COMPLETED, [SEND]),
    (NIST, S.TRYING, I.SEND_300_699): (S.COMPLETED, [SEND]),
    (NIST, S.PROCEEDING, I.REQUEST_RETRANSMISSION): (S.PROCEEDING, [SEND]),
    (NIST, S.PROCEEDING, I.SEND_1XX): (S.PROCEEDING, [SEND]),
    (NIST, S.PROCEEDING, I.SEND_2XX): (S.COMPLETED, [SEND]),
    (NIST, S.PROCEEDING, I.SEND_300_699): (S.COMPLETED, [SEND]),
    (NIST, S.PROCEEDING, I.TRANSPORT_ERROR): (S.TERMINATED, [TF, END]),
    (NIST, S.COMPLETED, I.REQUEST_RETRANSMISSION): (S.COMPLETED, [SEND]),
    (NIST, S.COMPLETED, I.SEND_2XX): (S.COMPLETED, []),  # §17.2.2: discarded
    (NIST, S.COMPLETED, I.SEND_300_699): (S.COMPLETED, []),
    (NIST, S.COMPLETED, I.TIMER_J): (S.TERMINATED, [END]),
    (NIST, S.COMPLETED, I.TRANSPORT_ERROR): (S.TERMINATED, [TF, END]),
}


def test_tables_list_exactly_the_documented_transitions() -> None:
    listed = {(cls, s, i) for cls in MACHINES for (s, i) in cls.TABLE}
    assert listed == set(EXPECTED)
    for (cls, s, i), (nxt, _) in EXPECTED.items():
        assert cls.TABLE[(s, i)][1] is nxt


@pytest.mark.parametrize(("cls", "state", "inp"), list(EXPECTED), ids=lambda x: getattr(
    x, "__name__", getattr(x, "name", str(x))))
def test_documented_transition(cls: type[Transaction], state: State, inp: Input) -> None:
    txn = in_state(cls, state)
    if inp is Input.TIMER_C:
        assert isinstance(txn, InviteClientTransaction)
    events = feed(txn, inp, now=1.0)
    nxt, expected = EXPECTED[(cls, state, inp)]
    assert txn.state is nxt
    assert kinds(events) == expected
    assert set(txn.armed_timers()) <= cls.STATE_TIMERS[nxt]


def test_state_timers_have_transitions() -> None:
    """A timer that may be armed in a state must have a row there, or firing it would raise."""
    for cls in MACHINES:
        for state, timers in cls.STATE_TIMERS.items():
            for timer in timers:
                assert (state, timer) in cls.TABLE, (cls.__name__, state, timer)
        assert set(cls.STATE_TIMERS) == {s for s, _ in cls.TABLE} | {State.TERMINATED}
        assert not any(s is State.TERMINATED for s, _ in cls.TABLE)


# ---------------------------------------------------------------------------------------------
# Retransmission schedules with the fake clock.


def run_clock(txn: Transaction, until: float) -> list[tuple[float, list[Event]]]:
    """Fire the transaction's timers in order until ``until``; (time, events) per firing."""
    log = []
    while (d := txn.next_deadline()) is not None and d <= until:
        log.append((d, txn.on_timer(d)))
    return log


def test_invite_client_timer_a_doubles_until_timer_b() -> None:
    txn = InviteClientTransaction(request("INVITE"), UDP)
    assert sends(txn.start(0.0)) == [txn.request]
    log = run_clock(txn, 100.0)
    times = [t for t, ev in log if sends(ev)]
    # §17.1.1.2: T1, 2T1, 4T1 ... (no cap) until Timer B at 64*T1.
    assert times == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    last_t, last = log[-1]
    assert last_t == 32.0
    assert kinds(last) == [TO, END] and last[0] == TransactionTimedOut(Input.TIMER_B)
    assert txn.terminated and txn.next_deadline() is None


def test_non_invite_client_timer_e_caps_at_t2() -> None:
    txn = NonInviteClientTransaction(request(), UDP)
    txn.start(0.0)
    log = run_clock(txn, 100.0)
    times = [t for t, ev in log if sends(ev)]
    # §17.1.2.2: 0.5, 1, 2, 4, 4, 4 ... seconds apart until Timer F at 32 s.
    assert times == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert log[-1][0] == 32.0 and kinds(log[-1][1]) == [TO, END]


def test_non_invite_client_proceeding_retransmits_every_t2() -> None:
    txn = NonInviteClientTransaction(request(), UDP)
    txn.start(0.0)
    txn.on_timer(0.5)  # next at 1.5
    txn.receive_response(response(txn.request, 100), 0.7)
    assert txn.state is State.PROCEEDING
    times = [t for t, ev in run_clock(txn, 20.0) if sends(ev)]
    # The armed E keeps its deadline; from then on every T2 (§17.1.2.2).
    assert times == [1.5, 5.5, 9.5, 13.5, 17.5]


def test_invite_server_timer_g_caps_at_t2_until_timer_h() -> None:
    txn = InviteServerTransaction(request("INVITE"), UDP)
    final = response(txn.request, 486)
    txn.send_response(final, 0.0)
    log = run_clock(txn, 100.0)
    times = [t for t, ev in log if sends(ev)]
    assert times == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert all(m is final for _, ev in log for m in sends(ev))
    assert log[-1][0] == 32.0 and kinds(log[-1][1]) == [TO, END]
    assert log[-1][1][0] == TransactionTimedOut(Input.TIMER_H)


def test_custom_t1_t2_scale_schedules() -> None:
    fast = timer_values(TimerConfig(t1=0.01, t2=0.04, t4=0.05), reliable=False)
    txn = NonInviteClientTransaction(request(), fast)
    txn.start(0.0)
    log = run_clock(txn, 10.0)
    times = [round(t, 6) for t, ev in log if sends(ev)]
    assert times[:5] == [0.01, 0.03, 0.07, 0.11, 0.15]
    assert round(log[-1][0], 6) == 0.64  # Timer F = 64*T1


@pytest.mark.parametrize("cls", [InviteClientTransaction, NonInviteClientTransaction])
def test_reliable_client_never_retransmits(cls: type[ClientTransaction]) -> None:
    txn = new(cls, TCP)
    log = run_clock(txn, 100.0)
    assert [kinds(ev) for _, ev in log] == [[TO, END]]
    assert log[0][0] == 32.0  # Timer B / F still 64*T1


def test_reliable_zero_timers_terminate_at_once() -> None:
    ict = new(InviteClientTransaction, TCP)
    assert isinstance(ict, InviteClientTransaction)
    events = ict.receive_response(response(ict.request, 486), 1.0)
    assert kinds(events) == [SEND, TU, END]  # ACK, response up, Timer D = 0
    nict = new(NonInviteClientTransaction, TCP)
    assert isinstance(nict, ClientTransaction)
    assert kinds(nict.receive_response(response(nict.request, 200), 1.0)) == [TU, END]
    ist = InviteServerTransaction(request("INVITE"), TCP)
    reject = response(ist.request, 486)
    assert kinds(ist.send_response(reject, 1.0)) == [SEND]  # no G, H armed
    assert set(ist.armed_timers()) == {Input.TIMER_H}
    assert kinds(ist.receive_request(build_ack(ist.request, reject), 2.0)) == [END]  # I = 0
    nist = NonInviteServerTransaction(request(), TCP)
    assert kinds(nist.send_response(response(nist.request, 200), 1.0)) == [SEND, END]  # J = 0


# ---------------------------------------------------------------------------------------------
# Requests retransmitted to servers, responses to clients.


def test_non_invite_server_answers_retransmissions_with_last_response() -> None:
    txn = NonInviteServerTransaction(request(), UDP)
    assert txn.receive_request(txn.request, 0.0) == []  # Trying: nothing to answer with
    prov = response(txn.request, 100)
    txn.send_response(prov, 0.1)
    assert sends(txn.receive_request(txn.request, 0.2)) == [prov]
    final = response(txn.request, 200)
    txn.send_response(final, 0.3)
    txn.cache_bytes(final, b"wire-200")
    events = txn.receive_request(txn.request, 0.4)
    assert events == [SendMessage(final, b"wire-200")]  # the cached bytes, not re-serialised
    # A second final from the TU is discarded (§17.2.2) and does not replace the first.
    assert txn.send_response(response(txn.request, 500), 0.5) == []
    assert txn.last_response is final
    assert txn.on_timer(32.29) == []
    assert kinds(txn.on_timer(32.3)) == [END]


def test_invite_server_retransmits_last_provisional_then_final() -> None:
    txn = InviteServerTransaction(request("INVITE"), UDP)
    ringing = response(txn.request, 180)
    txn.send_response(ringing, 0.0)
    assert sends(txn.receive_request(txn.request, 0.1)) == [ringing]
    final = response(txn.request, 404)
    txn.send_response(final, 0.2)
    txn.cache_bytes(final, b"404 bytes")
    assert txn.receive_request(txn.request, 0.3) == [SendMessage(final, b"404 bytes")]
    # Timer G retransmissions reuse the cached bytes too.
    assert txn.on_timer(0.7) == [SendMessage(final, b"404 bytes")]
    ack = build_ack(txn.request, final)
    assert txn.receive_request(ack, 1.0) == []
    assert txn.state is State.CONFIRMED
    assert txn.receive_request(ack, 1.1) == []  # absorbed
    assert kinds(txn.on_timer(6.0)) == [END]  # Timer I = T4


def test_invite_client_acks_non_2xx_and_reacks_retransmissions() -> None:
    txn = InviteClientTransaction(request("INVITE"), UDP)
    txn.start(0.0)
    txn.receive_response(response(txn.request, 180), 0.1)
    busy = response(txn.request, 486)
    events = txn.receive_response(busy, 0.2)
    assert kinds(events) == [SEND, TU]
    first = events[0]
    assert isinstance(first, SendMessage)
    ack = first.message
    assert isinstance(ack, Request) and ack is txn.ack
    # §17.1.1.3: the ACK's fields.
    assert ack.method == "ACK" and ack.uri == txn.request.uri
    assert ack.vias == [txn.request.vias[0]]
    assert ack.cseq == CSeq(1, "ACK")
    assert ack.to == busy.to and ack.to.tag == "totag"
    assert ack.from_ == txn.request.from_ and ack.call_id == txn.request.call_id
    assert ack.routes == txn.request.routes and ack.body == b""
    txn.cache_bytes(ack, b"ack bytes")
    assert txn.receive_response(busy, 0.3) == [SendMessage(ack, b"ack bytes")]
    assert txn.receive_response(response(txn.request, 180), 0.4) == []  # late 1xx dropped
    assert kinds(txn.on_timer(32.2)) == [END]  # Timer D


def test_client_cache_bytes_reused_for_timer_retransmissions() -> None:
    txn = NonInviteClientTransaction(request(), UDP)
    (first,) = txn.start(0.0)
    assert first == SendMessage(txn.request, None)
    txn.cache_bytes(txn.request, serialize(txn.request))
    assert txn.on_timer(0.5) == [SendMessage(txn.request, serialize(txn.request))]


# ---------------------------------------------------------------------------------------------
# RFC 6026 Accepted states.


def test_invite_server_accepted_absorbs_and_passes_ack() -> None:
    txn = InviteServerTransaction(request("INVITE"), UDP)
    ok = response(txn.request, 200)
    assert sends(txn.send_response(ok, 0.0)) == [ok]
    assert txn.state is State.ACCEPTED
    assert set(txn.armed_timers()) == {Input.TIMER_L}
    # The INVITE retransmitted: absorbed, not answered (the TU owns 2xx retransmission).
    assert txn.receive_request(txn.request, 0.5) == []
    # The TU (or a proxied fork) retransmits the 2xx: sent.
    assert sends(txn.send_response(ok, 0.5)) == [ok]
    ack = request("ACK", to_tag="totag")
    assert txn.receive_request(ack, 0.6) == [PassToTU(ack)]
    assert txn.on_timer(31.9) == []
    assert kinds(txn.on_timer(32.0)) == [END]


def test_invite_client_accepted_passes_every_2xx() -> None:
    txn = InviteClientTransaction(request("INVITE"), UDP)
    txn.start(0.0)
    ok = response(txn.request, 200)
    fork = response(txn.request, 200, to_tag="other-fork")
    assert txn.receive_response(ok, 0.1) == [PassToTU(ok)]
    assert txn.state is State.ACCEPTED
    assert set(txn.armed_timers()) == {Input.TIMER_M}  # A and B cancelled
    assert txn.receive_response(ok, 0.6) == [PassToTU(ok)]
    assert txn.receive_response(fork, 0.7) == [PassToTU(fork)]
    with pytest.raises(TransactionError):
        txn.receive_response(response(txn.request, 486), 0.8)
    assert txn.state is State.ACCEPTED
    assert kinds(txn.on_timer(32.1)) == [END]


# ---------------------------------------------------------------------------------------------
# Proxy Timer C (§16.6 step 11, §16.7 step 2, §16.8).


def test_timer_c_only_for_proxies_and_restarted_by_provisionals() -> None:
    ua = new(InviteClientTransaction, UDP)
    assert Input.TIMER_C not in ua.armed_timers()
    txn = InviteClientTransaction(request("INVITE"), UDP, proxy=True)
    txn.start(0.0)
    assert txn.armed_timers()[Input.TIMER_C] == 180.0
    txn.receive_response(response(txn.request, 180), 100.0)
    assert txn.armed_timers() == {Input.TIMER_C: 280.0}
    assert txn.on_timer(279.0) == []
    assert txn.on_timer(280.0) == [TimerCFired()]
    assert txn.state is State.PROCEEDING
    busy = response(txn.request, 487)
    assert kinds(txn.receive_response(busy, 281.0)) == [SEND, TU]
    assert set(txn.armed_timers()) == {Input.TIMER_D}


# ---------------------------------------------------------------------------------------------
# CANCEL and ACK builders.


def test_build_cancel_copies_what_9_1_requires() -> None:
    invite = request("INVITE")
    invite.vias.append(Via("UDP", "upstream.example.com", 5060, {"branch": "z9hG4bKup"}))
    cancel = build_cancel(invite)
    assert cancel.method == "CANCEL" and cancel.uri == invite.uri
    assert cancel.vias == [invite.vias[0]]
    assert (cancel.from_, cancel.to, cancel.call_id) == (invite.from_, invite.to, invite.call_id)
    assert cancel.cseq == CSeq(invite.cseq.seq, "CANCEL")
    assert cancel.routes == invite.routes and cancel.max_forwards == 70
    # Matches the INVITE's server transaction at the next hop, and its own client key.
    assert cancel_target_key(cancel) == server_key(invite)
    assert server_key(cancel) != server_key(invite)
    parsed = parse_message(serialize(cancel))
    assert isinstance(parsed, Request) and parsed.method == "CANCEL"
    for method in ("ACK", "CANCEL"):
        with pytest.raises(TransactionError):
            build_cancel(request(method))


# ---------------------------------------------------------------------------------------------
# Matching (§17.1.3, §17.2.3).


def test_server_key_rfc3261() -> None:
    inv = request("INVITE")
    assert server_key(inv) == ("z9hG4bKabc123", "10.0.0.1", 5060, "INVITE")
    # ACK for a non-2xx carries the INVITE's branch and matches it.
    assert server_key(build_ack(inv, response(inv, 486))) == server_key(inv)
    # Same branch from another sent-by, or another method: another transaction.
    assert server_key(request("INVITE", host="10.0.0.2")) != server_key(inv)
    assert server_key(request("INVITE", port=5062)) != server_key(inv)
    assert server_key(request("OPTIONS")) != server_key(inv)
    # sent-by host compares case-insensitively.
    assert server_key(request("INVITE", host="Proxy.Example.COM")) == server_key(
        request("INVITE", host="proxy.example.com"))
    no_via = request("OPTIONS")
    no_via.vias = []
    assert server_key(no_via) is None


def test_client_key() -> None:
    req = request("INVITE")
    assert client_key(response(req, 180)) == ("z9hG4bKabc123", "INVITE")
    cancel_resp = response(build_cancel(req), 200)
    assert client_key(cancel_resp) == ("z9hG4bKabc123", "CANCEL")
    resp = response(req, 200)
    resp.vias = [Via("UDP", "h", None, {})]
    assert client_key(resp) is None
    resp.vias = []
    assert client_key(resp) is None


def test_client_transaction_needs_a_real_branch() -> None:
    for branch in (None, "z9hG4bK", "abc"):
        with pytest.raises(TransactionError):
            NonInviteClientTransaction(request(branch=branch), UDP)


def test_wrong_method_for_machine() -> None:
    with pytest.raises(TransactionError):
        InviteClientTransaction(request("OPTIONS"), UDP)
    with pytest.raises(TransactionError):
        NonInviteClientTransaction(request("INVITE"), UDP)
    with pytest.raises(TransactionError):
        InviteServerTransaction(request("BYE"), UDP)
    with pytest.raises(TransactionError):
        NonInviteServerTransaction(request("ACK"), UDP)
    with pytest.raises(TransactionError):
        new_server_transaction(request("ACK"), UDP)
    assert isinstance(new_client_transaction(request("INVITE"), UDP), InviteClientTransaction)
    assert isinstance(new_client_transaction(request("BYE"), UDP), NonInviteClientTransaction)
    assert isinstance(new_server_transaction(request("INVITE"), UDP), InviteServerTransaction)
    assert isinstance(new_server_transaction(request("BYE"), UDP), NonInviteServerTransaction)
    no_via = request("BYE")
    no_via.vias = []
    with pytest.raises(TransactionError):
        NonInviteServerTransaction(no_via, UDP)


def test_transport_error_informs_tu() -> None:
    txn = new(InviteClientTransaction)
    assert txn.transport_error(0.1) == [TransportFailed(), TransactionTerminated()]
    with pytest.raises(TransactionError):
        txn.transport_error(0.2)  # Terminated accepts nothing


def test_start_twice_is_an_error() -> None:
    txn = new(NonInviteClientTransaction)
    assert isinstance(txn, ClientTransaction)
    with pytest.raises(TransactionError):
        txn.start(1.0)


# ---------------------------------------------------------------------------------------------
# The table: bounds, removal, one heap of deadlines.


def test_cache_bytes_for_unknown_message_is_ignored() -> None:
    txn = new(InviteClientTransaction)
    assert isinstance(txn, InviteClientTransaction)
    txn.cache_bytes(response(txn.request, 200), b"x")
    txn.cache_bytes(txn.request, b"req")
    assert (txn.request_bytes, txn.last_response_bytes, txn.ack_bytes) == (b"req", None, None)


# ---------------------------------------------------------------------------------------------
# Hypothesis: every state x every input, and random runs.

ALL_STATES = {(cls, s) for cls in MACHINES for s in PATHS[cls]}


@settings(max_examples=400, deadline=None)
@given(
    pair=st.sampled_from(sorted(ALL_STATES, key=lambda p: (p[0].__name__, p[1]))),
    inp=st.sampled_from(list(Input)),
    reliable=st.booleans(),
    bad_message=st.booleans(),
)
def test_every_state_input_pair_follows_table_or_raises(
        pair: tuple[type[Transaction], State], inp: Input, reliable: bool,
        bad_message: bool) -> None:
    check_pair(*pair, inp, reliable, bad_message)


def test_state_input_matrix_exhaustively() -> None:
    """The same check over the whole (machine, state, input, transport, message) product."""
    for cls, state in ALL_STATES:
        for inp in Input:
            for reliable in (False, True):
                for bad_message in (False, True):
                    check_pair(cls, state, inp, reliable, bad_message)


def check_pair(cls: type[Transaction], state: State, inp: Input, reliable: bool,
               bad_message: bool) -> None:
    # Completed (and Confirmed) last zero seconds on a reliable transport: reach them on UDP.
    reliable = reliable and state not in (State.COMPLETED, State.CONFIRMED)
    txn = in_state(cls, state, TCP if reliable else UDP)
    msg = message_for(txn, inp)
    if bad_message:
        msg = None if msg is not None else response(txn.request, 200)
    before = (txn.state, txn.armed_timers(), txn.last_response)
    row = cls.TABLE.get((state, inp))
    carries_message = inp is not Input.TRANSPORT_ERROR and not inp.name.startswith("TIMER_")
    must_raise = row is None or (bad_message and carries_message)
    try:
        events = txn.handle(inp, 5.0, msg)
    except TransactionError:
        assert must_raise
        assert (txn.state, txn.armed_timers(), txn.last_response) == before
        return
    assert not must_raise
    assert row is not None
    nxt = row[1]
    # On a reliable transport a zero timer may carry the machine on to Terminated.
    assert txn.state is nxt or (reliable and txn.state is State.TERMINATED)
    assert (_END in events) == txn.terminated
    assert set(txn.armed_timers()) <= cls.STATE_TIMERS[txn.state]


_END = TransactionTerminated()


def _drive(txn: Transaction, actions: list[tuple[int, float]]) -> None:
    """Random inputs and clock jumps; check the invariants after each step.

    Like the I/O layer, due timers fire before anything else is fed at a later time.
    """
    now = 0.0
    inputs = list(Input)
    for choice, dt in actions:
        if dt:
            now += dt
            was_terminated = txn.terminated
            events = txn.on_timer(now)
            assert not (was_terminated and events), "Terminated must be absorbing"
            _check(txn, events, now)
        if choice == len(inputs):
            continue
        was_terminated = txn.terminated
        inp = inputs[choice]
        try:
            events = txn.handle(inp, now, message_for(txn, inp))
        except TransactionError:
            assert txn.terminated == was_terminated
            continue
        assert not was_terminated, "Terminated must be absorbing"
        _check(txn, events, now)


def _check(txn: Transaction, events: list[Event], now: float) -> None:
    if txn.terminated:
        assert txn.next_deadline() is None
        assert not events or events[-1] == _END or _END in events or not events
    else:
        assert _END not in events
    deadline = txn.next_deadline()
    assert deadline is None or deadline > now  # nothing armed in the past
    assert set(txn.armed_timers()) <= type(txn).STATE_TIMERS[txn.state]


@settings(max_examples=300, deadline=None)
@given(
    cls=st.sampled_from(MACHINES),
    reliable=st.booleans(),
    actions=st.lists(st.tuples(st.integers(0, len(Input)),
                               st.floats(0, 40, allow_nan=False)), max_size=40),
)
def test_random_runs_keep_invariants(cls: type[Transaction], reliable: bool,
                                     actions: list[tuple[int, float]]) -> None:
    txn = new(cls, TCP if reliable else UDP)
    _drive(txn, actions)


def test_compact_releases_parsed_messages_but_still_answers_retransmissions() -> None:
    from protocols.sip.builders import make_response as _make_response
    from protocols.sip.parser import parse_message as _parse
    from protocols.sip.serializer import serialize as _serialize
    from protocols.sip.timers import TimerConfig as _TC
    from protocols.sip.timers import timer_values as _tv
    from protocols.sip.transaction import NonInviteServerTransaction as _NIST
    from protocols.sip.transaction import SendMessage as _Send

    data = (b"REGISTER sip:example.com SIP/2.0\r\n"
            b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKcompact\r\n"
            b"From: <sip:a@example.com>;tag=1\r\nTo: <sip:a@example.com>\r\n"
            b"Call-ID: compact\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n")
    req = _parse(data)
    assert isinstance(req, Request)
    txn = _NIST(req, _tv(_TC(), False))
    assert not txn.compact()  # Trying: the TU still needs the request
    for ev in txn.send_response(_make_response(req, 200, to_tag="x"), 0.0):
        assert isinstance(ev, _Send) and not isinstance(ev.message, ResponseSummary)
        txn.cache_bytes(ev.message, _serialize(ev.message))
    wire = txn.last_response_bytes
    assert txn.compact() and txn.compacted
    with pytest.raises(TransactionError):
        _ = txn.request  # released: a reader cannot mistake a placeholder for it
    assert txn.last_response == ResponseSummary(200, "OK", "REGISTER", "x")
    again = txn.receive_request(req, 1.0)  # a retransmission: the same bytes go out
    assert [e.data for e in again if isinstance(e, _Send)] == [wire]


def test_a_summary_stands_in_for_a_response_given_as_bytes() -> None:
    from protocols.sip.parser import parse_message as _parse
    from protocols.sip.timers import TimerConfig as _TC
    from protocols.sip.timers import timer_values as _tv
    from protocols.sip.transaction import NonInviteServerTransaction as _NIST
    from protocols.sip.transaction import SendMessage as _Send

    summary = response_summary(200, "OK", "REGISTER")
    assert summary is response_summary(200, "OK", "REGISTER")  # shared, not one per response
    assert summary == ResponseSummary(200, "OK", "REGISTER", None)
    assert response_summary(404, "Not Found", "REGISTER") is not summary
    req = _parse(b"REGISTER sip:example.com SIP/2.0\r\n"
                 b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKstub\r\n"
                 b"From: <sip:a@example.com>;tag=1\r\nTo: <sip:a@example.com>\r\n"
                 b"Call-ID: stub\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n")
    assert isinstance(req, Request)
    txn = _NIST(req, _tv(_TC(), False))
    assert not txn.compact()  # the bytes are not known yet: nothing to answer with
    events = txn.send_response(summary, 0.0)
    assert [type(e) for e in events] == [_Send] and txn.state is State.COMPLETED
    txn.cache_bytes(summary, b"SIP/2.0 200 OK\r\n...")  # the TU's wire form
    assert txn.compact() and txn.last_response is summary
    again = txn.receive_request(req, 1.0)
    assert [e.data for e in again if isinstance(e, _Send)] == [b"SIP/2.0 200 OK\r\n..."]


# -- compaction of every machine (issue 20 item 5, issue 12's placeholders) ---------------------


def _sent(txn: Transaction, events: list[Event]) -> list[bytes]:
    """Play the I/O layer: serialise first sends and cache them, as sipcore.run does."""
    out = []
    for ev in events:
        if isinstance(ev, SendMessage):
            data = ev.data
            if data is None:
                assert not isinstance(ev.message, ResponseSummary)
                data = serialize(ev.message)
                txn.cache_bytes(ev.message, data)
            out.append(data)
    return out


@pytest.mark.parametrize("machine", MACHINES)
def test_compactable_states_never_need_the_request(machine: type[Transaction]) -> None:
    # What compact() releases must not be needed by any row of a compactable state: the
    # request (sent again by Timers A/E, turned into the ACK for a non-2xx) in particular.
    needs_request = {Action.SEND_REQUEST, Action.SEND_ACK}
    for (state, inp), (actions, _) in machine.TABLE.items():
        if state in machine.COMPACTABLE:
            assert not needs_request & set(actions), (machine.__name__, state, inp)
    assert machine.COMPACTABLE  # every machine has a long absorbing tail worth compacting


def test_invite_server_rejected_compacts_and_keeps_answering_until_h() -> None:
    req = request("INVITE", "z9hG4bKist486")
    txn = InviteServerTransaction(req, UDP)
    _sent(txn, txn.send_response(response(req, 100), 0.0))
    assert not txn.compact()  # Proceeding: the TU still answers from the request
    busy = response(req, 486, to_tag="busy")
    wire = _sent(txn, txn.send_response(busy, 0.0))
    assert txn.compact() and txn.compacted
    with pytest.raises(TransactionError):
        _ = txn.request
    assert txn.last_response == ResponseSummary(486, busy.reason, "INVITE", "busy")
    # A retransmitted INVITE and Timer G both send the same bytes (§17.2.1).
    assert _sent(txn, txn.receive_request(req, 0.1)) == wire
    assert _sent(txn, txn.on_timer(UDP.t1)) == wire
    # The ACK still matches, by branch and, for an RFC 2543 peer, by the summary's To tag.
    ack = build_ack(req, busy)
    assert txn.matches_to_tag(ack)
    assert txn.matches_to_tag(build_ack(req, response(req, 486, to_tag="other"))) is False
    txn.receive_request(ack, 0.2)
    # Confirmed only absorbs (§17.2.1): compacting again drops the bytes too.
    assert txn.state is State.CONFIRMED and txn.compact() and txn.last_response_bytes is None


def test_invite_server_accepted_keeps_no_bytes_and_still_sends_further_2xx() -> None:
    req = request("INVITE", "z9hG4bKist200")
    txn = InviteServerTransaction(req, UDP)
    _sent(txn, txn.send_response(response(req, 200, to_tag="a"), 0.0))
    assert txn.compact()
    # Accepted never resends (RFC 6026 §8.7: the 2xx is the TU's to retransmit).
    assert txn.last_response_bytes is None
    assert _sent(txn, txn.receive_request(req, 0.1)) == []
    fork = response(req, 200, to_tag="b")  # a proxy relays a second fork's 2xx
    assert _sent(txn, txn.send_response(fork, 0.2)) == [serialize(fork)]
    assert txn.compact() and txn.last_response == ResponseSummary(200, "OK", "INVITE", "b")


def test_invite_client_compacted_still_acks_a_retransmitted_final() -> None:
    req = request("INVITE", "z9hG4bKict486")
    txn = InviteClientTransaction(req, UDP)
    _sent(txn, txn.start(0.0))
    assert not txn.compact()  # Calling: Timer A sends the request again
    busy = response(req, 486)
    first_ack = _sent(txn, txn.receive_response(busy, 0.1))
    assert txn.compact() and txn.compacted
    assert _sent(txn, txn.receive_response(busy, 0.2)) == first_ack  # §17.1.1.3
    nict = NonInviteClientTransaction(request("OPTIONS", "z9hG4bKnict"), UDP)
    _sent(nict, nict.start(0.0))
    nict.receive_response(response(nict.request, 200), 0.1)
    assert nict.compact() and nict.state is State.COMPLETED


def test_timer_g_retransmissions_to_a_silent_caller_follow_the_rfc_schedule() -> None:
    """§17.2.1: a final non-2xx to a caller that never ACKs is resent at Timer G, which
    starts at T1 and doubles up to T2, until Timer H (64*T1) ends the transaction: with the
    default timers at 0.5, 1.5, 3.5, 7.5, 11.5, ... 31.5 s, ten retransmissions, none after."""
    req = request("INVITE", "z9hG4bKsilent")
    txn = InviteServerTransaction(req, UDP)
    wire = _sent(txn, txn.send_response(response(req, 408, to_tag="t"), 0.0))
    txn.compact()
    times = []
    now = 0.0
    while not txn.terminated:
        deadline = txn.next_deadline()
        assert deadline is not None
        now = deadline
        events = txn.on_timer(now)
        sent = _sent(txn, events)
        assert sent in ([], wire)
        times += [now] * len(sent)
    expected, t, interval = [], 0.0, UDP.t1
    while t + interval < 64 * UDP.t1:
        t += interval
        expected.append(t)
        interval = min(2 * interval, UDP.t2)
    assert times == pytest.approx(expected) and len(times) == 10
    assert now == pytest.approx(64 * UDP.t1)  # Timer H
