"""Credit-Control replay against the real server's Diameter listener (``signaling serve``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness.serverproc import ServerProcess, free_tcp_port
from loadtest.engine import Engine, EngineConfig
from loadtest.trace import CcrSession, Event


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    srv = ServerProcess("--domain", "example.com", diameter=True).start()
    yield srv
    assert srv.stop() == 0
    assert "Traceback" not in srv.log


async def test_sessions_run_ccr_initial_updates_termination(server: ServerProcess) -> None:
    assert server.diameter_port is not None
    events: list[Event] = [
        CcrSession(t=i * 0.02, user=f"00101000000{i:04d}", domain="example.com", hold=0.3,
                   updates=2)
        for i in range(40)
    ]
    res = await Engine(events, EngineConfig(diameter=("127.0.0.1", server.diameter_port),
                                            diameter_origin_host="storm.test",
                                            diameter_realm="test")).run()
    for kind, n in (("ccr-i", 40), ("ccr-u", 80), ("ccr-t", 40)):
        k = res.kinds[kind]
        assert k.sent == n and k.answered == {"2xxx": n}, kind
        assert k.timeouts == k.abandoned == 0
        assert k.percentiles()["p50"] > 0
        assert k.codes == {2001: n} and k.failures == {}  # DIAMETER_SUCCESS, by exact code
    # The per-second timeline (the CSV) counts the Diameter requests and answers too.
    assert sum(p.sent for p in res.timeline) == sum(p.answered for p in res.timeline) == 160
    assert sum(p.errors for p in res.timeline) == 0
    d = res.diameter
    assert (d["sessions_started"], d["sessions_completed"], d["sessions_failed"]) == (40, 40, 0)
    assert d["dropped"] == 0
    assert "storm.test open" in server.read_log()  # the CER/CEA exchange opened the peer


async def test_watchdog_keeps_the_idle_peer_alive(server: ServerProcess) -> None:
    assert server.diameter_port is not None
    # One long session: the connection idles between CCRs for longer than Tw (6 s, the RFC 3539
    # minimum, plus up to 2 s of jitter), so the watchdog must send a DWR and get its DWA.
    events: list[Event] = [CcrSession(t=0, user="001010000000001", domain="example.com",
                                      hold=10.0, updates=0)]
    res = await Engine(events, EngineConfig(diameter=("127.0.0.1", server.diameter_port),
                                            diameter_tw=6.0)).run()
    d = res.diameter
    outcome = {k: (v.answered, v.timeouts, v.abandoned) for k, v in res.kinds.items()}
    assert d["sessions_completed"] == 1, (d, outcome, server.read_log()[-2000:])
    assert d["dwr_sent"] >= 1 and d["dwa_received"] >= 1, d


async def test_no_diameter_peer_fails_the_run_at_open() -> None:
    port = free_tcp_port()
    events: list[Event] = [CcrSession(t=0, user="1", domain="example.com")]
    with pytest.raises(ConnectionError):
        await Engine(events, EngineConfig(diameter=("127.0.0.1", port))).run()


async def test_without_a_peer_ccr_events_are_skipped_and_counted() -> None:
    events: list[Event] = [CcrSession(t=0, user="1", domain="example.com")]
    res = await Engine(events, EngineConfig(target=("127.0.0.1", free_tcp_port()))).run()
    assert res.events_skipped == {"ccr-session": 1}
