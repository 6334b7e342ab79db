"""The ``replica`` engine: every worker of a multi-process server keeps the whole registry.

``signaling serve --processes N`` with the embedded default (``--registry memory``).  Each
worker holds a ``MemoryRegistry`` replica: a lookup (every INVITE's location service) and a
REGISTER are answered from it without leaving the process.  A write is applied locally with
the in-memory engine's own §10.3 rules and bounds, then its change (per contact: the new
binding with the version it replaced, or the version it removed) is appended to this worker's
journal (``signaling.registry.journal``: a ring in shared memory, one per worker process),
which the other workers read.  A worker that starts (or restarts after a crash) is sent a
serving sibling's replica through the supervisor's hub (``signaling.registry.hub``), with how
far that sibling had read each journal, and serves only once it has it.

Why this rather than one registry owned by the supervisor and asked over a socket
(``signaling.registry.shared``, still used here for Diameter sessions and nonce claims, which
need one answer for the whole server; dialogs are each worker's own, in a table of shared
memory the others read on a miss: ``signaling.registry.dialogmap``): there a REGISTER or an
INVITE's lookup waits for a round trip to another process, and the owner, one core for the
whole server, spends ~15-20 µs of CPU on each.  Measured (``benchmarks/bench_multiproc.py``,
2 workers at 0.25 core each, load 3-5): the same CPU per REGISTER, the same capacity, but
past capacity the owner design collapsed (6,000/s offered: 17,519 failed, a worker's calls
timing out on the owner) where this one degraded (0 failed); calls: the supervisor's CPU per
call 70 µs against 95.  Why journals rather than relaying the changes through the hub: see the
journal module (figures).

What a REGISTER costs the other workers is kept small (issue 16: at most +10% CPU per
REGISTER over one process):

* a REGISTER's change is one copy into shared memory; nobody is woken for it;
* a worker reads its siblings' journals only when it uses the registry and ``CATCH_UP``
  seconds have passed since it last did (many changes in one copy, no wake-up of its own
  under load), when a lookup finds nothing, and at every sweep (once a second: an idle
  worker keeps up too);
* it files another's change under its AOR without decoding it, and merges it only when it
  uses that AOR (``signaling.registry.pending``, where the figures are).

No acknowledged registration is lost when a worker is killed: its change is in its journal
(the page cache, not the process) before the 200 leaves, and the journal stays readable after
the worker is gone, until every binding it mentions has expired (the journal module says why
that is long enough, and the supervisor removes it then).

A registration is found through every worker as soon as it is acknowledged: a lookup that
finds nothing (or a ``known_user`` that does not know the AOR, or a query REGISTER) reads
every journal first; the client's request came after the 200, so after the change was in the
journal.  A change to bindings found (a refresh, a new contact, a
removal) reaches the other workers within ``CATCH_UP`` under load (a second when idle), during
which they still use the previous bindings.

Two REGISTERs of one contact at the same moment through two workers (say, a phone sending from
two source ports) are resolved the same way on every replica (``MemoryRegistry.merge``: the
higher CSeq of one Call-ID, else the later expiry), so replicas converge; within that
sub-millisecond window each worker's 200 lists its own view, as with Kamailio's DMQ usrloc
replication.  The §10.3 step 7 CSeq check is made against the local replica, so a REGISTER
replayed through another worker within the replication delay is not refused as out of order.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import os
import struct
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, cast

import msgspec

from signaling.registry.base import (
    MAX_STATE_BYTES,
    Binding,
    ContactChange,
    RegistryError,
    RegistryFull,
    RegistryUnavailable,
)
from signaling.registry.dialogmap import DialogMaps
from signaling.registry.journal import PREFIX, JournalReader, JournalWriter, Lapped
from signaling.registry.memory import MemoryRegistry
from signaling.registry.pending import Change, Pending, fields, record
from signaling.registry.shared import CALL_TIMEOUT, SharedRegistry
from signaling.registry.wire import HEADER, MAX_FRAME

__all__ = ["CATCH_UP", "END", "HUB_SOCKET", "JOINED", "OWNER_SOCKET", "POSITIONS", "REQUEST",
           "SNAPSHOT", "ReplicaRegistry", "decode_frames", "frame", "frames_of"]

log = logging.getLogger(__name__)

#: Socket names in the supervisor's directory.
HUB_SOCKET = "replica.sock"
OWNER_SOCKET = "registry.sock"
#: Seconds between two reads of the siblings' journals by a worker in use: what a refresh or
#: removal made through another worker may take to be seen here (a first registration is
#: found at once: a miss reads the journals).  Short against a binding's life, long enough
#: for one read to take many changes.
CATCH_UP = 0.010
#: Seconds a worker waits for the hub's replica before its first registry call fails.
SYNC_TIMEOUT = 30.0
#: Bytes of records per frame (well under ``MAX_FRAME``).
FRAME_RECORDS = 65_536
#: AORs encoded between two turns of the event loop while a snapshot is sent (``_snapshot``):
#: encoding is ~2.2 µs an AOR, so a slice holds the serving worker's loop a few ms, where
#: the whole snapshot in one piece held it ~280 ms per 100,000 AORs (session 12).
SNAPSHOT_SLICE = 2_000

# Frame kinds (the first byte of a frame's body), see ``signaling.registry.hub``.
#: Records of a whole replica: worker -> hub -> the worker that asked for it.
SNAPSHOT = b"S"
#: How far the snapshot's source had read each journal (JSON ``{name: position}``, its own
#: journal's head included): worker -> hub -> the new worker, after the SNAPSHOT frames.
POSITIONS = b"P"
#: hub -> worker: send me your whole replica (SNAPSHOT frames, POSITIONS, then END).
REQUEST = b"R"
#: End of a snapshot: worker -> hub, then hub -> the new worker (it now serves).
END = b"E"
#: hub -> the synced workers other than the snapshot's source: a worker joined, its journal
#: is in the directory (it creates it before it connects); look for it at the next catch-up.
JOINED = b"J"


def decode_frames(buf: bytearray) -> list[bytes] | None:
    """The complete frames at the start of ``buf`` (removed from it); None if corrupt."""
    frames: list[bytes] = []
    start, end = 0, len(buf)
    while end - start >= 4:
        (size,) = HEADER.unpack_from(buf, start)
        if size > MAX_FRAME or size == 0:
            return None
        if end - start - 4 < size:
            break
        frames.append(bytes(buf[start + 4:start + 4 + size]))
        start += 4 + size
    del buf[:start]
    return frames


def frame(kind: bytes, raw: bytes = b"") -> bytes:
    return HEADER.pack(len(kind) + len(raw)) + kind + raw


def frames_of(kind: bytes, records: Iterable[bytes]) -> list[bytes]:
    """``records`` in frames of ``kind``, each at most ``FRAME_RECORDS`` bytes of them (a
    record is never split: one is far smaller)."""
    out: list[bytes] = []
    chunk: list[bytes] = []
    size = 0
    for rec in records:
        if size + len(rec) > FRAME_RECORDS and chunk:
            out.append(frame(kind, b"".join(chunk)))
            chunk, size = [], 0
        chunk.append(rec)
        size += len(rec)
    if chunk:
        out.append(frame(kind, b"".join(chunk)))
    return out


def _version(b: Binding | None) -> tuple[str, int] | None:
    return None if b is None else (b.call_id, b.cseq)


class _HubLink(asyncio.Protocol):
    """The connection to the hub: snapshots of the replica, in and out."""

    def __init__(self, pending: Pending, snapshot: Callable[[], Iterator[list[bytes]]],
                 synced: Callable[[dict[str, int] | None], None],
                 joined: Callable[[], None]) -> None:
        self.pending = pending
        self.snapshot = snapshot
        self.on_synced = synced
        self.on_joined = joined
        self.transport: asyncio.Transport | None = None
        self.synced = asyncio.get_running_loop().create_future()
        self.lost = False
        #: Synced and not lost: the one test every REGISTER and lookup makes (``_use``).
        self.ready = False
        self._buf = bytearray()
        self._positions: dict[str, int] | None = None
        #: Snapshots asked for and not sent yet, each captured when asked (in order: the hub
        #: takes every frame for its first waiting worker until END), and the task sending them.
        self._outgoing: deque[Iterator[list[bytes]]] = deque()
        self.sending: asyncio.Task[None] | None = None
        #: Slices of snapshots written so far.
        self.slices_sent = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.ready = False
        self.transport = None
        if not self.synced.done():
            self.synced.set_exception(RegistryUnavailable("replica hub connection lost"))

    def data_received(self, data: bytes) -> None:
        self._buf += data
        frames = decode_frames(self._buf)
        if frames is None:
            self._abort()
            return
        for body in frames:
            kind = body[:1]
            try:
                if kind == SNAPSHOT:
                    self.pending.absorb(body)
                elif kind == POSITIONS:
                    self._positions = msgspec.json.decode(body[1:], type=dict[str, int])
            except (ValueError, struct.error, msgspec.DecodeError):
                # UnicodeDecodeError is a ValueError, msgspec's ValidationError a DecodeError
                self._abort()
                return
            if kind == END and not self.synced.done():
                self.on_synced(self._positions)
                self.synced.set_result(None)
                self.ready = not self.lost
            elif kind == REQUEST and self.transport is not None:
                # For a worker that starts: every AOR, how far we read, then END (see the hub).
                self._outgoing.append(self.snapshot())
                if self.sending is None or self.sending.done():
                    self.sending = asyncio.get_running_loop().create_task(self._send())
            elif kind == JOINED:
                self.on_joined()

    async def _send(self) -> None:
        """Write the snapshots asked for, a slice at a time with a turn of the event loop
        between slices: the worker serves on while it sends one."""
        while self._outgoing:
            for frames in self._outgoing.popleft():
                if self.transport is None:  # lost: the newcomer reconnects and asks again
                    self._outgoing.clear()
                    return
                self.transport.writelines(frames)
                self.slices_sent += 1
                await asyncio.sleep(0)

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class _NotReady(Exception):
    """The hub link is not up or not synchronised yet."""


class ReplicaRegistry:
    """A ``Registry`` kept whole in this worker, its changes written to a journal of its own
    and its siblings' read from theirs (see the module docstring); the hub in ``run_dir``
    copies a sibling's replica at start; dialogs are in this worker's table
    (``signaling.registry.dialogmap``), sessions and claims are the owner's."""

    #: A REGISTER is the in-memory engine's plus a copy into this worker's journal, never a
    #: wait once the worker is linked to the hub (before, it waits on the link's task, which
    #: ``signaling.eager`` carries on from).  Queued instead, every worker put its REGISTERs
    #: through a worker task and a transaction where one process answered them as read:
    #: 2 workers at 0.1 core each kept 480 REGISTER/s where 2 sharing nothing kept 660
    #: (bench_multiproc, session 11).
    registers_at_once: ClassVar[bool] = True

    def __init__(self, run_dir: str, *, max_bindings_per_aor: int, max_bytes: int,
                 max_dialogs: int = 200_000) -> None:
        self.local = MemoryRegistry(max_bindings_per_aor=max_bindings_per_aor,
                                    max_bytes=max_bytes)
        #: Other workers' changes to AORs not used here yet (``signaling.registry.pending``):
        #: raw records take ~1/3 of a stored binding's bytes; a quarter of the budget for them.
        self.pending = Pending(self.local, max_bytes // 4)
        self._pending_aors = self.pending.entries
        #: The replica's AORs (``MemoryRegistry.held``: read only), read on every REGISTER.
        self._held = self.local.held()
        self.run_dir = run_dir
        self.hub_path = str(Path(run_dir) / HUB_SOCKET)
        self.owner = SharedRegistry(str(Path(run_dir) / OWNER_SOCKET))
        #: Confirmed dialogs: this worker's table, and the others' (read on a miss).
        self.dialogs = DialogMaps(run_dir, max_dialogs)
        self._link: _HubLink | None = None
        self._connecting: asyncio.Lock | None = None
        self._connect_task: asyncio.Task[_HubLink] | None = None
        self._journal: JournalWriter | None = None
        #: The siblings' journals, by file name, once this replica is synced.
        self._readers: dict[str, JournalReader] = {}
        #: The same readers, as ``_catch_up`` walks them (rebuilt when the dict changes).
        self._reading: tuple[JournalReader, ...] = ()
        #: Journals never to read: ours, and those found unreadable (counted in ``lost``).
        self._skip: set[str] = set()
        self._read_at = 0.0
        #: A sibling joined since the last scan (the hub said so): scan at the next catch-up.
        self._rescan = False
        #: Journals a reader fell behind by more than their ring (changes lost here).
        self.lost = 0

    async def _hub(self) -> _HubLink:
        link = self._link
        if link is not None and not link.lost and link.synced.done():
            return link
        # In a task of its own, shared by every caller that waits for it: a REGISTER is
        # answered as it is read, without a task (``signaling.eager``, ``SipCore
        # .answer_at_once``), and ``asyncio.timeout`` needs the task it bounds.
        connecting = self._connect_task
        if connecting is None or connecting.done():
            connecting = asyncio.get_running_loop().create_task(self._connect())
            self._connect_task = connecting
        return await asyncio.shield(connecting)

    async def _connect(self) -> _HubLink:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            link = self._link
            if link is None or link.lost:
                if self._journal is None:
                    self._journal = JournalWriter(self.run_dir)
                    self._skip.add(self._journal.name)
                    # Created before the worker serves: a sibling that misses a dialog
                    # confirmed here finds the table (``dialogmap.DialogMaps._others``).
                    self.dialogs.open()
                loop = asyncio.get_running_loop()
                try:
                    async with asyncio.timeout(CALL_TIMEOUT):
                        _, link = await loop.create_unix_connection(
                            lambda: _HubLink(self.pending, self._snapshot, self._synced,
                                             self._joined),
                            self.hub_path)
                except (OSError, TimeoutError) as exc:
                    raise RegistryUnavailable(f"replica hub {self.hub_path}: {exc}") from None
                self._link = link
            try:
                async with asyncio.timeout(SYNC_TIMEOUT):
                    await asyncio.shield(link.synced)
            except TimeoutError:
                raise RegistryUnavailable("replica hub: no snapshot in time") from None
            return link

    def _snapshot(self) -> Iterator[list[bytes]]:
        """This replica for a worker that starts, as frames in slices (``SNAPSHOT_SLICE``
        AORs each, ``_HubLink._send`` turning the event loop between them): the AORs held
        here, the pending ones, then how far each journal was read (ours: its head) and END.

        The AORs and how far the journals were read are listed here, at once (a list of
        names and one of their dicts or entries: nothing allocated per AOR, which on a full
        heap also set the garbage collector off); each slice encodes what its AORs hold
        when it runs.  A change made between the two is also in a journal past the
        positions, which the newcomer reads from: merged twice, it changes nothing
        (``MemoryRegistry.merge``).  What it does change is the newcomer's count of pending
        bindings and AORs (the admin API's totals) for such an AOR, counted in the slice and
        again from the journal, until the AOR is used or lapses there and is merged."""
        self._catch_up()
        held = list(self._held), list(self._held.values())
        pending = self.pending.listed()
        positions = {name: r.position for name, r in self._readers.items()}
        if self._journal is not None:
            positions[self._journal.name] = self._journal.head
        return self._slices(held, pending, positions)

    def _slices(self, held: tuple[list[str], list[dict[str, Binding]]],
                pending: tuple[list[str], list[Any]],
                positions: dict[str, int]) -> Iterator[list[bytes]]:
        names, stored = held
        for start in range(0, len(names), SNAPSHOT_SLICE):
            end = start + SNAPSHOT_SLICE
            yield frames_of(SNAPSHOT, (
                record(Change(aor, [(b, None) for b in bindings.values()], []),
                       len(bindings), 1)
                for aor, bindings in zip(names[start:end], stored[start:end], strict=True)
                if bindings))
        names, entries = pending
        for start in range(0, len(names), SNAPSHOT_SLICE):
            end = start + SNAPSHOT_SLICE
            yield frames_of(SNAPSHOT, self.pending.records((names[start:end],
                                                            entries[start:end])))
        yield [frame(POSITIONS, msgspec.json.encode(positions)), frame(END)]

    def _synced(self, positions: dict[str, int] | None) -> None:
        """The snapshot is in: read each journal from where its source had (a journal it did
        not know, from its start); with no source (the first worker, or none serves), every
        journal from its start: what workers gone before us acknowledged is kept."""
        for reader in self._readers.values():
            reader.close()
        self._readers = {}
        self._reading = ()
        self._scan(positions or {})

    def _scan(self, positions: dict[str, int] | None = None) -> None:
        """Open the journals not known yet (new siblings), from ``positions`` or their start."""
        self._rescan = False
        try:
            names = [n for n in os.listdir(self.run_dir) if n.startswith(PREFIX)]
        except OSError:
            return
        for name in self._readers.keys() - set(names):
            # Removed by the supervisor (``journal.prune``): what it held has expired; its
            # pages are freed once nobody maps it.
            self._readers.pop(name).close()
        for name in names:
            if name in self._readers or name in self._skip:
                continue
            reader = JournalReader.open(str(Path(self.run_dir) / name),
                                        (positions or {}).get(name, 0))
            if reader is not None:  # else still being created: taken at a later scan
                self._readers[name] = reader
        self._reading = tuple(self._readers.values())

    def _catch_up(self, scan: bool = True, at: float | None = None) -> None:
        """Take what every sibling's journal gained since the last read; with ``scan``, look
        for new siblings' journals first (else only if the hub said one joined).  ``at``: the
        monotonic time the caller read to decide on it (one clock read less per catch-up)."""
        self._read_at = time.monotonic() if at is None else at
        if scan or self._rescan:
            self._scan()
        for reader in self._reading:
            if reader.head_word[0] == reader.position:
                # The usual case at a catch-up (every ``CATCH_UP`` under load): one load of
                # the head, no call (``JournalReader.head_word`` has the figures).
                continue
            name = reader.name
            try:
                data = reader.read()
                if data:
                    self.pending.absorb(data, 0)
            except Lapped:
                # Fell a whole ring behind (a worker stopped for minutes): what was lost
                # here is counted and logged; the others still hold it.
                self.lost += 1
                log.error("replica: fell behind journal %s: changes lost here", name)
                reader.position = reader.head()
            except (ValueError, struct.error):
                self.lost += 1
                log.error("replica: journal %s unreadable: no longer read", name)
                self._skip.add(name)
                del self._readers[name]
                self._reading = tuple(self._readers.values())
                reader.close()

    def _joined(self) -> None:
        """The hub says a sibling joined: its journal is read from the next catch-up on.
        Without it, the catch-ups that come with every REGISTER or lookup would have to look
        at the run directory each time (a ``stat``: ~5,900 instructions per REGISTER,
        callgrind, a fifth of what the journal added to the worker taking the REGISTER); a
        hub that does not send it (an older supervisor) leaves the next miss or sweep (every
        second) to find the journal."""
        self._rescan = True

    def _write(self, aor: str, before: dict[str, Binding] | None,
               after: dict[str, Binding] | None) -> None:
        """Journal what changed between two states of ``aor``'s stored bindings."""
        journal = self._journal
        assert journal is not None  # every write comes after ``_hub``
        if not before:  # a new AOR (a first REGISTER): every binding is new
            if after is not None and len(after) == 1:  # the usual one: no generator
                (b,) = after.values()
                journal.append_new(aor, b)
            elif after:
                journal.append_record(aor, *fields(Change(aor, [(b, None) for b in after.values()],
                                                          [])), len(after), 1,
                                      max(b.expires_at for b in after.values()))
            return
        after = after or {}
        upserts = [(b, _version(before.get(k))) for k, b in after.items()
                   if before.get(k) is not b]
        removed = [(k, (b.call_id, b.cseq)) for k, b in before.items() if k not in after]
        if upserts or removed:
            aors = (not before) - (not after)  # +1: the AOR appeared, -1: it went
            # The journal is kept until every binding mentioned here, replaced and removed
            # ones included, has expired (see the journal module: when a journal goes).
            until = max(b.expires_at for b in itertools.chain(before.values(), after.values()))
            journal.append_record(aor, *fields(Change(aor, upserts, removed)),
                                  len(after) - len(before), aors, until)

    def _use(self, aor: str) -> None:
        """``aor`` is about to be read or written here: read the journals if ``CATCH_UP``
        passed, merge what is pending for it.  Plain calls rather than coroutines: they run
        on every REGISTER and every INVITE's lookup (``register`` has its own copy)."""
        link = self._link
        if link is None or not link.ready:
            raise _NotReady
        at = time.monotonic()
        if at - self._read_at >= CATCH_UP:
            self._catch_up(False, at)
        if aor in self._pending_aors:
            self.pending.settle(aor)

    def _fresh(self, aor: str) -> None:
        """As ``_use``, after reading every journal now (a miss: see the module docstring)."""
        self._catch_up()
        self._use(aor)

    async def _ready(self, aor: str) -> None:
        try:
            self._use(aor)
        except _NotReady:
            await self._hub()
            self._use(aor)

    # -- the Registry interface (registry/base.py documents each method) ---------------------

    async def register(self, aor: str, call_id: str, cseq: int,
                       changes: Sequence[ContactChange], now: float) -> list[Binding]:
        # The worker taking a REGISTER pays this on top of the in-memory engine: ``_use``
        # written out, the AOR's dict read directly (``stored``), the usual write (a new
        # AOR's one binding) journaled without ``_write``: 5 Python calls fewer per REGISTER
        # (cProfile), ~3,000 instructions (callgrind, issue 16's +10% budget).
        link = self._link
        if link is None or not link.ready:
            await self._ready(aor)
        else:
            at = time.monotonic()
            if at - self._read_at >= CATCH_UP:
                self._catch_up(False, at)
            if aor in self._pending_aors:
                self.pending.settle(aor)
        if not changes:
            # A query (§10.3: no Contact) lists the bindings: those made through another
            # worker a moment ago too (see ``lookup``).
            self._fresh(aor)
        # ``register_now`` replaces the AOR's dict rather than changing it: the same dict
        # afterwards means nothing changed.
        held = self._held
        before = held.get(aor)
        result = self.local.register_now(aor, call_id, cseq, changes, now)
        after = held.get(aor)
        if after is not before:
            if before is None and after is not None and len(after) == 1:
                journal = self._journal
                assert journal is not None  # every write comes after ``_hub``
                (binding,) = after.values()  # not ``*after.values()``: no list built
                journal.append_new(aor, binding)
            else:
                self._write(aor, before, after)
        return result

    async def remove_all(self, aor: str, call_id: str, cseq: int, now: float) -> int:
        await self._ready(aor)
        before = self.local.stored(aor)
        result = await self.local.remove_all(aor, call_id, cseq, now)
        self._write(aor, before, self.local.stored(aor))
        return result

    async def remove_binding(self, aor: str, key: str) -> bool:
        await self._ready(aor)
        before = self.local.stored(aor)
        before = dict(before) if before else None  # _delete changes the dict in place
        removed = await self.local.remove_binding(aor, key)
        if removed:
            self._write(aor, before, self.local.stored(aor))
        return removed

    async def remove_connection(self, connection_id: str) -> int:
        # Bindings over our connections were registered here: their AORs are held, not pending.
        await self._hub()
        before: dict[str, dict[str, Binding]] = {}
        for aor, _ in self.local.on_connection(connection_id):
            if aor not in before:
                before[aor] = dict(self.local.stored(aor) or {})
        removed = await self.local.remove_connection(connection_id)
        for aor, old in before.items():
            self._write(aor, old, self.local.stored(aor))
        return removed

    async def lookup(self, aor: str, now: float) -> list[Binding]:
        try:
            self._use(aor)  # as in ``register``
        except _NotReady:
            await self._ready(aor)
        found = await self.local.lookup(aor, now)
        if not found:
            # Registered through another worker a moment ago?  Its 200 left once the change
            # was in its journal: reading the journals now brings it here (misses only).
            self._fresh(aor)
            found = await self.local.lookup(aor, now)
        return found

    async def expire(self, now: float, limit: int) -> int:
        # Every replica expires on its own: the same expiry times, no message needed.  Pending
        # AORs whose bindings all lapsed are merged first, then removed like the others.  The
        # sweep runs every second: an idle worker reads the journals here.
        if self._link is not None and self._link.synced.done() and not self._link.lost:
            self._catch_up()
        self.pending.expire(now, limit)
        if self.dialogs.own is not None:
            for dialog_id in self.dialogs.own.expire(now):  # held by the owner: delete there
                with contextlib.suppress(RegistryError):
                    await self.owner.delete_dialog(dialog_id)
        return await self.local.expire(now, limit)

    async def list_aors(self, offset: int = 0, limit: int = 100, prefix: str = "") -> list[str]:
        await self._hub()
        self._catch_up()
        held = await self.local.list_aors(0, offset + limit, prefix)
        names = sorted(a for a in self.pending.names() if a.startswith(prefix))
        return list(itertools.islice(heapq.merge(held, names), offset, offset + limit))

    async def count_aors(self) -> int:
        await self._hub()
        self._catch_up()
        return await self.local.count_aors() + self.pending.aors

    async def count_bindings(self) -> int:
        await self._hub()
        self._catch_up()
        return await self.local.count_bindings() + self.pending.bindings

    async def known_user(self, aor: str) -> bool:
        await self._hub()
        if aor in self.pending or await self.local.known_user(aor):
            return True
        self._catch_up()  # as in ``lookup``
        return aor in self.pending or await self.local.known_user(aor)

    def put_dialog_nowait(self, dialog_id: str, data: bytes,
                          ttl: float) -> Coroutine[Any, Any, None] | None:
        """Into this worker's table (``registry.base.DialogsInPlace``); a dialog too large for
        it goes to the owner, the table keeping a marker that says so."""
        if len(data) > MAX_STATE_BYTES:
            raise RegistryFull(f"state blob of {len(data)} bytes > {MAX_STATE_BYTES}")
        table = self.dialogs.open()
        expires_at = time.time() + ttl
        if table.put(dialog_id, data, expires_at):
            return None
        if not table.put(dialog_id, b"", expires_at, owner=True):
            raise RegistryFull("dialog table full")
        return self.owner.put_dialog(dialog_id, data, ttl)

    def delete_dialog_nowait(self, dialog_id: str) -> Coroutine[Any, Any, bool] | None:
        if self.dialogs.open().delete(dialog_id):
            return self.owner.delete_dialog(dialog_id)  # its data is the owner's
        return None

    async def put_dialog(self, dialog_id: str, data: bytes, ttl: float) -> None:
        rest = self.put_dialog_nowait(dialog_id, data, ttl)
        if rest is not None:
            await rest

    async def get_dialog(self, dialog_id: str) -> bytes | None:
        found = self.dialogs.get(dialog_id)
        if found is None:
            return None
        if found.owner:
            return await self.owner.get_dialog(dialog_id)
        return found.data

    async def delete_dialog(self, dialog_id: str) -> bool:
        held = self.dialogs.open().delete(dialog_id)
        if held:
            await self.owner.delete_dialog(dialog_id)
        return held is not None

    async def claim(self, key: str, ttl: float) -> bool:
        return await self.owner.claim(key, ttl)

    async def put_session(self, session_id: str, data: bytes, ttl: float) -> None:
        await self.owner.put_session(session_id, data, ttl)

    async def get_session(self, session_id: str) -> bytes | None:
        return await self.owner.get_session(session_id)

    async def delete_session(self, session_id: str) -> bool:
        return await self.owner.delete_session(session_id)

    async def ping(self) -> None:
        await self._hub()
        await self.owner.ping()

    async def close(self) -> None:
        if self._connect_task is not None and not self._connect_task.done():
            self._connect_task.cancel()
        link, self._link = self._link, None
        if link is not None and link.sending is not None:
            link.sending.cancel()  # a copy being sent: the newcomer will ask another worker
        if link is not None and link.transport is not None:
            link.transport.close()
        for reader in self._readers.values():
            reader.close()
        self._readers = {}
        if self._journal is not None:
            # Its file stays: siblings may not have read all of it yet, and it is what a
            # restart of every worker at once rebuilds from (the supervisor removes it once
            # every binding it mentions has expired: ``journal.prune``).
            self._journal.close()
            self._journal = None
        self.dialogs.close()  # its file stays too, for whoever takes this worker's calls over
        with contextlib.suppress(Exception):
            await self.owner.close()
