"""Sharded bounded queues: order per key, shedding when full, live resize, drain."""

from __future__ import annotations

import asyncio

from signaling.dispatch import Dispatcher


async def test_items_of_one_key_are_handled_in_order() -> None:
    seen: list[tuple[str, int]] = []

    async def handle(item: tuple[str, int]) -> None:
        await asyncio.sleep(0.001 * (item[1] % 3))  # uneven work must not reorder a key
        seen.append(item)

    d: Dispatcher[tuple[str, int]] = Dispatcher(4, 100, handle, lambda i, e: None)
    d.start()
    for n in range(30):
        for key in ("call-a", "call-b", "call-c"):
            assert d.submit(key, (key, n))
    assert await d.drain(5.0)
    await d.stop()
    for key in ("call-a", "call-b", "call-c"):
        assert [n for k, n in seen if k == key] == list(range(30))


async def test_full_shard_refuses_without_waiting_and_resize_applies() -> None:
    gate = asyncio.Event()

    async def handle(item: int) -> None:
        await gate.wait()

    d: Dispatcher[int] = Dispatcher(1, 2, handle, lambda i, e: None)
    d.start()
    await asyncio.sleep(0)
    accepted = [d.submit("k", i) for i in range(5)]
    await asyncio.sleep(0)
    # One item is being handled, two wait: the shard holds no more than its bound.
    assert sum(accepted) <= 3
    assert d.depths()[0] <= 2
    d.resize(10)
    assert d.submit("k", 99)
    gate.set()
    assert await d.drain(2.0)
    await d.stop()


async def test_a_failing_handler_costs_one_item_not_the_worker() -> None:
    errors: list[int] = []
    done: list[int] = []

    async def handle(item: int) -> None:
        if item == 1:
            raise RuntimeError("boom")
        done.append(item)

    d: Dispatcher[int] = Dispatcher(1, 10, handle, lambda i, e: errors.append(i))
    d.start()
    for i in range(3):
        d.submit("k", i)
    assert await d.drain(2.0)
    await d.stop()
    assert errors == [1]
    assert done == [0, 2]


async def test_drain_times_out_when_work_is_stuck() -> None:
    async def handle(item: int) -> None:
        await asyncio.sleep(10)

    d: Dispatcher[int] = Dispatcher(1, 10, handle, lambda i, e: None)
    d.start()
    d.submit("k", 1)
    assert not await d.drain(0.1)
    await d.stop()
