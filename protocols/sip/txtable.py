"""The bounded table of live SIP transactions, sans-I/O (RFC 3261 §17.1.3, §17.2.3).

``TransactionTable`` matches messages to transactions by their keys (txkeys.py, with the RFC
2543 fallback), is bounded, removes terminated transactions and keeps one heap of deadlines so
the I/O layer re-arms a single asyncio timer from ``next_deadline()`` and calls
``fire_due(now)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from protocols.deadlines import DeadlineHeap

from .errors import SipError, TransactionError
from .message import Request, Response
from .transaction import (
    ClientTransaction,
    Event,
    InviteServerTransaction,
    ServerTransaction,
    State,
    Transaction,
)
from .txkeys import TransactionKey, cancel_target_key, client_key, server_key

__all__ = ["HEAP_SLACK", "MAX_TRANSACTIONS", "TransactionTable", "TransactionTableFull"]

#: ``State.TERMINATED`` read once (an enum class attribute lookup is costly in 3.11).
_TERMINATED_ST = State.TERMINATED

#: Live transactions per table.  A non-INVITE server transaction lives 64*T1 = 32 s after its
#: final response on UDP (Timer J), so 262,144 holds a sustained ~8,000 transactions/s per
#: process with room to spare, at roughly 1-2 KiB each (messages included) well under 1 GiB.
#: Past it a new request must be answered 503 by the caller, not grow memory without bound.
MAX_TRANSACTIONS = 262_144

#: Stale heap entries (a deadline that moved or a transaction already gone) tolerated beyond
#: the live ones before the heap is rebuilt (protocols/deadlines.py), so it stays O(live)
#: without rebuilding on every small burst.
HEAP_SLACK = 4096


class TransactionTableFull(SipError):
    """MAX_TRANSACTIONS reached: answer the new request 503 (or refuse to send) and count it."""


class TransactionTable:
    """Live transactions by key, plus one heap of their deadlines.

    Transactions added here report back after every input (``handle``), so the table follows
    their deadlines and drops them when they terminate; the I/O layer only arms one timer at
    ``next_deadline()`` and calls ``fire_due(now)`` when it expires.
    """

    __slots__ = ("_clients", "_deadlines", "_servers", "max_size", "next_deadline")

    def __init__(self, max_size: int = MAX_TRANSACTIONS) -> None:
        self.max_size = max_size
        self._servers: dict[TransactionKey, ServerTransaction] = {}
        self._clients: dict[TransactionKey, ClientTransaction] = {}
        #: The earliest timer of each transaction that has one (the project's one heap).
        self._deadlines: DeadlineHeap[Transaction] = DeadlineHeap(HEAP_SLACK)
        #: The earliest deadline of any live transaction, or ``None``: the heap's own method,
        #: not a method of the table calling it (the core re-arms its timer from it after
        #: every transaction event, ~9 times per proxied call: one Python call less each).
        self.next_deadline: Callable[[], float | None] = self._deadlines.next_deadline

    def __len__(self) -> int:
        return len(self._servers) + len(self._clients)

    def __iter__(self) -> Iterator[Transaction]:
        yield from self._servers.values()
        yield from self._clients.values()

    def add(self, txn: Transaction) -> None:
        """Track ``txn``.  Raises ``TransactionTableFull`` or, for a taken key, TransactionError."""
        if len(self._servers) + len(self._clients) >= self.max_size:
            raise TransactionTableFull(f"{self.max_size} transactions live")
        if txn.state is _TERMINATED_ST or txn._owner is not None:
            raise TransactionError(f"cannot add {txn!r}")
        table: dict[TransactionKey, ServerTransaction] | dict[TransactionKey, ClientTransaction]
        table = self._servers if isinstance(txn, ServerTransaction) else self._clients
        if txn.key in table:
            raise TransactionError(f"transaction key already in use: {txn.key!r}")
        table[txn.key] = txn  # type: ignore[assignment]
        txn._owner = self
        if txn._timers:  # a new server transaction has none yet: nothing to schedule
            self._reschedule(txn)

    def remove(self, txn: Transaction) -> None:
        """Forget ``txn`` (done automatically when it terminates)."""
        table: dict[TransactionKey, ServerTransaction] | dict[TransactionKey, ClientTransaction]
        table = self._servers if isinstance(txn, ServerTransaction) else self._clients
        if table.get(txn.key) is txn:
            del table[txn.key]
        txn._owner = None
        self._deadlines.cancel(txn)

    def find_server(self, request: Request) -> ServerTransaction | None:
        """The server transaction ``request`` belongs to (§17.2.3), if any."""
        key = server_key(request)
        if key is None:
            return None
        return self.find_server_by_key(key, request)

    def find_server_by_key(self, key: TransactionKey, request: Request
                           ) -> ServerTransaction | None:
        """``find_server`` for a caller that computed ``key = server_key(request)`` already
        (to create the transaction with it when nothing matches)."""
        txn = self._servers.get(key)
        if txn is not None and key[0] == "2543" and not txn.matches_to_tag(request):
            return None
        return txn

    def find_cancel_target(self, cancel: Request) -> InviteServerTransaction | None:
        """The INVITE server transaction a CANCEL refers to (§9.2), if any."""
        key = cancel_target_key(cancel)
        txn = self._servers.get(key) if key is not None else None
        if not isinstance(txn, InviteServerTransaction):
            return None
        if key is not None and key[0] == "2543" and not txn.matches_to_tag(cancel):
            return None
        return txn

    def find_client(self, response: Response) -> ClientTransaction | None:
        """The client transaction ``response`` belongs to (§17.1.3), if any."""
        key = client_key(response)
        return self._clients.get(key) if key is not None else None

    # -- deadlines ---------------------------------------------------------------------------

    def _reschedule(self, txn: Transaction) -> None:
        if txn.state is _TERMINATED_ST:
            self.remove(txn)
            return
        timers = txn._timers
        if timers:
            self._deadlines.push(txn, min(timers.values()))
        else:
            self._deadlines.cancel(txn)

    def fire_due(self, now: float) -> list[tuple[Transaction, list[Event]]]:
        """Fire every due timer of every transaction; the events of each, in deadline order."""
        fired: list[tuple[Transaction, list[Event]]] = []
        for txn in self._deadlines.pop_due(now):
            events = txn.on_timer(now)
            if txn._owner is self:
                self._reschedule(txn)  # on_timer may have fired nothing (equal deadlines)
            if events:
                fired.append((txn, events))
        return fired

    def heap_size(self) -> int:
        """Entries in the deadline heap, stale ones included (bounded by compaction)."""
        return self._deadlines.heap_size()
