"""Call detail records and registration events, batched to Postgres with a local spool."""

from __future__ import annotations

from signaling.records.model import CallRecord, Record, RegistrationEvent
from signaling.records.schema import SCHEMA_VERSION, migrate
from signaling.records.spool import MAX_SPOOL_BYTES, Spool
from signaling.records.writer import RecordWriter

__all__ = [
    "MAX_SPOOL_BYTES",
    "SCHEMA_VERSION",
    "CallRecord",
    "Record",
    "RecordWriter",
    "RegistrationEvent",
    "Spool",
    "migrate",
]
