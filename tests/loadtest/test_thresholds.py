"""Thresholds: parsed strictly, read from files, and judged on the report of a real run."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from loadtest.engine import Engine, EngineConfig
from loadtest.report import RunReport, build_report
from loadtest.responder import Responder
from loadtest.thresholds import (
    evaluate,
    load_thresholds,
    metric_value,
    parse_threshold,
    with_defaults,
)
from loadtest.trace import Event, Options, Register

DOMAIN = "127.0.0.1"


async def run_against(responder: Responder, events: list[Event],
                      expected: frozenset[int] = frozenset()) -> RunReport:
    """A real run against an in-process responder, as a report."""
    loop = asyncio.get_running_loop()
    tr, _ = await loop.create_datagram_endpoint(lambda: responder,
                                                local_addr=("127.0.0.1", 0))
    port = tr.get_extra_info("sockname")[1]
    try:
        # A deadline no busy machine misses: goodput here is about counting, not speed.
        res = await Engine(events, EngineConfig(
            target=("127.0.0.1", port), sockets=4, register_callees=False, drain=2.0,
            expected=expected, deadline=30.0)).run()
    finally:
        tr.close()
    return build_report(res, {"domains": [DOMAIN]}, {"expect": sorted(expected)}, expected)


def _options(n: int) -> list[Event]:
    return [Options(t=i * 0.01, user=f"o{i}", domain=DOMAIN) for i in range(n)]


def test_parse_reads_metric_kind_operator_and_value() -> None:
    t = parse_threshold(" p99_ms{register} <= 12.5 ")
    assert (t.metric, t.kind, t.op, t.value, t.text) == ("p99_ms", "register", "<=", 12.5,
                                                        "p99_ms{register} <= 12.5")
    assert parse_threshold("status_503==0").metric == "status_503"
    assert parse_threshold("p99.9_ms<1e3").value == 1000.0
    for bad, why in (("p99<1", "unknown metric"), ("goodput=>1", "does not read"),
                     ("lateness_p99_ms{register}<1", "run-wide"), ("errors<", "does not read")):
        with pytest.raises(ValueError, match=why):
            parse_threshold(bad)


def test_threshold_files_as_lines_or_json(tmp_path: Path) -> None:
    lines = tmp_path / "slo.txt"
    lines.write_text("# SLO\n\np99_ms<50   # latency\nerror_rate<0.01\n")
    assert [t.text for t in load_thresholds(lines)] == ["p99_ms<50", "error_rate<0.01"]
    js = tmp_path / "slo.json"
    js.write_text('["goodput>=10", "timeouts==0"]')
    assert [t.metric for t in load_thresholds(js)] == ["goodput", "timeouts"]
    js.write_text('[1, 2]')
    with pytest.raises(ValueError, match="list of strings"):
        load_thresholds(js)


async def test_judged_on_a_run_where_every_answer_is_503() -> None:
    # The responder answers the first request of each Call-ID 503 (Retry-After 0): a new
    # OPTIONS has a new Call-ID on each of its MAX_ATTEMPTS attempts, so each ends in 503.
    rep = await run_against(Responder(reject=(503, 0)), _options(10))
    opts = rep.kinds["options"]
    assert opts.codes == {503: 40} and opts.errors == 40
    results = {r.threshold: r for r in evaluate(rep, [
        parse_threshold(t) for t in ("status_503==40", "error_rate<0.05", "errors{options}>0",
                                     "goodput_ratio>0", "p99_ms{invite}<1000", "sent==40")])}
    assert results["status_503==40"].passed and results["status_503==40"].observed == 40
    assert not results["error_rate<0.05"].passed and results["error_rate<0.05"].observed == 1
    assert results["errors{options}>0"].passed
    assert not results["goodput_ratio>0"].passed
    # No INVITE was sent: a threshold on it has no data, and fails.
    no_data = results["p99_ms{invite}<1000"]
    assert no_data.observed is None and not no_data.passed
    assert results["sent==40"].passed


async def test_expected_codes_are_not_errors_and_latency_is_measured() -> None:
    rep = await run_against(Responder(reject=(503, 0)), _options(5), expected=frozenset({503}))
    assert rep.kinds["options"].errors == 0
    assert metric_value(rep, "error_rate") == 0.0
    p50, p99, mx = (metric_value(rep, m) for m in ("p50_ms", "p99_ms", "max_ms"))
    assert p50 is not None and p99 is not None and mx is not None
    assert 0 < p50 <= p99 <= mx < 2000


async def test_goodput_per_second_of_schedule_and_per_kind() -> None:
    events: list[Event] = [Register(t=i * 0.02, user=f"r{i}", domain=DOMAIN) for i in range(100)]
    rep = await run_against(Responder(), events)
    # 100 REGISTERs offered over ~2 s of schedule, all answered 2xx in the deadline.
    assert metric_value(rep, "goodput_ratio", "register") == 1.0
    # Per second of the schedule (the last event is due at 1.98 s), not of the wall time.
    assert rep.schedule_end_s >= 1.98
    assert metric_value(rep, "goodput") == 100 / rep.schedule_end_s
    assert metric_value(rep, "status_200") == 100
    assert metric_value(rep, "timeouts") == 0


def test_the_default_error_rate_is_added_unless_the_user_sets_one() -> None:
    latency = [parse_threshold("p99_ms<50")]
    assert [t.text for t in with_defaults(latency)] == ["p99_ms<50", "error_rate<0.05"]
    assert [t.text for t in with_defaults([])] == ["error_rate<0.05"]
    mine = [parse_threshold("error_rate<0.2")]
    assert [t.text for t in with_defaults(mine)] == ["error_rate<0.2"]
    # A per-kind error rate is not the run-wide one: the default still applies.
    per_kind = [parse_threshold("error_rate{register}<0.5")]
    assert len(with_defaults(per_kind)) == 2
