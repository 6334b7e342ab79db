"""Reports: the knee found in a real ramped run, JSON round trip, HTML rebuilt from JSON."""

from __future__ import annotations

import asyncio
from pathlib import Path

from hdrh.histogram import HdrHistogram

from loadtest.engine import Engine, EngineConfig, RunResult
from loadtest.report import build_report, load_report, save_report
from loadtest.reporthtml import render_html
from loadtest.responder import BURST_S, Responder
from loadtest.synth import SynthParams, synthesize

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
