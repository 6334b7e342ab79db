"""The injector's user agents and what they keep per request and per call.

Plain records with ``__slots__`` (hundreds of thousands of them live at once in a storm): a UA
(identity, link, REGISTER state), a client transaction (RFC 3261 §17.1) and the caller side of
a call (§13.2.1), whose dialog, once a 2xx creates it, is the project's one dialog model
(``protocols.sip.dialog.Dialog``, §12.1.2).  The logic that drives them is in ``uac``, ``uas``
and ``timers``.
"""

from __future__ import annotations

import os

from loadtest.clienttxn import TxnState
from loadtest.links import Link
from loadtest.metrics import KindStats
from loadtest.sipmsg import INVITE_CSEQ, DialogParts, Identity, UaTemplates, dialog_parts
from loadtest.trace import Call, Event, Register
from protocols.sip.dialog import Dialog
from protocols.sip.message import NameAddr, Response
from protocols.sip.uri import parse_uri

__all__ = ["DEFAULT_EXPIRES", "UA", "Caller", "QueuedRegister", "Txn"]

#: Default Expires of a UA's REGISTER: RFC 3261 §10.2.1.1 suggests an hour.
DEFAULT_EXPIRES = 3600

#: A REGISTER waiting for the UA's previous one: (stats, expires, event, attempt, lose, second).
QueuedRegister = tuple[KindStats, int, Register | None, int, bool, int]


class UA:
    __slots__ = ("bound", "failures", "from_tag", "ident", "link", "reg_call_id", "reg_cseq",
                 "reg_next", "reg_txn", "reliable", "tpl")

    def __init__(self, ident: Identity, link: Link, reliable: bool) -> None:
        rnd = os.urandom(6).hex().encode()
        self.ident = ident
        self.link = link
        self.reliable = reliable
        self.reg_call_id = b"r" + rnd + b"@storm"
        self.from_tag = rnd
        self.reg_cseq = 0
        self.failures = 0
        self.bound = False  # a REGISTER of this UA was answered 2xx (its binding exists)
        # RFC 3261 §10.2: no new REGISTER before the previous one is answered or timed out; the
        # latest one due meanwhile waits here (an older waiting one is superseded by it).
        self.reg_txn: Txn | None = None
        self.reg_next: QueuedRegister | None = None
        self.tpl = UaTemplates(ident, self.reg_call_id, self.from_tag, DEFAULT_EXPIRES)


class Txn:
    __slots__ = ("attempt", "branch", "caller", "data", "event", "invite", "plain", "rounds",
                 "second", "state", "stats", "t0", "ua")

    def __init__(self, ua: UA, stats: KindStats, branch: bytes, data: bytes, now: float,
                 second: int, event: Event | None, attempt: int, invite: bool) -> None:
        self.ua = ua
        self.stats = stats
        self.branch = branch
        self.data = data
        self.t0 = now
        self.second = second
        self.event = event
        self.attempt = attempt
        self.invite = invite
        self.state = TxnState.CALLING
        self.caller: Caller | None = None  # the call an INVITE or BYE belongs to
        # The request without credentials, and the challenges answered on the way to this
        # one (loadtest.auth): a re-sent request is rebuilt from it.
        self.plain = data
        self.rounds = 0


class Caller:
    """Caller side of a call (RFC 3261 §13.2.1, §13.2.2.4, §15.1.1).

    Until a 2xx arrives this is only the INVITE's parts (Call-ID, From tag, Request-URI, To);
    the 2xx creates ``dialog``, the shared model, which from then on decides the route set,
    the remote target (``request_target()``, strict routers included) and the state.  Its
    target is rendered into ``parts`` once: the route set never changes once the dialog
    exists (§12.2), and the remote target only by a target refresh (§12.2.1.2), which the
    injector neither sends nor accepts; the ACK and the BYE then cost a concatenation each.  Early
    dialogs (§12.1.2, a 1xx with a To tag) are not created: the injector never sends within
    one, and parsing every 180 would cost the hot path a full parse.
    """

    __slots__ = ("ack", "call_id", "cseq", "dialog", "event", "from_tag", "hold", "parts", "ruri",
                 "to", "ua", "up")

    def __init__(self, ua: UA, event: Call, ruri: bytes, to: bytes) -> None:
        self.ua = ua
        self.event = event
        self.call_id = os.urandom(8).hex().encode() + b"@storm"
        self.from_tag = os.urandom(5).hex().encode()
        self.ruri = ruri
        self.to = to
        self.cseq = INVITE_CSEQ  # one higher for an INVITE re-sent with credentials (§8.1.3.5)
        self.hold = event.hold
        self.dialog: Dialog | None = None
        #: The ACK's and BYE's bytes but method, branch and CSeq number, rendered once from the
        #: model's request_target() when the 2xx creates the dialog.
        self.parts: DialogParts = (b"", b"")
        self.ack = b""  # the ACK of the 2xx, re-sent for each 2xx retransmission (§13.2.2.4)
        self.up = False  # established and not yet over: counted in the calls in progress

    def establish(self, response: Response) -> Dialog:
        """The dialog the 2xx ``response`` creates (§12.1.2: route set from Record-Route
        reversed, remote target from Contact), in the shared model, from the parts of our
        INVITE it keeps (From with its tag, Request-URI, CSeq number): the INVITE was rendered
        from a template and is not parsed back.  The URIs come from the parser's cache, as the
        same users call again and again."""
        local = NameAddr(parse_uri(self.ua.ident.aor.decode()),
                         params={"tag": self.from_tag.decode()})
        self.dialog = Dialog.as_uac_of(local, parse_uri(self.ruri.decode(), request_uri=True),
                                       self.cseq, response)
        self.parts = dialog_parts(self.ua.ident, self.dialog)
        return self.dialog
