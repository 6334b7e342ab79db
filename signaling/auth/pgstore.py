"""Subscribers in PostgreSQL (asyncpg): the ``subscribers`` table, migrated at start.

Migrations have their own version table (``subscribers_schema_version``) so this store and the
records writer (``signaling.records.schema``) can share a database and evolve apart; they run
in one transaction under an advisory lock, so nodes starting together apply each once.

Every call is bounded by ``CALL_TIMEOUT``; a database that cannot answer raises
``SubscriberError``, which the authenticator answers with 503 + Retry-After (never a 200, and
never a hanging transaction).
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from protocols.sip.digest import ALGORITHMS
from signaling.auth.subscribers import Subscriber, SubscriberError

__all__ = ["CALL_TIMEOUT", "MIGRATIONS", "PgSubscribers", "migrate"]

CALL_TIMEOUT = 2.0
_LOCK_KEY = 0x5167_6E61_6C00_0002

#: Column of each algorithm's HA1.
_COLUMNS = {"MD5": "ha1_md5", "SHA-256": "ha1_sha256", "SHA-512-256": "ha1_sha512_256"}
assert set(_COLUMNS) == set(ALGORITHMS)

MIGRATIONS: list[str] = [
    """
    CREATE TABLE subscribers (
        username        text NOT NULL,
        realm           text NOT NULL,
        ha1_md5         text NOT NULL,
        ha1_sha256      text NOT NULL,
        ha1_sha512_256  text NOT NULL,
        updated_at      timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (username, realm)
    );
    """,
]


async def migrate(conn: Any) -> int:
    """Bring the table to the newest version; returns the number of migrations applied."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS subscribers_schema_version ("
            " version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())")
        current = await conn.fetchval(
            "SELECT coalesce(max(version), 0) FROM subscribers_schema_version")
        if current > len(MIGRATIONS):
            raise SubscriberError(f"subscribers schema version {current} is newer than this "
                                  f"server's {len(MIGRATIONS)}")
        for version in range(current + 1, len(MIGRATIONS) + 1):
            await conn.execute(MIGRATIONS[version - 1])
            await conn.execute(
                "INSERT INTO subscribers_schema_version (version) VALUES ($1)", version)
        return int(len(MIGRATIONS) - current)


def _row(row: Any) -> Subscriber:
    # HA1 in lower case, as digest.verify takes it (a row written by hand may have capitals).
    return Subscriber(row["username"], row["realm"],
                      {alg: row[col].lower() for alg, col in _COLUMNS.items()})


class PgSubscribers:
    """``SubscriberStore`` on PostgreSQL."""

    def __init__(self, dsn: str, pool_size: int = 4) -> None:
        self.dsn = dsn
        self.pool_size = pool_size
        self._pool: Any = None

    async def start(self) -> None:
        try:
            async with asyncio.timeout(10.0):
                self._pool = await asyncpg.create_pool(self.dsn, min_size=1,
                                                       max_size=self.pool_size)
                async with self._pool.acquire() as conn:
                    await migrate(conn)
        except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
            raise SubscriberError(f"subscribers database: {exc or 'timeout'}") from None

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def _call(self, method: str, query: str, *args: Any) -> Any:
        if self._pool is None:
            raise SubscriberError("subscribers database not connected")
        try:
            async with asyncio.timeout(CALL_TIMEOUT):
                return await getattr(self._pool, method)(query, *args)
        except (OSError, TimeoutError, asyncpg.PostgresError,
                asyncpg.InterfaceError) as exc:
            raise SubscriberError(f"subscribers database: {exc or 'timeout'}") from None

    async def get(self, user: str, realm: str) -> Subscriber | None:
        row = await self._call("fetchrow", "SELECT * FROM subscribers WHERE username = $1 "
                                           "AND realm = $2", user, realm.lower())
        return None if row is None else _row(row)

    async def put(self, sub: Subscriber) -> bool:
        missing = set(ALGORITHMS) - set(sub.ha1)
        if missing:
            raise SubscriberError(f"missing HA1 for {', '.join(sorted(missing))}")
        created = await self._call(
            "fetchval",
            "INSERT INTO subscribers (username, realm, ha1_md5, ha1_sha256, ha1_sha512_256) "
            "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (username, realm) DO UPDATE SET "
            "ha1_md5 = EXCLUDED.ha1_md5, ha1_sha256 = EXCLUDED.ha1_sha256, "
            "ha1_sha512_256 = EXCLUDED.ha1_sha512_256, updated_at = now() "
            "RETURNING (xmax = 0)",
            sub.user, sub.realm, *(sub.ha1[alg] for alg in _COLUMNS))
        return bool(created)

    async def remove(self, user: str, realm: str) -> bool:
        status = await self._call("execute", "DELETE FROM subscribers WHERE username = $1 "
                                             "AND realm = $2", user, realm.lower())
        return str(status).endswith(" 1")

    async def list(self, offset: int, limit: int) -> list[Subscriber]:
        rows = await self._call("fetch", "SELECT * FROM subscribers ORDER BY realm, username "
                                         "OFFSET $1 LIMIT $2", offset, limit)
        return [_row(r) for r in rows]

    async def count(self) -> int:
        return int(await self._call("fetchval", "SELECT count(*) FROM subscribers"))
