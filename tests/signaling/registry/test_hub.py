"""The replica hub as a relay: raw workers on its Unix socket (``signaling.registry.hub``)."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from signaling.registry.base import Binding
from signaling.registry.hub import ReplicaHub
from signaling.registry.pending import Change, record
from signaling.registry.replica import (
    CHANGE,
    END,
    REQUEST,
    SNAPSHOT,
    SYNC,
    decode_frames,
    frame,
)

BOUND = 5.0


@pytest.fixture
async def hub() -> AsyncIterator[ReplicaHub]:
    with tempfile.TemporaryDirectory(prefix="sig-hub-") as tmp:
        relay = ReplicaHub(str(Path(tmp) / "replica.sock"))
        await relay.start()
        yield relay
        await relay.close()


class Raw:
    """A worker speaking the frames by hand."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.buf = bytearray()

    @classmethod
    async def connect(cls, hub: ReplicaHub) -> Raw:
        return cls(*await asyncio.open_unix_connection(hub.path))

    async def next(self) -> bytes:
        async with asyncio.timeout(BOUND):
            while True:
                frames = decode_frames(self.buf)
                assert frames is not None
                if frames:
                    # Put back all but the first (decode_frames took them all).
                    for extra in reversed(frames[1:]):
                        self.buf[:0] = len(extra).to_bytes(4, "big") + extra
                    return frames[0]
                data = await self.reader.read(65536)
                assert data, "closed by the hub"
                self.buf += data

    def send(self, *frames: bytes) -> None:
        self.writer.write(b"".join(frames))


def _change(aor: str) -> bytes:
    b = Binding(aor=aor, contact=f"{aor};c", q=1.0, expires_at=1e12, call_id="c", cseq=1)
    return record(Change(aor, [(b, None)], []), 1, 1)


async def test_a_new_worker_gets_a_copy_then_what_was_held_back(hub: ReplicaHub) -> None:
    first = await Raw.connect(hub)
    assert await first.next() == END  # nobody to copy from: it starts empty
    second = await Raw.connect(hub)
    assert await first.next() == REQUEST  # the hub asks the serving one for its copy
    # A change of the first worker's while it answers: held back for the second, and passed
    # on after the copy, in order.
    first.send(frame(CHANGE, _change("sip:late@x")), frame(SYNC))
    assert await first.next() == SYNC  # read, and nothing of its own comes back to it
    first.send(frame(SNAPSHOT, _change("sip:old@x")), frame(END))
    assert await second.next() == frame(SNAPSHOT, _change("sip:old@x"))[4:]
    assert await second.next() == END
    assert (await second.next())[:1] == CHANGE
    # From now on, the second's changes reach the first and not itself.
    second.send(frame(CHANGE, _change("sip:new@x")))
    got = await first.next()
    assert got == frame(CHANGE, _change("sip:new@x"))[4:]
    for w in (first, second):
        w.writer.close()


async def test_a_malformed_frame_closes_that_connection_only(hub: ReplicaHub) -> None:
    good = await Raw.connect(hub)
    assert await good.next() == END
    bad = await Raw.connect(hub)
    assert await good.next() == REQUEST
    good.send(frame(END))
    assert await bad.next() == END
    bad.send(b"\x7f\xff\xff\xff")  # an absurd length
    assert await asyncio.wait_for(bad.reader.read(), BOUND) == b""
    assert hub.malformed == 1
    good.send(frame(CHANGE, _change("sip:x@x")), frame(SYNC))  # the hub still serves
    assert await good.next() == SYNC
    third = await Raw.connect(hub)
    assert await good.next() == REQUEST
    good.writer.close()  # dies before sending its copy: the newcomer is cut off, to retry
    assert await asyncio.wait_for(third.reader.read(), BOUND) == b""


async def test_changes_are_passed_on_in_one_write_then_the_sync_answer(hub: ReplicaHub) -> None:
    """Changes of two workers reach the third in the order read, before its SYNC answer:
    what a worker had read when it read the SYNC is in the asker's socket first."""
    first = await Raw.connect(hub)
    assert await first.next() == END
    workers = [first]
    for _ in range(2):
        w = await Raw.connect(hub)
        # Some serving worker is asked for its (empty) copy.
        asked = {asyncio.ensure_future(x.next()): x for x in workers}
        done, waiting = await asyncio.wait(asked, timeout=BOUND,
                                           return_when=asyncio.FIRST_COMPLETED)
        for fut in waiting:
            fut.cancel()
        (fut,) = done
        assert fut.result() == REQUEST
        asked[fut].send(frame(END))
        assert await w.next() == END
        workers.append(w)
    a, b, c = workers
    a.send(frame(CHANGE, _change("sip:a1@x")), frame(CHANGE, _change("sip:a2@x")))
    b.send(frame(CHANGE, _change("sip:b1@x")))
    await asyncio.sleep(0.05)  # both read by the hub
    c.send(frame(SYNC))
    got = [await c.next() for _ in range(4)]
    assert sorted(got[:3]) == sorted(frame(CHANGE, _change(f"sip:{n}@x"))[4:]
                                     for n in ("a1", "a2", "b1"))
    assert got.index(frame(CHANGE, _change("sip:a1@x"))[4:]) < got.index(
        frame(CHANGE, _change("sip:a2@x"))[4:])
    assert got[3] == SYNC
    assert await b.next() == frame(CHANGE, _change("sip:a1@x"))[4:]
    for w in workers:
        w.writer.close()
