"""Run an awaitable at once, in the caller, and on from the callbacks of what it waits on.

A REGISTER against the in-memory registry never waits: its handler's coroutines run from start
to end without suspending.  Handing it to a worker task through a queue (``Dispatcher``) then
costs more than it buys: a queue entry, a future to wake the worker, an event-loop iteration to
run it.  Started here instead, in the receive callback, it is answered before the next datagram
is read.  Python 3.12's eager tasks (``asyncio.eager_task_factory``) do the same for tasks;
this project runs on 3.11.

A REGISTER against Redis waits once: for its script's reply, a future the Redis link resolves
as it reads the reply.  What is left after that wait is carried on from that future's done
callback (``_Continuation``): the coroutine is sent the wake-up a task would send it, without
the task, its worker queue or its server transaction (what a task does on a wake-up, minus
what only tasks need: ``current_task``, cancellation by the caller).  So code run this way
must not need a current task (``asyncio.timeout`` does: the Redis links bound their calls with
a timer of their own).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Generator
from typing import Any

__all__ = ["run_at_once"]

#: Told how the work ended: None, or the exception it raised after its first wait.
Finished = Callable[[BaseException | None], None]


def run_at_once(aw: Awaitable[None], finished: Finished) -> bool:
    """Run ``aw`` now: True when it completed in this call (``finished`` is not called);
    False when it waits, and goes on from the done callbacks of what it waits on until it
    ends, then ``finished`` is called.  Exceptions raised before its first wait propagate
    to the caller."""
    steps = aw.__await__()
    try:
        waiting = steps.send(None)
    except StopIteration:
        return True
    _Continuation(steps, finished).wait(waiting)
    return False


class _Continuation:
    """The part of a coroutine after its first wait, stepped from callbacks (see the module)."""

    __slots__ = ("finished", "steps")

    def __init__(self, steps: Generator[Any, None, None], finished: Finished) -> None:
        self.steps = steps
        self.finished = finished

    def wait(self, waiting: Any) -> None:
        """Resume when ``waiting`` (what the coroutine yielded) is done, as a task would."""
        if waiting is None:  # a bare yield (``asyncio.sleep(0)``): the next loop turn
            asyncio.get_running_loop().call_soon(self.resume, None)
        elif getattr(waiting, "_asyncio_future_blocking", None):
            waiting._asyncio_future_blocking = False
            waiting.add_done_callback(self.resume)
        else:  # what asyncio's Task refuses too: a yield of something not a future
            self.resume(None, RuntimeError(f"awaited {waiting!r}, not a future"))

    def resume(self, _done: Any, error: BaseException | None = None) -> None:
        """Go on from the wait: the coroutine reads the future's result (or exception)."""
        try:
            waiting = self.steps.send(None) if error is None else self.steps.throw(error)
        except StopIteration:
            self.finished(None)
        except (Exception, asyncio.CancelledError) as exc:
            self.finished(exc)
        else:
            self.wait(waiting)
