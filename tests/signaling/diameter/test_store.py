"""The registry (memory or Redis) is the Credit-Control session store (CCSessionStore)."""

from __future__ import annotations

import uuid

from protocols.diameter.constants import FLAG_E
from signaling.diameter.server import DiameterServer
from signaling.diameter.store import CCSessionStore
from signaling.metrics import Metrics
from signaling.registry import make_registry
from signaling.registry.memory import MemoryRegistry
from tests.protocols.diameter.factory import ccr
from tests.signaling.diameter.client import Client, result_code
from tests.signaling.diameter.conftest import make_config


async def test_the_registry_serves_as_the_store() -> None:
    """The registry has the same three methods, so it is passed to the server unchanged."""
    registry = MemoryRegistry()
    assert isinstance(registry, CCSessionStore)
    server = DiameterServer(make_config(), Metrics(), registry)
    await server.start()
    try:
        c = await Client.connect(server.port)
        assert result_code(await c.handshake()) == 2001
        await c.send(ccr(rtype=1, number=0))
        assert result_code(await c.recv()) == 2001
        assert await registry.get_session("client.test;1;1") is not None
        await c.send(ccr(rtype=3, number=1))
        assert result_code(await c.recv()) == 2001
        assert await registry.get_session("client.test;1;1") is None
        await c.close()
    finally:
        await server.close(0.5)


async def test_session_survives_restart_with_the_redis_registry(redis_url: str) -> None:
    """Issue 6: with Redis, a Credit-Control session outlives the server process's state."""
    url = f"{redis_url}?prefix=d{uuid.uuid4().hex[:10]}"
    sid = f"client.test;{uuid.uuid4().hex}"
    first_registry = make_registry(url)
    first = DiameterServer(make_config(), Metrics(), first_registry)
    await first.start()
    c = await Client.connect(first.port)
    assert result_code(await c.handshake()) == 2001
    await c.send(ccr(session=sid, rtype=1, number=0))
    assert result_code(await c.recv()) == 2001
    await c.close()
    await first.close(0.5)
    await first_registry.close()

    second_registry = make_registry(url)  # a new server with a new connection: no local state
    second = DiameterServer(make_config(), Metrics(), second_registry)
    await second.start()
    try:
        c = await Client.connect(second.port)
        assert result_code(await c.handshake()) == 2001
        await c.send(ccr(session=sid, rtype=2, number=1, used=10))
        assert result_code(await c.recv()) == 2001
        await c.send(ccr(session=sid, rtype=3, number=2, used=5))
        assert result_code(await c.recv()) == 2001
        assert await second_registry.get_session(sid) is None
        await c.close()
    finally:
        await second.close(0.5)
        await second_registry.close()


async def test_full_store_is_answered_too_busy() -> None:
    """The store's bound reaches the peer as DIAMETER_TOO_BUSY (3004, E bit), not a crash."""
    server = DiameterServer(make_config(), Metrics(), MemoryRegistry(max_state_entries=1))
    await server.start()
    try:
        c = await Client.connect(server.port)
        assert result_code(await c.handshake()) == 2001
        await c.send(ccr(session="one", rtype=1, number=0))
        assert result_code(await c.recv()) == 2001
        await c.send(ccr(session="two", rtype=1, number=0))
        busy = await c.recv()
        assert result_code(busy) == 3004 and busy.flags & FLAG_E
        await c.send(ccr(session="one", rtype=3, number=1))  # existing sessions still work
        assert result_code(await c.recv()) == 2001
        await c.close()
    finally:
        await server.close(0.5)
