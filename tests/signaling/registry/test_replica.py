"""The ``replica`` engine: workers' replicas kept in step through a real hub on a Unix socket.

Each test runs the hub (``signaling.registry.hub``) and several ``ReplicaRegistry`` clients in
one event loop, over real sockets, as the supervisor and its workers do across processes.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from signaling.registry.base import ContactChange
from signaling.registry.hub import ReplicaHub
from signaling.registry.memory import MemoryRegistry
from signaling.registry.owner import RegistryOwner
from signaling.registry.pending import DECODER, RECORD
from signaling.registry.replica import (
    CHANGE,
    END,
    HUB_SOCKET,
    OWNER_SOCKET,
    ReplicaRegistry,
    decode_frames,
    frame,
)

#: Bound on waiting for a change to reach another replica (it takes a few milliseconds).
BOUND = 5.0


@pytest.fixture
async def run_dir() -> AsyncIterator[str]:
    with tempfile.TemporaryDirectory(prefix="sig-replica-") as tmp:
        yield tmp


@pytest.fixture
async def hub(run_dir: str) -> AsyncIterator[ReplicaHub]:
    """The supervisor's side: the hub and the owner (dialogs, sessions, claims)."""
    owner = RegistryOwner(MemoryRegistry(), str(Path(run_dir) / OWNER_SOCKET))
    await owner.start()
    relay = ReplicaHub(str(Path(run_dir) / HUB_SOCKET))
    await relay.start()
    yield relay
    await relay.close()
    await owner.close()


def replica(run_dir: str) -> ReplicaRegistry:
    return ReplicaRegistry(run_dir, max_bindings_per_aor=10, max_bytes=1 << 26)


async def until(check: Callable[[], Awaitable[bool]]) -> None:
    deadline = time.monotonic() + BOUND
    while not await check():
        assert time.monotonic() < deadline, "not replicated in time"
        await asyncio.sleep(0.01)


def change(contact: str, expires: int = 600, conn: str | None = None) -> list[ContactChange]:
    return [ContactChange(contact=contact, expires=expires, connection_id=conn)]


async def test_a_registration_through_one_replica_is_found_through_the_others(
        run_dir: str, hub: ReplicaHub) -> None:
    a, b = replica(run_dir), replica(run_dir)
    try:
        await a.ping()
        await b.ping()
        now = time.time()
        await a.register("sip:ann@x", "c1", 1, change("sip:ann@10.0.0.1"), now)

        async def found() -> bool:
            return [x.contact for x in await b.lookup("sip:ann@x", now)] == ["sip:ann@10.0.0.1"]

        await until(found)
        # A refresh through the other one, then a removal back through the first.
        await b.register("sip:ann@x", "c1", 2, change("sip:ann@10.0.0.1", 900), now)

        async def refreshed() -> bool:
            return [x.cseq for x in await a.lookup("sip:ann@x", now)] == [2]

        await until(refreshed)
        assert await a.remove_all("sip:ann@x", "c1", 3, now) == 1

        async def removed() -> bool:
            return await b.lookup("sip:ann@x", now) == [] and await b.count_bindings() == 0

        await until(removed)
        assert await b.known_user("sip:ann@x")
    finally:
        await a.close()
        await b.close()


async def test_a_replica_that_starts_late_gets_a_serving_ones_copy(
        run_dir: str, hub: ReplicaHub) -> None:
    a = replica(run_dir)
    late = replica(run_dir)
    try:
        now = time.time()
        for n in range(50):
            await a.register(f"sip:u{n}@x", f"c{n}", 1, change(f"sip:u{n}@10.0.0.1"), now)
        await a.register("sip:ws@x", "w", 1, change("sip:ws@h.invalid", conn="n/w0.1/1"), now)
        await late.ping()  # returns once it has the copy
        assert await late.count_aors() == 51
        assert [x.contact for x in await late.lookup("sip:u7@x", now)] == ["sip:u7@10.0.0.1"]
        # The connection's bindings go everywhere when it closes where it was held.
        assert await a.remove_connection("n/w0.1/1") == 1

        async def gone() -> bool:
            return await late.lookup("sip:ws@x", now) == []

        await until(gone)
    finally:
        await a.close()
        await late.close()


async def test_a_register_returns_once_its_change_is_in_the_hubs_socket(
        run_dir: str) -> None:
    """kill -9 right after the 200 loses nothing: the REGISTER returns once its record is in
    the hub's socket (no answer from the hub needed), so the hub reads it even from a worker
    that is gone."""
    accepted: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    connected = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(frame(END))  # an empty hub: synced at once
        accepted.append((reader, writer))
        connected.set()
        await asyncio.sleep(3600)  # reads nothing until the test does

    server = await asyncio.start_unix_server(serve, str(Path(run_dir) / HUB_SOCKET))
    a = replica(run_dir)
    try:
        bindings = await asyncio.wait_for(
            a.register("sip:kim@x", "c", 1, change("sip:kim@10.0.0.2"), time.time()), BOUND)
        assert [b.contact for b in bindings] == ["sip:kim@10.0.0.2"]
        await asyncio.wait_for(connected.wait(), BOUND)
        link = a._link
        assert link is not None and link.transport is not None
        link.transport.abort()  # the worker dies: nothing more leaves it
        reader, _ = accepted[0]
        buf = bytearray(await asyncio.wait_for(reader.read(), BOUND))
        got = decode_frames(buf)
        assert got and got[0][:1] == CHANGE
        alen, tlen, *_, blen = RECORD.unpack_from(got[0], 1)
        assert len(got[0]) == 1 + RECORD.size + alen + tlen + blen  # one record
        sent = DECODER.decode(got[0][-blen:])
        assert sent.aor == "sip:kim@x" and sent.upserts[0][0].contact == "sip:kim@10.0.0.2"
    finally:
        await a.close()
        server.close()


async def test_a_registration_is_found_through_another_replica_at_once(
        run_dir: str, hub: ReplicaHub) -> None:
    """No polling: the lookup that finds nothing asks the hub for what it read (SYNC)."""
    a, b = replica(run_dir), replica(run_dir)
    try:
        await a.ping()
        await b.ping()
        now = time.time()
        for n in range(20):
            aor = f"sip:now{n}@x"
            await a.register(aor, f"c{n}", 1, change(f"sip:now{n}@10.0.0.1"), now)
            assert [x.contact for x in await b.lookup(aor, now)] == [f"sip:now{n}@10.0.0.1"]
        assert await b.known_user("sip:now19@x")
        assert not await b.known_user("sip:never@x")
        assert await b.count_aors() == 20
    finally:
        await a.close()
        await b.close()
