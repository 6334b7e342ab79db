"""The private service fixtures start real servers that answer."""

from __future__ import annotations

import socket

import asyncpg
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from harness.services import RedisServer


async def test_redis_fixture(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        assert await client.ping()
    finally:
        await client.aclose()


async def test_redis_cluster_fixture(redis_cluster_url: str) -> None:
    client = AsyncRedisCluster.from_url(redis_cluster_url.replace("redis+cluster", "redis"))
    try:
        for i in range(20):
            await client.set(f"k{i}", str(i))
        assert await client.get("k7") == b"7"
        assert len(client.get_primaries()) == 3
    finally:
        await client.aclose()


async def test_postgres_db_fixture(postgres_db: str) -> None:
    conn = await asyncpg.connect(postgres_db)
    try:
        assert await conn.fetchval("SELECT 1") == 1
        assert await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname='public'") == 0
    finally:
        await conn.close()


def test_redis_restart_keeps_aof_data() -> None:
    server = RedisServer(appendonly=True).start()
    try:
        server.cli("SET", "k", "v")
        server.cli("CONFIG", "SET", "appendfsync", "always")
        server.cli("SET", "k2", "v2")
        server.kill()
        server.start()
        assert server.cli("GET", "k2").strip() == "v2"
    finally:
        server.close()


def test_taken_port_is_never_mistaken_for_ours() -> None:
    """Another server already listening on the chosen port: ours moves to a free one."""
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server = RedisServer(appendonly=False)
        taken = server.port
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        try:
            server.start()
            assert server.port != taken
            assert server.cli("PING").strip() == "PONG"
        finally:
            server.close()
