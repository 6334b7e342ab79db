"""What the proxy keeps per proxied request: its context and its branches (RFC 3261 §16.6).

A context lives as long as its server transaction: 32 s past the answer on UDP (Timer L after a
2xx, J after a BYE's 200, H after a non-2xx), so 2xx retransmissions are still relayed
(§16.7 step 5) and CANCELs and late finals absorbed.  For that tail it needs only the server
transaction, the dialog, the flags and, per branch, that a final came and where it went.  The
parsed requests (the original and one copy per branch) and the branches' final responses were
most of the ~17 kB a call attempt held in the server (issue 20 item 5), so once the answer went
upstream and every branch has its final, ``Context.settle`` releases them; the few facts later
relays read (the method, whether the request creates a dialog, the To tag a tag-less final
gets) are kept as plain values.  Reading ``request`` after that is a bug and raises.
"""

from __future__ import annotations

from collections.abc import Callable

from protocols.sip.message import Request, Response
from protocols.sip.summary import ResponseSummary
from protocols.sip.transaction import ClientTransaction, ServerTransaction
from signaling.dialogs import ProxyDialog
from signaling.transports.base import Peer

__all__ = ["Branch", "Context"]


class Branch:
    """One forked copy of the request: its client transaction and what came back."""

    __slots__ = ("_request", "cancel_pending", "cancelled", "ctx", "final", "flows", "peer",
                 "provisional", "txn", "udp")

    def __init__(self, ctx: Context, request: Request, peer: Peer) -> None:
        self.ctx = ctx
        self._request: Request | None = request
        self.peer = peer
        self.txn: ClientTransaction | None = None
        #: The branch's final response; a summary once the context is settled.
        self.final: Response | ResponseSummary | None = None
        self.provisional = False
        self.cancel_pending = False
        self.cancelled = False
        #: The copy for UDP and its peer when this branch went over TCP only for its size
        #: (§18.1.1): what to retry with if the TCP connection is refused.
        self.udp: tuple[Request, Peer] | None = None
        #: The copies for the other flows of this branch's instance, in order (RFC 5626
        #: §5.3): the next replaces this branch when it answers 430 or cannot be sent.
        self.flows: list[tuple[Request, Peer]] = []

    @property
    def request(self) -> Request:
        """The copy sent on this branch (read for its CANCEL, §9.1, before its final)."""
        if self._request is None:
            raise RuntimeError("branch request read after its context settled")
        return self._request


class Context:
    """One proxied request: its server transaction and its branches (§16.6)."""

    __slots__ = ("_request", "best", "branches", "cancelled", "creates_dialog", "dialog",
                 "done", "method", "settled", "started", "tag", "txn")

    def __init__(self, txn: ServerTransaction, request: Request, now: float) -> None:
        self.txn = txn
        self._request: Request | None = request
        self.method = request.method
        #: An INVITE outside a dialog: its answer is the call's outcome.
        self.creates_dialog = request.method == "INVITE" and request.to.tag is None
        self.branches: list[Branch] = []
        self.best: Response | None = None
        self.dialog: ProxyDialog | None = None
        self.done = False  # a final response went upstream
        self.cancelled = False
        self.settled = False
        #: The To tag of a final sent upstream without one (§8.2.6.2), kept when settled.
        self.tag: str | None = None
        self.started = now

    @property
    def request(self) -> Request:
        """The request as received; read until the context settles (see the module doc)."""
        if self._request is None:
            raise RuntimeError("context request read after it settled")
        return self._request

    def settle(self, stateless_tag: Callable[[Request], str]) -> bool:
        """Release the parsed messages once the answer went upstream and every branch has its
        final; ``stateless_tag`` gives the To tag a later tag-less final gets.  True if done.
        Called again after a settled context relayed a 2xx retransmission, it summarises
        that response too."""
        request = self._request
        if request is not None:
            if not self.done or any(b.final is None for b in self.branches):
                return False
            self.settled = True
            self.tag = stateless_tag(request)
            self._request = None
            self.best = None
        for b in self.branches:
            b._request = None
            final = b.final
            if isinstance(final, Response):
                b.final = ResponseSummary.of(final)
        return True
