"""The supervisor's side of the ``replica`` engine (``signaling.registry.replica``): it copies a
serving worker's replica to a worker that starts.

The workers' changes do not pass through here: each worker appends them to its journal in
shared memory and its siblings read them there (``signaling.registry.journal``).  The hub only
answers a worker that connects (at start, or restarted after a crash, or the next generation of
a reload): it asks a serving worker for its replica (``REQUEST``), tells the other serving
workers that there is a new journal (``JOINED``: they read it from their next catch-up on),
and passes the ``SNAPSHOT`` frames, then its ``POSITIONS`` (how far it had read each journal,
its own journal's head) and ``END`` on to the newcomer, as the same bytes.  The newcomer then
reads each journal from where the snapshot's source had: nothing is missed (what the source
had not read yet is still in the journals), and a change read twice changes nothing
(``MemoryRegistry.merge``).

It keeps no replica of its own.  The first worker, or one that starts when no other serves, is
sent ``END`` alone: it reads every journal from its start, so what workers gone before it
acknowledged is kept (as long as their journal's ring was not wrapped around).

A malformed frame closes that worker's connection (its registry calls fail with 503 until it
reconnects and resynchronises) and is counted; the hub never crashes on one.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import cast

from signaling.registry.replica import (
    END,
    JOINED,
    POSITIONS,
    REQUEST,
    SNAPSHOT,
    decode_frames,
    frame,
)

__all__ = ["ReplicaHub"]

log = logging.getLogger(__name__)

_END = frame(END)
_JOINED = frame(JOINED)


class _Worker(asyncio.Protocol):
    def __init__(self, hub: ReplicaHub) -> None:
        self.hub = hub
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        #: It has a complete replica (a source for the next ones).
        self.synced = False
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
        for body in frames:
            kind = body[:1]
            if kind in (SNAPSHOT, POSITIONS) and self.serving:
                self.serving[0].write([len(body).to_bytes(4, "big"), body])
            elif kind == END and self.serving:
                self.hub.synced(self.serving.popleft())


class ReplicaHub:
    """Serves the replica protocol on the Unix socket ``path`` until ``close()``."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.workers: set[_Worker] = set()
        self.malformed = 0
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(lambda: _Worker(self), self.path)

    def join(self, new: _Worker) -> None:
        self.workers.add(new)
        sources = [w for w in self.workers if w.synced]
        if not sources:
            self.synced(new)  # nobody to copy from: it reads the journals from their start
            return
        source = min(sources, key=lambda w: len(w.serving))
        source.serving.append(new)
        source.write([frame(REQUEST)])  # it reads the directory for its snapshot
        for other in sources:  # the newcomer's journal is there: read it from now on
            if other is not source:
                other.write([_JOINED])

    def synced(self, worker: _Worker) -> None:
        worker.write([_END])
        worker.synced = True

    def leave(self, gone: _Worker) -> None:
        self.workers.discard(gone)
        for waiting in gone.serving:  # its snapshots will not come: they reconnect and retry
            if waiting.transport is not None:
                waiting.transport.abort()
        gone.serving.clear()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for worker in list(self.workers):
                if worker.transport is not None:
                    worker.transport.close()
            await self._server.wait_closed()
            self._server = None
