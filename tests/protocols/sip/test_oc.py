"""RFC 7339 parameters and report rules, driven by a fake clock."""

from __future__ import annotations

import random

from protocols.sip.oc import (
    DEFAULT_VALIDITY_MS,
    OcClient,
    OcReport,
    OcServer,
    client_supports_loss,
    format_seq,
    oc_via_params,
    parse_report,
)
from protocols.sip.parser import parse_message

# -- parameters ---------------------------------------------------------------------------------


def _via_params(via: str) -> dict[str, str | None]:
    msg = parse_message((f"SIP/2.0 200 OK\r\nVia: {via}\r\nFrom: <sip:a@b>;tag=1\r\n"
                         "To: <sip:a@b>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n"
                         "Content-Length: 0\r\n\r\n").encode())
    return dict(msg.vias[0].params)


def test_client_support_is_oc_with_loss_or_no_algorithm_list() -> None:
    assert client_supports_loss(_via_params('SIP/2.0/UDP a;branch=z9hG4bK1;oc;oc-algo="loss"'))
    assert client_supports_loss(_via_params('SIP/2.0/UDP a;branch=z9hG4bK1;OC;oc-algo="rate,loss"'))
    assert client_supports_loss(_via_params("SIP/2.0/UDP a;branch=z9hG4bK1;oc"))
    assert not client_supports_loss(_via_params('SIP/2.0/UDP a;branch=z9hG4bK1;oc;oc-algo="rate"'))
    assert not client_supports_loss(_via_params("SIP/2.0/UDP a;branch=z9hG4bK1"))


def test_server_parameters_round_trip_through_a_parsed_via() -> None:
    report = OcReport(35, 2000, 1234.5)
    params = oc_via_params(report)
    assert params == {"oc": "35", "oc-algo": '"loss"', "oc-validity": "2000",
                      "oc-seq": "1234.50000"}
    text = "SIP/2.0/UDP a;branch=z9hG4bK1" + "".join(f";{k}={v}" for k, v in params.items())
    assert parse_report(_via_params(text)) == report


def test_oc_seq_is_digits_dot_five_digits() -> None:
    assert format_seq(0.0) == "0.00000"
    assert format_seq(17.999999) == "18.00000"
    assert format_seq(10**13 + 0.25) == "0.25000"  # at most 12 integer digits (§9)


def test_reports_that_are_not_loss_reports_are_ignored() -> None:
    base = "SIP/2.0/UDP a;branch=z9hG4bK1"
    assert parse_report(_via_params(base + ";oc")) is None  # our own bare oc came back
    assert parse_report(_via_params(base + ';oc=20;oc-algo="rate"')) is None
    assert parse_report(_via_params(base + ';oc=20;oc-algo="loss,rate"')) is None
    assert parse_report(_via_params(base + ";oc=x")) is None
    assert parse_report(_via_params(base + ";oc=20;oc-validity=soon")) is None
    assert parse_report(_via_params(base + ";oc=20;oc-seq=1.2.3")) is None
    # no oc-validity: 500 ms (§5.2); more than 100 percent is 100
    assert parse_report(_via_params(base + ";oc=250;oc-seq=3.0")) == OcReport(
        100, DEFAULT_VALIDITY_MS, 3.0)


# -- the client side: seq and validity rules ----------------------------------------------------


def test_client_keeps_the_highest_seq_and_ignores_older_reports() -> None:
    oc = OcClient()
    assert oc.receive("s", OcReport(40, 1000, 10.0), now=0.0)
    assert not oc.receive("s", OcReport(90, 1000, 9.0), now=0.1)  # out of order
    assert oc.reduction("s", 0.2) == 40
    assert oc.receive("s", OcReport(60, 1000, 11.0), now=0.3)
    assert oc.reduction("s", 0.4) == 60
    assert oc.reduction("other", 0.4) == 0


def test_an_equal_seq_does_not_restart_validity() -> None:
    oc = OcClient()
    oc.receive("s", OcReport(50, 1000, 5.0), now=0.0)
    assert not oc.receive("s", OcReport(50, 1000, 5.0), now=0.9)
    assert oc.reduction("s", 0.95) == 50
    assert oc.reduction("s", 1.0) == 0  # expired at 0 + 1 s, not at 0.9 + 1 s
    assert len(oc) == 0


def test_validity_zero_stops_and_expiry_forgets() -> None:
    oc = OcClient()
    oc.receive("s", OcReport(70, 60_000, 1.0), now=0.0)
    assert oc.receive("s", OcReport(0, 0, 2.0), now=1.0)
    assert oc.reduction("s", 1.0) == 0 and len(oc) == 0
    # once expired, any report is taken again (a restarted server's seq starts over)
    oc.receive("s", OcReport(30, 100, 50.0), now=2.0)
    assert oc.reduction("s", 2.2) == 0
    assert oc.receive("s", OcReport(30, 100, 1.0), now=2.3)


def test_loss_is_applied_at_the_reported_percentage() -> None:
    oc = OcClient(rng=random.Random(7))
    oc.receive("s", OcReport(30, 60_000, 1.0), now=0.0)
    shed = sum(oc.throttle("s", 1.0) for _ in range(10_000))
    assert 2_700 < shed < 3_300
    oc.receive("t", OcReport(100, 60_000, 1.0), now=0.0)
    assert all(oc.throttle("t", 1.0) for _ in range(100))
    assert not any(oc.throttle("u", 1.0) for _ in range(100))


def test_client_table_is_bounded() -> None:
    oc = OcClient(max_servers=50)
    for i in range(10_000):
        oc.receive(("10.0.0.1", i), OcReport(10, 60_000, 1.0), now=float(i) / 1000)
    assert len(oc) == 50


# -- the server side ----------------------------------------------------------------------------


def test_server_report_compounds_steps_down_then_stops() -> None:
    srv = OcServer(validity_ms=1000)
    assert srv.report() is None
    srv.update(0.0, 0.5)
    first = srv.report()
    assert first is not None and first.reduction == 50 and first.validity_ms == 1000
    srv.update(0.1, 0.5)  # clients shed 50% and we still refuse half of the rest: 75%
    second = srv.report()
    assert second is not None and second.reduction == 75 and second.seq > first.seq
    srv.update(0.2, 0.5)
    srv.update(0.2, 0.0)  # same instant: the seq still increases
    third = srv.report()
    assert third is not None and third.seq > second.seq
    seqs = [third.seq]
    for i in range(20):
        srv.update(0.3 + i * 0.1, 0.0)
        r = srv.report()
        if r is None:
            break
        assert r.seq >= seqs[-1]
        seqs.append(r.seq)
    stop = [srv.report()]
    # stepping down, then one validity period of "oc-validity=0", then nothing
    srv.update(10.0, 0.0)
    assert srv.report() is None
    assert stop == [None]
    assert len(set(seqs)) >= 5


def test_server_announces_the_stop_for_one_validity_period() -> None:
    srv = OcServer(validity_ms=1000)
    srv.update(0.0, 0.1)
    srv.update(0.1, 0.0)  # 10 - STEP_DOWN = 0: stop
    stop = srv.report()
    assert stop is not None and stop.stops and stop.reduction == 0
    srv.update(0.5, 0.0)
    assert srv.report() == stop
    srv.update(1.2, 0.0)
    assert srv.report() is None
