"""Bounded, sharded work queues and the fixed worker pool behind them.

New requests are the only work that waits: the datagram and WebSocket callbacks parse, match
transactions and absorb retransmissions synchronously, and hand a new request to the shard its
Call-ID hashes to.  One worker drains each shard, so every message of one Call-ID is handled in
arrival order (a REGISTER refresh can never overtake the REGISTER it refreshes) while different
calls proceed in parallel.  ``submit`` never waits: a full shard returns False and the caller
answers 503 + Retry-After (RFC 3261 §21.5.4) and counts it, because a SIP client retransmits and
would otherwise pile more work onto an overloaded server.

Two classes per shard (issue 13): *urgent* items (work of something already admitted: an
in-dialog request such as a BYE or re-INVITE) are taken before any new request and are never
refused for a full shard, so admitted calls complete while new ones wait or are refused.  They
stay bounded all the same: each holds a server transaction, and the transaction table is bounded.
Order within a Call-ID is kept where it matters: an in-dialog request can only follow the
answer to the request that created the dialog, which a worker has handled already.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

__all__ = ["Dispatcher"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class Dispatcher(Generic[T]):
    """``shards`` bounded FIFO queues, one worker task each, calling ``handler(item)``.

    Not ``asyncio.Queue``: its put_nowait, get and task_done are Python code (about a dozen
    calls per item), a noticeable share of a REGISTER.  A shard here is a deque, a bound
    checked on submit, and the one future its idle worker waits on; ``_unfinished`` counts
    items queued or being handled, for ``drain``.
    """

    def __init__(
        self,
        shards: int,
        queue_size: int,
        handler: Callable[[T], Awaitable[None]],
        on_error: Callable[[T, BaseException], None],
    ) -> None:
        if shards < 1 or queue_size < 1:
            raise ValueError("a dispatcher needs at least one shard and a bound of at least 1")
        self._queues: list[deque[T]] = [deque() for _ in range(shards)]
        self._urgent: list[deque[T]] = [deque() for _ in range(shards)]
        #: Items waiting in the ordinary (new work) queues, all shards.
        self.backlog = 0
        #: Shards at their bound: ``any_full`` is asked per TCP read, and scanning every
        #: shard there would cost more the more workers there are.
        self._full = 0
        #: Called with each ordinary item as a worker takes it (the sojourn measurement).
        self.on_start: Callable[[T], None] | None = None
        #: Per shard, the future its worker sleeps on while the shard is empty.
        self._waiters: list[asyncio.Future[None] | None] = [None] * shards
        self._handler = handler
        self._on_error = on_error
        self._tasks: list[asyncio.Task[None]] = []
        self._unfinished = 0
        #: Set when ``_unfinished`` drops to 0 while someone drains.
        self._idle: asyncio.Future[None] | None = None
        self.queue_size = queue_size

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._work(i), name=f"sip-worker-{i}")
                       for i in range(len(self._queues))]

    def submit(self, key: str, item: T, urgent: bool = False) -> bool:
        """Queue ``item`` on the shard of ``key``; False when that shard is full.  An urgent
        item goes ahead of the shard's new work and is never refused."""
        i = hash(key) % len(self._queues)
        if urgent:
            self._urgent[i].append(item)
        else:
            queue = self._queues[i]
            if len(queue) >= self.queue_size:
                return False
            queue.append(item)
            self.backlog += 1
            if len(queue) == self.queue_size:
                self._full += 1
        self._unfinished += 1
        waiter = self._waiters[i]
        if waiter is not None:
            self._waiters[i] = None
            if not waiter.done():
                waiter.set_result(None)
        return True

    def depths(self) -> list[int]:
        return [len(q) + len(u) for q, u in zip(self._queues, self._urgent, strict=True)]

    def any_full(self) -> bool:
        """Some shard is at its bound: the next item for it would be refused."""
        return self._full > 0

    def resize(self, queue_size: int) -> None:
        """Change the bound of every shard live (admin API).  Items already queued stay."""
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        self.queue_size = queue_size
        self._full = sum(1 for q in self._queues if len(q) >= queue_size)

    async def drain(self, timeout: float) -> bool:
        """Wait until every queue is empty and its item handled, at most ``timeout`` seconds."""
        if self._unfinished == 0:
            return True
        idle = self._idle
        if idle is None:
            idle = self._idle = asyncio.get_running_loop().create_future()
        try:
            # shield: a timed-out drain must not cancel the future another drain waits on.
            await asyncio.wait_for(asyncio.shield(idle), timeout)
        except TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _work(self, shard: int) -> None:
        queue = self._queues[shard]
        urgent = self._urgent[shard]
        handler = self._handler
        loop = asyncio.get_running_loop()
        while True:
            if urgent:
                item = urgent.popleft()
            elif queue:
                if len(queue) == self.queue_size:
                    self._full -= 1  # full no more (one over a lowered bound still is)
                item = queue.popleft()
                self.backlog -= 1
                if self.on_start is not None:
                    self.on_start(item)
            else:
                waiter: asyncio.Future[None] = loop.create_future()
                self._waiters[shard] = waiter
                try:
                    await waiter
                finally:
                    self._waiters[shard] = None
                continue
            try:
                await handler(item)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug must cost one request, never the worker
                self._on_error(item, exc)
            finally:
                self._unfinished -= 1
                if self._unfinished == 0 and self._idle is not None:
                    if not self._idle.done():
                        self._idle.set_result(None)
                    self._idle = None
