"""RFC 4006 §7 server sessions: table coverage, I/U/T/E flows, ordering, Tcc, policies."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.diameter.builders import LocalIdentity
from protocols.diameter.codec import Message, decode_message
from protocols.diameter.constants import AvpCode, CCRequestType, ResultCode
from protocols.diameter.creditcontrol import (
    TABLE,
    CCInput,
    CCSession,
    CCState,
    CreditControl,
    CreditDecision,
    CreditRequest,
    QuotaPolicy,
    TccTimers,
    Units,
    decode_session,
    encode_session,
    parse_ccr,
)
from protocols.diameter.errors import RemoteProtocolError, SessionStateError
from tests.protocols.diameter.factory import DICT, ccr

ME = LocalIdentity("server.test", "test")
INI, U, T, E = (int(CCRequestType.INITIAL_REQUEST), int(CCRequestType.UPDATE_REQUEST),
                int(CCRequestType.TERMINATION_REQUEST), int(CCRequestType.EVENT_REQUEST))
MINUTE = Units(cc_time=60)


def _cc(grant: Units = MINUTE, quota: Units | None = None) -> CreditControl:
    return CreditControl(ME, QuotaPolicy(grant, quota), tcc=100.0)


def _run(cc: CreditControl, msg: Message, session: CCSession | None, now: float = 0.0
         ) -> tuple[int, Units | None, CCSession | None]:
    out = cc.handle(msg, parse_ccr(msg), session, now)
    ans = decode_message(out.answer.encode())
    rc = ans.find(AvpCode.RESULT_CODE)
    assert rc is not None
    gsu = ans.find(AvpCode.GRANTED_SERVICE_UNIT)
    granted = None
    if gsu is not None:
        values = {DICT.avp(c.code).name: DICT.value(c) for c in gsu.children()}  # type: ignore[union-attr]
        granted = Units(values.get("CC-Time"), values.get("CC-Total-Octets"),
                        values.get("CC-Service-Specific-Units"))
    return DICT.value(rc), granted, out.session


def test_initial_update_termination() -> None:
    cc = _cc()
    rc, granted, s = _run(cc, ccr(rtype=INI, number=0, requested=30), None, 0.0)
    assert rc == 2001 and granted == Units(cc_time=30)
    assert s is not None and s.state == CCState.OPEN and s.tcc_deadline == 100.0
    rc, granted, s = _run(cc, ccr(rtype=U, number=1, used=25), s, 10.0)
    assert rc == 2001 and granted == Units(cc_time=60)
    assert s is not None and s.used == Units(cc_time=25) and s.tcc_deadline == 110.0
    rc, granted, s = _run(cc, ccr(rtype=T, number=2, used=40), s, 20.0)
    assert rc == 2001 and granted is None and s is None


def test_cca_echoes_type_and_number() -> None:
    out = _cc().handle(ccr(rtype=INI, number=0, hbh=3), parse_ccr(ccr()), None, 0.0)
    codes = [a.code for a in out.answer.avps]
    assert codes[:4] == [263, 268, 264, 296]
    assert {258, 416, 415, 431} <= set(codes) and out.answer.hop_by_hop == 3


def test_event_request_keeps_no_session() -> None:
    rc, granted, s = _run(_cc(), ccr(rtype=E, number=0), None)
    assert rc == 2001 and granted == Units(cc_time=60) and s is None


def test_update_without_session_is_5002() -> None:
    with pytest.raises(SessionStateError) as info:
        _run(_cc(), ccr(rtype=U, number=1), None)
    assert info.value.result_code == ResultCode.DIAMETER_UNKNOWN_SESSION_ID


def test_initial_on_open_session_is_5012() -> None:
    cc = _cc()
    _, _, s = _run(cc, ccr(rtype=INI, number=0), None)
    with pytest.raises(SessionStateError) as info:
        _run(cc, ccr(rtype=INI, number=1), s)
    assert info.value.result_code == ResultCode.DIAMETER_UNABLE_TO_COMPLY


def test_request_number_duplicate_and_out_of_order() -> None:
    cc = _cc()
    _, _, s = _run(cc, ccr(rtype=INI, number=0), None)
    _, _, s = _run(cc, ccr(rtype=U, number=2, used=10), s)
    assert s is not None
    # Same number again: the same answer, no second debit.
    out = cc.handle(ccr(rtype=U, number=2, used=10), parse_ccr(ccr(rtype=U, number=2, used=10)),
                    s, 1.0)
    assert out.duplicate and out.session is not None and out.session.used == Units(cc_time=10)
    with pytest.raises(RemoteProtocolError) as info:
        _run(cc, ccr(rtype=U, number=1), s)
    assert info.value.result_code == ResultCode.DIAMETER_INVALID_AVP_VALUE
    assert info.value.failed_avps


def test_quota_runs_out() -> None:
    cc = _cc(Units(cc_time=60), quota=Units(cc_time=100))
    rc, granted, s = _run(cc, ccr(rtype=INI, number=0), None)
    assert granted == Units(cc_time=60)
    rc, granted, s = _run(cc, ccr(rtype=U, number=1, used=60), s)
    assert granted == Units(cc_time=40)
    rc, granted, s = _run(cc, ccr(rtype=U, number=2, used=40), s)
    assert rc == ResultCode.DIAMETER_CREDIT_LIMIT_REACHED and s is None  # Open -> Idle


def test_all_unit_kinds() -> None:
    cc = _cc(Units(cc_time=60, total_octets=1_000_000, service_specific_units=5))
    _, granted, _ = _run(cc, ccr(rtype=INI, number=0), None)
    assert granted == Units(60, 1_000_000, 5)


def test_policy_is_replaceable_by_a_callable() -> None:
    def deny(request: CreditRequest, session: CCSession) -> CreditDecision:
        return CreditDecision(ResultCode.DIAMETER_END_USER_SERVICE_DENIED)

    rc, granted, s = _run(CreditControl(ME, deny), ccr(rtype=INI, number=0), None)
    assert rc == 4010 and granted is None and s is None


def test_tcc_expiry() -> None:
    cc = _cc()
    _, _, s = _run(cc, ccr(rtype=INI, number=0), None, 0.0)
    assert s is not None
    assert cc.expire(s, 50.0) is s
    assert cc.expire(s, 100.0) is None


def test_session_state_round_trip() -> None:
    s = CCSession("x", 1, 3, 5.0, Units(1, 2, 3), Units(cc_time=4), 2001, Units(cc_time=9), "h")
    assert decode_session(encode_session(s)) == s


@pytest.mark.parametrize("state", list(CCState))
@pytest.mark.parametrize("rtype", [INI, U, T, E])
@given(ok=st.booleans())
def test_every_state_and_request(state: CCState, rtype: int, ok: bool) -> None:
    def policy(request: CreditRequest, session: CCSession) -> CreditDecision:
        return CreditDecision(2001 if ok else 4012, Units(cc_time=1) if ok else None)

    cc = CreditControl(ME, policy, tcc=10.0)
    session = None if state is CCState.IDLE else CCSession("client.test;1;1", 1, 0, 10.0)
    msg = ccr(rtype=rtype, number=1)
    names = {INI: "INITIAL", U: "UPDATE", T: "TERMINATION", E: "EVENT"}
    event = CCInput[f"{names[rtype]}_{'OK' if ok else 'FAILED'}"]
    row = TABLE.get((state, event))
    if row is None:
        with pytest.raises(SessionStateError):
            cc.handle(msg, parse_ccr(msg), session, 1.0)
        return
    out = cc.handle(msg, parse_ccr(msg), session, 1.0)
    if row[1] is CCState.OPEN:
        assert out.session is not None and out.session.state == CCState.OPEN
    else:
        assert out.session is None


def test_tcc_row_only_from_open() -> None:
    s = CCSession("x", int(CCState.IDLE), 0, 0.0)
    with pytest.raises(SessionStateError):
        _cc().expire(s, 1.0)


def test_tcc_timers_next_deadline_and_expiry() -> None:
    timers = TccTimers(max_sessions=3)
    assert timers.next_deadline() is None
    assert timers.set("a", 10.0) and timers.set("b", 5.0)
    assert timers.next_deadline() == 5.0
    timers.set("b", 20.0)  # re-armed by a later request: the old deadline is skipped
    assert timers.next_deadline() == 10.0
    timers.cancel("a")
    assert timers.next_deadline() == 20.0
    assert timers.set("c", 1.0) and timers.set("d", 2.0)
    assert not timers.set("e", 3.0)  # bound reached
    assert timers.expired(5.0) == ["c", "d"]
    assert len(timers) == 1 and timers.deadline("b") == 20.0
    assert timers.items(10) == [("b", 20.0)]
    assert timers.expired(100.0) == ["b"] and timers.next_deadline() is None


def test_tcc_timers_stay_compact() -> None:
    timers = TccTimers()
    for i in range(20_000):
        timers.set("one", float(i))
    assert timers._heap.heap_size() <= 2 + timers._heap.slack
