"""The records kept in Postgres: call detail records and registration events.

Both are immutable values (``msgspec.Struct(frozen=True)``), tagged so one spool line decodes to
the right type.  Each carries its own unique key, which is what makes replay exactly-once:
``(call_id, from_tag)`` for a call (RFC 3261 §12: Call-ID and the caller's tag identify the call
across forks), ``event_id`` for a registration event.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec

__all__ = ["CallRecord", "Record", "RegistrationEvent"]


def _ts(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)


class CallRecord(msgspec.Struct, frozen=True, tag="cdr"):
    """One call: INVITE to final answer to BYE (times are epoch seconds).

    ``status`` is the final response to the INVITE (200 for an answered call); ``hangup_by`` is
    ``"caller"``, ``"callee"``, ``"system"`` (timeout, shutdown) or None for an unanswered call.
    """

    call_id: str
    from_tag: str
    caller: str
    callee: str
    start: float
    status: int
    to_tag: str | None = None
    answer: float | None = None
    end: float | None = None
    hangup_by: str | None = None
    node: str | None = None

    @property
    def duration(self) -> float | None:
        """Talk time: answer to end; None for an unanswered or still-running call."""
        if self.answer is None or self.end is None:
            return None
        return max(0.0, self.end - self.answer)

    def row(self) -> tuple[Any, ...]:
        """Values in ``CALL_COLUMNS`` order."""
        return (
            self.call_id, self.from_tag, self.to_tag, self.caller, self.callee, _ts(self.start),
            _ts(self.answer), _ts(self.end), self.duration, self.status, self.hangup_by,
            self.node,
        )


def _new_event_id() -> str:
    return uuid.uuid4().hex


class RegistrationEvent(msgspec.Struct, frozen=True, tag="reg"):
    """A registrar decision: ``event`` is registered / refreshed / unregistered / expired /
    rejected; ``status`` the SIP answer sent (RFC 3261 §10.3)."""

    at: float
    aor: str
    contact: str
    event: str
    status: int = 200
    expires: int = 0
    source: str = ""
    call_id: str = ""
    cseq: int = 0
    node: str | None = None
    event_id: str = msgspec.field(default_factory=_new_event_id)

    def row(self) -> tuple[Any, ...]:
        """Values in ``REGISTRATION_COLUMNS`` order."""
        return (
            uuid.UUID(self.event_id), _ts(self.at), self.aor, self.contact, self.event,
            self.status, self.expires, self.source, self.call_id, self.cseq, self.node,
        )


Record = CallRecord | RegistrationEvent
