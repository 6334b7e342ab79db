"""Records written per second to PostgreSQL through ``RecordWriter`` (target >= 20,000/s).

    python -m benchmarks.bench_records [--records N] [--kind cdr|registration] [--dsn DSN]

Without ``--dsn`` a private PostgreSQL is started (initdb in a temp dir, default settings with
fsync on, so the figure includes real commits) and removed afterwards.  The producer submits
records the way the SIP path does (``submit_cdr``, synchronous) as fast as the writer drains
them, keeping the queue below its bound so nothing spills to the spool; the clock runs from the
first submit to the moment every record is committed (``flush``).  The count of rows in the
table is checked against the number submitted, then the rate is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import asyncpg

from signaling.metrics import Metrics
from signaling.records import CallRecord, RecordWriter, RegistrationEvent
from signaling.records.writer import BATCH_SIZE, MAX_QUEUE

__all__ = ["main"]

DEFAULT_RECORDS = 200_000
TARGET = 20_000


def _cdr(i: int) -> CallRecord:
    start = 1_700_000_000.0 + i * 0.001
    return CallRecord(
        call_id=f"{i:012d}-bench@192.0.2.10", from_tag=f"ft{i:x}", caller="sip:alice@example.com",
        callee=f"sip:user{i % 10_000}@example.com", start=start, status=200, to_tag=f"tt{i:x}",
        answer=start + 2.5, end=start + 62.5, hangup_by="caller", node="bench",
    )


def _reg(i: int) -> RegistrationEvent:
    return RegistrationEvent(
        at=1_700_000_000.0 + i * 0.001, aor=f"sip:user{i % 10_000}@example.com",
        contact=f"<sip:user{i % 10_000}@198.51.100.7:5060>", event="registered", expires=3600,
        source="198.51.100.7:5060", call_id=f"{i:012d}-reg", cseq=1, node="bench",
    )


async def _run(dsn: str, n: int, kind: str) -> tuple[float, int]:
    metrics = Metrics()
    with tempfile.TemporaryDirectory() as tmp:
        writer = RecordWriter(dsn, Path(tmp) / "bench.spool", metrics)
        await writer.start()
        if not writer.database_up:
            raise SystemExit("bench_records: cannot reach PostgreSQL")
        make = _cdr if kind == "cdr" else _reg
        records = [make(i) for i in range(n)]  # built before the clock starts
        high_water = MAX_QUEUE - BATCH_SIZE
        started = time.perf_counter()
        for i, record in enumerate(records):
            writer.submit(record)
            if i % 1000 == 999 and writer.pending > high_water // 2:
                while writer.pending > high_water // 4:
                    await asyncio.sleep(0.001)
        await writer.flush()
        elapsed = time.perf_counter() - started
        spooled = metrics.registry.get_sample_value(
            "signaling_records_spooled_total", {"kind": "cdr" if kind == "cdr" else kind}) or 0
        await writer.close()
    table = "call_records" if kind == "cdr" else "registration_events"
    conn = await asyncpg.connect(dsn)
    try:
        rows = int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
        await conn.execute(f"TRUNCATE {table}")
    finally:
        await conn.close()
    if spooled:
        print(f"note: {int(spooled)} records went through the spool", file=sys.stderr)
    return elapsed, rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=DEFAULT_RECORDS)
    parser.add_argument("--kind", choices=["cdr", "registration"], default="cdr")
    parser.add_argument("--dsn", default=os.environ.get("SIGNALING_TEST_DATABASE_URL"))
    args = parser.parse_args(argv)
    server = None
    dsn = args.dsn
    if dsn is None:
        from harness.services import PostgresServer

        server = PostgresServer(fsync=True).start()
        dsn = server.dsn
    try:
        import uvloop

        elapsed, rows = uvloop.run(_run(dsn, args.records, args.kind))
    finally:
        if server is not None:
            server.close()
    rate = args.records / elapsed
    print(f"records: {args.kind}, submitted {args.records}, rows {rows}")
    print(f"elapsed: {elapsed:.2f} s")
    print(f"records written per second: {rate:,.0f} (target >= {TARGET:,})")
    return 0 if rows == args.records else 1


if __name__ == "__main__":
    sys.exit(main())
