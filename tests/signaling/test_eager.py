"""signaling.eager: an awaitable run in the caller until it completes or first waits."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import pytest

from signaling.eager import run_eagerly


async def test_what_never_waits_completes_in_the_call() -> None:
    done: list[str] = []

    async def inner() -> str:
        done.append("inner")
        return "x"

    async def work() -> None:
        done.append(await inner())

    assert run_eagerly(work()) is None
    assert done == ["inner", "x"]


async def test_what_waits_goes_on_from_where_it_stopped() -> None:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[int] = loop.create_future()
    steps: list[object] = []

    async def work() -> None:
        steps.append("before")
        steps.append(await fut)
        await asyncio.sleep(0)  # a bare yield too
        steps.append("after")

    rest = run_eagerly(work())
    assert rest is not None
    assert steps == ["before"]  # ran up to the wait, in the call
    task = loop.create_task(_await(rest))
    await asyncio.sleep(0)
    assert not task.done()
    fut.set_result(7)
    await asyncio.wait_for(task, 1.0)
    assert steps == ["before", 7, "after"]


async def test_exceptions_reach_the_caller_from_either_part() -> None:
    async def fails_at_once() -> None:
        raise ValueError("now")

    with pytest.raises(ValueError, match="now"):
        run_eagerly(fails_at_once())

    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()

    async def fails_later() -> None:
        await fut
        raise KeyError("later")

    rest = run_eagerly(fails_later())
    assert rest is not None
    fut.set_result(None)
    with pytest.raises(KeyError):
        await rest


async def test_a_cancellation_reaches_where_it_waits() -> None:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()
    seen: list[str] = []

    async def work() -> None:
        try:
            await fut
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    rest = run_eagerly(work())
    assert rest is not None
    task = loop.create_task(_await(rest))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == ["cancelled"]
    assert fut.cancelled()


async def test_a_wait_that_is_caught_and_returned_from_ends_cleanly() -> None:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()

    async def work() -> None:
        try:
            await fut
        except asyncio.CancelledError:
            return  # swallowed: the rest ends, no RuntimeError from a StopIteration

    rest = run_eagerly(work())
    assert rest is not None
    task = loop.create_task(_await(rest))
    await asyncio.sleep(0)
    task.cancel()
    await task
    assert task.done() and not task.cancelled()


async def _await(rest: Awaitable[None]) -> None:
    await rest
