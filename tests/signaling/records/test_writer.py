"""RecordWriter against a real PostgreSQL: batching, exactly-once, outages, spool, bounds."""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from harness.services import PostgresServer
from signaling.metrics import Metrics
from signaling.records import CallRecord, RecordWriter, RegistrationEvent

# Generous bound for the writer to reconnect and replay in the tests (retry interval 0.2 s).
REPLAY_WAIT = 60.0


def cdr(i: int, **kw: object) -> CallRecord:
    fields: dict[str, object] = {
        "call_id": f"call-{i}@host", "from_tag": f"ft{i}", "caller": "sip:alice@example.com",
        "callee": "sip:bob@example.com", "start": 1_700_000_000.0 + i, "status": 200,
        "to_tag": f"tt{i}", "answer": 1_700_000_002.0 + i, "end": 1_700_000_062.0 + i,
        "hangup_by": "caller", "node": "n1",
    }
    fields.update(kw)
    return CallRecord(**fields)  # type: ignore[arg-type]


def reg_event(i: int) -> RegistrationEvent:
    return RegistrationEvent(at=1_700_000_000.0 + i, aor=f"sip:u{i}@example.com",
                             contact=f"<sip:u{i}@10.0.0.1>", event="registered", expires=3600,
                             source="10.0.0.1:5060", call_id=f"r{i}", cseq=1)


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(f"signaling_{name}", labels)
    return value or 0.0


async def count(dsn: str, table: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
    finally:
        await conn.close()


async def wait_rows(dsn: str, table: str, expected: int) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + REPLAY_WAIT
    while loop.time() < deadline:
        try:
            if await count(dsn, table) >= expected:
                return
        except (OSError, asyncpg.PostgresError):
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"{table}: fewer than {expected} rows after {REPLAY_WAIT}s")


@pytest.fixture(scope="module")
def private_pg() -> Iterator[PostgresServer]:
    """A PostgreSQL of our own for the outage tests (stopped and started by them)."""
    server = PostgresServer(fsync=False).start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
async def outage_db(private_pg: PostgresServer) -> AsyncIterator[str]:
    if private_pg.proc is None or private_pg.proc.poll() is not None:
        private_pg.start()
    name = f"o_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(private_pg.dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    yield private_pg.dsn_for(name)
    if private_pg.proc is None or private_pg.proc.poll() is not None:
        private_pg.start()


def make_writer(dsn: str | None, tmp_path: Path, metrics: Metrics, **kw: object) -> RecordWriter:
    return RecordWriter(dsn, tmp_path / "records.spool", metrics,
                        retry_interval=0.2, **kw)  # type: ignore[arg-type]


def test_submit_is_synchronous() -> None:
    for name in ("submit", "submit_cdr", "submit_registration"):
        assert not inspect.iscoroutinefunction(getattr(RecordWriter, name))


async def test_batched_exactly_once(postgres_db: str, tmp_path: Path) -> None:
    metrics = Metrics()
    writer = make_writer(postgres_db, tmp_path, metrics, batch_size=1000)
    await writer.start()
    assert writer.database_up
    for i in range(3000):
        writer.submit_cdr(cdr(i))
    for i in range(100):
        writer.submit_registration(reg_event(i))
    for i in range(100):  # the same calls again: still one row each
        writer.submit_cdr(cdr(i))
    await writer.flush()
    assert await count(postgres_db, "call_records") == 3000
    assert await count(postgres_db, "registration_events") == 100
    assert sample(metrics, "records_written_total", kind="cdr") == 3000
    assert sample(metrics, "records_written_total", kind="registration") == 100
    assert sample(metrics, "records_duplicate_total", kind="cdr") == 100
    conn = await asyncpg.connect(postgres_db)
    try:
        row = await conn.fetchrow("SELECT * FROM call_records WHERE call_id = 'call-7@host'")
    finally:
        await conn.close()
    assert row is not None
    assert row["from_tag"] == "ft7" and row["to_tag"] == "tt7" and row["status"] == 200
    assert row["start_time"] == datetime.fromtimestamp(1_700_000_007.0, UTC)
    assert row["duration"] == 60.0 and row["hangup_by"] == "caller"
    await writer.close()
    assert sample(metrics, "records_dropped_total", kind="cdr", reason="closed") == 0
    writer.submit_cdr(cdr(1))
    assert sample(metrics, "records_dropped_total", kind="cdr", reason="closed") == 1


async def test_disabled_without_database(tmp_path: Path) -> None:
    metrics = Metrics()
    writer = make_writer(None, tmp_path, metrics)
    await writer.start()
    writer.submit_cdr(cdr(1))
    assert sample(metrics, "records_dropped_total", kind="cdr", reason="disabled") == 1
    await writer.close()


async def test_postgres_stopped_mid_stream(
    outage_db: str, private_pg: PostgresServer, tmp_path: Path
) -> None:
    metrics = Metrics()
    writer = make_writer(outage_db, tmp_path, metrics, batch_size=500)
    await writer.start()
    for i in range(2000):
        writer.submit_cdr(cdr(i))
    await writer.flush()
    assert await count(outage_db, "call_records") == 2000
    private_pg.stop()
    for i in range(2000, 4000):
        writer.submit_cdr(cdr(i))
    for i in range(1500, 2500):  # overlap with both sides of the outage
        writer.submit_cdr(cdr(i))
    await writer.flush()
    assert not writer.database_up
    assert sample(metrics, "records_spooled_total", kind="cdr") == 3000
    private_pg.start()
    await wait_rows(outage_db, "call_records", 4000)
    await writer.flush()
    await asyncio.sleep(0.5)  # let the replay finish its last chunk
    assert await count(outage_db, "call_records") == 4000
    assert sample(metrics, "records_replayed_total", kind="cdr") == 2000
    assert sample(metrics, "records_duplicate_total", kind="cdr") == 1000
    assert sample(metrics, "records_dropped_total", kind="cdr", reason="spool_full") == 0
    await writer.close()
    assert not (tmp_path / "records.spool.replay").exists()


async def test_unreachable_at_start_creates_schema_later(
    outage_db: str, private_pg: PostgresServer, tmp_path: Path
) -> None:
    private_pg.stop()
    metrics = Metrics()
    writer = make_writer(outage_db, tmp_path, metrics)
    await writer.start()  # degraded, not failed
    assert not writer.database_up
    for i in range(300):
        writer.submit_registration(reg_event(i))
    await writer.flush()
    assert sample(metrics, "records_spooled_total", kind="registration") == 300
    private_pg.start()
    await wait_rows(outage_db, "registration_events", 300)
    assert writer.database_up
    await writer.close()
    assert await count(outage_db, "registration_events") == 300


async def test_spool_survives_restart_of_writer(
    outage_db: str, private_pg: PostgresServer, tmp_path: Path
) -> None:
    private_pg.stop()
    first = make_writer(outage_db, tmp_path, Metrics())
    await first.start()
    for i in range(250):
        first.submit_cdr(cdr(i))
    await first.close()
    assert (tmp_path / "records.spool").stat().st_size > 0
    private_pg.start()
    metrics = Metrics()
    second = make_writer(outage_db, tmp_path, metrics)
    await second.start()
    await wait_rows(outage_db, "call_records", 250)
    await second.close()
    assert sample(metrics, "records_replayed_total", kind="cdr") == 250


async def test_spool_full_is_counted(
    outage_db: str, private_pg: PostgresServer, tmp_path: Path
) -> None:
    private_pg.stop()
    metrics = Metrics()
    writer = make_writer(outage_db, tmp_path, metrics, spool_max_bytes=20_000)
    await writer.start()
    for i in range(500):
        writer.submit_cdr(cdr(i))
    await writer.flush()
    spooled = sample(metrics, "records_spooled_total", kind="cdr")
    dropped = sample(metrics, "records_dropped_total", kind="cdr", reason="spool_full")
    assert 0 < spooled < 500
    assert spooled + dropped == 500
    await writer.close()


async def test_queue_full_spills_to_spool(postgres_db: str, tmp_path: Path) -> None:
    metrics = Metrics()
    writer = make_writer(postgres_db, tmp_path, metrics, queue_size=10)
    await writer.start()
    for i in range(1000):  # one synchronous burst: the queue overflows at once
        writer.submit_cdr(cdr(i))
    assert sample(metrics, "records_spooled_total", kind="cdr") == 990
    await wait_rows(postgres_db, "call_records", 1000)
    await writer.close()
    assert await count(postgres_db, "call_records") == 1000


async def test_rejected_record_dropped_rest_written(postgres_db: str, tmp_path: Path) -> None:
    metrics = Metrics()
    writer = make_writer(postgres_db, tmp_path, metrics)
    await writer.start()
    for i in range(10):
        writer.submit_cdr(cdr(i, caller="bad\x00caller" if i == 4 else "sip:a@x"))
    await writer.flush()
    assert await count(postgres_db, "call_records") == 9
    assert sample(metrics, "records_dropped_total", kind="cdr", reason="rejected") == 1
    await writer.close()


def _pg_processes(server: PostgresServer) -> list[int]:
    assert server.proc is not None
    children = subprocess.run(["pgrep", "-P", str(server.proc.pid)], capture_output=True,
                              text=True, check=False).stdout.split()
    return [server.proc.pid, *map(int, children)]


async def test_slow_postgres_spools_then_replays(
    outage_db: str, private_pg: PostgresServer, tmp_path: Path
) -> None:
    metrics = Metrics()
    writer = make_writer(outage_db, tmp_path, metrics, write_timeout=0.5)
    await writer.start()
    writer.submit_cdr(cdr(0))
    await writer.flush()
    frozen = _pg_processes(private_pg)
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    try:
        for i in range(1, 200):
            writer.submit_cdr(cdr(i))
        await writer.flush()  # bounded by the write timeout, not by Postgres
        assert not writer.database_up
        assert sample(metrics, "records_spooled_total", kind="cdr") == 199
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
    await wait_rows(outage_db, "call_records", 200)
    await writer.close()
    assert await count(outage_db, "call_records") == 200
