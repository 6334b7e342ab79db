"""Schema creation and migration against a real PostgreSQL."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from signaling.records.schema import SCHEMA_VERSION, migrate


async def test_migrate_creates_then_is_idempotent(postgres_db: str) -> None:
    conn = await asyncpg.connect(postgres_db)
    try:
        assert await migrate(conn) == SCHEMA_VERSION
        assert await migrate(conn) == 0
        versions = await conn.fetch("SELECT version FROM schema_version ORDER BY version")
        assert [v["version"] for v in versions] == list(range(1, SCHEMA_VERSION + 1))
        tables = {r["tablename"] for r in await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert {"call_records", "registration_events", "schema_version"} <= tables
    finally:
        await conn.close()


async def test_concurrent_nodes_migrate_once(postgres_db: str) -> None:
    conns = [await asyncpg.connect(postgres_db) for _ in range(4)]
    try:
        applied = await asyncio.gather(*(migrate(c) for c in conns))
        assert sorted(applied) == [0, 0, 0, SCHEMA_VERSION]
    finally:
        for c in conns:
            await c.close()


async def test_newer_schema_refused(postgres_db: str) -> None:
    conn = await asyncpg.connect(postgres_db)
    try:
        await migrate(conn)
        await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", SCHEMA_VERSION + 1)
        with pytest.raises(RuntimeError, match="newer"):
            await migrate(conn)
    finally:
        await conn.close()
