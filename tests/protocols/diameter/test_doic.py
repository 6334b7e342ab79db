"""DOIC (RFC 7683): AVP encoding, the reporter's reports, the reactor's sequence rules."""

from __future__ import annotations

from protocols.diameter.codec import Avp, Message, decode_message
from protocols.diameter.dictionary import base_dictionary
from protocols.diameter.doic import (
    DEFAULT_VALIDITY,
    HOST_REPORT,
    MAX_REDUCTION,
    REALM_REPORT,
    OverloadReport,
    Reactor,
    Reporter,
    olr_avp,
    parse_olr,
    supported_features_avp,
    supports_doic,
)
from protocols.diameter.validation import validate_request
from tests.protocols.diameter.factory import ccr

D = base_dictionary()


def _answer(*avps: Avp) -> Message:
    return Message(272, 0, 4, 1, 1, list(avps))


def _olr(seq: int, reduction: int = 50, validity: int | None = 30,
         report_type: int = HOST_REPORT) -> Avp:
    children = [D.make("OC-Sequence-Number", seq), D.make("OC-Report-Type", report_type),
                D.make("OC-Reduction-Percentage", reduction)]
    if validity is not None:
        children.append(D.make("OC-Validity-Duration", validity))
    return D.make("OC-OLR", children)


def test_avps_are_in_the_dictionary_without_the_m_bit() -> None:
    for name in ("OC-Supported-Features", "OC-Feature-Vector", "OC-OLR", "OC-Sequence-Number",
                 "OC-Validity-Duration", "OC-Report-Type", "OC-Reduction-Percentage"):
        assert not D.avp_named(name).default_flags  # §7.8: legacy nodes ignore them
    supported = supported_features_avp()
    assert supported.code == 621 and not supported.flags
    (vector,) = supported.children()
    assert vector.code == 622 and D.value(vector) == 1  # OLR_DEFAULT_ALGO


def test_a_request_with_doic_avps_validates() -> None:
    req = ccr(rtype=4, extra=[supported_features_avp()])
    validate_request(decode_message(req.encode()), D, {4})
    assert supports_doic(req) and not supports_doic(ccr(rtype=4))
    no_vector = ccr(rtype=4, extra=[D.make("OC-Supported-Features", [])])
    assert supports_doic(no_vector)  # no vector: the default algorithm (§7.2)
    other = ccr(rtype=4, extra=[D.make("OC-Supported-Features",
                                       [D.make("OC-Feature-Vector", 2)])])
    assert not supports_doic(other)  # an algorithm we do not implement


def test_olr_round_trip_and_defaults() -> None:
    report = OverloadReport(7, HOST_REPORT, 40, 12)
    assert parse_olr(_answer(olr_avp(report))) == report
    assert parse_olr(_answer(_olr(3, validity=None))) == OverloadReport(3, HOST_REPORT, 50, 30)
    capped = parse_olr(_answer(_olr(3, validity=86_401)))
    assert capped is not None and capped.validity == DEFAULT_VALIDITY  # §7.5
    assert parse_olr(_answer()) is None
    broken = D.make("OC-OLR", [D.make("OC-Reduction-Percentage", 10)])  # no sequence/type
    assert parse_olr(_answer(broken)) is None


def test_reporter_steps_up_and_ends_with_validity_zero() -> None:
    rep = Reporter(first_sequence=1000, interval=1.0)
    rep.observe(lambda: 0.0, 0.0)
    assert rep.report is None and len(rep.answer_avps()) == 1  # supported features only
    rep.observe(lambda: 0.9, 1.0)
    first = rep.report
    assert first is not None
    assert first == OverloadReport(1001, HOST_REPORT, 20, DEFAULT_VALIDITY)
    rep.observe(lambda: 0.9, 1.5)  # within the interval: no change
    assert rep.report == first
    for t in range(2, 10):
        rep.observe(lambda: 1.0, float(t))
    assert rep.reduction == MAX_REDUCTION  # never 100: answers must keep flowing
    seq = rep.report.sequence if rep.report else 0
    assert seq > first.sequence
    rep.observe(lambda: 0.3, 10.0)  # between LOW and HIGH: hold
    assert rep.reduction == MAX_REDUCTION
    for t in range(11, 11 + MAX_REDUCTION // 10):
        rep.observe(lambda: 0.0, float(t))
    assert rep.reduction == 0
    end = rep.report
    assert end is not None and end.validity == 0 and end.sequence > seq
    assert parse_olr(_answer(*rep.answer_avps()[1:])) == end
    rep.observe(lambda: 0.0, 11.0 + MAX_REDUCTION // 10 + DEFAULT_VALIDITY)
    assert rep.report is None  # the end was sent for a whole validity period


def test_reporter_renews_the_sequence_before_validity_runs_out() -> None:
    rep = Reporter(first_sequence=0, interval=1.0, validity=10)
    rep.observe(lambda: 0.9, 0.0)
    first = rep.report
    assert first is not None
    rep.observe(lambda: 0.3, 4.9)
    assert rep.report == first
    rep.observe(lambda: 0.3, 5.0)  # half the validity: same content, new number
    assert rep.report is not None and rep.report.sequence == first.sequence + 1
    assert rep.report.reduction == first.reduction


def test_reactor_throttles_exactly_the_reduction() -> None:
    r = Reactor()
    assert all(r.admit(0.0) for _ in range(10))
    assert r.receive(_answer(_olr(5, reduction=30)), 0.0)
    admitted = [r.admit(1.0) for _ in range(100)]
    assert admitted.count(False) == 30


def test_reactor_ignores_stale_and_repeated_sequence_numbers() -> None:
    r = Reactor()
    assert r.receive(_answer(_olr(10, reduction=50, validity=30)), 0.0)
    assert not r.receive(_answer(_olr(9, reduction=90)), 1.0)  # stale
    assert not r.receive(_answer(_olr(10, reduction=50)), 25.0)  # same: validity not restarted
    assert r.reduction(29.9) == 50
    assert r.reduction(30.0) == 0  # expired 30 s after the first receipt
    assert r.receive(_answer(_olr(11, reduction=20)), 31.0)
    assert r.reduction(31.0) == 20


def test_validity_zero_ends_the_report() -> None:
    r = Reactor()
    r.receive(_answer(_olr(1, reduction=80)), 0.0)
    assert r.receive(_answer(_olr(2, reduction=0, validity=0)), 1.0)
    assert r.reduction(1.0) == 0 and all(r.admit(1.0) for _ in range(20))
    assert not r.receive(_answer(_olr(1, reduction=80)), 2.0)  # a late older report stays out
    assert r.reduction(2.0) == 0


def test_realm_reports_and_answers_without_olr_change_nothing() -> None:
    r = Reactor()
    assert not r.receive(_answer(_olr(1, report_type=REALM_REPORT)), 0.0)
    assert not r.receive(_answer(), 0.0)
    assert r.reduction(0.0) == 0

