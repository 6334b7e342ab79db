"""signaling.eager: an awaitable run in the caller, then on from callbacks, without a task."""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from typing import Any

import pytest

from signaling.eager import run_at_once


class _Ends:
    """The ``finished`` callback: what it was told, and a future resolved when told."""

    def __init__(self) -> None:
        self.told: list[BaseException | None] = []
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def __call__(self, error: BaseException | None) -> None:
        self.told.append(error)
        self.done.set_result(None)


async def test_what_never_waits_completes_in_the_call() -> None:
    done: list[str] = []
    ends = _Ends()

    async def inner() -> str:
        done.append("inner")
        return "x"

    async def work() -> None:
        done.append(await inner())

    assert run_at_once(work(), ends) is True
    assert done == ["inner", "x"]
    assert ends.told == []  # told only of an end after a wait


async def test_what_waits_goes_on_from_the_callback_without_a_task() -> None:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[int] = loop.create_future()
    steps: list[object] = []
    ends = _Ends()

    async def work() -> None:
        steps.append("before")
        steps.append(await fut)
        steps.append(asyncio.current_task())  # no task: run from the future's callback
        await asyncio.sleep(0)  # a bare yield too
        steps.append("after")

    assert run_at_once(work(), ends) is False
    assert steps == ["before"]  # ran up to the wait, in the call
    await asyncio.sleep(0)
    assert steps == ["before"] and not ends.done.done()
    fut.set_result(7)
    await asyncio.wait_for(ends.done, 1.0)
    assert steps == ["before", 7, None, "after"]
    assert ends.told == [None]


async def test_exceptions_reach_the_caller_or_the_callback() -> None:
    async def fails_at_once() -> None:
        raise ValueError("now")

    ends = _Ends()
    with pytest.raises(ValueError, match="now"):
        run_at_once(fails_at_once(), ends)
    assert ends.told == []

    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()

    async def fails_later() -> None:
        await fut
        raise KeyError("later")

    assert run_at_once(fails_later(), ends) is False
    fut.set_result(None)
    await asyncio.wait_for(ends.done, 1.0)
    assert len(ends.told) == 1 and isinstance(ends.told[0], KeyError)


async def test_what_it_waits_on_failing_is_raised_where_it_waits() -> None:
    """A failed future (a Redis error) is raised at the await, where the code can catch it."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()
    seen: list[str] = []
    ends = _Ends()

    async def work() -> None:
        try:
            await fut
        except ConnectionError:
            seen.append("caught")

    assert run_at_once(work(), ends) is False
    fut.set_exception(ConnectionError("gone"))
    await asyncio.wait_for(ends.done, 1.0)
    assert seen == ["caught"] and ends.told == [None]


async def test_a_cancelled_wait_ends_it_with_the_cancellation() -> None:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()
    ends = _Ends()

    async def work() -> None:
        await fut

    assert run_at_once(work(), ends) is False
    fut.cancel()
    await asyncio.wait_for(ends.done, 1.0)
    assert len(ends.told) == 1 and isinstance(ends.told[0], asyncio.CancelledError)


class _NotAFuture:
    def __await__(self) -> Generator[Any, None, None]:
        yield "something"


async def test_a_yield_of_something_not_a_future_is_an_error_in_the_coroutine() -> None:
    """As asyncio's Task: the coroutine is given a RuntimeError at the bad yield."""
    ends = _Ends()

    async def work() -> None:
        await _NotAFuture()

    assert run_at_once(work(), ends) is False
    assert len(ends.told) == 1 and isinstance(ends.told[0], RuntimeError)
