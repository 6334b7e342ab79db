"""Turning proxy dialogs and registrar decisions into records (issue: CDRs in Postgres).

The proxy and registrar call these hooks synchronously; ``RecordWriter.submit`` never waits (it
queues, or spools when Postgres is away), so the SIP path never waits on Postgres.
"""

from __future__ import annotations

import time

from signaling.dialogs import ProxyDialog
from signaling.records.model import CallRecord, RegistrationEvent
from signaling.records.writer import RecordWriter
from signaling.registry.base import Binding

__all__ = ["RecordHooks"]


class RecordHooks:
    """Adapters from server events to ``RecordWriter`` submissions."""

    def __init__(self, writer: RecordWriter, node_id: str) -> None:
        self.writer = writer
        self.node_id = node_id

    def dialog_ended(self, dialog: ProxyDialog) -> None:
        status = dialog.final_status or (200 if dialog.answered_at is not None else 0)
        self.writer.submit_cdr(CallRecord(
            call_id=dialog.call_id, from_tag=dialog.caller_tag, caller=dialog.caller,
            callee=dialog.callee, start=dialog.created_at, status=status,
            to_tag=dialog.callee_tag or None, answer=dialog.answered_at,
            end=dialog.ended_at if dialog.ended_at is not None else time.time(),
            hangup_by=dialog.ended_by or None, node=self.node_id))

    def registration(self, event: str, aor: str, bindings: list[Binding]) -> None:
        now = time.time()
        if not bindings:
            self.writer.submit_registration(RegistrationEvent(
                at=now, aor=aor, contact="*", event=event, node=self.node_id))
            return
        for b in bindings:
            self.writer.submit_registration(RegistrationEvent(
                at=now, aor=aor, contact=b.contact, event=event, expires=b.remaining(now),
                source=b.source, call_id=b.call_id, cseq=b.cseq, node=self.node_id))
