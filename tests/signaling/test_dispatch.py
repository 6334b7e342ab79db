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


async def test_idle_workers_wake_for_new_items_on_their_own_shard() -> None:
    seen: list[int] = []

    async def handle(item: int) -> None:
        seen.append(item)

    d: Dispatcher[int] = Dispatcher(3, 4, handle, lambda i, e: None)
    d.start()
    for round_ in range(3):
        await asyncio.sleep(0.01)  # every worker is idle, waiting on its shard
        assert d.depths() == [0, 0, 0]
        for key in ("a", "b", "c", "d"):
            assert d.submit(key, round_)
        assert await d.drain(1.0)
        assert seen.count(round_) == 4
    await d.stop()


async def test_bound_is_per_shard_and_a_smaller_resize_keeps_queued_items() -> None:
    gate = asyncio.Event()
    handled: list[int] = []

    async def handle(item: int) -> None:
        await gate.wait()
        handled.append(item)

    d: Dispatcher[int] = Dispatcher(2, 3, handle, lambda i, e: None)
    d.start()
    await asyncio.sleep(0)
    # Two keys on different shards: each shard has its own bound.
    keys = ["k0", *(f"k{n}" for n in range(1, 64))]
    other = next(k for k in keys if hash(k) % 2 != hash("k0") % 2)
    first = [d.submit("k0", i) for i in range(4)]  # 3 fit; the 4th is refused
    assert d.any_full()
    await asyncio.sleep(0)  # the worker takes item 0: room for exactly one more
    assert not d.any_full()
    first += [d.submit("k0", i) for i in range(4, 8)]
    assert first == [True, True, True, False, True, False, False, False]
    assert d.depths()[hash("k0") % 2] == 3
    assert [d.submit(other, 100 + i) for i in range(4)] == [True, True, True, False]
    d.resize(1)
    assert d.queue_size == 1
    assert d.depths()[hash(other) % 2] == 3  # already queued: kept
    assert not d.submit(other, 200)
    assert d.any_full()
    gate.set()
    assert await d.drain(2.0)
    assert not d.any_full()
    assert sorted(handled) == [0, 1, 2, 4, 100, 101, 102]
    assert d.submit(other, 300)  # below the new bound again
    assert d.any_full()  # one item is a full shard at a bound of 1
    assert await d.drain(2.0)
    assert not d.any_full()
    await d.stop()


async def test_concurrent_drains_and_a_timed_out_one_do_not_disturb_each_other() -> None:
    release = asyncio.Event()

    async def handle(item: int) -> None:
        await release.wait()

    d: Dispatcher[int] = Dispatcher(2, 10, handle, lambda i, e: None)
    assert await d.drain(0.01)  # nothing submitted: drained at once
    d.start()
    for i in range(5):
        assert d.submit(f"key-{i}", i)
    assert not await d.drain(0.05)  # times out; the next drains still complete
    waiting = [asyncio.ensure_future(d.drain(2.0)) for _ in range(2)]
    await asyncio.sleep(0.02)
    assert not any(w.done() for w in waiting)
    release.set()
    assert await asyncio.gather(*waiting) == [True, True]
    assert d.depths() == [0, 0]
    await d.stop()


async def test_errors_reach_on_error_with_the_item_and_stop_cancels_busy_workers() -> None:
    errors: list[tuple[int, str]] = []
    started = asyncio.Event()

    async def handle(item: int) -> None:
        if item < 0:
            raise ValueError(str(item))
        started.set()
        await asyncio.sleep(10)

    d: Dispatcher[int] = Dispatcher(1, 10, handle,
                                    lambda i, e: errors.append((i, str(e))))
    d.start()
    d.submit("k", -1)
    d.submit("k", 5)
    await asyncio.wait_for(started.wait(), 1.0)
    assert errors == [(-1, "-1")]
    await asyncio.wait_for(d.stop(), 1.0)  # the handler's sleep is cancelled, not awaited


def test_bounds_must_be_positive() -> None:
    # An asyncio.Queue of size 0 is unbounded; a dispatcher never is.
    async def handle(item: int) -> None:
        return None

    for shards, size in ((0, 10), (2, 0), (1, -1)):
        try:
            Dispatcher(shards, size, handle, lambda i, e: None)
        except ValueError:
            continue
        raise AssertionError(f"accepted {shards} shards of {size}")
    d: Dispatcher[int] = Dispatcher(1, 1, handle, lambda i, e: None)
    try:
        d.resize(0)
    except ValueError:
        assert d.queue_size == 1
    else:
        raise AssertionError("resize(0) accepted")
