"""Records from proxy dialogs and registrar decisions, written to a real PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg

from signaling.cdr import RecordHooks
from signaling.dialogs import DialogState, ProxyDialog
from signaling.metrics import Metrics
from signaling.records.writer import RecordWriter
from signaling.registry.base import Binding
from signaling.sipcore import Peer


async def _rows(dsn: str, query: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(query))
    finally:
        await conn.close()


async def test_dialog_and_registration_records_reach_postgres(postgres_db: str,
                                                              tmp_path: Path) -> None:
    writer = RecordWriter(postgres_db, tmp_path / "spool.jsonl", Metrics())
    await writer.start()
    hooks = RecordHooks(writer, "node-1")
    d = ProxyDialog("c1;t1", "c1", "t1", "<sip:a@x>;tag=t1", "<sip:b@x>",
                    Peer("udp", "127.0.0.1", 5000), "sip:a@127.0.0.1", 1, 0.0, 1000.0, 10.0)
    d.callee_tag, d.answered_at, d.ended_at, d.ended_by = "t2", 1002.0, 1032.5, "callee"
    d.state = DialogState.TERMINATED
    hooks.dialog_ended(d)
    hooks.dialog_ended(d)  # a duplicate (retransmitted BYE) is still one row: unique key
    b = Binding(aor="sip:a@x", contact="sip:a@127.0.0.1:5000", q=1.0, expires_at=2e9,
                call_id="r1", cseq=3, source="127.0.0.1:5000")
    hooks.registration("register", "sip:a@x", [b])
    hooks.registration("unregister", "sip:a@x", [])
    await writer.flush()
    for _ in range(50):
        calls = await _rows(postgres_db, "SELECT * FROM call_records")
        regs = await _rows(postgres_db, "SELECT * FROM registration_events")
        if len(calls) == 1 and len(regs) == 2:
            break
        await asyncio.sleep(0.1)
    await writer.close()
    assert len(calls) == 1
    row = calls[0]
    assert row["call_id"] == "c1" and row["from_tag"] == "t1" and row["to_tag"] == "t2"
    assert row["status"] == 200 and row["hangup_by"] == "callee"
    assert abs(row["duration"] - 30.5) < 1e-6
    assert sorted(r["event"] for r in regs) == ["register", "unregister"]
