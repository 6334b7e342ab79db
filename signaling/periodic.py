"""A task that calls one function every so many seconds until it is closed.

The server's background checks (the overload watch, the admin API's registry counts, the TLS
certificate files) are each a loop of "do it, sleep"; this is that loop once, with the start
and the clean cancellation every one of them needs.  ``tick`` may be a plain function or a
coroutine function; an exception from it ends the loop (a caller whose tick may fail catches
and counts inside its tick, as the admin refresher does)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Callable

__all__ = ["Periodic"]


class Periodic:
    """``tick()`` every ``interval`` seconds, first at once with ``first_now``."""

    def __init__(self, name: str, interval: float, tick: Callable[[], Awaitable[object] | object],
                 *, first_now: bool = False) -> None:
        self.name = name
        self.interval = interval
        self.tick = tick
        self.first_now = first_now
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self.name)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        if not self.first_now:
            await asyncio.sleep(self.interval)
        while True:
            result = self.tick()
            if inspect.isawaitable(result):
                await result
            await asyncio.sleep(self.interval)
