"""Other workers' registry changes, kept encoded until this worker needs them (lazy apply).

In a server of N workers each REGISTER's change reaches the N-1 other replicas
(``signaling.registry.replica``).  Decoding it and merging it into a ``MemoryRegistry`` there
cost ~10-15 µs per replica (msgspec decode ~3-5 µs, ``MemoryRegistry.merge`` ~8 µs, measured
on this 2-core machine under load), so the CPU per REGISTER grew with N: +27% at 2 workers,
+46% at 4 (``benchmarks/bench_multiproc.py``).  Most of that work is never used: a worker needs
an AOR's bindings only when a request for that AOR reaches it (an INVITE's lookup, a REGISTER,
a removal), and the kernel spreads requests over the workers by source address, so an AOR is
looked up in few of them, if any, between two refreshes.

So a change for an AOR this worker does not hold yet is filed under its AOR as the bytes it came
in (a *record*, below): reading it costs a header unpack and a dict update.  Every worker files
every sibling's records, so this loop is the part of a REGISTER's cost that grows with N: it
runs in C (``_pending_speedups.absorb``, ~5,800 instructions per record against ~26,300 for
its Python reference ``absorb_py``, callgrind, records of new AORs in one batch).  It is
decoded and merged (``settle``) the first time this worker needs that AOR; from then on the AOR
is held here and its changes are merged as they come (it is in use here).  An AOR is therefore
either held (``MemoryRegistry``) or pending here, never both, which keeps the counts exact.

A refresh (one binding re-registered with the same key and Call-ID, §10.3 step 7's usual case)
replaces the pending record of the same binding instead of adding to it: a phone refreshing
every half hour costs each other worker one header unpack per refresh and one decode, when
(if ever) it is called through that worker.  Replacing is exact: the newer record carries the
whole binding, and of one Call-ID the higher CSeq wins anyway (``MemoryRegistry.merge``).

What still decodes without a use: records whose bindings have all expired (settled by the
sweep, then removed by the local expiry), removals, changes of AORs held here, and, past
``max_bytes`` of pending records, the oldest AORs (memory is bounded).  A worker that starts
copies a sibling's pending records as they are (``records``), without decoding them.

Record: ``RECORD`` header (AOR length, token length, CSeq, binding-count delta, AOR-count
delta, latest expiry, body length), the AOR (UTF-8), the token (binding key and Call-ID of a
single-binding upsert, else empty: what a later refresh replaces), and the body: a msgpack
``Change``.  The deltas are the origin's (bindings and AORs it gained or lost), so the counts
of pending AORs are known without decoding them.
"""

from __future__ import annotations

import heapq
import logging
import math
import struct
from collections.abc import Callable, Iterator, Mapping

import msgspec

from signaling.registry.base import Binding
from signaling.registry.memory import MemoryRegistry, Version

__all__ = ["DECODER", "ENCODER", "LAST_SECOND", "RECORD", "Change", "Pending", "absorb_py",
           "expiry_second", "fields", "record"]

log = logging.getLogger(__name__)


class Change(msgspec.Struct, array_like=True):
    """One write to an AOR, as replicated (see ``MemoryRegistry.merge``)."""

    aor: str
    upserts: list[tuple[Binding, Version | None]]
    removed: list[tuple[str, Version]]


ENCODER = msgspec.msgpack.Encoder()
DECODER = msgspec.msgpack.Decoder(Change)

#: aor length, token length, CSeq, binding delta, AOR delta, latest expiry, body length.
RECORD = struct.Struct(">HHIiidI")


def record(change: Change, bindings: int, aors: int) -> bytes:
    """``change`` as a record; ``bindings``/``aors``: what the origin's counts gained."""
    token, cseq, latest, body = fields(change)
    aor = change.aor.encode()
    return (RECORD.pack(len(aor), len(token), cseq, bindings, aors, latest, len(body))
            + aor + token + body)


def fields(change: Change) -> tuple[bytes, int, float, bytes]:
    """The token, CSeq, latest expiry and body of ``change``'s record (see ``RECORD``)."""
    body = ENCODER.encode(change)
    upserts = change.upserts
    if len(upserts) == 1:  # the usual REGISTER: one contact
        b = upserts[0][0]
        if not change.removed:
            return f"{b.key}\n{b.call_id}".encode(), b.cseq, b.expires_at, body
        return b"", 0, b.expires_at, body
    return b"", 0, max((b.expires_at for b, _ in upserts), default=0.0), body


class _Entry:
    """The pending records of one AOR, with what they add to the counts."""

    __slots__ = ("aors", "bindings", "bodies", "cseq", "latest", "size", "token")

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.token = b""
        self.cseq = 0
        self.bindings = 0
        self.aors = 0
        self.latest = 0.0
        self.size = 0


class Pending:
    """Records for the AORs ``local`` does not hold; ``settle`` merges them into it."""

    def __init__(self, local: MemoryRegistry, max_bytes: int) -> None:
        self.local = local
        self.max_bytes = max_bytes
        self._held = local.held()
        self._entries: dict[str, _Entry] = {}
        #: The pending AORs (read only), for a fast ``in`` on every REGISTER and lookup.
        self.entries: Mapping[str, object] = self._entries
        #: When an entry's bindings have all lapsed: its AOR filed under the second its latest
        #: expiry falls in (``expiry_second``; 0 for a removal, settled at the next sweep),
        #: stale ones (a refresh filed it later too) skipped when their second comes.  Not a
        #: heap of (expiry, AOR): pushing one cost ~1,200 of the ~3,400 instructions of filing
        #: a record (callgrind, ``_pending_speedups.absorb``), which every sibling pays for
        #: every REGISTER; a list append under a second is ~250, and the heap below holds
        #: the seconds, one push per second of expiries rather than per record.
        self._expiry: dict[int, list[str]] = {}
        #: The seconds of ``_expiry``, a heap.
        self._seconds: list[int] = []
        #: What the pending records add to ``local``'s counts, and their bytes.
        self.bindings = 0
        self.aors = 0
        self.size = 0
        #: Records that did not decode (a bug of ours: they come from our own workers).
        self.corrupt = 0
        self.on_change: Callable[[], None] | None = None

    def __contains__(self, aor: str) -> bool:
        return aor in self._entries

    def absorb(self, data: bytes, start: int = 1) -> None:
        """File the records in ``data[start:]``; raises ValueError/struct.error if malformed
        (after filing the records before the malformed one)."""
        merges: list[tuple[str, bytes]] = []
        try:
            _absorb(self, data, start, merges)
        finally:
            for aor, body in merges:  # AORs in use here: kept current
                self._merge(aor, body)
        if self.size > self.max_bytes:
            self._shrink()
        if self.on_change is not None:
            self.on_change()

    def settle(self, aor: str) -> None:
        """Merge ``aor``'s pending records into ``local``: it is about to be used here."""
        entry = self._entries.pop(aor, None)
        if entry is None:
            return
        self.bindings -= entry.bindings
        self.aors -= entry.aors
        self.size -= entry.size
        for body in entry.bodies:
            self._merge(aor, body)

    def settle_all(self) -> None:
        for aor in list(self._entries):
            self.settle(aor)

    def expire(self, now: float, limit: int) -> int:
        """Settle up to ``limit`` AORs whose pending bindings have all lapsed, so that the
        local expiry removes them (and frees their memory)."""
        buckets, seconds, entries = self._expiry, self._seconds, self._entries
        settled = 0
        while seconds and seconds[0] <= now and settled < limit:
            second = seconds[0]
            aors = buckets[second]
            while aors and settled < limit:
                aor = aors.pop()
                entry = entries.get(aor)
                if entry is not None and (second == 0 or entry.latest <= now):
                    self.settle(aor)
                    settled += 1
            if aors:  # the limit: the rest at the next sweep
                break
            heapq.heappop(seconds)
            del buckets[second]
        return settled

    def names(self) -> Iterator[str]:
        """The pending AORs that have bindings (by the origins' counts)."""
        return (aor for aor, e in self._entries.items() if e.aors > 0)

    def records(self, listed: tuple[list[str], list[_Entry]] | None = None
                ) -> Iterator[bytes]:
        """Every pending record, for a worker that starts (``signaling.registry.replica``):
        the same bodies, each AOR's counts carried by its first record; of the entries
        ``listed`` earlier (``listed()``), or of those pending now."""
        names, entries = listed or self.listed()
        for aor, e in zip(names, entries, strict=True):
            name = aor.encode()
            for i, body in enumerate(e.bodies):
                first = i == 0
                yield (RECORD.pack(len(name), 0, 0, e.bindings if first else 0,
                                   e.aors if first else 0, e.latest, len(body)) + name + body)

    def listed(self) -> tuple[list[str], list[_Entry]]:
        """The pending AORs and their entries now, for ``records`` later: two lists, nothing
        allocated per AOR (a worker serving sends its snapshot in slices, ``replica``)."""
        return list(self._entries), list(self._entries.values())

    def _merge(self, aor: str, body: bytes) -> None:
        try:
            change = DECODER.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError):
            self.corrupt += 1
            log.error("replica: a change record of %s did not decode; dropped", aor[:64])
            return
        self.local.merge(aor, change.upserts, change.removed)

    def _shrink(self) -> None:
        """Past ``max_bytes``, settle the oldest AORs until half of it is left."""
        entries = self._entries
        while entries and self.size > self.max_bytes // 2:
            self.settle(next(iter(entries)))


#: The last second an expiry is filed under (2**53: floats are exact integers up to it); a
#: larger one (only a corrupt record has it) is filed there.
LAST_SECOND = 1 << 53


def expiry_second(latest: float) -> int:
    """The second ``latest`` is filed under in ``Pending._expiry``: its ceiling, so the AOR
    is settled at the first sweep at or after it; 0 for a removal (no expiry)."""
    if not latest > 0.0:
        return 0
    return math.ceil(latest) if latest < LAST_SECOND else LAST_SECOND


def absorb_py(pending: Pending, data: bytes, start: int,
              merges: list[tuple[str, bytes]]) -> None:
    """File each record of ``data[start:]`` under its AOR in ``pending``, or append it to
    ``merges`` when ``pending.local`` holds its AOR (the caller merges those).  The reference
    of ``_pending_speedups.absorb``, which runs instead when built (~21,000-26,000
    instructions per record here, callgrind: every worker runs this for every sibling's
    REGISTER)."""
    unpack, head = RECORD.unpack_from, RECORD.size
    entries, held = pending._entries, pending._held
    end = len(data)
    while start < end:
        alen, tlen, cseq, bindings, aors, latest, blen = unpack(data, start)
        start += head
        aor = data[start:start + alen].decode()
        start += alen
        token = data[start:start + tlen]
        start += tlen
        body = data[start:start + blen]
        start += blen
        if len(body) != blen:
            raise ValueError("truncated record")
        if aor in held:
            merges.append((aor, body))
            continue
        entry = entries.get(aor)
        if entry is None:
            entry = entries[aor] = _Entry()
        if tlen and token == entry.token and cseq > entry.cseq:
            # A refresh of the binding the last record holds: it replaces it (see above).
            pending.size -= len(entry.bodies[-1])
            entry.size -= len(entry.bodies[-1])
            entry.bodies[-1] = body
        else:
            entry.bodies.append(body)
        entry.token, entry.cseq = token, cseq
        entry.bindings += bindings
        entry.aors += aors
        entry.size += blen
        pending.bindings += bindings
        pending.aors += aors
        pending.size += blen
        if latest > entry.latest or latest == 0.0:
            entry.latest = max(entry.latest, latest)
            # A removal (no expiry) is settled at the next sweep.
            second = expiry_second(latest)
            bucket = pending._expiry.get(second)
            if bucket is None:
                bucket = pending._expiry[second] = []
                heapq.heappush(pending._seconds, second)
            bucket.append(aor)


_absorb: Callable[[Pending, bytes, int, list[tuple[str, bytes]]], None]
try:
    from signaling.registry._pending_speedups import absorb as _absorb
except ImportError:  # built without a C compiler: the Python loop, same results
    _absorb = absorb_py
