"""Record values: derived duration, row order matching the schema's columns, tagged encoding."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import msgspec

from signaling.records.model import CallRecord, RegistrationEvent
from signaling.records.schema import CALL_COLUMNS, REGISTRATION_COLUMNS


def test_call_record_row_and_duration() -> None:
    r = CallRecord(call_id="c", from_tag="f", caller="sip:a@x", callee="sip:b@x", start=10.0,
                   status=200, to_tag="t", answer=12.0, end=72.5, hangup_by="callee")
    assert r.duration == 60.5
    row = dict(zip(CALL_COLUMNS, r.row(), strict=True))
    assert row["start_time"] == datetime.fromtimestamp(10.0, UTC)
    assert row["duration"] == 60.5 and row["hangup_by"] == "callee" and row["status"] == 200
    unanswered = CallRecord(call_id="c", from_tag="f", caller="a", callee="b", start=1, status=486)
    assert unanswered.duration is None
    assert dict(zip(CALL_COLUMNS, unanswered.row(), strict=True))["answer_time"] is None


def test_registration_event_row_and_unique_ids() -> None:
    a = RegistrationEvent(at=5.0, aor="sip:a@x", contact="<sip:a@h>", event="registered",
                          expires=60, call_id="c", cseq=3)
    b = RegistrationEvent(at=5.0, aor="sip:a@x", contact="<sip:a@h>", event="registered")
    assert a.event_id != b.event_id
    row = dict(zip(REGISTRATION_COLUMNS, a.row(), strict=True))
    assert row["event_id"] == uuid.UUID(a.event_id)
    assert row["cseq"] == 3 and row["expires"] == 60


def test_tagged_round_trip() -> None:
    dec = msgspec.json.Decoder(CallRecord | RegistrationEvent)
    for rec in (
        CallRecord(call_id="c", from_tag="f", caller="a", callee="b", start=1.5, status=200),
        RegistrationEvent(at=1.0, aor="a", contact="c", event="expired"),
    ):
        assert dec.decode(msgspec.json.encode(rec)) == rec
