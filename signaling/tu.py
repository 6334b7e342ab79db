"""What the SIP core hands to the layer above it (RFC 3261 §17: the transaction user), and
the work items it hands over (and the TU of a core without one): the interface between
``signaling.sipcore`` and the registrar and proxy (``signaling.router.Router``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

import msgspec

from protocols.sip.builders import make_response
from protocols.sip.message import Request, Response
from protocols.sip.transaction import Event, ServerTransaction, Transaction
from signaling.transports.base import Peer

if TYPE_CHECKING:  # the core imports this module, not the other way round
    from signaling.sipcore import SipCore

__all__ = ["NoTransactionUser", "TransactionUser", "TxnCallback", "Work"]


class Work(msgspec.Struct):
    """A new request handed to a worker with the server transaction that answers it.  A
    struct, not a dataclass: one per new request, and its ``__init__`` is C, not Python
    (~0.9k instructions per REGISTER, ``bench_auth_legs``)."""

    request: Request
    txn: ServerTransaction
    peer: Peer
    #: ``time.monotonic()`` when it was read: its sojourn in the worker queue is measured from
    #: there (the wait in the kernel before that is ``overload``'s separate gate).
    arrived: float = 0.0


#: Where a transaction's events go (``start_client_transaction``, ``observe``).
TxnCallback = Callable[[Transaction, Event], None]


class TransactionUser(Protocol):
    """What the core hands to the layer above it (RFC 3261 §17: the TU): the registrar and
    the proxy implement it, behind ``signaling.router.Router``."""

    def handle(self, work: Work) -> Awaitable[None]:
        """A new request, in a worker; it must end up answered through ``SipCore.respond``."""
        ...

    def on_ack(self, ack: Request, peer: Peer) -> None:
        """An ACK matching no transaction: the ACK for a 2xx (§17.1.1.3, §16.11)."""
        ...

    def on_cancel(self, cancel: Request, peer: Peer, now: float) -> bool:
        """A CANCEL; True when it matched something and was answered (§9.2, §16.10)."""
        ...

    def on_stray_response(self, response: Response, peer: Peer) -> None:
        """A response matching no client transaction (§16.7 step 9 / §18.1.2)."""
        ...

    def answer_statelessly(self, request: Request, peer: Peer) -> bool:
        """A new request the TU can answer without a transaction (a REGISTER without
        credentials gets its 401, signaling.auth.policy); True when it did."""
        ...

    def holds(self, request: Request) -> bool:
        """Whether a request with a To tag belongs to a dialog this node holds: only such
        work goes ahead of new requests and is never refused (issue 13)."""
        ...

    def answers_itself(self, request: Request) -> bool:
        """A request the TU answers as a UAS, never forwards (the registrar's REGISTERs):
        it needs no server transaction of its own (``signaling.streamanswer``)."""
        ...

    def handle_own(self, work: Work) -> Awaitable[None]:
        """``handle`` for work ``answers_itself`` said yes to: the core asked already, so
        the TU goes straight to what answers it, without asking again."""
        ...


class NoTransactionUser:
    """The TU of a core that has none (before ``start``, or a bare core in tests): new
    requests get 501 (§8.2.1), everything else is dropped and counted."""

    def __init__(self, core: SipCore) -> None:
        self.core = core

    async def handle(self, work: Work) -> None:
        req = work.request
        self.core.respond(work.txn, make_response(req, 501, to_tag=self.core.stateless_tag(req)))

    def on_ack(self, ack: Request, peer: Peer) -> None:
        self.core.c_drop.inc("stray_ack")

    def on_cancel(self, cancel: Request, peer: Peer, now: float) -> bool:
        return False

    def on_stray_response(self, response: Response, peer: Peer) -> None:
        self.core.c_drop.inc("stray_response")

    def answer_statelessly(self, request: Request, peer: Peer) -> bool:
        return False

    def holds(self, request: Request) -> bool:
        return False

    def answers_itself(self, request: Request) -> bool:
        return False

    def handle_own(self, work: Work) -> Awaitable[None]:
        return self.handle(work)
