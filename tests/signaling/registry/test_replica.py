"""The ``replica`` engine: workers' replicas kept in step through a real hub on a Unix socket.

Each test runs the hub (``signaling.registry.hub``) and several ``ReplicaRegistry`` clients in
one event loop, over real sockets, as the supervisor and its workers do across processes.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from signaling.eager import run_at_once
from signaling.registry.base import ContactChange
from signaling.registry.dialogmap import DATA_SLOT
from signaling.registry.hub import ReplicaHub
from signaling.registry.journal import PREFIX, UNTIL_SLACK, prune
from signaling.registry.memory import MemoryRegistry
from signaling.registry.owner import RegistryOwner
from signaling.registry.replica import (
    HUB_SOCKET,
    OWNER_SOCKET,
    SNAPSHOT_SLICE,
    ReplicaRegistry,
)

#: Bound on waiting for a change to reach another replica (it takes a few milliseconds).
BOUND = 5.0


@pytest.fixture
async def run_dir() -> AsyncIterator[str]:
    with tempfile.TemporaryDirectory(prefix="sig-replica-") as tmp:
        yield tmp


@pytest.fixture
async def owner(run_dir: str) -> AsyncIterator[RegistryOwner]:
    """The supervisor's registry (sessions, claims, dialogs too large for a worker's table)."""
    serving = RegistryOwner(MemoryRegistry(), str(Path(run_dir) / OWNER_SOCKET))
    await serving.start()
    yield serving
    await serving.close()


@pytest.fixture
async def hub(run_dir: str, owner: RegistryOwner) -> AsyncIterator[ReplicaHub]:
    """The supervisor's side: the hub, with the owner beside it."""
    relay = ReplicaHub(str(Path(run_dir) / HUB_SOCKET))
    await relay.start()
    yield relay
    await relay.close()


def replica(run_dir: str) -> ReplicaRegistry:
    return ReplicaRegistry(run_dir, max_bindings_per_aor=10, max_bytes=1 << 26)


Pair = tuple[ReplicaRegistry, ReplicaRegistry]


@pytest.fixture
async def pair(run_dir: str, hub: ReplicaHub) -> AsyncIterator[Pair]:
    """Two synced replicas (two workers of one server), closed after the test."""
    a, b = replica(run_dir), replica(run_dir)
    try:
        await a.ping()
        await b.ping()
        yield a, b
    finally:
        await a.close()
        await b.close()


async def until(check: Callable[[], Awaitable[bool]]) -> None:
    deadline = time.monotonic() + BOUND
    while not await check():
        assert time.monotonic() < deadline, "not replicated in time"
        await asyncio.sleep(0.01)


def change(contact: str, expires: int = 600, conn: str | None = None) -> list[ContactChange]:
    return [ContactChange(contact=contact, expires=expires, connection_id=conn)]


async def test_a_registration_through_one_replica_is_found_through_the_others(
        pair: Pair) -> None:
    a, b = pair
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


async def test_a_replica_sends_its_copy_in_slices_and_serves_between_them(
        run_dir: str, hub: ReplicaHub) -> None:
    """A serving worker's copy for a worker that starts goes out a slice at a time, the event
    loop turning between slices (one piece held it ~280 ms per 100,000 AORs): REGISTERs and
    a removal are answered through it while it sends, and the newcomer ends with the same
    registry, what changed meanwhile read from the journal past the copy's positions."""
    a, b, late = replica(run_dir), replica(run_dir), replica(run_dir)
    try:
        await a.ping()
        await b.ping()
        now = time.time()
        held = 2 * SNAPSHOT_SLICE + 10
        for n in range(held):
            await a.register(f"sip:u{n}@x", f"c{n}", 1, change(f"sip:u{n}@10.0.0.1"), now)
        others = SNAPSHOT_SLICE + 5
        for n in range(others):
            await b.register(f"sip:p{n}@x", f"p{n}", 1, change(f"sip:p{n}@10.0.0.2"), now)
        assert await a.count_aors() == held + others  # b's are pending in a
        await b.close()  # a is the only source the hub can ask

        during: list[str] = []
        assert a._link is not None
        sent = a._link.slices_sent  # b's copy, when it joined

        async def serve() -> None:
            n = 0
            while late._link is None or not late._link.synced.done():
                link = a._link
                assert link is not None
                if link.slices_sent > sent and link.sending is not None \
                        and not link.sending.done():  # between two slices of late's copy
                    if not during:
                        assert await a.remove_all("sip:u0@x", "c0", 2, now) == 1
                    aor = f"sip:d{n}@x"
                    await a.register(aor, f"d{n}", 1, change(f"sip:d{n}@10.0.0.3"), now)
                    during.append(aor)
                    n += 1
                await asyncio.sleep(0)

        serving = asyncio.create_task(serve())
        await late.ping()  # returns once it has the copy
        await serving
        assert during, "nothing was served while the copy was sent"
        assert await late.lookup("sip:u0@x", now) == []
        for aor in ("sip:u1@x", f"sip:u{held - 1}@x", "sip:p0@x", f"sip:p{others - 1}@x",
                    *during):
            assert len(await late.lookup(aor, now)) == 1, aor
        assert await late.count_aors() == held - 1 + others + len(during)
    finally:
        await a.close()
        await b.close()
        await late.close()


async def test_what_a_replica_acknowledged_outlives_it_in_its_journal(
        run_dir: str, hub: ReplicaHub, pair: Pair) -> None:
    """kill -9 right after the 200 loses nothing: the REGISTER returns once its record is in
    the worker's journal (shared memory), read by the others after it is gone, and by a
    worker that starts when none serves (it reads every journal from its start)."""
    a, b = pair
    now = time.time()
    await a.register("sip:kim@x", "c", 1, change("sip:kim@10.0.0.2"), now)
    link = a._link
    assert link is not None and link.transport is not None
    link.transport.abort()  # the worker dies: nothing more leaves it, nothing is closed
    assert [x.contact for x in await b.lookup("sip:kim@x", now)] == ["sip:kim@10.0.0.2"]
    await b.close()  # now none serves

    async def none_serves() -> bool:
        return not hub.workers

    await until(none_serves)
    fresh = replica(run_dir)
    try:
        await fresh.ping()
        assert [x.contact for x in await fresh.lookup("sip:kim@x", now)] == [
            "sip:kim@10.0.0.2"]
    finally:
        await fresh.close()


async def test_a_journal_is_kept_until_every_binding_it_mentions_expired(
        run_dir: str, pair: Pair) -> None:
    """A refresh to a shorter life and a removal keep the journal as long as the binding
    they replaced would live (a restart of every worker reading the journal that created it
    without this one's records would bring it back); once gone, readers unmap it."""
    a, b = pair
    now = time.time()
    await a.register("sip:lou@x", "c", 1, change("sip:lou@10.0.0.3", 900), now)
    assert [x.contact for x in await b.lookup("sip:lou@x", now)] == ["sip:lou@10.0.0.3"]
    await b.register("sip:lou@x", "c", 2, change("sip:lou@10.0.0.3", 60), now)
    await b.remove_all("sip:lou@x", "c", 3, now)
    journals = sorted(n for n in os.listdir(run_dir) if n.startswith(PREFIX))
    assert len(journals) == 2
    # As if both had exited: neither journal goes before the 900 s binding expired (each
    # may stay up to UNTIL_SLACK longer: the journal module).
    assert prune(run_dir, set(), now + 899) == []
    assert sorted(prune(run_dir, set(), now + 901 + UNTIL_SLACK)) == journals
    assert a._journal is not None
    gone = a._journal.name
    await a.close()  # a's writer unmaps it here; b's reader still maps it (one process)
    assert gone in Path("/proc/self/maps").read_text()
    await b.count_aors()  # a full catch-up: b finds a's journal gone and unmaps it
    assert gone not in Path("/proc/self/maps").read_text()


async def test_a_replica_that_starts_reads_each_journal_from_where_its_source_had(
        run_dir: str, hub: ReplicaHub) -> None:
    """Changes made while a worker copies a sibling's replica, and by a sibling that started
    after it, reach it once, in order: the refresh (CSeq 2) is what it holds."""
    a = replica(run_dir)
    try:
        now = time.time()
        await a.register("sip:ann@x", "c", 1, change("sip:ann@10.0.0.1"), now)
        late = replica(run_dir)
        joining = asyncio.ensure_future(late.ping())
        await a.register("sip:ann@x", "c", 2, change("sip:ann@10.0.0.1", 900), now)
        await asyncio.wait_for(joining, BOUND)
        third = replica(run_dir)
        await third.ping()
        await third.register("sip:bob@x", "b", 1, change("sip:bob@10.0.0.3"), now)
        assert [x.cseq for x in await late.lookup("sip:ann@x", now)] == [2]
        assert [x.contact for x in await late.lookup("sip:bob@x", now)] == ["sip:bob@10.0.0.3"]
        assert await late.count_aors() == 2 and await late.count_bindings() == 2
        await third.close()
    finally:
        await a.close()
        await late.close()


async def test_a_registration_is_found_through_another_replica_at_once(
        pair: Pair) -> None:
    """No polling: the lookup that finds nothing reads the siblings' journals first."""
    a, b = pair
    now = time.time()
    for n in range(20):
        aor = f"sip:now{n}@x"
        await a.register(aor, f"c{n}", 1, change(f"sip:now{n}@10.0.0.1"), now)
        assert [x.contact for x in await b.lookup(aor, now)] == [f"sip:now{n}@10.0.0.1"]
    assert await b.known_user("sip:now19@x")
    assert not await b.known_user("sip:never@x")
    assert await b.count_aors() == 20


async def test_a_refresh_through_a_worker_that_joined_reaches_the_others_at_catch_up(
        run_dir: str, hub: ReplicaHub, pair: Pair) -> None:
    """The hub tells the serving replicas that a journal is new (``JOINED``), so a refresh
    made through a newcomer is read at their next catch-up, not at the next miss or sweep.
    One of the two copies its replica to the newcomer (and reads the directory for it), the
    other is only told."""
    a, b = pair
    now = time.time()
    await a.register("sip:r@x", "c", 1, change("sip:r@10.0.0.1", expires=600), now)
    assert [x.contact for x in await b.lookup("sip:r@x", now)] == ["sip:r@10.0.0.1"]
    late = replica(run_dir)
    try:
        await late.ping()
        await late.register("sip:r@x", "c", 2, change("sip:r@10.0.0.1", expires=1200), now)

        async def refreshed() -> bool:
            # Hits: no directory scan of their own.
            found = [await r.lookup("sip:r@x", now) for r in (a, b)]
            return [[x.expires_at for x in f] for f in found] == [[now + 1200]] * 2

        await until(refreshed)
    finally:
        await late.close()


async def test_a_dialog_confirmed_through_one_worker_is_loaded_through_another_in_place(
        pair: Pair, owner: RegistryOwner) -> None:
    """The write, the load and the delete never reach the supervisor (its owner counts no
    call): the dialog is in the writer's table (``signaling.registry.dialogmap``)."""
    a, b = pair
    calls = owner.calls
    assert a.put_dialog_nowait("call-1;a", b"snapshot", 60) is None
    assert await b.get_dialog("call-1;a") == b"snapshot"
    assert a.delete_dialog_nowait("call-1;a") is None
    assert await b.get_dialog("call-1;a") is None
    assert owner.calls == calls


async def test_a_dialog_too_large_for_the_table_goes_to_the_owner(
        pair: Pair, owner: RegistryOwner) -> None:
    a, b = pair
    big = b"x" * (DATA_SLOT + 1)
    rest = a.put_dialog_nowait("big;a", big, 60)
    assert rest is not None
    await rest
    assert await b.get_dialog("big;a") == big  # the table's marker says where it is
    deleted = a.delete_dialog_nowait("big;a")
    assert deleted is not None and await deleted
    assert await owner.registry.get_dialog("big;a") is None
    assert await b.get_dialog("big;a") is None


async def test_the_sweep_ends_what_no_bye_ended(pair: Pair, owner: RegistryOwner) -> None:
    """Dialogs past their TTL (a worker's BYE never came) leave the table at the sweep, and
    the owner's copy of one too large for it goes too."""
    a, b = pair
    await a.put_dialog("short;a", b"s", 60)
    await a.put_dialog("long;a", b"x" * (DATA_SLOT + 1), 60)
    await a.put_dialog("later;a", b"l", 600)
    await a.expire(time.time() + 120, 100)  # as the sweep would two minutes on
    assert set(a.dialogs.open().held) == {"later;a"}
    assert await owner.registry.get_dialog("long;a") is None
    assert await b.get_dialog("short;a") is None
    assert await b.get_dialog("later;a") == b"l"


async def test_a_register_answered_without_a_task_waits_for_the_hub_link(
        run_dir: str, hub: ReplicaHub) -> None:
    """A worker answers REGISTERs as it reads them, with no task (``signaling.eager``, as
    ``SipCore.answer_at_once`` does); its first ones may come before its link to the hub is
    up.  They wait for the link (whose connection is bounded with ``asyncio.timeout``, which
    needs a task: the link's own) and complete from its callbacks, all of them once."""
    worker = replica(run_dir)
    try:
        now = time.time()
        ended: list[BaseException | None] = []

        async def register(i: int) -> None:  # the registrar's part: the registry's call
            await worker.register(f"sip:u{i}@x", "c1", 1, change(f"sip:u{i}@10.0.0.1"), now)

        for i in range(3):
            assert not run_at_once(register(i), ended.append)  # waits for the link

        async def all_ended() -> bool:
            return len(ended) == 3

        await until(all_ended)
        assert ended == [None, None, None]
        assert await worker.count_bindings() == 3
        # Linked, a REGISTER completes in the call itself.
        assert run_at_once(register(3), ended.append)
    finally:
        await worker.close()
