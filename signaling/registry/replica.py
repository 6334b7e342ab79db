"""The ``replica`` engine: every worker of a multi-process server keeps the whole registry.

``signaling serve --processes N`` with the embedded default (``--registry memory``).  Each
worker holds a ``MemoryRegistry`` replica: a lookup (every INVITE's location service) and a
REGISTER are answered from it without leaving the process.  A write is applied locally with
the in-memory engine's own §10.3 rules and bounds, then its change (per contact: the new
binding with the version it replaced, or the version it removed) goes to the supervisor's hub
(``signaling.registry.hub``) over a Unix stream socket, and the hub passes it on to the other
workers.  A worker that starts (or restarts after a crash) is sent a serving sibling's replica
first and serves only once it has it.

Why this rather than one registry owned by the supervisor and asked over a socket
(``signaling.registry.shared``, still used here for dialogs, Diameter sessions and nonce claims,
which need one answer for the whole server): there a REGISTER or an INVITE's lookup waits for a
round trip to another process, and the owner, one core for the whole server, spends ~15-20 µs
of CPU on each.  Measured (``benchmarks/bench_multiproc.py``, 2 workers at 0.25 core each, load
3-5): the same CPU per REGISTER, the same capacity, but past capacity the owner design
collapsed (6,000/s offered: 17,519 failed, a worker's calls timing out on the owner) where
this one degraded (0 failed); calls: the supervisor's CPU per call 70 µs against 95.

What a REGISTER costs the other workers is kept small (issue 16: at most +10% CPU per
REGISTER over one process):

* changes are written in groups (``FLUSH_DELAY``): one write per group, not per REGISTER;
* the hub relays the group's bytes as they are, and writes each worker what it is owed once
  per ``FLUSH_DELAY`` (``signaling.registry.hub``): a worker wakes for its siblings' changes
  once per period, not once per sibling's group;
* a worker files another's change under its AOR without decoding it, and merges it only when
  it uses that AOR (``signaling.registry.pending``, where the figures are);
* the 200 waits for its group to be *written* into the hub's socket, not for an answer from
  the hub: no acknowledgement to send, read and wake up for.

No acknowledged registration is lost when a worker is killed: its change is in the hub's
socket before the 200 leaves (``_HubLink._flush``; if our buffer had to keep some of it, the
REGISTERs wait until it drained into the kernel), and the hub reads what a dead peer wrote
before its end of file.  A registration is found through every worker as soon as it is
acknowledged: a lookup that finds nothing (or a ``known_user`` that does not know the AOR)
asks the hub to pass on every change it has read so far (``SYNC``) and looks again; the
client's request came after the 200, so after the change was in the hub's socket.  A change
to bindings found (a refresh, a new contact, a removal) reaches the other workers within a few
milliseconds (two ``FLUSH_DELAY``), during which they still use the previous bindings.

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
import struct
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import cast

from signaling.registry.base import Binding, ContactChange, RegistryUnavailable
from signaling.registry.memory import MemoryRegistry
from signaling.registry.pending import Change, Pending, record
from signaling.registry.shared import CALL_TIMEOUT, SharedRegistry
from signaling.registry.wire import HEADER, MAX_FRAME

__all__ = ["CHANGE", "END", "HUB_SOCKET", "OWNER_SOCKET", "REQUEST", "SNAPSHOT", "SYNC",
           "ReplicaRegistry", "decode_frames", "frame", "frames_of"]

#: Socket names in the supervisor's directory.
HUB_SOCKET = "replica.sock"
OWNER_SOCKET = "registry.sock"
#: Seconds changes are gathered before they are written to the hub (group commit): each
#: REGISTER waits for its group, so one write, and one wake-up of the hub, carry many
#: REGISTERs.  Wake-ups are what the replica costs most on a shared VM (perf, 4 workers at
#: 1,000 REGISTER/s each: the kernel's share of the workers' CPU 15% -> 19%, the write that
#: wakes the hub ~50-90 µs under cProfile), so the delay is long for a network round trip but
#: short for a REGISTER's answer (Timer E starts at 500 ms).  bench_multiproc, 4 workers at
#: 1,000/s each, same window, two rounds (load 4.2-5.5): 2 ms (before) 153-159 µs CPU per
#: REGISTER; 5 ms 204/177; 10 ms 183/158; 20 ms 163/154; private registries 106/141.
#: Tried and dropped: leaving the hub's socket unread for 10 ms after each read (the hub's
#: writes would wake nobody): 142/173/167 against 160/154/174 without, no gain to show, and
#: more instructions per REGISTER at low rates (epoll_ctl twice per read).
FLUSH_DELAY = 0.010
#: ... or until this many records wait: a REGISTER holds its dispatcher shard (64 by default,
#: ``--workers``) while it waits, so a full group is written at once and a busy worker is not
#: held to shards / FLUSH_DELAY REGISTERs per second.
FLUSH_RECORDS = 32
#: Seconds a worker waits for the hub's replica before its first registry call fails.
SYNC_TIMEOUT = 30.0
#: Bytes of records per frame (well under ``MAX_FRAME``).
FRAME_RECORDS = 65_536

# Frame kinds (the first byte of a frame's body), see ``signaling.registry.hub``.
#: Change records (``signaling.registry.pending``), one group commit: worker -> hub -> every
#: other worker, relayed as the same bytes.
CHANGE = b"C"
#: Records of a whole replica: worker -> hub -> the worker that asked for it.
SNAPSHOT = b"S"
#: hub -> worker: send me your whole replica (as SNAPSHOT frames, then END).
REQUEST = b"R"
#: End of a snapshot: worker -> hub, then hub -> the new worker (it now serves).
END = b"E"
#: worker -> hub: pass me every change you read so far; hub -> worker: done (see ``sync``).
SYNC = b"Y"


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
    """The connection to the hub: changes out, other workers' changes in."""

    def __init__(self, pending: Pending, snapshot: Callable[[], Iterable[bytes]]) -> None:
        self.pending = pending
        self.snapshot = snapshot
        self.transport: asyncio.Transport | None = None
        self.synced = asyncio.get_running_loop().create_future()
        self.lost = False
        self._buf = bytearray()
        #: Records to write at the next flush, and the future their REGISTERs wait on.
        self._out: list[bytes] = []
        self._batch: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        #: Batches written but partly still in our buffer (the hub's socket was full).
        self._draining: list[asyncio.Future[None]] = []
        #: The SYNC asked and not yet answered, and the one to ask once it is: a caller that
        #: comes while one is in flight needs a SYNC sent after it came.
        self._sync: asyncio.Future[None] | None = None
        self._next_sync: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        # pause_writing as soon as a byte stays in our buffer, resume_writing once it is
        # all in the kernel: a batch is durable only then (see the module docstring).
        self.transport.set_write_buffer_limits(high=0)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.transport = None
        if not self.synced.done():
            self.synced.set_exception(RegistryUnavailable("replica hub connection lost"))
        waiting, self._draining = self._draining, []
        if self._batch is not None:
            waiting.append(self._batch)
        waiting += [f for f in (self._sync, self._next_sync) if f is not None]
        for fut in waiting:
            if not fut.done():
                fut.set_exception(RegistryUnavailable("replica hub connection lost"))

    def send(self, rec: bytes) -> asyncio.Future[None]:
        """Queue the record ``rec`` for the next flush; the future is done once it is written
        to the hub's socket."""
        if self.transport is None:
            raise RegistryUnavailable("replica hub connection lost")
        out = self._out
        out.append(rec)
        batch = self._batch
        if batch is None:
            loop = asyncio.get_running_loop()
            batch = self._batch = loop.create_future()
            self._timer = loop.call_later(FLUSH_DELAY, self._flush)
        elif len(out) >= FLUSH_RECORDS:
            self._flush()
        return batch

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        out, self._out = self._out, []
        batch, self._batch = self._batch, None
        if batch is None or self.transport is None:
            return  # connection_lost failed the batch
        self.transport.writelines(frames_of(CHANGE, out))
        if self.transport.get_write_buffer_size():
            self._draining.append(batch)
        else:
            batch.set_result(None)

    def pause_writing(self) -> None:
        pass  # batches wait in ``_draining`` until resume_writing

    def resume_writing(self) -> None:
        waiting, self._draining = self._draining, []
        for fut in waiting:
            if not fut.done():
                fut.set_result(None)

    def sync(self) -> asyncio.Future[None]:
        """Done once every change the hub had read when it read our SYNC is applied here:
        every change acknowledged to a client before this call (its record was in the hub's
        socket before the 200 left)."""
        if self.transport is None:
            raise RegistryUnavailable("replica hub connection lost")
        if self._sync is None:
            self._sync = asyncio.get_running_loop().create_future()
            self.transport.write(frame(SYNC))
            return self._sync
        if self._next_sync is None:
            self._next_sync = asyncio.get_running_loop().create_future()
        return self._next_sync

    def _synced(self) -> None:
        done, self._sync = self._sync, None
        if done is not None and not done.done():
            done.set_result(None)
        if self._next_sync is not None and self.transport is not None:
            self._sync, self._next_sync = self._next_sync, None
            self.transport.write(frame(SYNC))

    def data_received(self, data: bytes) -> None:
        self._buf += data
        frames = decode_frames(self._buf)
        if frames is None:
            assert self.transport is not None
            self.transport.abort()
            return
        for body in frames:
            kind = body[:1]
            if kind in (CHANGE, SNAPSHOT):
                try:
                    self.pending.absorb(body)
                except (ValueError, struct.error):  # UnicodeDecodeError is a ValueError
                    assert self.transport is not None
                    self.transport.abort()
                    return
            elif kind == END:
                if not self.synced.done():
                    self.synced.set_result(None)
            elif kind == SYNC:
                self._synced()
            elif kind == REQUEST:
                self._send_snapshot()

    def _send_snapshot(self) -> None:
        """The hub asks for our replica, for a worker that starts: every AOR, then END (on this
        one connection, after every change we sent before: the hub keeps their order)."""
        if self.transport is None:
            return
        self.transport.writelines([*frames_of(SNAPSHOT, self.snapshot()), frame(END)])


class _NotReady(Exception):
    """The hub link is not up or not synchronised yet."""


class ReplicaRegistry:
    """A ``Registry`` kept whole in this worker and replicated through the hub in ``run_dir``
    (see the module docstring); dialogs, sessions and claims are the owner's."""

    def __init__(self, run_dir: str, *, max_bindings_per_aor: int, max_bytes: int) -> None:
        self.local = MemoryRegistry(max_bindings_per_aor=max_bindings_per_aor,
                                    max_bytes=max_bytes)
        #: Other workers' changes to AORs not used here yet (``signaling.registry.pending``):
        #: raw records take ~1/3 of a stored binding's bytes; a quarter of the budget for them.
        self.pending = Pending(self.local, max_bytes // 4)
        self._pending_aors = self.pending.entries
        self.hub_path = str(Path(run_dir) / HUB_SOCKET)
        self.owner = SharedRegistry(str(Path(run_dir) / OWNER_SOCKET))
        self._link: _HubLink | None = None
        self._connecting: asyncio.Lock | None = None

    async def _hub(self) -> _HubLink:
        link = self._link
        if link is not None and not link.lost and link.synced.done():
            return link
        return await self._connect()

    async def _connect(self) -> _HubLink:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            link = self._link
            if link is None or link.lost:
                loop = asyncio.get_running_loop()
                try:
                    async with asyncio.timeout(CALL_TIMEOUT):
                        _, link = await loop.create_unix_connection(
                            lambda: _HubLink(self.pending, self._snapshot), self.hub_path)
                except (OSError, TimeoutError) as exc:
                    raise RegistryUnavailable(f"replica hub {self.hub_path}: {exc}") from None
                self._link = link
            try:
                async with asyncio.timeout(SYNC_TIMEOUT):
                    await asyncio.shield(link.synced)
            except TimeoutError:
                raise RegistryUnavailable("replica hub: no snapshot in time") from None
            return link

    def _snapshot(self) -> Iterable[bytes]:
        """This replica as records: the AORs held here, then the pending ones as they are."""
        for aor, bindings in self.local.snapshot():
            yield record(Change(aor, [(b, None) for b in bindings], []), len(bindings), 1)
        yield from self.pending.records()

    @staticmethod
    def _replicate(link: _HubLink, aor: str, before: dict[str, Binding] | None,
                   after: dict[str, Binding] | None) -> asyncio.Future[None] | None:
        """Queue what changed between two states of ``aor``'s stored bindings: the future of
        its batch, None if nothing changed."""
        if not before:  # a new AOR (a first REGISTER): every binding is new
            if not after:
                return None
            return link.send(record(Change(aor, [(b, None) for b in after.values()], []),
                                    len(after), 1))
        after = after or {}
        upserts = [(b, _version(before.get(k))) for k, b in after.items()
                   if before.get(k) is not b]
        removed = [(k, (b.call_id, b.cseq)) for k, b in before.items() if k not in after]
        if not upserts and not removed:
            return None
        aors = (not before) - (not after)  # +1: the AOR appeared, -1: it went
        return link.send(record(Change(aor, upserts, removed), len(after) - len(before), aors))

    def _use(self, aor: str) -> _HubLink:
        """``aor`` is about to be read or written here: merge what is pending for it.  The
        hub link, if it serves (else ``_hub`` waits for it).  Plain calls rather than
        coroutines: they run on every REGISTER and every INVITE's lookup."""
        if aor in self._pending_aors:
            self.pending.settle(aor)
        link = self._link
        if link is None or link.lost or not link.synced.done():
            raise _NotReady
        return link

    async def _ready(self, aor: str) -> _HubLink:
        try:
            return self._use(aor)
        except _NotReady:
            await self._hub()
            return self._use(aor)

    # -- the Registry interface (registry/base.py documents each method) ---------------------

    async def register(self, aor: str, call_id: str, cseq: int,
                       changes: Sequence[ContactChange], now: float) -> list[Binding]:
        link = await self._ready(aor)
        if not changes:
            # A query (§10.3: no Contact) lists the bindings: those made through another
            # worker a moment ago too (see ``lookup``).  Rare: one round trip to the hub.
            await link.sync()
            self._use(aor)
        # ``register`` never suspends, and replaces the AOR's dict rather than changing it.
        before = self.local.stored(aor)
        result = await self.local.register(aor, call_id, cseq, changes, now)
        sent = self._replicate(link, aor, before, self.local.stored(aor))
        if sent is not None:
            await sent
        return result

    async def remove_all(self, aor: str, call_id: str, cseq: int, now: float) -> int:
        link = await self._ready(aor)
        before = self.local.stored(aor)
        result = await self.local.remove_all(aor, call_id, cseq, now)
        sent = self._replicate(link, aor, before, self.local.stored(aor))
        if sent is not None:
            await sent
        return result

    async def remove_binding(self, aor: str, key: str) -> bool:
        link = await self._ready(aor)
        before = self.local.stored(aor)
        before = dict(before) if before else None  # _delete changes the dict in place
        removed = await self.local.remove_binding(aor, key)
        sent = self._replicate(link, aor, before, self.local.stored(aor)) if removed else None
        if sent is not None:
            await sent
        return removed

    async def remove_connection(self, connection_id: str) -> int:
        # Bindings over our connections were registered here: their AORs are held, not pending.
        link = await self._hub()
        before: dict[str, dict[str, Binding]] = {}
        for aor, _ in self.local.on_connection(connection_id):
            if aor not in before:
                before[aor] = dict(self.local.stored(aor) or {})
        removed = await self.local.remove_connection(connection_id)
        sent = [self._replicate(link, aor, old, self.local.stored(aor))
                for aor, old in before.items()]
        last = [fut for fut in sent if fut is not None]
        if last:
            await last[-1]  # one batch: the last is written with (or after) the others
        return removed

    async def lookup(self, aor: str, now: float) -> list[Binding]:
        link = await self._ready(aor)
        found = await self.local.lookup(aor, now)
        if not found:
            # Registered through another worker a moment ago?  Its 200 left once the change
            # was in the hub's socket: a SYNC brings it here (one round trip, misses only).
            await link.sync()
            self._use(aor)
            found = await self.local.lookup(aor, now)
        return found

    async def expire(self, now: float, limit: int) -> int:
        # Every replica expires on its own: the same expiry times, no message needed.  Pending
        # AORs whose bindings all lapsed are merged first, then removed like the others.
        self.pending.expire(now, limit)
        return await self.local.expire(now, limit)

    async def list_aors(self, offset: int = 0, limit: int = 100, prefix: str = "") -> list[str]:
        await self._hub()
        held = await self.local.list_aors(0, offset + limit, prefix)
        names = sorted(a for a in self.pending.names() if a.startswith(prefix))
        return list(itertools.islice(heapq.merge(held, names), offset, offset + limit))

    async def count_aors(self) -> int:
        await self._hub()
        return await self.local.count_aors() + self.pending.aors

    async def count_bindings(self) -> int:
        await self._hub()
        return await self.local.count_bindings() + self.pending.bindings

    async def known_user(self, aor: str) -> bool:
        link = await self._hub()
        if aor in self.pending or await self.local.known_user(aor):
            return True
        await link.sync()  # as in ``lookup``
        return aor in self.pending or await self.local.known_user(aor)

    async def put_dialog(self, dialog_id: str, data: bytes, ttl: float) -> None:
        await self.owner.put_dialog(dialog_id, data, ttl)

    async def get_dialog(self, dialog_id: str) -> bytes | None:
        return await self.owner.get_dialog(dialog_id)

    async def delete_dialog(self, dialog_id: str) -> bool:
        return await self.owner.delete_dialog(dialog_id)

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
        link, self._link = self._link, None
        if link is not None and link.transport is not None:
            link.transport.close()
        with contextlib.suppress(Exception):
            await self.owner.close()
