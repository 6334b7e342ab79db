"""The injector's UAS side: what its UAs answer when the server routes a request to them.

Callees answer INVITE with 180 then 200 and SDP (RFC 3261 §12.1.1: Record-Route copied, our
Contact given), re-sending the 2xx at T1 doubling to T2 until the ACK comes, and giving up at
64*T1 (§13.3.1.4).  BYE, OPTIONS and CANCEL get 200, other methods 501.  Retransmitted requests
get the cached answer again (§17.2).  Unparseable datagrams are counted drops.

Each answered INVITE's dialog is the project's one model (``protocols.sip.dialog.Dialog``):
``as_uas`` from the 180 (EARLY; route set from Record-Route in order, remote target from the
caller's Contact, §12.1.1), then the 200 sent (WAIT_ACK), the ACK received (CONFIRMED), the BYE
received (TERMINATED) or 64*T1 without ACK (TIMEOUT), all through its table; its state is what
stops the 2xx retransmissions.  An in-dialog request out of CSeq order gets 500 (§12.2.2).  A
BYE for a dialog not held (the table is bounded by MAX_UAS_CACHE) still gets 200: the injector
measures the server, and its own bookkeeping limit must not show up as the server's 481s.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from loadtest.agents import UA
from loadtest.links import Link
from loadtest.sipmsg import SDP_OFFER
from loadtest.timers import TxnTimers
from protocols.sip.builders import make_response
from protocols.sip.dialog import Dialog, DialogId, DialogInput, DialogState
from protocols.sip.errors import RemoteProtocolError
from protocols.sip.message import NameAddr, Request, Response, SipURI
from protocols.sip.parser import parse_message
from protocols.sip.serializer import serialize
from protocols.sip.uri import parse_uri

__all__ = ["MAX_UAS_CACHE", "Uas", "UasStats"]

#: Requests answered by our UAS side whose responses we keep for retransmitted requests
#: (RFC 3261 §17.2): a few seconds' worth at full rate.
MAX_UAS_CACHE = 65_536


@dataclass(slots=True)
class UasStats:
    """Requests that reached our user agents as callees (via the server)."""

    requests: dict[str, int] = field(default_factory=dict)
    retransmissions_absorbed: int = 0
    ok_retransmitted: int = 0  # our 2xx re-sent while no ACK came (RFC 3261 §13.3.1.4)
    ack_timeouts: int = 0
    bad: int = 0  # unparseable datagrams: counted drops


class _UasDialog:
    """A callee's dialog (the shared model) and what re-sending its 2xx needs (§13.3.1.4)."""

    __slots__ = ("addr", "dialog", "interval", "link", "ok", "started")

    def __init__(self, dialog: Dialog, ok: bytes, link: Link, addr: Any, now: float,
                 t1: float) -> None:
        self.dialog = dialog
        self.ok = ok
        self.link = link
        self.addr = addr
        self.interval = t1
        self.started = now


class Uas:
    __slots__ = ("cache", "dialogs", "stats", "timers", "users")

    def __init__(self, users: dict[str, UA], timers: TxnTimers) -> None:
        self.users = users  # the UAs by user name, as the UAC creates them
        self.timers = timers
        self.stats = UasStats()
        self.dialogs: dict[str, _UasDialog] = {}
        self.cache: OrderedDict[tuple[str, str], bytes] = OrderedDict()

    def on_request(self, data: bytes, addr: Any, link: Link) -> None:
        try:
            req = parse_message(data)
        except RemoteProtocolError:
            self.stats.bad += 1
            return
        if not isinstance(req, Request):
            return
        st = self.stats
        st.requests[req.method] = st.requests.get(req.method, 0) + 1
        key = (req.vias[0].branch or "", req.method)
        cached = self.cache.get(key)
        if cached is not None:
            st.retransmissions_absorbed += 1
            link.reply(cached, addr)
            return
        if req.method == "ACK":
            ud = self._dialog_of(req)
            if ud is not None:
                ud.dialog.on_ack()  # §13.3.1.4: the 2xx retransmissions stop
            return
        out = serialize(self._answer(req, link, addr))
        self.cache[key] = out
        if len(self.cache) > MAX_UAS_CACHE:
            self.cache.popitem(last=False)
        link.reply(out, addr)

    def _answer(self, req: Request, link: Link, addr: Any) -> Response:
        tag = os.urandom(5).hex()
        if req.method == "INVITE":
            return self._answer_invite(req, link, tag, addr)
        if req.method == "BYE":
            ud = self._dialog_of(req)
            if ud is not None:
                if ud.dialog.check_remote_cseq(req) is not None:
                    return make_response(req, 500, to_tag=tag)  # §12.2.2: out of order
                ud.dialog.on_bye()
                del self.dialogs[req.call_id]
            return make_response(req, 200, to_tag=tag)
        if req.method in ("OPTIONS", "CANCEL"):
            return make_response(req, 200, to_tag=tag)
        return make_response(req, 501, to_tag=tag)

    def _answer_invite(self, req: Request, link: Link, tag: str, addr: Any) -> Response:
        user = req.uri.user if isinstance(req.uri, SipURI) else None
        ua = self.users.get(user or "")
        if ua is None:
            return make_response(req, 404, to_tag=tag)
        ringing = make_response(req, 180, to_tag=tag)
        try:
            dialog = Dialog.as_uas(req, ringing)  # EARLY, §12.1.1
        except RemoteProtocolError as exc:  # §8.1.1.8: no Contact, no dialog
            return make_response(req, exc.status or 400, exc.reason, to_tag=tag)
        # A real phone rings first; the 180 also stops the caller's INVITE retransmissions.
        link.reply(serialize(ringing), addr)
        resp = make_response(req, 200, to_tag=tag)
        # §12.1.1: the UAS copies Record-Route into the 2xx and gives its Contact.
        resp.record_routes = list(req.record_routes)
        resp.contacts = [NameAddr(parse_uri(ua.ident.contact.decode()))]
        resp.content_type = "application/sdp"
        resp.body = SDP_OFFER
        dialog.on_response_sent(resp)  # WAIT_ACK
        if len(self.dialogs) < MAX_UAS_CACHE:
            t1 = self.timers.t1
            # Only UDP re-sends the 2xx (as before the dialog model), so only UDP keeps its bytes.
            ok = b"" if ua.reliable else serialize(resp)
            ud = _UasDialog(dialog, ok, link, addr, time.monotonic(), t1)
            self.dialogs[req.call_id] = ud
            if not ua.reliable:
                self.timers.later(t1, self._retransmit_ok, (req.call_id, ud), None)
        return resp

    def _dialog_of(self, req: Request) -> _UasDialog | None:
        """The held dialog an in-dialog request belongs to (§12.2.2: Call-ID and both tags)."""
        ud = self.dialogs.get(req.call_id)
        if ud is None or DialogId.of_incoming_request(req) != ud.dialog.id:
            return None
        return ud

    def _retransmit_ok(self, arg: tuple[str, _UasDialog]) -> None:
        """§13.3.1.4: re-send the 2xx at T1 doubling to T2 until the ACK; give up at 64*T1."""
        call_id, ud = arg
        if ud.dialog.state is not DialogState.WAIT_ACK or self.dialogs.get(call_id) is not ud:
            return
        if time.monotonic() - ud.started >= self.timers.timeout:
            self.stats.ack_timeouts += 1
            ud.dialog.handle(DialogInput.TIMEOUT)
            self.dialogs.pop(call_id, None)
            return
        ud.link.reply(ud.ok, ud.addr)
        self.stats.ok_retransmitted += 1
        ud.interval = min(2 * ud.interval, self.timers.t2)
        self.timers.later(ud.interval, self._retransmit_ok, arg, None)
