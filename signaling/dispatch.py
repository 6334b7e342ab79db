"""Bounded, sharded work queues and the fixed worker pool behind them.

New requests are the only work that waits: the datagram and WebSocket callbacks parse, match
transactions and absorb retransmissions synchronously, and hand a new request to the shard its
Call-ID hashes to.  One worker drains each shard, so every message of one Call-ID is handled in
arrival order (a REGISTER refresh can never overtake the REGISTER it refreshes) while different
calls proceed in parallel.  ``submit`` never waits: a full shard returns False and the caller
answers 503 + Retry-After (RFC 3261 §21.5.4) and counts it, because a SIP client retransmits and
would otherwise pile more work onto an overloaded server.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

__all__ = ["Dispatcher"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class Dispatcher(Generic[T]):
    """``shards`` bounded queues, one worker task each, calling ``handler(item)``."""

    def __init__(
        self,
        shards: int,
        queue_size: int,
        handler: Callable[[T], Awaitable[None]],
        on_error: Callable[[T, BaseException], None],
    ) -> None:
        self._queues: list[asyncio.Queue[T]] = [
            asyncio.Queue(maxsize=queue_size) for _ in range(shards)
        ]
        self._handler = handler
        self._on_error = on_error
        self._tasks: list[asyncio.Task[None]] = []
        self.queue_size = queue_size

    def start(self) -> None:
        self._tasks = [
            asyncio.get_running_loop().create_task(self._work(q), name=f"sip-worker-{i}")
            for i, q in enumerate(self._queues)
        ]

    def submit(self, key: str, item: T) -> bool:
        """Queue ``item`` on the shard of ``key``; False when that shard is full."""
        queue = self._queues[hash(key) % len(self._queues)]
        try:
            queue.put_nowait(item)
        except asyncio.QueueFull:
            return False
        return True

    def depths(self) -> list[int]:
        return [q.qsize() for q in self._queues]

    def resize(self, queue_size: int) -> None:
        """Change the bound of every shard live (admin API).  Items already queued stay."""
        for q in self._queues:
            q._maxsize = queue_size  # type: ignore[attr-defined]  # asyncio reads it on put
        self.queue_size = queue_size

    async def drain(self, timeout: float) -> bool:
        """Wait until every queue is empty and its item handled, at most ``timeout`` seconds."""
        try:
            await asyncio.wait_for(asyncio.gather(*(q.join() for q in self._queues)), timeout)
        except TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _work(self, queue: asyncio.Queue[T]) -> None:
        handler = self._handler
        while True:
            item = await queue.get()
            try:
                await handler(item)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug must cost one request, never the worker
                self._on_error(item, exc)
            finally:
                queue.task_done()
