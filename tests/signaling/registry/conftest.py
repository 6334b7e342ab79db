"""The ``registry`` fixture: every engine behind the same contract tests.

Redis engines get a fresh key prefix per test, so tests never see each other's keys and a shared
(or externally provided) Redis is never flushed.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from signaling.registry import MemoryRegistry, Registry, make_registry


@pytest.fixture(params=["memory", "redis", "cluster"])
async def registry(request: pytest.FixtureRequest) -> AsyncIterator[Registry]:
    prefix = f"t{uuid.uuid4().hex[:12]}"
    reg: Registry
    if request.param == "memory":
        reg = MemoryRegistry()
    elif request.param == "redis":
        url = request.getfixturevalue("redis_url")
        reg = make_registry(f"{url}?prefix={prefix}")
    else:
        url = request.getfixturevalue("redis_cluster_url")
        reg = make_registry(f"{url}?prefix={prefix}")
    yield reg
    await reg.close()
