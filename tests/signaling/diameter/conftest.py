"""Fixtures: a real DiameterServer on an ephemeral loopback port, on uvloop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping

import pytest
import uvloop

from signaling.diameter import DiameterConfig, DiameterServer
from signaling.metrics import Metrics
from signaling.registry.memory import MemoryRegistry


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    """The server runs on uvloop in production, so its tests do too."""
    return {"uvloop": uvloop.new_event_loop}


def make_config(**overrides: object) -> DiameterConfig:
    base: dict[str, object] = dict(
        host="127.0.0.1", port=0, origin_host="server.test", origin_realm="test",
        watchdog_interval=6.0, workers=2, queue_size=64,
    )
    base.update(overrides)
    return DiameterConfig(**base)  # type: ignore[arg-type]


@pytest.fixture
async def server() -> AsyncIterator[DiameterServer]:
    srv = DiameterServer(make_config(), Metrics(), MemoryRegistry())
    await srv.start()
    yield srv
    await srv.close(1.0)
