"""freeDiameter (Debian freediameterd) as a real peer: CER/CEA, DWR/DWA both ways, DPR/DPA."""

from __future__ import annotations

import asyncio
from pathlib import Path

from signaling.diameter import DiameterServer, InMemoryCCSessionStore
from signaling.metrics import Metrics
from tests.signaling.diameter.conftest import make_config
from tests.signaling.diameter.peers import freediameter_conf, require

# freeDiameter's and our Tw (RFC 3539 minimum 6 s); both sides probe within Tw ± 2 s.
TW = 6


async def _until(predicate: object, timeout: float) -> bool:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        if predicate():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.1)
    return False


async def test_freediameter_connects_and_keeps_the_watchdog(tmp_path: Path) -> None:
    server = DiameterServer(make_config(watchdog_interval=float(TW)), Metrics(),
                            InMemoryCCSessionStore())
    await server.start()
    conf = freediameter_conf(tmp_path, "fd.test", "server.test", server.port, TW)
    log = (tmp_path / "fd.log").open("w")
    fd = await asyncio.create_subprocess_exec(
        require("freeDiameterd"), "-c", str(conf), stdout=log, stderr=asyncio.subprocess.STDOUT)
    try:
        assert await _until(lambda: any(p.origin_host == "fd.test" and p.state == "R-Open"
                                        for p in server.peers()), 20), "no CER from freeDiameter"
        (peer,) = server.peers()
        assert peer.product_name == "freeDiameter"
        # On an idle connection some watchdog fires within every Tw + 2 s: ours (we send DWR)
        # or freeDiameter's (we answer its DWR); either resets the other (RFC 3539 §3.4.1).
        watchdog = server.m_watchdog

        def exchanges() -> float:
            return watchdog.get("dwr_sent") + watchdog.get("dwr_received")

        assert await _until(lambda: exchanges() >= 2, 3 * (TW + 2)), watchdog.values
        # Every DWR we sent was answered.
        assert await _until(lambda: watchdog.get("dwa_received") == watchdog.get("dwr_sent"),
                            TW), watchdog.values
        answered = server.m_answers.get("2001")
        assert answered >= 1 + watchdog.get("dwr_received")  # CEA + a DWA per DWR
        assert server.peers()[0].state == "R-Open"
        assert server.peers()[0].watchdog == "OKAY"
        # Shutdown: DPR to freeDiameter, whose DPA lets us close well before the timeout.
        loop = asyncio.get_running_loop()
        start = loop.time()
        await server.close(5.0)
        assert loop.time() - start < 4.0
        assert server.peers() == []
        text = (tmp_path / "fd.log").read_text()
        assert "STATE_OPEN" in text and "sent a DPR" in text
    finally:
        if fd.returncode is None:
            fd.terminate()
            try:
                await asyncio.wait_for(fd.wait(), 20)
            except TimeoutError:
                fd.kill()
                await fd.wait()
        log.close()
        await server.close(0.1)
