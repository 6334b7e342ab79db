"""The supervisor's side of the ``replica`` engine (``signaling.registry.replica``): a relay.

Each group of changes a worker sends is passed on, as the same bytes and without being decoded,
to every other worker, in the order the hub read them.  What each worker is owed is written
once per ``FLUSH_DELAY`` (one write, and one wake-up of that worker, for all its siblings'
groups of the period), followed by the answer to its ``SYNC`` if it asked: every change read
before the ``SYNC`` goes first (the flush runs from a timer, after every read of the loop
iteration that read the ``SYNC``).

It keeps no replica of its own: a worker that connects (at start, or restarted after a crash)
is given the replica of a worker that serves: the hub asks that one (``REQUEST``), passes its
``SNAPSHOT`` frames on to the newcomer, and after its ``END`` the changes it held back for the
newcomer meanwhile.  Nothing is missed or reordered: the snapshot holds every change the hub
had passed to its source before the request (``join`` writes what it owes first), its source
sends its own later changes after the snapshot, and every change read after the request is
held back for the newcomer (one applied twice changes nothing: ``MemoryRegistry.merge``).

The first worker, or one that starts when no other serves, starts empty: the registry lives
in the workers, so it survives any one of them (kill -9: see the replica module), not all of
them at once.

A malformed frame closes that worker's connection (its registry calls fail with 503 until it
reconnects and resynchronises) and is counted; the hub never crashes on one.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import cast

from signaling.registry.replica import (
    CHANGE,
    END,
    FLUSH_DELAY,
    REQUEST,
    SNAPSHOT,
    SYNC,
    decode_frames,
    frame,
)

__all__ = ["ReplicaHub"]

log = logging.getLogger(__name__)

_HEADER_AND_END = frame(END)
_SYNCED = frame(SYNC)


class _Worker(asyncio.Protocol):
    def __init__(self, hub: ReplicaHub) -> None:
        self.hub = hub
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        #: It has a complete replica and takes every change.
        self.synced = False
        #: Changes held back until its snapshot is complete (None: not waiting for one).
        self.held: list[bytes] | None = None
        #: Changes to write to it at the hub's next flush, then its SYNC answer if it asked.
        self.out: list[bytes] = []
        self.wants_sync = False
        #: Workers waiting for this one's snapshots, in the order asked.
        self.serving: deque[_Worker] = deque()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.hub.join(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.hub.leave(self)

    def write(self, frames: list[bytes]) -> None:
        if self.transport is not None:
            self.transport.writelines(frames)

    def data_received(self, data: bytes) -> None:
        self._buf += data
        frames = decode_frames(self._buf)
        if frames is None:
            self.hub.malformed += 1
            log.warning("replica hub: closing a worker connection: malformed frame")
            if self.transport is not None:
                self.transport.abort()
            return
        hub = self.hub
        for body in frames:
            kind = body[:1]
            if kind == CHANGE:
                hub.fan_out(self, len(body).to_bytes(4, "big") + body)
            elif kind == SYNC:
                self.wants_sync = True
                hub.schedule()
            elif kind == SNAPSHOT and self.serving:
                self.serving[0].write([len(body).to_bytes(4, "big"), body])
            elif kind == END and self.serving:
                hub.synced(self.serving.popleft())


class ReplicaHub:
    """Serves the replica protocol on the Unix socket ``path`` until ``close()``."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.workers: set[_Worker] = set()
        self.malformed = 0
        self._server: asyncio.AbstractServer | None = None
        self._flushing: asyncio.TimerHandle | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(lambda: _Worker(self), self.path)

    def join(self, new: _Worker) -> None:
        # What was read before it joined reaches the source first, so it is in the snapshot.
        self.flush(answer=False)
        self.workers.add(new)
        sources = [w for w in self.workers if w.synced]
        if not sources:
            self.synced(new)  # nobody to copy from: it starts empty
            return
        source = min(sources, key=lambda w: len(w.serving))
        new.held = []
        source.serving.append(new)
        source.write([frame(REQUEST)])

    def synced(self, worker: _Worker) -> None:
        held, worker.held = worker.held or [], None
        worker.write([_HEADER_AND_END, *held])
        worker.synced = True

    def leave(self, gone: _Worker) -> None:
        self.workers.discard(gone)
        for waiting in gone.serving:  # its snapshots will not come: they reconnect and retry
            if waiting.transport is not None:
                waiting.transport.abort()
        gone.serving.clear()

    def fan_out(self, source: _Worker, change: bytes) -> None:
        """Pass the frame ``change`` on to every other worker at the next flush."""
        for other in self.workers:
            if other is source:
                continue
            if other.held is not None:
                other.held.append(change)
            elif other.synced:
                other.out.append(change)
        self.schedule()

    def schedule(self) -> None:
        if self._flushing is None:
            self._flushing = asyncio.get_running_loop().call_later(FLUSH_DELAY, self.flush)

    def flush(self, answer: bool = True) -> None:
        """Write what each worker is owed: one write per worker per ``FLUSH_DELAY`` (not one
        per group commit of each of its siblings), then the SYNC answers, after the changes
        read before their SYNC (``answer``: only from the timer, which runs after every read
        of the loop iteration that read the SYNC)."""
        if answer and self._flushing is not None:
            self._flushing.cancel()
            self._flushing = None
        for worker in self.workers:
            out = worker.out
            if answer and worker.wants_sync and worker.held is None:
                worker.wants_sync = False
                out.append(_SYNCED)
            if out:
                worker.out = []
                worker.write(out)

    async def close(self) -> None:
        if self._flushing is not None:
            self._flushing.cancel()
            self._flushing = None
        if self._server is not None:
            self._server.close()
            for worker in list(self.workers):
                if worker.transport is not None:
                    worker.transport.close()
            await self._server.wait_closed()
            self._server = None
