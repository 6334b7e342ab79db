"""The in-memory registry: the embedded default for a single process.

Atomicity comes for free: no method awaits between reading and writing, so one REGISTER is applied
in one step of the event loop.  Costs: ``register``/``lookup``/``remove_binding`` are O(bindings
of the AOR) + O(log n) for the expiry heap; ``expire`` pops the heap, O(log n) per binding.

The expiry heap uses lazy deletion: a refresh pushes a new entry and leaves the old one, which the
sweeper recognises as stale (its time no longer matches the binding).  The heap is rebuilt when
stale entries outnumber live ones, so it stays within twice the live size.

Memory is bounded by a budget (``max_bytes``, ``--binding-memory``), not only by counts: each
binding is charged ``binding_cost`` (a measured fixed part plus the length of every string it
keeps) and each AOR ``aor_cost``; a REGISTER that would take the total past the budget is
refused with ``RegistryFull`` (503 + Retry-After) and leaves nothing behind, while refreshes
that do not grow the total and removals always pass.  The fixed parts are measured by
``benchmarks/bench_binding_memory.py`` and pinned by a test (tracemalloc never exceeds the charge).
"""

from __future__ import annotations

import heapq
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import ClassVar

from protocols.deadlines import DeadlineHeap
from signaling.registry.base import (
    MAX_BINDINGS_PER_AOR,
    MAX_LIST_WINDOW,
    MAX_STATE_BYTES,
    Binding,
    ContactChange,
    OutOfOrder,
    RegistryFull,
    make_binding,
    sort_bindings,
)

__all__ = [
    "AOR_FIXED_BYTES",
    "BINDING_FIXED_BYTES",
    "MAX_AORS",
    "MAX_BINDING_BYTES",
    "MAX_KNOWN_USERS",
    "MAX_STATE_ENTRIES",
    "MemoryRegistry",
    "Version",
    "aor_cost",
    "binding_cost",
]

# AORs one process holds.  The memory budget below is what bounds the bytes; this bounds the
# dictionary (and the admin API's sorted listing) when AORs are small.
MAX_AORS = 500_000

# Default budget for bindings and AORs: 1 GiB, the most a single node should spend on the
# location service.  At ~600-1,000 bytes per typical binding that is over a million bindings;
# at the largest contacts the registrar accepts (~2.5 KiB each) about 400,000.
MAX_BINDING_BYTES = 1 << 30

# Fixed bytes charged per binding and per AOR on top of their strings' lengths.  Measured with
# tracemalloc (benchmarks/bench_binding_memory.py): a Binding struct with its floats and ints,
# its slot in the AOR's dict, the expiry heap's tuple (twice: stale entries are kept up to the
# live count) and the CPython header of each string; an AOR adds its dict, its key and its
# entry in the known-users table.  Rounded up so the charge is never below the real cost.
BINDING_FIXED_BYTES = 640
AOR_FIXED_BYTES = 640

# AORs remembered as "registered before" (404 vs 480).  A string per AOR (~100 bytes): 1M AORs
# is ~100 MiB; the oldest are forgotten first, after which that user gets 404 instead of 480.
MAX_KNOWN_USERS = 1_000_000

# Dialogs (and, separately, Diameter sessions) held at once.  With blobs up to MAX_STATE_BYTES
# but typically < 2 KiB, 200k entries bound the worst case near 400 MiB per table.
MAX_STATE_ENTRIES = 200_000

# Heap entries popped per expire() call beyond ``limit`` for stale (refreshed) entries, so one
# sweep stays short even after a burst of refreshes.
_STALE_POP_BUDGET = 4096


def binding_cost(b: Binding) -> int:
    """Bytes a stored binding is charged: the fixed part and every string it keeps.  The key
    counts twice: a refresh leaves a stale expiry-heap entry holding the previous key's string
    until the heap is rebuilt (at most as many stale entries as live ones)."""
    # Conditionals rather than len(x or ""): the optional fields are usually None, and this
    # runs for every binding of every REGISTER.
    return (BINDING_FIXED_BYTES + len(b.contact) + 2 * len(b.key) + len(b.call_id)
            + len(b.source) + (len(b.instance) if b.instance else 0)
            + (len(b.connection_id) if b.connection_id else 0)
            + (len(b.node) if b.node else 0) + (sum(map(len, b.path)) if b.path else 0))


#: A binding's version for replication: its Call-ID and CSeq (§10.3 step 7).
Version = tuple[str, int]


def _at_most(b: Binding, version: Version | None) -> bool:
    """``b`` is the binding ``version`` names, or an older one of the same Call-ID."""
    return version is not None and b.call_id == version[0] and b.cseq <= version[1]


def aor_cost(aor: str) -> int:
    """Bytes an AOR with bindings is charged (its dict, key and known-users entry)."""
    return AOR_FIXED_BYTES + 2 * len(aor)


class _StateTable:
    """Opaque blobs with a TTL (dialogs, Diameter sessions), bounded, expired lazily."""

    def __init__(self, clock: Callable[[], float], max_entries: int) -> None:
        self._clock = clock
        self._max = max_entries
        self._data: dict[str, tuple[float, bytes]] = {}
        self._deadlines: DeadlineHeap[str] = DeadlineHeap()

    def put(self, key: str, data: bytes, ttl: float) -> None:
        if len(data) > MAX_STATE_BYTES:
            raise RegistryFull(f"state blob of {len(data)} bytes > {MAX_STATE_BYTES}")
        now = self._clock()
        if key not in self._data and len(self._data) >= self._max:
            self._purge(now)
            if len(self._data) >= self._max:
                raise RegistryFull(f"{self._max} state entries")
        deadline = now + ttl
        self._data[key] = (deadline, data)
        self._deadlines.push(key, deadline)

    def get(self, key: str) -> bytes | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        if entry[0] <= self._clock():
            self._data.pop(key, None)
            self._deadlines.cancel(key)
            return None
        return entry[1]

    def delete(self, key: str) -> bool:
        entry = self._data.pop(key, None)
        self._deadlines.cancel(key)
        return entry is not None and entry[0] > self._clock()

    def _purge(self, now: float) -> None:
        for key in self._deadlines.pop_due(now):
            self._data.pop(key, None)


class MemoryRegistry:
    """``Registry`` in process memory (see ``signaling.registry.base.Registry`` for semantics)."""

    #: ``register`` never suspends: nothing on the registrar's path waits.
    registers_at_once: ClassVar[bool] = True

    def __init__(
        self,
        *,
        max_aors: int = MAX_AORS,
        max_bindings_per_aor: int = MAX_BINDINGS_PER_AOR,
        max_known_users: int = MAX_KNOWN_USERS,
        max_state_entries: int = MAX_STATE_ENTRIES,
        max_bytes: int = MAX_BINDING_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._max_aors = max_aors
        self._max_bytes = max_bytes
        #: Bytes charged for the stored bindings and AORs (``binding_cost``, ``aor_cost``).
        self._bytes = 0
        self._max_per_aor = max_bindings_per_aor
        self._max_known = max_known_users
        self._aors: dict[str, dict[str, Binding]] = {}
        self._nbindings = 0
        #: Binding expiries.  Not the shared DeadlineHeap (protocols/deadlines.py): that keeps
        #: a dict entry per key, 232 bytes per binding against 94 for this heap of tuples
        #: (tracemalloc, 100k bindings), ~140 MB more at a million bindings; here a binding's
        #: own ``expires_at`` tells a stale entry, so no second index is needed.
        self._heap: list[tuple[float, str, str]] = []
        self._by_conn: dict[str, set[tuple[str, str]]] = {}
        self._known: OrderedDict[str, None] = OrderedDict()
        self._sorted_aors: list[str] | None = None
        self._dialogs = _StateTable(clock, max_state_entries)
        self._claims = _StateTable(clock, max_state_entries)
        self._sessions = _StateTable(clock, max_state_entries)

    # -- bindings -------------------------------------------------------------------------------

    async def register(
        self, aor: str, call_id: str, cseq: int, changes: Sequence[ContactChange], now: float
    ) -> list[Binding]:
        return self.register_now(aor, call_id, cseq, changes, now)

    def register_now(
        self, aor: str, call_id: str, cseq: int, changes: Sequence[ContactChange], now: float
    ) -> list[Binding]:
        """``register`` as a plain call: it never suspends.  For an engine that wraps this one
        (``ReplicaRegistry.register``), which would otherwise await a second coroutine on
        every REGISTER (~1,200 instructions, callgrind)."""
        stored = self._aors.get(aor)
        if stored is None:  # a new AOR (the common first REGISTER): nothing to compare with
            stored = live = {}
        else:
            live = {k: b for k, b in stored.items() if b.expires_at > now}
        updated = dict(live)
        for change in changes:
            key = change.key or change.contact  # binding_key
            # Compare with the binding as stored before this request (§10.3 step 7), so a
            # contact listed twice in one REGISTER is not its own out-of-order refresh.
            old = live.get(key)
            if old is not None:
                self._check_order(aor, old, key, call_id, cseq)
            if change.expires <= 0:
                updated.pop(key, None)
            else:
                updated[key] = make_binding(aor, change, call_id, cseq, now)
        if len(updated) > self._max_per_aor:
            raise RegistryFull(f"{aor}: more than {self._max_per_aor} bindings", "per_aor")
        if updated and aor not in self._aors and len(self._aors) >= self._max_aors:
            raise RegistryFull(f"more than {self._max_aors} AORs", "aors")
        if changes:
            growth = self._cost(aor, updated) - (self._cost(aor, stored) if stored else 0)
            if growth > 0 and self._bytes + growth > self._max_bytes:
                raise RegistryFull(f"binding memory budget of {self._max_bytes} bytes", "memory")
            self._commit(aor, stored, updated, growth)
        bindings = list(updated.values())
        # sort_bindings' own test, without the call for the usual single binding
        return bindings if len(bindings) < 2 else sort_bindings(bindings)

    async def remove_all(self, aor: str, call_id: str, cseq: int, now: float) -> int:
        stored = self._aors.get(aor, {})
        live = [b for b in stored.values() if b.expires_at > now]
        for b in live:
            self._check_order(aor, b, b.key, call_id, cseq)
        self._commit(aor, stored, {}, -self._cost(aor, stored))
        return len(live)

    async def lookup(self, aor: str, now: float) -> list[Binding]:
        stored = self._aors.get(aor)
        if not stored:
            return []
        return sort_bindings([b for b in stored.values() if b.expires_at > now])

    async def remove_binding(self, aor: str, key: str) -> bool:
        stored = self._aors.get(aor)
        if not stored or key not in stored:
            return False
        self._delete(aor, key)
        return True

    async def remove_connection(self, connection_id: str) -> int:
        removed = 0
        for aor, key in self._by_conn.pop(connection_id, set()):
            binding = self._aors.get(aor, {}).get(key)
            if binding is not None and binding.connection_id == connection_id:
                self._delete(aor, key)
                removed += 1
        return removed

    async def expire(self, now: float, limit: int) -> int:
        removed = 0
        stale_budget = _STALE_POP_BUDGET
        while self._heap and self._heap[0][0] <= now and removed < limit and stale_budget > 0:
            deadline, aor, key = heapq.heappop(self._heap)
            binding = self._aors.get(aor, {}).get(key)
            if binding is not None and binding.expires_at == deadline:
                self._delete(aor, key)
                removed += 1
            else:
                stale_budget -= 1
        return removed

    async def list_aors(self, offset: int = 0, limit: int = 100, prefix: str = "") -> list[str]:
        if offset < 0 or limit < 0 or offset + limit > MAX_LIST_WINDOW:
            raise ValueError(f"offset + limit must be within 0..{MAX_LIST_WINDOW}")
        if self._sorted_aors is None:
            # Sorted on demand and cached until the AOR set changes: the admin API reads pages
            # while the hot path only ever invalidates (O(1)).
            self._sorted_aors = sorted(self._aors)
        names = self._sorted_aors
        if prefix:
            names = [a for a in names if a.startswith(prefix)]
        return names[offset : offset + limit]

    async def count_aors(self) -> int:
        return len(self._aors)

    async def count_bindings(self) -> int:
        return self._nbindings

    def charged_bytes(self) -> int:
        """Bytes charged against the memory budget (for tests, benchmarks and a gauge)."""
        return self._bytes

    async def known_user(self, aor: str) -> bool:
        return aor in self._known or aor in self._aors

    # -- replication (signaling.registry.replica) ------------------------------------------------

    def stored(self, aor: str) -> dict[str, Binding] | None:
        """The AOR's stored bindings, expired ones included: the object itself, which a write
        replaces (``_commit``) and only a removal changes in place (``_delete``)."""
        return self._aors.get(aor)

    def held(self) -> dict[str, dict[str, Binding]]:
        """Every AOR with stored bindings: the dict itself, for a fast ``in`` (read only)."""
        return self._aors

    def on_connection(self, connection_id: str) -> list[tuple[str, str]]:
        """(AOR, key) of the bindings registered over ``connection_id``."""
        return list(self._by_conn.get(connection_id, ()))

    def merge(self, aor: str, upserts: Sequence[tuple[Binding, Version | None]],
              removed: Sequence[tuple[str, Version]]) -> None:
        """Apply another replica's change to ``aor`` (``signaling.registry.replica``).

        Each upsert comes with the version (Call-ID, CSeq) of the binding it replaced there,
        each removal with the version it removed.  Applied when this replica holds that
        version, an older one of the same Call-ID, or nothing: the usual case, one change after
        another.  Two changes of one contact made at once through two replicas (neither saw
        the other's) are resolved the same way on both, so they converge: a binding beats a
        removal; of two bindings of one Call-ID the higher CSeq wins (§10.3 step 7's order),
        of two Call-IDs the later expiry (then the greater Call-ID).  No budget check: the
        replica that took the REGISTER checked it."""
        stored = self._aors.get(aor) or {}
        updated = dict(stored)
        for b, prev in upserts:
            old = updated.get(b.key)
            if old is None or _at_most(old, prev) or (
                    b.cseq >= old.cseq if old.call_id == b.call_id
                    else (b.expires_at, b.call_id) > (old.expires_at, old.call_id)):
                updated[b.key] = b
        for key, version in removed:
            old = updated.get(key)
            if old is not None and _at_most(old, version):
                del updated[key]
        self._commit(aor, stored, updated, self._cost(aor, updated) - self._cost(aor, stored))

    # -- dialogs and sessions -------------------------------------------------------------------

    async def put_dialog(self, dialog_id: str, data: bytes, ttl: float) -> None:
        self._dialogs.put(dialog_id, data, ttl)

    async def get_dialog(self, dialog_id: str) -> bytes | None:
        return self._dialogs.get(dialog_id)

    async def delete_dialog(self, dialog_id: str) -> bool:
        return self._dialogs.delete(dialog_id)

    async def claim(self, key: str, ttl: float) -> bool:
        if self._claims.get(key) is not None:
            return False
        self._claims.put(key, b"", ttl)
        return True

    async def put_session(self, session_id: str, data: bytes, ttl: float) -> None:
        self._sessions.put(session_id, data, ttl)

    async def get_session(self, session_id: str) -> bytes | None:
        return self._sessions.get(session_id)

    async def delete_session(self, session_id: str) -> bool:
        return self._sessions.delete(session_id)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None

    # -- internals ------------------------------------------------------------------------------

    @staticmethod
    def _check_order(
        aor: str, old: Binding | None, key: str, call_id: str, cseq: int
    ) -> None:
        """RFC 3261 §10.3 step 7: same Call-ID needs a higher CSeq, else the request fails."""
        if old is not None and old.call_id == call_id and old.cseq >= cseq:
            raise OutOfOrder(aor, key, old.cseq, cseq)

    @staticmethod
    def _cost(aor: str, bindings: dict[str, Binding]) -> int:
        if not bindings:
            return 0
        # aor_cost and binding_cost, spelled out in a plain loop: a call, a comprehension and
        # sum() per REGISTER cost ~3% of its instructions (bench_instructions); this is ~1%.
        # test_memory.py holds them equal.
        total = AOR_FIXED_BYTES + 2 * len(aor)
        for b in bindings.values():
            total += (BINDING_FIXED_BYTES + len(b.contact) + 2 * len(b.key) + len(b.call_id)
                      + len(b.source))
            if b.instance:
                total += len(b.instance)
            if b.connection_id:
                total += len(b.connection_id)
            if b.node:
                total += len(b.node)
            if b.path:
                total += sum(map(len, b.path))
        return total

    def _commit(self, aor: str, stored: dict[str, Binding], updated: dict[str, Binding],
                growth: int) -> None:
        """Replace ``stored`` (including its expired entries) by ``updated``, keeping indexes;
        ``growth``: the change in charged bytes (``_cost`` of both, computed by the caller)."""
        self._bytes += growth
        for key, old in stored.items():
            new = updated.get(key)
            if old.connection_id is not None and (
                new is None or new.connection_id != old.connection_id
            ):
                self._unindex_conn(old.connection_id, aor, key)
        for key, new in updated.items():
            if stored.get(key) is new:
                continue
            heapq.heappush(self._heap, (new.expires_at, aor, key))
            if new.connection_id is not None and new.reg_id is None:  # flows stay: base.py
                self._by_conn.setdefault(new.connection_id, set()).add((aor, key))
        self._nbindings += len(updated) - len(stored)
        if updated:
            if aor not in self._aors:
                self._sorted_aors = None
            self._aors[aor] = updated
            self._remember(aor)
        elif aor in self._aors:
            del self._aors[aor]
            self._sorted_aors = None
        if len(self._heap) > 2 * self._nbindings + 1024:  # _maybe_compact's test, inline
            self._maybe_compact()

    def _delete(self, aor: str, key: str) -> None:
        stored = self._aors[aor]
        old = stored.pop(key)
        self._nbindings -= 1
        self._bytes -= binding_cost(old) + (0 if stored else aor_cost(aor))
        if old.connection_id is not None:
            self._unindex_conn(old.connection_id, aor, key)
        if not stored:
            del self._aors[aor]
            self._sorted_aors = None

    def _unindex_conn(self, connection_id: str, aor: str, key: str) -> None:
        members = self._by_conn.get(connection_id)
        if members is not None:
            members.discard((aor, key))
            if not members:
                del self._by_conn[connection_id]

    def _remember(self, aor: str) -> None:
        known = self._known
        if aor in known:
            known.move_to_end(aor)
            return
        known[aor] = None
        if len(known) > self._max_known:
            known.popitem(last=False)

    def _maybe_compact(self) -> None:
        if len(self._heap) > 2 * self._nbindings + 1024:
            self._heap = [
                (b.expires_at, aor, key)
                for aor, stored in self._aors.items()
                for key, b in stored.items()
            ]
            heapq.heapify(self._heap)
