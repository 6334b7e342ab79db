"""The records schema and its migrations, applied by the server at start.

``MIGRATIONS[i]`` takes the schema from version ``i`` to ``i + 1``; ``schema_version`` holds
the versions applied.  Migrations run in one transaction under an advisory lock, so several
nodes starting at once apply each exactly once.  Never edit a released migration: append one.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CALL_COLUMNS",
    "CALL_TABLE",
    "MIGRATIONS",
    "REGISTRATION_COLUMNS",
    "REGISTRATION_TABLE",
    "SCHEMA_VERSION",
    "migrate",
]

CALL_TABLE = "call_records"
REGISTRATION_TABLE = "registration_events"

CALL_COLUMNS = (
    "call_id", "from_tag", "to_tag", "caller", "callee", "start_time", "answer_time",
    "end_time", "duration", "status", "hangup_by", "node",
)
REGISTRATION_COLUMNS = (
    "event_id", "at", "aor", "contact", "event", "status", "expires", "source", "call_id",
    "cseq", "node",
)

# Any constant works; it only has to be the same on every node (pg_advisory_xact_lock key).
_LOCK_KEY = 0x5167_6E61_6C00_0001

MIGRATIONS: list[str] = [
    # 1: the unique keys are what make spool replay exactly-once (ON CONFLICT DO NOTHING).
    f"""
    CREATE TABLE {CALL_TABLE} (
        call_id     text NOT NULL,
        from_tag    text NOT NULL,
        to_tag      text,
        caller      text NOT NULL,
        callee      text NOT NULL,
        start_time  timestamptz NOT NULL,
        answer_time timestamptz,
        end_time    timestamptz,
        duration    double precision,
        status      integer NOT NULL,
        hangup_by   text,
        node        text,
        PRIMARY KEY (call_id, from_tag)
    );
    CREATE INDEX call_records_start_idx ON {CALL_TABLE} (start_time);
    CREATE TABLE {REGISTRATION_TABLE} (
        event_id uuid PRIMARY KEY,
        at       timestamptz NOT NULL,
        aor      text NOT NULL,
        contact  text NOT NULL,
        event    text NOT NULL,
        status   integer NOT NULL,
        expires  integer NOT NULL,
        source   text NOT NULL,
        call_id  text NOT NULL,
        cseq     bigint NOT NULL,
        node     text
    );
    CREATE INDEX registration_events_aor_idx ON {REGISTRATION_TABLE} (aor, at);
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)


async def migrate(conn: Any) -> int:
    """Bring the schema to ``SCHEMA_VERSION``; returns the number of migrations applied.

    ``conn`` is an ``asyncpg.Connection`` (asyncpg ships no type information).
    """
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            " version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        current = await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version")
        if current > SCHEMA_VERSION:
            raise RuntimeError(
                f"database schema version {current} is newer than this server's "
                f"{SCHEMA_VERSION}"
            )
        for version in range(current + 1, SCHEMA_VERSION + 1):
            await conn.execute(MIGRATIONS[version - 1])
            await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", version)
        return int(SCHEMA_VERSION - current)
