"""Warnings on real runs: a dominant error code with its cause, an injector that lagged or
was at its own limit."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from loadtest.diagnose import diagnose
from loadtest.engine import Engine, EngineConfig
from loadtest.report import build_report
from loadtest.responder import Responder
from loadtest.timeline import SecondPoint
from loadtest.trace import Event, Options, Register
from tests.loadtest.test_thresholds import run_against


async def test_most_answers_one_error_code_warns_with_the_likely_cause() -> None:
    events: list[Event] = [Options(t=i * 0.01, user=f"o{i}", domain="127.0.0.1")
                           for i in range(10)]
    rep = await run_against(Responder(reject=(503, 0)), events)
    # (Only the outcome warnings: a busy machine may add one about the injector's lateness.)
    warnings = [w for w in diagnose(rep) if " outcomes " in w]
    assert len(warnings) == 1
    assert warnings[0].startswith("40 of 40 outcomes (100%) were 503: likely cause: the "
                                  "server shed load")
    # Expected, the same 503s are no warning.
    rep = await run_against(Responder(reject=(503, 0)), events, frozenset({503}))
    assert [w for w in diagnose(rep) if " outcomes " in w] == []


async def test_a_server_that_does_not_answer_warns_about_timeouts() -> None:
    loop = asyncio.get_running_loop()
    silent, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                    local_addr=("127.0.0.1", 0))
    port = silent.get_extra_info("sockname")[1]
    try:
        res = await Engine([Register(t=0, user="a", domain="127.0.0.1")], EngineConfig(
            target=("127.0.0.1", port), sockets=1, register_callees=False, t1=0.01,
            backoff=False)).run()
    finally:
        silent.close()
    rep = build_report(res, {}, {"target": f"udp://127.0.0.1:{port}"})
    (w,) = [w for w in diagnose(rep) if " outcomes " in w]
    assert w.startswith("1 of 1 outcomes (100%) were timeouts")
    assert f"reachable at udp://127.0.0.1:{port}" in w


async def test_an_injector_behind_its_schedule_is_said_to_lag() -> None:
    loop = asyncio.get_running_loop()
    tr, _ = await loop.create_datagram_endpoint(Responder, local_addr=("127.0.0.1", 0))
    port = tr.get_extra_info("sockname")[1]

    def stall(p: SecondPoint, engine: Any) -> None:
        time.sleep(0.3)  # the loop is blocked: events due meanwhile start late

    events: list[Event] = [Options(t=i * 0.005, user=f"o{i}", domain="127.0.0.1")
                           for i in range(600)]
    try:
        res = await Engine(events, EngineConfig(target=("127.0.0.1", port), sockets=2,
                                                register_callees=False,
                                                on_second=stall)).run()
    finally:
        tr.close()
    rep = build_report(res, {}, {})
    lag = [w for w in diagnose(rep) if w.startswith("the injector lagged its schedule")]
    assert len(lag) == 1 and "lateness P99" in lag[0]
    assert rep.lateness_us["max"] >= 200_000  # the stall, seen from the schedule


async def test_an_injector_at_its_limit_is_said_to_be_bound() -> None:
    """The report's verdict on the injector (``generator.bound``) becomes one warning that
    names its reasons; an injector that kept up gets none."""
    events: list[Event] = [Options(t=i * 0.01, user=f"o{i}", domain="127.0.0.1")
                           for i in range(10)]
    rep = await run_against(Responder(), events)
    assert rep.generator is not None
    rep.generator.bound = []
    assert [w for w in diagnose(rep) if w.startswith("INJECTOR-BOUND")] == []
    rep.generator.bound = ["12 answers dropped on its sockets", "lateness P99 50.0 ms"]
    (w,) = [w for w in diagnose(rep) if w.startswith("INJECTOR-BOUND")]
    assert "(12 answers dropped on its sockets; lateness P99 50.0 ms)" in w
