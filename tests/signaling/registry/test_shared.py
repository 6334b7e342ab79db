"""The ``shared`` engine's client beyond the contract (test_base.py runs that against it):
bounds, a silent or vanished owner, reconnection, and many calls in flight on one connection."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from signaling.registry import ContactChange, MemoryRegistry, RegistryUnavailable
from signaling.registry.owner import RegistryOwner
from signaling.registry.shared import SharedRegistry

NOW = 1_800_000_000.0


@pytest.fixture
async def sock_path() -> AsyncIterator[str]:
    with tempfile.TemporaryDirectory(prefix="sig-shared-") as tmp:
        yield str(Path(tmp) / "registry.sock")


async def test_pipelined_calls_from_one_connection_all_answered(sock_path: str) -> None:
    owner = RegistryOwner(MemoryRegistry(), sock_path)
    await owner.start()
    # The 2,000 calls are started before the connection is made; on a busy machine that
    # takes longer than the production bound (CALL_TIMEOUT), which is not what this tests.
    reg = SharedRegistry(sock_path, timeout=30.0)
    try:
        results = await asyncio.gather(*(
            reg.register(f"sip:u{i}@x", "c", 1, [ContactChange(f"sip:u{i}@h", 60)], NOW)
            for i in range(2000)))
        assert [r[0].aor for r in results] == [f"sip:u{i}@x" for i in range(2000)]
        assert await reg.count_aors() == 2000
        assert len(owner.conns) == 1  # one connection carried them all
    finally:
        await reg.close()
        await owner.close()


async def test_silent_owner_gives_registry_unavailable_in_time(sock_path: str) -> None:
    # A peer that accepts and never answers (an owner stuck or overloaded).
    server = await asyncio.start_unix_server(lambda r, w: None, sock_path)
    reg = SharedRegistry(sock_path, timeout=0.2)
    try:
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(RegistryUnavailable, match="no answer to lookup"):
            await reg.lookup("sip:a@x", NOW)
        assert loop.time() - start < 5.0
        # Later calls fail on their own deadline too (the sweep re-arms).
        results = await asyncio.gather(reg.ping(), reg.count_aors(), return_exceptions=True)
        assert all(isinstance(r, RegistryUnavailable) for r in results)
    finally:
        await reg.close()
        server.close()


async def test_no_owner_then_owner_back(sock_path: str) -> None:
    reg = SharedRegistry(sock_path, timeout=1.0)
    with pytest.raises(RegistryUnavailable):
        await reg.ping()
    owner = RegistryOwner(MemoryRegistry(), sock_path)
    await owner.start()
    try:
        await reg.ping()  # reconnects on the next call
        await owner.close()
        with pytest.raises(RegistryUnavailable):
            await reg.ping()
        owner = RegistryOwner(MemoryRegistry(), sock_path)
        await owner.start()
        await reg.ping()
    finally:
        await reg.close()
        await owner.close()
