"""signaling/periodic.py: the loop every background check of the server runs on."""

from __future__ import annotations

import asyncio

from signaling.periodic import Periodic


async def _until(check: object, timeout: float = 20.0) -> None:
    assert callable(check)
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.005)


async def test_plain_and_coroutine_ticks_repeat_until_closed() -> None:
    plain: list[int] = []
    awaited: list[int] = []

    async def tick() -> None:
        await asyncio.sleep(0)
        awaited.append(1)

    loops = [Periodic("plain", 0.01, lambda: plain.append(1)), Periodic("async", 0.01, tick)]
    for p in loops:
        p.start()
    await _until(lambda: len(plain) >= 3 and len(awaited) >= 3)
    for p in loops:
        await p.close()
    counts = (len(plain), len(awaited))
    await asyncio.sleep(0.05)
    assert (len(plain), len(awaited)) == counts  # closed: no more ticks
    await loops[0].close()  # closing twice is harmless


async def test_first_tick_waits_an_interval_unless_first_now() -> None:
    late: list[int] = []
    early: list[int] = []
    waiting = Periodic("late", 3600, lambda: late.append(1))
    at_once = Periodic("early", 3600, lambda: early.append(1), first_now=True)
    waiting.start()
    at_once.start()
    await _until(lambda: early == [1])
    assert late == []
    await waiting.close()
    await at_once.close()
