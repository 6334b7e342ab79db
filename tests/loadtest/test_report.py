"""Reports: the knee found in a real ramped run, JSON round trip, HTML rebuilt from JSON; the
injector's verdict on its own limits."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from hdrh.histogram import HdrHistogram

from loadtest.engine import CallStats, Engine, EngineConfig, RunResult, UasStats
from loadtest.metrics import new_histogram
from loadtest.report import BOUND_LATE_MS, BUSY_CPU, build_report, load_report, save_report
from loadtest.reporthtml import render_html
from loadtest.responder import BURST_S, Responder
from loadtest.synth import SynthParams, synthesize
from loadtest.timeline import SecondPoint

CAPACITY = 400  # requests per second the capped responder answers


async def _ramped_run() -> RunResult:
    loop = asyncio.get_running_loop()
    capped = Responder(max_rate=CAPACITY)
    tr, _ = await loop.create_datagram_endpoint(lambda: capped, local_addr=("127.0.0.1", 0))
    port = tr.get_extra_info("sockname")[1]
    # Ramp 0 -> 1200/s over 8 s: the offered rate crosses the capacity near second 3.
    _, events = synthesize("steady", SynthParams(kind="options", rate=1200, duration=4,
                                                  users=500))
    try:
        return await Engine(events, EngineConfig(
            target=("127.0.0.1", port), ramp_up=8, duration=8, drain=0.5, t1=0.05,
            deadline=0.2, sockets=8)).run()
    finally:
        tr.close()


async def test_knee_of_a_ramp_against_a_saturating_peer(tmp_path: Path) -> None:
    res = await _ramped_run()
    rep = build_report(res, {"source": "synth steady", "bad_lines": 0}, {"ramp_up": 8})
    assert rep.knee is not None
    # The peer answers 400/s; with 1 s buckets and 3 s smoothing the knee lands within a
    # bucket of where the ramp crosses it.
    assert 0.6 * CAPACITY <= rep.knee.offered_per_s <= 1.6 * CAPACITY
    # Goodput is credited to the second a request was offered in, and its answer may come up
    # to the 0.2 s deadline later: one second's offers can use 1.2 s of capacity, plus the
    # responder's bucket (BURST_S of the rate).
    assert rep.knee.max_goodput_per_s <= (1 + 0.2 + BURST_S) * CAPACITY
    opts = rep.kinds["options"]
    assert opts.timeouts + opts.abandoned > 0 and opts.retransmissions > 0
    # JSON round trip, then the HTML rebuilt from the JSON is the HTML of the run.
    path = tmp_path / "run.json"
    save_report(rep, path)
    again = load_report(path)
    assert again == rep
    page = render_html(again)
    assert page == render_html(rep)
    # Capacity, throughput, latency, in-flight/lateness, status codes (no calls: no call chart).
    assert page.count("data:image/png;base64,") == 5 and "Knee</b>: at second" in page
    # The capacity curve's points cover the ramp, low to high offered load.
    offered = [p.offered_per_s for p in rep.capacity]
    assert offered == sorted(offered) and offered[-1] > 2 * CAPACITY
    assert max(p.goodput_per_s for p in rep.capacity) <= (1 + 0.2 + BURST_S) * CAPACITY
    # The encoded histogram is a standard HDR one: decodable by the library, same counts.
    h = HdrHistogram.decode(opts.histogram)
    assert h.get_total_count() == sum(opts.answered.values())
    assert sum(p.answered for p in rep.timeline) == sum(
        sum(k.answered.values()) for k in rep.kinds.values())


def _result(timeline: list[SecondPoint], **kw: Any) -> RunResult:
    """A run's measurements as the engine returns them, with only the injector's own figures
    set (``timeline`` and ``kw``); the schedule covers the timeline's seconds."""
    fields: dict[str, Any] = {
        "kinds": {}, "calls": CallStats(), "uas": UasStats(), "lateness": new_histogram(),
        "timeline": timeline, "wall_s": float(len(timeline)),
        "schedule_end_s": float(len(timeline)), "cpu_user_s": 0.0, "cpu_sys_s": 0.0,
        "events_started": 0, "events_skipped": {}, "stray_responses": 0,
        "deferred_by_cap": 0, "send_errors": 0, "diameter": {}}
    fields.update(kw)
    return RunResult(**fields)


def test_an_injector_that_kept_up_is_not_bound() -> None:
    """Lagging its schedule by a few tens of ms (its loop's pauses) is worth the warning,
    not the verdict: it is well within T1."""
    late = new_histogram()
    late.record_value(int(BOUND_LATE_MS * 1000) - 1000, 100)
    res = _result([SecondPoint(s, started=100, cpu=0.3) for s in range(3)], lateness=late)
    g = build_report(res, {}, {}).generator
    assert g is not None and g.bound == [] and g.busy_seconds == 0
    assert build_report(res, {}, {}).started_per_s == [100, 100, 100]


def test_an_injector_at_its_limit_says_why() -> None:
    """Each of its limits is a reason of its own: a core busy in an offered second (not in
    the drain after the schedule), answers lost on its sockets, lateness against the
    schedule, events not sent, events held by --max-inflight."""
    late = new_histogram()
    late.record_value(150_000, 100)
    points = [SecondPoint(0, cpu=0.5), SecondPoint(1, cpu=BUSY_CPU, rx_queued=2_500_000),
              SecondPoint(2, cpu=0.99, rx_queued=9_000_000)]
    res = _result(points, schedule_end_s=2.0, rx_drops=12, lateness=late,
                  events_skipped={"behind-schedule": 30}, deferred_by_cap=4)
    g = build_report(res, {}, {}).generator
    assert g is not None
    assert (g.offered_seconds, g.busy_seconds, g.cpu_max) == (2, 1, BUSY_CPU)
    assert (g.rx_drops, g.behind_schedule, g.deferred_by_cap) == (12, 30, 4)
    assert len(g.bound) == 5
    assert g.bound[0] == ("CPU at 90%+ of a core in 1 of 2 offered s (max 90%): answers read "
                          "late (up to 2.5 MB waiting in its sockets)")
    assert g.rx_queued_max == 2_500_000  # of the offered seconds only
    assert g.bound[1].startswith("12 answers dropped on its sockets")
    assert g.bound[2].startswith("lateness P99 150.0 ms")
    assert g.bound[3].startswith("30 events not sent")
    assert g.bound[4].startswith("events waited 4 ticks for --max-inflight")
