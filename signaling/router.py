"""The transaction user of a node: REGISTER to the registrar, everything else to the proxy.

RFC 3261 §16 lets a proxy and a registrar share one address; which one answers a new request
is decided by its method: a REGISTER is the registrar's, unless it is for a domain not
served here and the proxy relays it (§10.3 step 1: forwarded as a proxy; ``signaling.edge``).
ACK, CANCEL and stray responses only ever concern transactions the proxy created, so they go
to it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from protocols.sip.message import Request, Response
from signaling.proxy import Proxy
from signaling.registrar import Registrar
from signaling.sipcore import Peer, Work

if TYPE_CHECKING:  # imported by the server only when tracing is on
    from signaling.tracing import Tracing

__all__ = ["Router"]


class Router:
    """A ``TransactionUser`` made of the registrar and the proxy."""

    def __init__(self, registrar: Registrar, proxy: Proxy,
                 tracer: Tracing | None = None) -> None:
        self.registrar = registrar
        self.proxy = proxy
        #: A registration span around the registrar's work when tracing is on; the registrar
        #: itself knows nothing of tracing.
        self.tracer = tracer
        #: A REGISTER ``answers_itself`` took for the registrar (the core asks that first, then
        #: hands it here): the registrar's method itself when untraced, no call of ours around.
        self.handle_own: Callable[[Work], Awaitable[None]] = (
            registrar.handle if tracer is None else self._traced_register)

    def answers_itself(self, request: Request) -> bool:
        """A REGISTER for the registrar, not one the edge relays (``Edge.relays``)."""
        return request.method == "REGISTER" and not self.proxy.edge.relays(request)

    def handle(self, work: Work) -> Awaitable[None]:
        if self.answers_itself(work.request):
            return self.handle_own(work)
        return self.proxy.handle(work)

    async def _traced_register(self, work: Work) -> None:
        assert self.tracer is not None
        start = time.time_ns()
        try:
            await self.registrar.handle(work)
        finally:
            last = work.txn.last_response
            self.tracer.registration(work.request, work.peer,
                                     last.status if last is not None else 500, start)

    def on_ack(self, ack: Request, peer: Peer) -> None:
        self.proxy.on_ack(ack, peer)

    def on_cancel(self, cancel: Request, peer: Peer, now: float) -> bool:
        return self.proxy.on_cancel(cancel, peer, now)

    def on_stray_response(self, response: Response, peer: Peer) -> None:
        self.proxy.on_stray_response(response, peer)

    def answer_statelessly(self, request: Request, peer: Peer) -> bool:
        auth = self.registrar.auth  # the registrar's: an early 401 is for REGISTER only
        return auth is not None and auth.challenge_early(request, peer)

    def holds(self, request: Request) -> bool:
        return self.proxy.holds(request)  # dialogs are the proxy's: the registrar holds none
