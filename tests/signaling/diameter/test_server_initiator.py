"""The server as initiator (RFC 6733 §5.6): connecting to configured peers, and the election."""

from __future__ import annotations

import asyncio

from signaling.diameter import DiameterServer
from signaling.metrics import Metrics
from signaling.registry.memory import MemoryRegistry
from tests.signaling.diameter.conftest import make_config
from tests.signaling.diameter.peers import free_ports


def _server(host: str, port: int, connect: tuple[tuple[str, str, int], ...] = ()
            ) -> DiameterServer:
    cfg = make_config(origin_host=host, port=port, connect_peers=connect,
                      reconnect_interval=0.2)
    return DiameterServer(cfg, Metrics(), MemoryRegistry())


def _state(server: DiameterServer, host: str) -> str | None:
    for peer in server.peers():
        if peer.origin_host == host:
            return peer.state
    return None


async def _until(predicate: object, timeout: float = 10.0) -> bool:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        if predicate():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.02)
    return False


async def test_connects_to_a_configured_peer_and_disconnects_with_dpr() -> None:
    port_a, port_b = free_ports(2)
    b = _server("b.test", port_b)
    await b.start()
    a = _server("a.test", port_a, (("b.test", "127.0.0.1", port_b),))
    await a.start()
    try:
        assert await _until(lambda: _state(a, "b.test") == "I-Open"
                            and _state(b, "a.test") == "R-Open")
        (info,) = a.peers()
        assert info.applications == (4,) and info.watchdog == "OKAY"
        await a.close(2.0)  # DPR on our connection; b answers DPA and we disconnect
        assert await _until(lambda: _state(b, "a.test") is None)
    finally:
        await a.close(0.1)
        await b.close(0.5)


async def test_reconnects_after_tc_when_the_peer_comes_up_late() -> None:
    port_a, port_b = free_ports(2)
    a = _server("a.test", port_a, (("b.test", "127.0.0.1", port_b),))
    await a.start()
    b = _server("b.test", port_b)
    try:
        assert await _until(lambda: a.m_dropped.get("connect_failed") >= 1)
        assert _state(a, "b.test") == "Closed"
        await b.start()
        assert await _until(lambda: _state(a, "b.test") == "I-Open")
    finally:
        await a.close(0.5)
        await b.close(0.5)


async def test_election_when_both_sides_connect() -> None:
    """§5.6.4: one connection survives; 'b.test' > 'a.test', so b keeps the one a opened."""
    port_a, port_b = free_ports(2)
    a = _server("a.test", port_a, (("b.test", "127.0.0.1", port_b),))
    b = _server("b.test", port_b, (("a.test", "127.0.0.1", port_a),))
    await asyncio.gather(a.start(), b.start())
    try:
        assert await _until(lambda: {_state(a, "b.test"), _state(b, "a.test")} == {
            "I-Open", "R-Open"})
        await asyncio.sleep(0.5)  # and it stays that way: exactly one connection each
        assert {_state(a, "b.test"), _state(b, "a.test")} == {"I-Open", "R-Open"}
        assert len(a._conns) == 1 and len(b._conns) == 1
    finally:
        await a.close(1.0)
        await b.close(1.0)
