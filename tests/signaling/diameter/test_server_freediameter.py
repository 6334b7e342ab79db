"""freeDiameter (Debian freediameterd) as a real peer: CER/CEA, DWR/DWA both ways, DPR/DPA."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from protocols.diameter.allow import parse_allowed_peer
from signaling.diameter import DiameterServer
from signaling.metrics import Metrics
from signaling.registry.memory import MemoryRegistry
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
                            MemoryRegistry())
    await server.start()
    conf, _ = freediameter_conf(tmp_path, "fd.test", TW,
                                connect_to=("server.test", server.port))
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
        await _stop(fd)
        log.close()
        await server.close(0.1)


async def _stop(fd: asyncio.subprocess.Process) -> None:
    if fd.returncode is None:
        fd.terminate()
        try:
            await asyncio.wait_for(fd.wait(), 20)
        except TimeoutError:
            fd.kill()
            await fd.wait()


async def _start_fd(conf: Path, log: Path) -> asyncio.subprocess.Process:
    with log.open("w") as out:
        return await asyncio.create_subprocess_exec(
            require("freeDiameterd"), "-c", str(conf), stdout=out,
            stderr=asyncio.subprocess.STDOUT)


async def _listening(port: int, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        try:
            _r, w = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            assert loop.time() < end, "freeDiameter never listened"
            await asyncio.sleep(0.1)
            continue
        w.close()
        return


async def test_server_connects_to_freediameter(tmp_path: Path) -> None:
    """Initiator role: we send the CER, freeDiameter (acl_wl) accepts, DPR/DPA on shutdown."""
    conf, fd_port = freediameter_conf(tmp_path, "fd.test", TW, allow="server.test")
    fd = await _start_fd(conf, tmp_path / "fd.log")
    server: DiameterServer | None = None
    try:
        await _listening(fd_port)
        server = DiameterServer(
            make_config(connect_peers=(("fd.test", "127.0.0.1", fd_port),),
                        reconnect_interval=1.0),
            Metrics(), MemoryRegistry())
        await server.start()
        srv = server
        assert await _until(lambda: [p.state for p in srv.peers()] == ["I-Open"], 20)
        assert srv.peers()[0].product_name == "freeDiameter"
        loop = asyncio.get_running_loop()
        start = loop.time()
        await srv.close(5.0)
        assert loop.time() - start < 4.0  # freeDiameter's DPA, not our timeout, ended it
        assert "sent a DPR" in (tmp_path / "fd.log").read_text()
    finally:
        await _stop(fd)
        if server is not None:
            await server.close(0.1)


async def test_both_sides_configured_to_connect(tmp_path: Path) -> None:
    """freeDiameter and we each connect to the other: exactly one connection survives.

    Whether the two CERs cross (the §5.6.4 election) or one side is already open (R-Reject)
    depends on timing; the outcome must be one open connection either way.  The crossing
    itself is exercised deterministically between two of our servers
    (test_server_initiator.py) and in the machine's tests."""
    server = DiameterServer(make_config(reconnect_interval=1.0), Metrics(),
                            MemoryRegistry())
    await server.start()
    conf, fd_port = freediameter_conf(tmp_path, "fd.test", TW,
                                      connect_to=("server.test", server.port),
                                      allow="server.test")
    await server.close(0.1)
    # Same port, now also configured to connect to freeDiameter.
    server = DiameterServer(
        make_config(port=server.port, connect_peers=(("fd.test", "127.0.0.1", fd_port),),
                    reconnect_interval=1.0),
        Metrics(), MemoryRegistry())
    await server.start()
    fd = await _start_fd(conf, tmp_path / "fd.log")
    try:
        srv = server
        assert await _until(lambda: [p.state for p in srv.peers()] in (["I-Open"], ["R-Open"]),
                            20)
        await asyncio.sleep(2.0)
        assert [p.state for p in srv.peers()] in (["I-Open"], ["R-Open"])
        assert len(srv._conns) == 1
        assert "STATE_OPEN" in (tmp_path / "fd.log").read_text()
    finally:
        await _stop(fd)
        await server.close(0.5)


@pytest.mark.parametrize("allowed", ["fd.test@127.0.0.1", "hss.test@127.0.0.1"])
async def test_allowed_peer_list_with_freediameter(tmp_path: Path, allowed: str) -> None:
    """freeDiameter opens when its name and address are on the list, else gets CEA 3010."""
    server = DiameterServer(make_config(allowed_peers=(parse_allowed_peer(allowed),)),
                            Metrics(), MemoryRegistry())
    await server.start()
    conf, _ = freediameter_conf(tmp_path, "fd.test", TW, connect_to=("server.test", server.port))
    fd = await _start_fd(conf, tmp_path / "fd.log")
    try:
        if allowed.startswith("fd.test"):
            assert await _until(lambda: [p.state for p in server.peers()] == ["R-Open"], 20)
            assert server.m_dropped.get("unknown_peer") == 0
        else:
            assert await _until(lambda: server.m_dropped.get("unknown_peer") >= 1, 20)
            assert server.peers() == []
            assert await _until(lambda: "DIAMETER_UNKNOWN_PEER" in (
                tmp_path / "fd.log").read_text(), 10)
    finally:
        await _stop(fd)
        await server.close(1.0)
