"""signaling/dialogshare.py against a real Redis: a dialog shared by one node is loaded by
another, a stopping node waits for its writes, nothing is written with the in-process registry,
and a registry that fails costs a counted drop, never the call; and against the replica engine
of ``--processes N``, whose table in shared memory is written in place, with no task."""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from protocols.sip.message import Request
from protocols.sip.parser import parse_message
from signaling.dialogs import DialogState, DialogTable, ProxyDialog
from signaling.dialogshare import SharedDialogs
from signaling.metrics import Metrics
from signaling.registry.hub import ReplicaHub
from signaling.registry.memory import MemoryRegistry
from signaling.registry.owner import RegistryOwner
from signaling.registry.redis import RedisRegistry
from signaling.registry.replica import HUB_SOCKET, OWNER_SOCKET, ReplicaRegistry
from signaling.transports.base import Peer

CALLER = Peer("udp", "127.0.0.1", 5061)


def _confirmed(call_id: str) -> ProxyDialog:
    d = ProxyDialog(f"{call_id};a", call_id, "a", "<sip:a@x>;tag=a", "<sip:b@x>;tag=b",
                    CALLER, "sip:a@127.0.0.1:5061", 1, 0.0, 1_700_000_000.0, 100.0)
    d.callee_tag = "b"
    d.callee_peer = Peer("udp", "127.0.0.1", 5062)
    d.callee_contact = "sip:b@127.0.0.1:5062"
    d.state = DialogState.CONFIRMED
    return d


def _bye(call_id: str) -> Request:
    data = (f"BYE sip:b@127.0.0.1:5062 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bKx"
            f"\r\nMax-Forwards: 70\r\nFrom: <sip:a@x>;tag=a\r\nTo: <sip:b@x>;tag=b\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n").encode()
    msg = parse_message(data)
    assert isinstance(msg, Request)
    return msg


async def _settled(shared: SharedDialogs) -> None:
    async with asyncio.timeout(10):
        while shared._pending:
            await asyncio.sleep(0.01)


async def test_a_dialog_shared_by_one_node_is_loaded_by_another(redis_url: str) -> None:
    prefix = f"t{uuid.uuid4().hex[:12]}"
    one = RedisRegistry.from_url(f"{redis_url}?prefix={prefix}", timeout=10.0)
    two = RedisRegistry.from_url(f"{redis_url}?prefix={prefix}", timeout=10.0)
    try:
        events = Metrics().fast_counter("proxy_events", "events", ["event"])
        writer = SharedDialogs(one, True, 60.0, events)
        reader = SharedDialogs(two, True, 60.0, events)
        writer.share(_confirmed("c1"))
        await _settled(writer)
        table = DialogTable(10)
        loaded = await reader.load(_bye("c1"), table, 5.0, 105.0)
        assert loaded is not None and loaded.callee_peer == Peer("udp", "127.0.0.1", 5062)
        assert loaded.deadline == 105.0 and table.find("c1", "a", "b") is loaded
        assert events.get("dialog_loaded") == 1
        writer.unshare(loaded)
        await _settled(writer)
        assert await reader.load(_bye("c1"), DialogTable(10), 5.0, 105.0) is None
    finally:
        await one.close()
        await two.close()


async def test_a_stopping_node_waits_for_its_writes(redis_url: str) -> None:
    """What a reload's old worker confirms in its last moments reaches the registry before it
    exits (``Proxy.stop`` flushes), so the new one can route the call's BYE."""
    prefix = f"t{uuid.uuid4().hex[:12]}"
    one = RedisRegistry.from_url(f"{redis_url}?prefix={prefix}", timeout=10.0)
    two = RedisRegistry.from_url(f"{redis_url}?prefix={prefix}", timeout=10.0)
    try:
        writer = SharedDialogs(one, True, 60.0,
                               Metrics().fast_counter("proxy_events", "events", ["event"]))
        writer.share(_confirmed("c3"))
        assert writer._pending
        await writer.flush(10.0)
        assert not writer._pending
        assert await two.get_dialog("c3;a") is not None
    finally:
        await one.close()
        await two.close()


async def test_nothing_is_written_when_no_one_else_can_read(redis_url: str) -> None:
    reg = RedisRegistry.from_url(f"{redis_url}?prefix=t{uuid.uuid4().hex[:12]}", timeout=10.0)
    try:
        shared = SharedDialogs(reg, False, 60.0,
                               Metrics().fast_counter("proxy_events", "events", ["event"]))
        shared.share(_confirmed("c2"))
        assert not shared._pending
        assert await reg.get_dialog("c2;a") is None
    finally:
        await reg.close()


async def test_a_registry_that_fails_costs_a_counted_drop() -> None:
    # Nothing listens on port 9: every write fails within its bound.
    reg = RedisRegistry.from_url("redis://127.0.0.1:9?prefix=dead", timeout=0.5)
    try:
        events = Metrics().fast_counter("proxy_events", "events", ["event"])
        shared = SharedDialogs(reg, True, 60.0, events)
        shared.share(_confirmed("c3"))
        await _settled(shared)
        assert events.get("dialog_share_failed") == 1
        assert await shared.load(_bye("c3"), DialogTable(10), 0.0, 1.0) is None
        assert events.get("dialog_load_failed") == 1
    finally:
        await reg.close()


@pytest.fixture
async def workers() -> AsyncIterator[tuple[ReplicaRegistry, ReplicaRegistry]]:
    """Two workers' replica engines, with the supervisor's hub and owner, over real sockets."""
    with tempfile.TemporaryDirectory(prefix="sig-dialogshare-") as run_dir:
        owner = RegistryOwner(MemoryRegistry(), str(Path(run_dir) / OWNER_SOCKET))
        await owner.start()
        hub = ReplicaHub(str(Path(run_dir) / HUB_SOCKET))
        await hub.start()
        one, two = (ReplicaRegistry(run_dir, max_bindings_per_aor=10, max_bytes=1 << 24,
                                    max_dialogs=100) for _ in range(2))
        try:
            await one.ping()
            await two.ping()
            yield one, two
        finally:
            await one.close()
            await two.close()
            await hub.close()
            await owner.close()


async def test_a_worker_shares_its_dialogs_in_place(
        workers: tuple[ReplicaRegistry, ReplicaRegistry]) -> None:
    """No task per write: the dialog is in the table when ``share`` returns, and gone when
    ``unshare`` does."""
    one, two = workers
    events = Metrics().fast_counter("proxy_events", "events", ["event"])
    writer = SharedDialogs(one, True, 60.0, events)
    reader = SharedDialogs(two, True, 60.0, events)
    writer.share(_confirmed("c4"))
    assert not writer._pending
    table = DialogTable(10)
    loaded = await reader.load(_bye("c4"), table, 5.0, 105.0)
    assert loaded is not None and loaded.callee_peer == Peer("udp", "127.0.0.1", 5062)
    writer.unshare(loaded)
    assert not writer._pending
    assert await reader.load(_bye("c4"), DialogTable(10), 5.0, 105.0) is None


async def test_a_dialog_too_large_for_any_registry_costs_a_counted_drop(
        workers: tuple[ReplicaRegistry, ReplicaRegistry]) -> None:
    one, _ = workers
    events = Metrics().fast_counter("proxy_events", "events", ["event"])
    shared = SharedDialogs(one, True, 60.0, events)
    dialog = _confirmed("c5")
    dialog.caller = "<sip:" + "a" * 20_000 + "@x>;tag=a"  # beyond MAX_STATE_BYTES
    shared.share(dialog)
    assert events.get("dialog_share_failed") == 1 and not shared._pending
