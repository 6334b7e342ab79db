"""The replica hub copying a replica to a worker that starts: raw workers on its Unix socket
(``signaling.registry.hub``)."""

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
    END,
    JOINED,
    POSITIONS,
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


async def test_a_new_worker_gets_a_serving_ones_copy_and_positions(hub: ReplicaHub) -> None:
    first = await Raw.connect(hub)
    assert await first.next() == END  # nobody to copy from: it reads the journals from 0
    second = await Raw.connect(hub)
    assert await first.next() == REQUEST  # the hub asks the serving one for its copy
    positions = frame(POSITIONS, b'{"journal-a":123}')
    first.send(frame(SNAPSHOT, _change("sip:old@x")), positions, frame(END))
    assert await second.next() == frame(SNAPSHOT, _change("sip:old@x"))[4:]
    assert await second.next() == positions[4:]
    assert await second.next() == END
    # Now the second is a source too: a third is copied from whichever serves fewer; the
    # other is told that a journal is new (it reads it from its next catch-up on).
    third = await Raw.connect(hub)
    got = {w: await w.next() for w in (first, second)}
    assert sorted(got.values()) == sorted([REQUEST, JOINED])
    source = first if got[first] == REQUEST else second
    source.send(frame(END))
    assert await third.next() == END
    for w in (first, second, third):
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
    third = await Raw.connect(hub)  # the hub still serves
    assert await good.next() == REQUEST
    good.writer.close()  # dies before sending its copy: the newcomer is cut off, to retry
    assert await asyncio.wait_for(third.reader.read(), BOUND) == b""
