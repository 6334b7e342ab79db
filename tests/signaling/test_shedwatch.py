"""Log lines when shedding starts, lasts and stops; none per shed request."""

from __future__ import annotations

import logging

import pytest

from signaling.metrics import Metrics
from signaling.shedwatch import QUIET, SUMMARY_INTERVAL, ShedWatch
from tests.signaling.inproc import UdpPeer, running_server


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_start_summary_and_stop_lines(caplog: pytest.LogCaptureFixture) -> None:
    m = Metrics()
    sip = m.fast_counter("sip_shed", "shed", ["reason"])
    dia = m.fast_counter("diameter_shed", "shed")
    sip.inc("queue_full", amount=3.0)  # before the watch: not an episode
    clock = Clock()
    watch = ShedWatch([("sip", sip), ("diameter", dia)], clock)
    with caplog.at_level(logging.WARNING, logger="signaling.shedwatch"):
        watch.check()
        assert not caplog.records and not watch.shedding
        for second in range(1, 2 * int(SUMMARY_INTERVAL) + 2):
            clock.now = float(second)
            for _ in range(100):
                sip.inc("queue_full")
            if second == 30:
                dia.inc()
            watch.check()
        assert watch.shedding
        for _ in range(int(QUIET) + 1):
            clock.now += 1.0
            watch.check()
    assert not watch.shedding
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "overload: shedding load (sip/queue_full: 100)",
        "overload: still shedding after 60 s (diameter: 1, sip/queue_full: 6100 in total)",
        "overload: still shedding after 120 s (diameter: 1, sip/queue_full: 12100 in total)",
        "overload over: shed for 120 s (diameter: 1, sip/queue_full: 12100)",
    ]


async def test_a_shedding_server_logs_start_and_stop_once(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from signaling import shedwatch
    from tests.signaling.admin.helpers import register_message

    monkeypatch.setattr(shedwatch, "QUIET", 1.0)
    monkeypatch.setattr(shedwatch, "INTERVAL", 0.1)
    with caplog.at_level(logging.WARNING, logger="signaling.shedwatch"):
        # A server that has begun its shutdown sheds every new REGISTER with 503.
        async with running_server(domain=["example.com"]) as srv:
            assert srv.udp_address is not None
            srv.core.accepting = False
            peer = await UdpPeer.open()
            for i in range(200):  # one at a time: a burst could overflow the client's buffer
                peer.send(register_message(srv.udp_address[1], f"shed{i}", peer.port),
                          srv.udp_address[1])
                assert (await peer.final(5.0)).status == 503
            async with asyncio.timeout(20):
                while not any("overload over" in r.getMessage() for r in caplog.records):
                    await asyncio.sleep(0.05)
            srv.core.accepting = True
    lines = [r.getMessage() for r in caplog.records if r.name == "signaling.shedwatch"]
    assert lines[0].startswith("overload: shedding load (sip/shutting_down: ")
    assert len(lines) == 2 and lines[1].startswith("overload over: shed for ")
    assert "sip/shutting_down: 200)" in lines[1]
