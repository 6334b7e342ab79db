"""The proxy's dialogs: what it remembers of each call it record-routes (RFC 3261 §12, §16.6
step 4).

``DialogKeeper`` owns the dialog table and its sharing with other nodes (dialogshare.py), feeds
each dialog its inputs (requests, responses, ACK, timeouts: the table in dialogs.py) and reports
a call that ended (traces, records).  What the proxy *does* about a dialog (a BYE of its own at
the maximum duration, CANCELs when the ring time passes) stays in proxy.py: this module only
keeps state, so it needs no transactions and nothing of the proxy's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from protocols.sip.message import Request, Response
from signaling.config import Config
from signaling.dialogs import (
    DialogError,
    DialogInput,
    DialogState,
    DialogTable,
    ProxyDialog,
    dialog_key,
    intern_peer,
)
from signaling.dialogshare import SharedDialogs
from signaling.metrics import FastCounter, Metrics
from signaling.registry.base import Registry
from signaling.sipcore import Peer

if TYPE_CHECKING:  # imported by the server only when tracing is on (OpenTelemetry is heavy)
    from signaling.tracing import Tracing

__all__ = ["DIALOG_LINGER", "LINGER_T1", "DialogKeeper"]

log = logging.getLogger(__name__)

#: A terminated dialog is kept this many T1 to absorb late retransmissions: 64*T1, Timer B
#: and F (§17.1.1.2, §17.1.2.2), the longest its requests and answers are retransmitted.
#: In T1, not seconds: with a T1 configured shorter, a storm's failed calls lingered 32 s all
#: the same, long after their last retransmission could come (issue 13: nothing left behind).
LINGER_T1 = 64
#: Seconds a terminated dialog is kept at the default T1 (0.5 s).
DIALOG_LINGER = LINGER_T1 * 0.5

#: In-dialog requests that move a dialog's state (§15 BYE, §14 re-INVITE as a target refresh).
_REQUEST_INPUT = {"BYE": DialogInput.BYE, "INVITE": DialogInput.TARGET_REFRESH}


class DialogKeeper:
    """The proxy's dialog table, its sharing with other nodes and each dialog's transitions."""

    def __init__(self, cfg: Config, registry: Registry, metrics: Metrics, events: FastCounter,
                 now: Callable[[], float], tracer: Tracing | None = None,
                 on_ended: Callable[[ProxyDialog], None] | None = None) -> None:
        self.cfg = cfg
        self.table = DialogTable(cfg.max_dialogs)
        #: Seconds a terminated dialog is kept (``LINGER_T1``).
        self.linger = LINGER_T1 * cfg.t1
        self.now = now
        self.events = events
        #: None when tracing is off: every use is behind ``if self.tracer``.
        self.tracer = tracer
        #: Called once per dialog that ended (records, CDRs); failures are logged, not raised.
        self.on_ended = on_ended
        #: Dialog state goes to the registry only when others can read it (not in-process).
        self.shared = SharedDialogs(registry, cfg.registry != "memory",
                                    cfg.max_dialog_duration + self.linger, events)
        metrics.callback_gauge("dialogs", "Dialogs by state", ["state"],
                               lambda: {(k,): float(v)
                                        for k, v in self.table.counts_by_state().items()})

    # -- finding -------------------------------------------------------------------------------

    def find(self, req: Request) -> ProxyDialog | None:
        """The dialog a request with a To tag belongs to, if this node holds it."""
        return self.table.find(req.call_id, req.from_.tag, req.to.tag)

    async def find_or_load(self, req: Request) -> ProxyDialog | None:
        """As ``find``, or from the shared registry: a dialog another node set up (a node
        that failed, or a BYE that reached another node of the cluster)."""
        dialog = self.find(req)
        if dialog is None and self.shared.enabled:
            now = self.now()
            dialog = await self.shared.load(req, self.table, now,
                                            now + self.cfg.max_dialog_duration)
        return dialog

    @staticmethod
    def other_side(dialog: ProxyDialog, req: Request) -> Peer | None:
        """Where an in-dialog request goes: to the side that did not send it."""
        if req.from_.tag == dialog.caller_tag:
            return dialog.callee_peer
        return dialog.caller_peer

    # -- inputs --------------------------------------------------------------------------------

    def create(self, req: Request, peer: Peer, now: float) -> ProxyDialog:
        """A dialog for a new INVITE (raises ``DialogTableFull``); it rings until answered
        or until the ring time (``--ring-timeout``) passes."""
        contact = str(req.contacts[0].uri) if req.contacts else ""
        ring = max(self.cfg.ring_timeout, 1.0)
        dialog = ProxyDialog(
            dialog_key(req.call_id, req.from_.tag or ""), req.call_id, req.from_.tag or "",
            str(req.from_), str(req.to), peer, contact, req.cseq.seq, now, time.time(),
            now + ring)
        self.table.add(dialog)
        return dialog

    def request(self, dialog: ProxyDialog, req: Request) -> None:
        """An in-dialog request was forwarded: track the caller's CSeq (a BYE of ours must
        exceed it, §12.2.1.1) and the state a BYE or re-INVITE moves to."""
        if req.from_.tag == dialog.caller_tag:
            dialog.caller_cseq = max(dialog.caller_cseq, req.cseq.seq)
        inp = _REQUEST_INPUT.get(req.method)
        if inp is None:
            return
        try:
            state = dialog.handle(inp)
        except DialogError:
            self.events.inc("dialog_transition_error")
            return
        if state is DialogState.TERMINATED:
            dialog.ended_by = "caller" if req.from_.tag == dialog.caller_tag else "callee"
            self._ended(dialog)

    def response(self, dialog: ProxyDialog, peer: Peer, resp: Response,
                 inp: DialogInput) -> None:
        """A provisional or 2xx of the dialog-creating INVITE, from the branch at ``peer``."""
        tag = resp.to.tag
        if inp is DialogInput.PROVISIONAL:
            if tag is None:
                return  # §12.1: only a 1xx with a To tag creates an early dialog
            if dialog.early_tags is None:
                dialog.early_tags = set()
                if self.tracer is not None:
                    self.tracer.call_event(dialog.id, "ringing", {"sip.status_code": resp.status})
            dialog.early_tags.add(tag)
        elif inp is DialogInput.SUCCESS and dialog.callee_peer is None:
            self._answered(dialog, peer, resp)
            return
        self.input(dialog, inp)

    def _answered(self, dialog: ProxyDialog, peer: Peer, resp: Response) -> None:
        """The first 2xx: the callee side is known, and the maximum duration runs from now."""
        dialog.callee_tag = resp.to.tag or ""
        dialog.callee = str(resp.to)
        dialog.callee_peer = intern_peer(peer)
        dialog.callee_contact = str(resp.contacts[0].uri) if resp.contacts else ""
        dialog.answered_at = time.time()
        dialog.early_tags = None
        dialog.deadline = self.now() + self.cfg.max_dialog_duration
        self.table.schedule(dialog)
        if self.tracer is not None:
            self.tracer.call_event(dialog.id, "answered", {"sip.status_code": resp.status})
        self.input(dialog, DialogInput.SUCCESS)
        self.shared.share(dialog)

    def input(self, dialog: ProxyDialog, inp: DialogInput) -> None:
        """One input to a dialog's state machine; a transition error is counted, not raised."""
        before = dialog.state
        try:
            state = dialog.handle(inp)
        except DialogError:
            self.events.inc("dialog_transition_error")
            return
        if state is DialogState.TERMINATED and before is not DialogState.TERMINATED:
            if not dialog.ended_by:
                dialog.ended_by = "callee" if inp is DialogInput.FAILURE else "timeout"
            self._ended(dialog)

    def _ended(self, dialog: ProxyDialog) -> None:
        if dialog.answered_at is not None:
            self.shared.unshare(dialog)
        dialog.ended_at = time.time()
        if self.tracer is not None:
            self.tracer.call_ended(dialog.id, dialog.ended_by, dialog.final_status)
        # Kept a while so late retransmissions still find it (``linger``), then removed.
        dialog.deadline = self.now() + self.linger
        self.table.schedule(dialog)
        if self.on_ended is not None:
            try:
                self.on_ended(dialog)
            except Exception:  # a records failure never touches the call path
                log.warning("dialog-ended hook failed", exc_info=True)
