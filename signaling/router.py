"""The transaction user of a node: REGISTER to the registrar, everything else to the proxy.

RFC 3261 §16 lets a proxy and a registrar share one address; which one answers a new request
is decided by its method alone (§10.3: a REGISTER is the registrar's whatever its
Request-URI).  ACK, CANCEL and stray responses only ever concern transactions the proxy
created, so they go to it.
"""

from __future__ import annotations

from collections.abc import Awaitable

from protocols.sip.message import Request, Response
from signaling.proxy import Proxy
from signaling.registrar import Registrar
from signaling.sipcore import Peer, Work

__all__ = ["Router"]


class Router:
    """A ``TransactionUser`` made of the registrar and the proxy."""

    def __init__(self, registrar: Registrar, proxy: Proxy) -> None:
        self.registrar = registrar
        self.proxy = proxy

    def handle(self, work: Work) -> Awaitable[None]:
        if work.request.method == "REGISTER":
            return self.registrar.handle(work)
        return self.proxy.handle(work)

    def on_ack(self, ack: Request, peer: Peer) -> None:
        self.proxy.on_ack(ack, peer)

    def on_cancel(self, cancel: Request, peer: Peer, now: float) -> bool:
        return self.proxy.on_cancel(cancel, peer, now)

    def on_stray_response(self, response: Response, peer: Peer) -> None:
        self.proxy.on_stray_response(response, peer)
