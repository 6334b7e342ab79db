"""The injector's user agents and what they keep per request and per call.

Plain records with ``__slots__`` (hundreds of thousands of them live at once in a storm): a UA
(identity, link, REGISTER state), a client transaction (RFC 3261 §17.1) and the caller side of
a dialog (§12.1.2).  The logic that drives them is in ``uac``, ``uas`` and ``timers``.
"""

from __future__ import annotations

import os

from loadtest.clienttxn import TxnState
from loadtest.links import Link
from loadtest.metrics import KindStats
from loadtest.sipmsg import Identity, UaTemplates
from loadtest.trace import Call, Event, Register

__all__ = ["DEFAULT_EXPIRES", "UA", "Dialog", "QueuedRegister", "Txn"]

#: Default Expires of a UA's REGISTER: RFC 3261 §10.2.1.1 suggests an hour.
DEFAULT_EXPIRES = 3600

#: A REGISTER waiting for the UA's previous one: (stats, expires, event, attempt, lose, second).
QueuedRegister = tuple[KindStats, int, Register | None, int, bool, int]


class UA:
    __slots__ = ("failures", "from_tag", "ident", "link", "reg_call_id", "reg_cseq", "reg_next",
                 "reg_txn", "reliable", "tpl")

    def __init__(self, ident: Identity, link: Link, reliable: bool) -> None:
        rnd = os.urandom(6).hex().encode()
        self.ident = ident
        self.link = link
        self.reliable = reliable
        self.reg_call_id = b"r" + rnd + b"@storm"
        self.from_tag = rnd
        self.reg_cseq = 0
        self.failures = 0
        # RFC 3261 §10.2: no new REGISTER before the previous one is answered or timed out; the
        # latest one due meanwhile waits here (an older waiting one is superseded by it).
        self.reg_txn: Txn | None = None
        self.reg_next: QueuedRegister | None = None
        self.tpl = UaTemplates(ident, self.reg_call_id, self.from_tag, DEFAULT_EXPIRES)


class Txn:
    __slots__ = ("attempt", "branch", "data", "dialog", "event", "invite", "second", "state",
                 "stats", "t0", "ua")

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
        self.dialog: Dialog | None = None


class Dialog:
    """Caller side of a call (RFC 3261 §12.1.2, §13.2.2.4, §15.1.1)."""

    __slots__ = ("ack", "call_id", "event", "from_tag", "hold", "remote_target", "routes",
                 "ruri", "to", "ua", "up")

    def __init__(self, ua: UA, event: Call, ruri: bytes, to: bytes) -> None:
        self.ua = ua
        self.event = event
        self.call_id = os.urandom(8).hex().encode() + b"@storm"
        self.from_tag = os.urandom(5).hex().encode()
        self.ruri = ruri
        self.to = to
        self.remote_target = ruri
        self.routes: list[bytes] = []
        self.hold = event.hold
        self.ack = b""
        self.up = False  # established and not yet over: counted in the calls in progress
