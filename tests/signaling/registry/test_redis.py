"""Redis-specific behaviour: durability, outages, batching, Cluster slots.

The shared contract runs in test_base.py."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import hiredis
import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from harness.services import RedisCluster, RedisServer
from signaling.registry import (
    ContactChange,
    OutOfOrder,
    Registry,
    RegistryFull,
    RegistryUnavailable,
    make_registry,
)
from signaling.registry.redis import CALL_TIMEOUT, NBUCKETS, RedisRegistry

AOR = "sip:alice@example.com"


def change(contact: str, expires: int = 3600, **kw: object) -> ContactChange:
    return ContactChange(contact=contact, expires=expires, **kw)  # type: ignore[arg-type]


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A redis-server of our own, to kill, pause and restart; AOF fsync on every write."""
    server = RedisServer(appendonly=True).start()
    server.cli("CONFIG", "SET", "appendfsync", "always")
    try:
        yield server
    finally:
        server.close()


async def _until_up(reg: Registry) -> None:
    """Wait for a restarted or resumed Redis to answer again (at most 2 s)."""
    for _ in range(20):
        try:
            await reg.ping()
            return
        except RegistryUnavailable:
            await asyncio.sleep(0.1)
    raise AssertionError("Redis did not come back within 2 s")


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_returned_register_is_in_redis(redis_url: str, raw: aioredis.Redis) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    reg = RedisRegistry.from_url(f"{redis_url}?prefix={prefix}")
    try:
        now = time.time()
        [b] = await reg.register(AOR, "c1", 1, [change("sip:a@h", 60)], now)
        assert b.expires_at == now + 60
        hash_key, exp_key, aors_key, known_key = reg._aor_keys(AOR)
        assert hash_key.startswith(f"{{{prefix}:")
        stored = await raw.hget(hash_key, "sip:a@h")
        assert stored is not None and b"sip:a@h" in stored
        # The expiry travels as a double (MessagePack) and is the index's score exactly.
        assert await raw.zscore(exp_key, f"{AOR}\x00sip:a@h") == now + 60
        assert await raw.zscore(aors_key, AOR) == 0
        # The "had bindings" marker is written when the last binding goes away.
        assert not await raw.exists(known_key)
        assert await reg.known_user(AOR)
        await reg.remove_all(AOR, "c1", 2, now)
        assert not await raw.exists(hash_key)
        assert 0 < await raw.ttl(known_key) <= 30 * 24 * 3600
        assert await reg.known_user(AOR)
        # ... and by a REGISTER removing the last one (the script's own SET ... EX).
        await raw.delete(known_key)
        await reg.register(AOR, "c1", 3, [change("sip:a@h", 60)], now)
        assert await reg.register(AOR, "c1", 4, [change("sip:a@h", 0)], now) == []
        assert not await raw.exists(hash_key, exp_key)
        assert 30 * 24 * 3600 - 60 < await raw.ttl(known_key) <= 30 * 24 * 3600
    finally:
        await reg.close()


async def test_two_nodes_share_state(redis_url: str) -> None:
    url = f"{redis_url}?prefix=t{uuid.uuid4().hex[:8]}"
    node_a, node_b = make_registry(url), make_registry(url)
    try:
        now = time.time()
        await node_a.register(AOR, "c1", 1, [change("sip:a@h1"), change("sip:a@h2")], now)
        assert len(await node_b.lookup(AOR, now)) == 2
        assert await node_b.remove_binding(AOR, "sip:a@h1")
        assert [b.contact for b in await node_a.lookup(AOR, now)] == ["sip:a@h2"]
        # The ordering rule holds across nodes: node B saw CSeq 1 written by node A.
        with pytest.raises(OutOfOrder):
            await node_b.register(AOR, "c1", 1, [change("sip:a@h2")], now)
    finally:
        await node_a.close()
        await node_b.close()


async def test_concurrent_calls_share_pipelines(redis_url: str) -> None:
    reg = RedisRegistry.from_url(f"{redis_url}?prefix=t{uuid.uuid4().hex[:8]}")
    try:
        now = time.time()
        await asyncio.gather(*(
            reg.register(f"sip:u{i}@example.com", "c", 1, [change(f"sip:u{i}@h")], now)
            for i in range(500)
        ))
        batches, commands = reg.pipeline_stats
        assert commands == 500
        assert batches <= 10  # 500 calls made in one tick: a handful of round trips, not 500
        assert await reg.count_aors() == 500
    finally:
        await reg.close()


async def test_register_is_one_round_trip(redis_url: str) -> None:
    """One REGISTER is one write to Redis, with its connection index when it came over a
    WebSocket; the bindings it did not write come back from the script and are listed too."""
    reg = RedisRegistry.from_url(f"{redis_url}?prefix=t{uuid.uuid4().hex[:8]}")
    try:
        now = time.time()
        await reg.register(AOR, "c0", 1, [change("sip:a@h0", 60)], now)
        batches, commands = reg.pipeline_stats
        got = await reg.register(AOR, "c1", 1, [change("sip:a@h1", 120, connection_id="ws-1")],
                                 now)
        assert reg.pipeline_stats == (batches + 1, commands + 2)
        assert [(b.contact, b.expires_at) for b in got] == [
            ("sip:a@h1", now + 120), ("sip:a@h0", now + 60)]
        assert await reg.remove_connection("ws-1") == 1
        assert [b.contact for b in await reg.lookup(AOR, now)] == ["sip:a@h0"]
    finally:
        await reg.close()


@pytest.mark.parametrize("aor", [AOR, "sip:zoë@example.com", "sip:" + "x" * 300 + "@example.com"])
def test_register_command_is_what_hiredis_packs(aor: str) -> None:
    """The pipe writes REGISTER from pieces made once per bucket: the same bytes as hiredis'
    generic packer makes of the script's arguments (the Cluster path sends those)."""
    reg = RedisRegistry.from_url("redis://127.0.0.1:1/0?prefix=p")
    payload = b"\x95\xa1a\x00\r\n$3\r\n"  # any bytes: RESP frames by length
    args: tuple[Any, ...] = ("EVALSHA", reg._register.sha, 4, *reg._aor_keys(aor), payload)
    assert reg.register_command(aor, payload) == hiredis.pack_command(args)


@pytest.mark.parametrize("bucket", [0, 17, NBUCKETS - 1])
def test_sweep_command_is_what_hiredis_packs(bucket: int) -> None:
    """The pipe writes a bucket's sweep from its part made once and the sweep's (now, limit):
    the same bytes as hiredis makes of the arguments (the Cluster path sends those)."""
    reg = RedisRegistry.from_url("redis://127.0.0.1:1/0?prefix=p")
    now = time.time()
    assert reg.sweep_command(bucket, now, 7) == hiredis.pack_command(
        reg.sweep_args(bucket, now, 7))


async def test_first_register_on_a_fresh_redis_is_one_round_trip(
    private_redis: RedisServer,
) -> None:
    """The scripts are loaded as the connection opens: a REGISTER over a WebSocket (the binding
    script and the connection index) on a Redis with an empty script cache is one batch, in the
    same round trip as the connection's SCRIPT LOADs, with no NOSCRIPT and EVAL after it."""
    reg = RedisRegistry.from_url(private_redis.url)
    try:
        await reg.register(AOR, "c1", 1, [change("sip:a@h", connection_id="ws-1")], time.time())
        assert reg.pipeline_stats == (1, 2)
    finally:
        await reg.close()


@pytest.mark.parametrize("options", ["", "?socket_keepalive=true"])  # the pipe, redis-py
async def test_script_cache_flushed(private_redis: RedisServer, options: str) -> None:
    """A script cache flushed under a live connection: the link sends each EVALSHA answered
    NOSCRIPT again as EVAL, and the callers see only their replies."""
    reg = RedisRegistry.from_url(private_redis.url + options)
    try:
        await reg.register(AOR, "c1", 1, [change("sip:a@h")], time.time())
        private_redis.cli("SCRIPT", "FLUSH")
        batches, commands = reg.pipeline_stats
        got = await reg.register(AOR, "c1", 2, [change("sip:a@h2", connection_id="ws-1")],
                                 time.time())
        assert len(got) == 2
        # Two scripts (binding, connection index), each sent twice: EVALSHA, then EVAL.
        assert reg.pipeline_stats == (batches + 2, commands + 4)
        assert await reg.remove_connection("ws-1") == 1
    finally:
        await reg.close()


async def test_out_of_memory_is_registry_full(private_redis: RedisServer) -> None:
    reg = make_registry(private_redis.url)
    try:
        private_redis.cli("CONFIG", "SET", "maxmemory-policy", "noeviction")
        private_redis.cli("CONFIG", "SET", "maxmemory", "1")
        with pytest.raises(RegistryFull):
            await reg.register(AOR, "c1", 1, [change("sip:a@h")], time.time())
    finally:
        private_redis.cli("CONFIG", "SET", "maxmemory", "0")
        await reg.close()


async def test_restart_unavailable_then_recovers(private_redis: RedisServer) -> None:
    """Kill Redis: calls fail fast with RegistryUnavailable; restart: the same object recovers,
    and every register() that returned survived (AOF, fsync always)."""
    reg = make_registry(private_redis.url)
    try:
        now = time.time()
        for i in range(50):
            await reg.register(f"sip:u{i}@x", "c", 1, [change("sip:h")], now)
        private_redis.kill()
        started = time.monotonic()
        with pytest.raises(RegistryUnavailable) as err:
            await reg.register(AOR, "c1", 1, [change("sip:a@h")], now)
        assert time.monotonic() - started < CALL_TIMEOUT * 4
        assert err.value.status == 503 and err.value.retry_after
        with pytest.raises(RegistryUnavailable):
            await reg.ping()
        private_redis.start()
        for _ in range(20):  # the first call may meet a connection broken by the restart
            try:
                await reg.ping()
                break
            except RegistryUnavailable:
                await asyncio.sleep(0.1)
        await reg.ping()
        assert await reg.count_aors() == 50
        for i in range(50):
            assert len(await reg.lookup(f"sip:u{i}@x", now)) == 1
        assert len(await reg.register(AOR, "c1", 1, [change("sip:a@h")], now)) == 1
    finally:
        await reg.close()


async def test_paused_redis_times_out(private_redis: RedisServer) -> None:
    """A Redis that accepts but never answers (SIGSTOP): bounded failure, then recovery."""
    reg = make_registry(private_redis.url)
    try:
        await reg.ping()
        assert private_redis.proc is not None
        os.kill(private_redis.proc.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            results = await asyncio.gather(
                *(reg.register(f"sip:u{i}@x", "c", 1, [change("sip:h")], time.time())
                  for i in range(20)),
                reg.get_dialog("d"), return_exceptions=True,
            )
            elapsed = time.monotonic() - started
            assert all(isinstance(r, RegistryUnavailable) for r in results)
            assert elapsed < CALL_TIMEOUT * 4
        finally:
            os.kill(private_redis.proc.pid, signal.SIGCONT)
        await _until_up(reg)
        assert len(await reg.register(AOR, "c", 1, [change("sip:h")], time.time())) == 1
    finally:
        await reg.close()


async def test_cluster_one_aor_one_slot(redis_cluster_url: str) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    reg = RedisRegistry.from_url(f"{redis_cluster_url}?prefix={prefix}")
    client = AsyncRedisCluster.from_url(redis_cluster_url.replace("redis+cluster", "redis"))
    try:
        now = time.time()
        aors = [f"sip:user{i}@example.com" for i in range(60)]
        for aor in aors:
            await reg.register(aor, "c", 1, [change("sip:h", connection_id=f"ws-{aor}")], now)
        masters_used = set()
        for aor in aors:
            keys = reg._aor_keys(aor)
            slots = {await client.cluster_keyslot(k) for k in keys}
            assert len(slots) == 1
            node = client.get_node_from_key(keys[0])
            assert node is not None
            masters_used.add(node.name)
        assert len(masters_used) == 3  # AORs spread over every master
        assert len({reg._tags[i] for i in range(NBUCKETS)}) == NBUCKETS
        assert await reg.remove_connection(f"ws-{aors[0]}") == 1
        assert await reg.count_aors() == 59
        assert await reg.expire(now + 7200, 1000) == 59
        assert await reg.count_bindings() == 0
    finally:
        await reg.close()
        await client.aclose()


async def test_every_returned_register_survives_redis_crash(private_redis: RedisServer) -> None:
    """SIGKILL Redis in the middle of a REGISTER load (AOF, fsync always): every register()
    that returned is there after the restart; the others failed with RegistryUnavailable."""
    reg = make_registry(private_redis.url)
    confirmed: list[str] = []
    failed = 0
    # 64 in flight at once: 4000 started together would queue behind the connection pool,
    # and on a slow disk (fsync on every write) time out there before Redis is ever killed.
    in_flight = asyncio.Semaphore(64)

    async def one(i: int) -> None:
        nonlocal failed
        aor = f"sip:load{i}@example.com"
        async with in_flight:
            try:
                await reg.register(aor, "c", 1, [change(f"sip:load{i}@h")], time.time())
                confirmed.append(aor)
            except RegistryUnavailable:
                failed += 1

    async def load() -> None:
        await asyncio.gather(*(one(i) for i in range(4000)))

    try:
        task = asyncio.create_task(load())
        async with asyncio.timeout(60):
            while len(confirmed) < 500:
                # The kill must land in the middle of the load: a load that ended first
                # (all done, or failing without a kill) is a failure here, never a hang.
                assert not task.done(), (len(confirmed), failed, task)
                await asyncio.sleep(0.001)
        private_redis.kill()
        await task
        assert failed > 0 and len(confirmed) + failed == 4000
        private_redis.start()
        await _until_up(reg)
        now = time.time()
        for aor in confirmed:
            assert len(await reg.lookup(aor, now)) == 1, aor
    finally:
        await reg.close()


async def test_cluster_master_restart() -> None:
    """One master of three killed: its AORs fail fast, the others' are still served; once it
    is back (same port, AOF) the same registry object serves all of them again."""
    cluster = RedisCluster(appendonly=True).start()
    reg = RedisRegistry.from_url(cluster.url)
    try:
        for node in cluster.nodes:
            node.cli("CONFIG", "SET", "appendfsync", "always")
        now = time.time()
        aors = [f"sip:c{i}@example.com" for i in range(60)]
        for aor in aors:
            await reg.register(aor, "c", 1, [change("sip:h")], now)
        cluster.nodes[1].kill()
        started = time.monotonic()
        results = await asyncio.gather(*(reg.lookup(a, now) for a in aors),
                                       return_exceptions=True)
        assert time.monotonic() - started < CALL_TIMEOUT * 4
        failed = [r for r in results if isinstance(r, BaseException)]
        assert failed and all(isinstance(r, RegistryUnavailable) for r in failed)
        assert any(isinstance(r, list) and len(r) == 1 for r in results)
        cluster.nodes[1].start()
        for _ in range(100):
            results = await asyncio.gather(*(reg.lookup(a, now) for a in aors),
                                           return_exceptions=True)
            if not any(isinstance(r, BaseException) for r in results):
                break
            await asyncio.sleep(0.2)
        assert all(isinstance(r, list) and len(r) == 1 for r in results)
    finally:
        await reg.close()
        cluster.close()
