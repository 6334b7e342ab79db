"""RecordWriter: call records and registration events to Postgres, off the SIP path.

The SIP path calls ``submit_cdr`` / ``submit_registration``: synchronous, never awaiting, never
blocking on Postgres.  Records go into a bounded queue drained by one writer task, which writes
batches with COPY into a temporary table followed by ``INSERT ... SELECT ... ON CONFLICT DO
NOTHING``: COPY's speed with the unique key deciding, so a batch written twice (a timeout after
commit, a replay after a crash) still leaves exactly one row per call.

When Postgres is down, slow (``WRITE_TIMEOUT``) or not yet reachable, batches are appended to the
local spool instead; the writer reconnects every ``RETRY_INTERVAL`` and replays the spool before
new records.  A full queue also spills to the spool, so the only losses are a full spool, a torn
spool line, or a record Postgres rejects as invalid, each counted in
``signaling_records_dropped_total{kind, reason}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

import asyncpg

from signaling.metrics import Metrics
from signaling.records.model import CallRecord, Record, RegistrationEvent
from signaling.records.schema import (
    CALL_COLUMNS,
    CALL_TABLE,
    REGISTRATION_COLUMNS,
    REGISTRATION_TABLE,
    migrate,
)
from signaling.records.spool import MAX_SPOOL_BYTES, Spool

__all__ = [
    "BATCH_SIZE",
    "CONNECT_TIMEOUT",
    "MAX_QUEUE",
    "RETRY_INTERVAL",
    "WRITE_TIMEOUT",
    "RecordWriter",
]

log = logging.getLogger(__name__)

# Records waiting for the writer task.  At 20k records/s this is five seconds of backlog, enough
# to ride out a slow batch; beyond it records spill to the spool rather than to memory.
MAX_QUEUE = 100_000

# Records per COPY.  Past a few thousand rows COPY's per-row cost dominates; 5,000 keeps each
# transaction short (tens of ms) so a failure re-spools little.
BATCH_SIZE = 5_000

# A batch that takes longer is treated as Postgres being slow: spooled, connection dropped.
WRITE_TIMEOUT = 5.0

# Bound on opening a connection (TCP + auth + migrations check).
CONNECT_TIMEOUT = 5.0

# Pause between reconnection attempts while Postgres is away; also how often an idle writer
# wakes up to try, so a spool left by an outage is replayed without new traffic.
RETRY_INTERVAL = 1.0

# How long close() waits for the queue to drain before spooling what is left.
CLOSE_TIMEOUT = 10.0

_TABLES: dict[type, tuple[str, tuple[str, ...], str]] = {
    CallRecord: (CALL_TABLE, CALL_COLUMNS, "cdr"),
    RegistrationEvent: (REGISTRATION_TABLE, REGISTRATION_COLUMNS, "registration"),
}


# Server-side errors that mean "this connection is finished" rather than "bad data"
# (SQLSTATE classes 08 connection exception, 57 operator intervention: shutdown, cancel).
_SERVER_GONE = (asyncpg.PostgresConnectionError, asyncpg.exceptions.OperatorInterventionError)


class _ConnectionLost(Exception):
    """Postgres went away or was too slow: the caller spools and reconnects later."""


class RecordWriter:
    """Batched, spooled, exactly-once record writer (see the module docstring).

    ``dsn`` None disables records: submissions are counted as dropped with reason ``disabled``.
    """

    def __init__(
        self,
        dsn: str | None,
        spool_path: str | os.PathLike[str],
        metrics: Metrics,
        *,
        queue_size: int = MAX_QUEUE,
        batch_size: int = BATCH_SIZE,
        spool_max_bytes: int = MAX_SPOOL_BYTES,
        write_timeout: float = WRITE_TIMEOUT,
        retry_interval: float = RETRY_INTERVAL,
    ) -> None:
        self._dsn = dsn
        self._spool = Spool(spool_path, spool_max_bytes)
        self._queue: asyncio.Queue[Record] = asyncio.Queue(queue_size)
        self._batch_size = batch_size
        self._write_timeout = write_timeout
        self._retry_interval = retry_interval
        self._conn: Any = None
        self._next_attempt = 0.0
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._declare_metrics(metrics)

    def _declare_metrics(self, metrics: Metrics) -> None:
        self._written = metrics.counter(
            "records_written_total", "Records inserted into Postgres", ["kind"])
        self._spooled = metrics.counter(
            "records_spooled_total", "Records appended to the local spool", ["kind"])
        self._replayed = metrics.counter(
            "records_replayed_total", "Spooled records delivered to Postgres", ["kind"])
        self._duplicates = metrics.counter(
            "records_duplicate_total", "Records already in Postgres (unique key)", ["kind"])
        self._dropped = metrics.counter(
            "records_dropped_total", "Records lost, by reason", ["kind", "reason"])
        self._latency = metrics.histogram(
            "records_write_seconds", "PostgreSQL batch write latency (one transaction)")
        metrics.gauge("records_queue_depth", "Records waiting for the writer").set_function(
            self._queue.qsize)
        metrics.gauge("records_spool_bytes", "Bytes in the spool").set_function(
            lambda: self._spool.size)
        metrics.gauge("records_database_up", "1 while connected to Postgres").set_function(
            lambda: 1 if self._conn is not None else 0)

    @property
    def database_up(self) -> bool:
        return self._conn is not None

    @property
    def pending(self) -> int:
        """Records queued for the writer task (not yet written or spooled)."""
        return self._queue.qsize()

    # -- the SIP path: synchronous and non-blocking ------------------------------------------------

    def submit_cdr(self, record: CallRecord) -> None:
        self.submit(record)

    def submit_registration(self, event: RegistrationEvent) -> None:
        self.submit(event)

    def submit(self, record: Record) -> None:
        """Hand a record over; never awaits, never raises for Postgres' state."""
        if self._dsn is None or self._closed:
            self._drop([record], "disabled" if self._dsn is None else "closed")
            return
        try:
            self._queue.put_nowait(record)
        except asyncio.QueueFull:
            self._to_spool([record])

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect and migrate the schema (or start degraded, spooling), start the writer task.

        Raises only for a schema newer than this code (a deployment error, not an outage).
        """
        if self._dsn is None:
            return
        await self._ensure_connected(force=True)
        self._task = asyncio.create_task(self._run(), name="record-writer")

    async def flush(self) -> None:
        """Wait until every record submitted so far was written or spooled."""
        await self._queue.join()

    async def close(self) -> None:
        """Drain the queue (bounded by CLOSE_TIMEOUT; the rest goes to the spool) and stop."""
        self._closed = True
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), CLOSE_TIMEOUT)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        leftover: list[Record] = []
        while not self._queue.empty():
            leftover.append(self._queue.get_nowait())
            self._queue.task_done()
        if leftover:
            self._to_spool(leftover)
        await self._disconnect()
        self._spool.close()

    # -- writer task ------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            batch = await self._next_batch()
            delivered = False
            try:
                await self._ensure_connected()
                if self._conn is not None and self._spool.has_pending():
                    await self._replay()
                if batch:
                    await self._deliver(batch)
                delivered = True
            except asyncio.CancelledError:
                raise
            except Exception:  # the writer must outlive any surprise: spool, reconnect later
                log.exception("records: unexpected writer error; spooling the batch")
                await self._disconnect()
            finally:
                if not delivered and batch:
                    self._to_spool(batch)
                for _ in batch:
                    self._queue.task_done()

    async def _next_batch(self) -> list[Record]:
        try:
            first = await asyncio.wait_for(self._queue.get(), self._retry_interval)
        except TimeoutError:
            return []
        batch = [first]
        while len(batch) < self._batch_size:
            try:
                batch.append(self._queue.get_nowait())
            except asyncio.QueueEmpty:
                break
        return batch

    async def _deliver(self, batch: list[Record]) -> None:
        if self._conn is not None:
            try:
                await self._write(batch, self._written)
                return
            except _ConnectionLost as exc:
                log.warning("records: Postgres unavailable, spooling: %s", exc)
                await self._disconnect()
        self._to_spool(batch)

    async def _replay(self) -> None:
        """Deliver the spool oldest first; stop (keeping the file) if Postgres goes away."""
        while (path := self._spool.begin_replay()) is not None:
            for records, corrupt in self._spool.read(path, self._batch_size):
                if corrupt:
                    self._dropped.labels(kind="unknown", reason="spool_corrupt").inc(corrupt)
                try:
                    await self._write(records, self._replayed)
                except _ConnectionLost as exc:
                    log.warning("records: replay interrupted: %s", exc)
                    await self._disconnect()
                    return
            self._spool.finish_replay(path)
            log.info("records: spool replayed")

    # -- Postgres --------------------------------------------------------------------------

    async def _ensure_connected(self, *, force: bool = False) -> None:
        loop = asyncio.get_running_loop()
        if self._conn is not None or (not force and loop.time() < self._next_attempt):
            return
        self._next_attempt = loop.time() + self._retry_interval
        conn = None
        try:
            conn = await asyncpg.connect(self._dsn, timeout=CONNECT_TIMEOUT)
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await migrate(conn)
                for table, _, _ in _TABLES.values():
                    await conn.execute(
                        f"CREATE TEMP TABLE IF NOT EXISTS tmp_{table} "
                        f"(LIKE {table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
                    )
        except RuntimeError:
            raise  # schema newer than the code: a deployment error
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("records: cannot reach Postgres (%s); spooling", exc)
            if conn is not None:
                conn.terminate()
            return
        self._conn = conn
        log.info("records: connected to Postgres")

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()

    async def _write(self, records: Sequence[Record], counter: Any) -> None:
        """Write one batch; a row Postgres rejects is dropped (counted), the rest kept."""
        try:
            await self._write_batch(records, counter)
        except _ConnectionLost:
            raise
        except asyncpg.PostgresError as exc:
            # The connection is fine but the data is not (e.g. a NUL in a text): find the bad
            # records one by one so they cannot block the spool forever.
            log.warning("records: batch rejected (%s); writing one by one", exc)
            for record in records:
                try:
                    await self._write_batch([record], counter)
                except asyncpg.PostgresError:
                    self._drop([record], "rejected")

    async def _write_batch(self, records: Sequence[Record], counter: Any) -> None:
        conn = self._conn
        if conn is None:
            raise _ConnectionLost("not connected")
        groups: dict[type, list[tuple[Any, ...]]] = {}
        for record in records:
            groups.setdefault(type(record), []).append(record.row())
        inserted: dict[type, int] = {}
        start = time.perf_counter()
        try:
            async with asyncio.timeout(self._write_timeout), conn.transaction():
                for cls, rows in groups.items():
                    inserted[cls] = await self._copy(conn, cls, rows)
            self._latency.observe(time.perf_counter() - start)
        except asyncpg.PostgresError as exc:
            if conn.is_closed() or isinstance(exc, _SERVER_GONE):
                raise _ConnectionLost(f"{type(exc).__name__}: {exc}") from exc
            raise  # the server refused the data; the connection is fine
        except Exception as exc:  # timeouts, sockets, asyncpg client state: all mean reconnect
            raise _ConnectionLost(f"{type(exc).__name__}: {exc}") from exc
        for cls, rows in groups.items():
            kind = _TABLES[cls][2]
            counter.labels(kind=kind).inc(inserted[cls])
            if len(rows) > inserted[cls]:
                self._duplicates.labels(kind=kind).inc(len(rows) - inserted[cls])

    @staticmethod
    async def _copy(conn: Any, cls: type, rows: list[tuple[Any, ...]]) -> int:
        table, columns, _ = _TABLES[cls]
        await conn.copy_records_to_table(f"tmp_{table}", records=rows, columns=columns)
        names = ", ".join(columns)
        status = await conn.execute(
            f"INSERT INTO {table} ({names}) SELECT {names} FROM tmp_{table} "
            "ON CONFLICT DO NOTHING"
        )
        return int(status.rsplit(" ", 1)[-1])  # "INSERT 0 <rows>"

    # -- accounting ------------------------------------------------------------------------

    def _to_spool(self, records: Sequence[Record]) -> None:
        written = self._spool.append(records)
        for kind, n in _count_kinds(records[:written]).items():
            self._spooled.labels(kind=kind).inc(n)
        if written < len(records):
            self._drop(records[written:], "spool_full")

    def _drop(self, records: Sequence[Record], reason: str) -> None:
        for kind, n in _count_kinds(records).items():
            self._dropped.labels(kind=kind, reason=reason).inc(n)


def _count_kinds(records: Sequence[Record]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in records:
        kind = _TABLES[type(record)][2]
        counts[kind] = counts.get(kind, 0) + 1
    return counts
