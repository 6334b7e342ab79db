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
    ACK,
    CHANGE,
    END,
    REQUEST,
    SNAPSHOT,
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
    # on after the copy, in order; the first is told it was passed on.
    first.send(frame(CHANGE, _change("sip:late@x")))
    assert await first.next() == ACK + (1).to_bytes(4, "big")
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
    good.send(frame(CHANGE, _change("sip:x@x")))  # the hub still relays (to nobody now)
    assert await good.next() == ACK + (1).to_bytes(4, "big")
    third = await Raw.connect(hub)
    assert await good.next() == REQUEST
    good.writer.close()  # dies before sending its copy: the newcomer is cut off, to retry
    assert await asyncio.wait_for(third.reader.read(), BOUND) == b""
