"""The ``registry`` fixture: every engine behind the same contract tests.

Redis engines get a fresh key prefix per test, so tests never see each other's keys and a shared
(or externally provided) Redis is never flushed.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from signaling.registry import MemoryRegistry, Registry, make_registry
from signaling.registry.owner import RegistryOwner


@pytest.fixture(params=["memory", "shared", "redis", "cluster"])
async def registry(request: pytest.FixtureRequest) -> AsyncIterator[Registry]:
    prefix = f"t{uuid.uuid4().hex[:12]}"
    reg: Registry
    owner: RegistryOwner | None = None
    tmp = tempfile.TemporaryDirectory(prefix="sig-owner-")
    if request.param == "memory":
        reg = MemoryRegistry()
    elif request.param == "shared":
        # A MemoryRegistry behind a real owner on a Unix socket, seen through a worker's client.
        path = str(Path(tmp.name) / "registry.sock")
        owner = RegistryOwner(MemoryRegistry(), path)
        await owner.start()
        reg = make_registry(f"shared+unix://{path}")
    elif request.param == "redis":
        url = request.getfixturevalue("redis_url")
        reg = make_registry(f"{url}?prefix={prefix}")
    else:
        url = request.getfixturevalue("redis_cluster_url")
        reg = make_registry(f"{url}?prefix={prefix}")
    yield reg
    await reg.close()
    if owner is not None:
        await owner.close()
    tmp.cleanup()
