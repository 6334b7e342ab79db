"""The ``registry`` fixture: every engine behind the same contract tests.

Redis engines get a fresh key prefix per test, so tests never see each other's keys and a shared
(or externally provided) Redis is never flushed.  They get a generous call bound: these tests
check what the engines answer, not how fast (the production bound, ``CALL_TIMEOUT``, and what a
call beyond it gives are tested in test_redis.py); on a busy CI machine a Redis Cluster call
took longer than half a second.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from signaling.registry import MemoryRegistry, Registry, make_registry
from signaling.registry.hub import ReplicaHub
from signaling.registry.owner import RegistryOwner
from signaling.registry.redis import RedisRegistry
from signaling.registry.replica import HUB_SOCKET, OWNER_SOCKET

#: Seconds each Redis call of the contract tests may take.
CONTRACT_CALL_TIMEOUT = 10.0


@pytest.fixture(params=["memory", "shared", "replica", "redis", "cluster"])
async def registry(request: pytest.FixtureRequest) -> AsyncIterator[Registry]:
    prefix = f"t{uuid.uuid4().hex[:12]}"
    reg: Registry
    owner: RegistryOwner | None = None
    hub: ReplicaHub | None = None
    tmp = tempfile.TemporaryDirectory(prefix="sig-owner-")
    if request.param == "memory":
        reg = MemoryRegistry()
    elif request.param == "shared":
        # A MemoryRegistry behind a real owner on a Unix socket, seen through a worker's client.
        path = str(Path(tmp.name) / "registry.sock")
        owner = RegistryOwner(MemoryRegistry(), path)
        await owner.start()
        reg = make_registry(f"shared+unix://{path}")
    elif request.param == "replica":
        # A worker's replica with the supervisor's hub and owner beside it (one worker).
        owner = RegistryOwner(MemoryRegistry(), str(Path(tmp.name) / OWNER_SOCKET))
        await owner.start()
        hub = ReplicaHub(str(Path(tmp.name) / HUB_SOCKET))
        await hub.start()
        reg = make_registry(f"replica+unix://{tmp.name}")
    elif request.param == "redis":
        url = request.getfixturevalue("redis_url")
        reg = RedisRegistry.from_url(f"{url}?prefix={prefix}", timeout=CONTRACT_CALL_TIMEOUT)
    else:
        url = request.getfixturevalue("redis_cluster_url")
        reg = RedisRegistry.from_url(f"{url}?prefix={prefix}", timeout=CONTRACT_CALL_TIMEOUT)
    yield reg
    await reg.close()
    if hub is not None:
        await hub.close()
    if owner is not None:
        await owner.close()
    tmp.cleanup()
