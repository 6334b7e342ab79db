"""The ``registry`` fixture: every engine behind the same contract tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from signaling.registry import MemoryRegistry, Registry


@pytest.fixture(params=["memory"])
async def registry(request: pytest.FixtureRequest) -> AsyncIterator[Registry]:
    reg: Registry = MemoryRegistry()
    yield reg
    await reg.close()
