"""Run an awaitable at once, in the caller, until it completes or first has to wait.

A REGISTER against the in-memory registry never waits: its handler's coroutines run from start
to end without suspending.  Handing it to a worker task through a queue (``Dispatcher``) then
costs more than it buys: a queue entry, a future to wake the worker, an event-loop iteration to
run it.  Started here instead, in the receive callback, it is answered before the next datagram
is read.  Python 3.12's eager tasks (``asyncio.eager_task_factory``) do the same for tasks;
this project runs on 3.11.

What does wait (a registry or subscriber store doing I/O) is handed back as an awaitable that
carries on from where it stopped: the caller runs it in a task.
"""

from __future__ import annotations

import types
from collections.abc import Awaitable, Generator
from typing import Any

__all__ = ["run_eagerly"]


def run_eagerly(aw: Awaitable[None]) -> Awaitable[None] | None:
    """Run ``aw`` now: None when it completed; else the rest of it, to be awaited (it waits
    on what it yielded).  Its exceptions propagate to the caller, from here or from the rest."""
    steps = aw.__await__()
    try:
        waiting = steps.send(None)
    except StopIteration:
        return None
    return _rest(steps, waiting)


@types.coroutine
def _rest(steps: Generator[Any, Any, None], waiting: Any) -> Generator[Any, Any, None]:
    """``yield from steps`` for steps that already yielded ``waiting`` (a future the task
    running this waits on, as it would for ``steps`` itself): what the task sends or throws
    in (a result, a cancellation) goes on to ``steps``."""
    while True:
        try:
            sent = yield waiting
        except BaseException as exc:
            try:
                waiting = steps.throw(exc)
            except StopIteration:
                return
        else:
            try:
                waiting = steps.send(sent)
            except StopIteration:
                return
