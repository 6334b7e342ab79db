"""The proxy's record of each dialog it routes, and the bounded table that holds them.

A stateful, record-routing proxy sees every message of a dialog it created the route for
(RFC 3261 §16.6 step 4, §12.1).  Each INVITE through the proxy gets a ``ProxyDialog`` that moves
through the project's one dialog table (``protocols.sip.dialog.TABLE``, the h2 model: a pair
that is not listed is an error, never a silent fall-through), from INITIAL: the proxy keeps no
route set or target of its own, only what routing both ways needs.  Forked early dialogs
(several 1xx with different To tags, §12.1.2) are tracked as a set of tags until one 2xx picks
the confirmed one.

Memory: a dialog keeps only what routing and a server-initiated BYE need, as plain strings and
two interned ``Peer`` references, in one index: ~0.95 KB per dialog marginal, ~1.3 KB of
process RSS per dialog with 100,000 held (benchmarks/bench_dialogs_memory.py).  The table
is bounded (``max_dialogs``; full means 503 for a new INVITE).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import msgspec

from protocols.deadlines import DeadlineHeap
from protocols.sip.dialog import DialogError, DialogInput, DialogState, advance
from signaling.transports.base import Peer

__all__ = [
    "DialogError",
    "DialogInfo",
    "DialogInput",
    "DialogState",
    "DialogTable",
    "DialogTableFull",
    "ProxyDialog",
    "dialog_key",
    "intern_peer",
]


#: Stale heap entries tolerated beyond the live dialogs before a compaction: small tables
#: never bother compacting.
HEAP_SLACK = 1024
#: Distinct peer addresses kept interned (``intern_peer``): far more than the phones and
#: gateways one node talks to at a time; bounded so a spray of source ports cannot grow it.
MAX_INTERNED_PEERS = 65_536

class DialogTableFull(Exception):
    """``max_dialogs`` reached: the new INVITE is answered 503 + Retry-After."""


class DialogInfo(msgspec.Struct, frozen=True):
    """The read-only view of a dialog for the admin API."""

    id: str
    call_id: str
    state: str
    caller: str
    callee: str
    from_tag: str
    to_tag: str
    created_at: float
    answered_at: float | None


class _PeerState(msgspec.Struct, array_like=True, frozen=True):
    transport: str
    host: str
    port: int
    conn_id: str | None


class _Snapshot(msgspec.Struct, array_like=True, frozen=True):
    """What another node needs to route the dialog's in-dialog requests (issue: fail-over)."""

    call_id: str
    caller_tag: str
    callee_tag: str
    caller: str
    callee: str
    caller_contact: str
    callee_contact: str
    caller_peer: _PeerState
    callee_peer: _PeerState | None
    caller_cseq: int
    created_at: float
    answered_at: float | None


def _peer_state(p: Peer) -> _PeerState:
    return _PeerState(p.transport, p.host, p.port, p.conn_id)


def dialog_key(call_id: str, caller_tag: str) -> str:
    """A dialog's id: what both directions of an in-dialog request can name (see DialogTable)."""
    return f"{call_id};{caller_tag}"


_peers: dict[Peer, Peer] = {}


def intern_peer(peer: Peer) -> Peer:
    """One ``Peer`` object per address: 100,000 calls from the same phone or gateway share it
    instead of holding 100,000 copies (~150 bytes each with the host string)."""
    found = _peers.get(peer)
    if found is not None:
        return found
    if len(_peers) >= MAX_INTERNED_PEERS:
        _peers.clear()  # a churn of addresses: start over rather than grow
    _peers[peer] = peer
    return peer


class ProxyDialog:
    """One INVITE dialog through the proxy (see the module docstring)."""

    __slots__ = (
        "answered_at", "call_id", "callee", "callee_contact", "callee_peer", "callee_tag",
        "caller", "caller_contact", "caller_cseq", "caller_peer", "caller_tag", "created_at",
        "deadline", "early_tags", "ended_at", "ended_by", "final_status", "id", "state",
    )

    def __init__(self, dialog_id: str, call_id: str, caller_tag: str, caller: str, callee: str,
                 caller_peer: Peer, caller_contact: str, caller_cseq: int, now: float,
                 wall: float, deadline: float) -> None:
        self.id = dialog_id
        self.call_id = call_id
        self.caller_tag = caller_tag
        self.callee_tag = ""
        self.caller = caller            # From header text, tag included
        self.callee = callee            # To header text (tag added when answered)
        self.caller_peer = intern_peer(caller_peer)
        self.callee_peer: Peer | None = None
        self.caller_contact = caller_contact
        self.callee_contact = ""
        self.caller_cseq = caller_cseq
        self.created_at = wall
        self.answered_at: float | None = None
        self.ended_at: float | None = None
        self.ended_by = ""
        self.final_status = 0
        self.early_tags: set[str] | None = None
        self.state = DialogState.INITIAL
        self.deadline = deadline

    def handle(self, inp: DialogInput) -> DialogState:
        """Move through ``protocols.sip.dialog.TABLE``; ``DialogError`` if not allowed."""
        self.state = advance(self.state, inp)
        return self.state

    def snapshot(self) -> bytes:
        return msgspec.msgpack.encode(_Snapshot(
            self.call_id, self.caller_tag, self.callee_tag, self.caller, self.callee,
            self.caller_contact, self.callee_contact, _peer_state(self.caller_peer),
            _peer_state(self.callee_peer) if self.callee_peer is not None else None,
            self.caller_cseq, self.created_at, self.answered_at))

    @classmethod
    def restore(cls, data: bytes, now: float) -> ProxyDialog:
        """A confirmed dialog from ``snapshot`` bytes; ``ValueError`` if they are not one."""
        try:
            s = msgspec.msgpack.decode(data, type=_Snapshot)
        except msgspec.DecodeError as exc:
            raise ValueError(str(exc)) from None
        caller_peer = Peer(s.caller_peer.transport, s.caller_peer.host, s.caller_peer.port,
                           s.caller_peer.conn_id)
        d = cls(dialog_key(s.call_id, s.caller_tag), s.call_id, s.caller_tag, s.caller, s.callee,
                caller_peer, s.caller_contact, s.caller_cseq, now, s.created_at, now)
        if s.callee_peer is not None:
            d.callee_peer = intern_peer(Peer(s.callee_peer.transport, s.callee_peer.host,
                                             s.callee_peer.port, s.callee_peer.conn_id))
        d.callee_tag = s.callee_tag
        d.callee_contact = s.callee_contact
        d.answered_at = s.answered_at
        d.state = DialogState.CONFIRMED
        return d

    def info(self) -> DialogInfo:
        return DialogInfo(self.id, self.call_id, self.state.name.lower(), self.caller,
                          self.callee, self.caller_tag, self.callee_tag, self.created_at,
                          self.answered_at)


class DialogTable:
    """Dialogs by id, bounded, with one deadline heap.

    A dialog's id is ``dialog_key(Call-ID, caller's tag)``.  An in-dialog request carries the
    caller's tag in From (caller to callee) or in To (callee to caller), so one dict keyed by
    that id finds the dialog from either direction: no second index (memory: issue 4 wants
    <= 2 KB per dialog, and a second dict with tuple keys cost ~150 bytes of it).
    """

    def __init__(self, max_dialogs: int) -> None:
        self.max_dialogs = max_dialogs
        self._by_id: dict[str, ProxyDialog] = {}
        #: One deadline per dialog (ring timeout, maximum duration, linger end).
        self._deadlines: DeadlineHeap[ProxyDialog] = DeadlineHeap(HEAP_SLACK)
        #: Set by the proxy: ends a dialog with BYE to both sides.
        self.on_terminate: Callable[[ProxyDialog], bool] | None = None

    def __len__(self) -> int:
        return len(self._by_id)

    def add(self, dialog: ProxyDialog) -> None:
        if dialog.id != dialog_key(dialog.call_id, dialog.caller_tag):
            raise ValueError(f"dialog id {dialog.id!r} is not dialog_key(Call-ID, caller tag)")
        if len(self._by_id) >= self.max_dialogs:
            raise DialogTableFull(f"{self.max_dialogs} dialogs")
        self._by_id[dialog.id] = dialog
        self.schedule(dialog)

    def schedule(self, dialog: ProxyDialog) -> None:
        """(Re)schedule ``dialog`` at its ``deadline``; an earlier deadline is forgotten."""
        self._deadlines.push(dialog, dialog.deadline)

    def remove(self, dialog: ProxyDialog) -> None:
        # Only this very dialog: a newer one with the same key (an INVITE that looped back
        # through us, §16.3 step 4) stays.
        if self._by_id.get(dialog.id) is dialog:
            del self._by_id[dialog.id]
        self._deadlines.cancel(dialog)

    def find(self, call_id: str, from_tag: str | None, to_tag: str | None) -> ProxyDialog | None:
        d = self._by_id.get(dialog_key(call_id, from_tag or ""))
        if d is None and to_tag:
            d = self._by_id.get(dialog_key(call_id, to_tag))
        return d

    def due(self, now: float) -> list[ProxyDialog]:
        """Dialogs whose deadline passed (ring timeout, maximum duration, linger end); they
        are no longer scheduled until the proxy schedules them again."""
        by_id = self._by_id
        return [d for d in self._deadlines.pop_due(now) if by_id.get(d.id) is d]

    def counts_by_state(self) -> dict[str, int]:
        counts = {s.name.lower(): 0 for s in DialogState}
        for d in self._by_id.values():
            counts[d.state.name.lower()] += 1
        return counts

    def list(self, offset: int = 0, limit: int = 100) -> list[DialogInfo]:
        items = itertools.islice(self._by_id.values(), offset, offset + limit)
        return [d.info() for d in items]

    def by_id(self, dialog_id: str) -> ProxyDialog | None:
        return self._by_id.get(dialog_id)

    def get(self, dialog_id: str) -> DialogInfo | None:
        d = self._by_id.get(dialog_id)
        return None if d is None else d.info()

    async def terminate(self, dialog_id: str) -> bool:
        """End a dialog from the server: BYE to both sides (admin API).  False if unknown."""
        d = self._by_id.get(dialog_id)
        if d is None or self.on_terminate is None:
            return False
        return self.on_terminate(d)
