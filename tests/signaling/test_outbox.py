"""``signaling.outbox``: frames to one worker's Unix datagram socket, in order, through its
short queue (real sockets; the queue is made to fill by frames larger than the sender's send
buffer can hold at once, whatever ``net.unix.max_dgram_qlen`` the machine has)."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from signaling import outbox
from signaling.metrics import FastCounter, Metrics
from signaling.outbox import DECODER, Frame, Outbox

#: Frames of this size fill a sender's 64 KiB send buffer one at a time: the second waits.
BIG = 60_000
#: Seconds a test waits for what it expects; a bound, never the measure.
BOUND = 10.0


def _frame(n: int, kind: str = "held", size: int = BIG) -> Frame:
    return Frame(kind, "udp", "127.0.0.1", n, None, "", bytes(size))


def _counter() -> FastCounter:
    return Metrics().fast_counter("handoff", "test", ["direction", "kind"])


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[socket.socket, socket.socket, str]]:
    """(sender, reader, reader's path): non-blocking Unix datagram sockets."""
    path = str(tmp_path / "reader")
    reader = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    reader.bind(path)
    reader.setblocking(False)
    sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 << 10)
    sender.setblocking(False)
    try:
        yield sender, reader, path
    finally:
        sender.close()
        reader.close()


async def _read(reader: socket.socket, count: int) -> list[Frame]:
    """``count`` frames, read as a worker's loop reads them (a batch per wake-up)."""
    got: list[Frame] = []
    deadline = asyncio.get_running_loop().time() + BOUND
    while len(got) < count:
        assert asyncio.get_running_loop().time() < deadline, len(got)
        try:
            got.append(DECODER.decode(reader.recv(1 << 20)))
        except BlockingIOError:
            await asyncio.sleep(0.001)
    return got


async def test_frames_beyond_the_readers_queue_arrive_all_in_order(
        pair: tuple[socket.socket, socket.socket, str]) -> None:
    """Sent back to back, all but the first few were refused (EAGAIN) and lost, the last
    ("released") among them: every one arrives now, in the order sent."""
    sender, reader, path = pair
    counter = _counter()
    box = Outbox(sender, path, counter)
    frames = [_frame(n) for n in range(40)] + [_frame(40, "released", 0)]
    assert all(box.send(f) for f in frames)
    assert box.waiting  # the reader's queue was full: the rest waits for it
    got = await _read(reader, len(frames))
    assert [f.port for f in got] == list(range(41))
    assert got[-1].kind == "released"
    assert counter.get("sent", "held") == 40 and counter.get("sent", "released") == 1
    assert not [k for k in counter.values if k[1].startswith("lost_")]


async def test_labels_count_what_was_sent(
        pair: tuple[socket.socket, socket.socket, str]) -> None:
    sender, reader, path = pair
    counter = _counter()
    box = Outbox(sender, path, counter)
    assert box.send(_frame(1, "in", 10), "retransmission")
    await _read(reader, 1)
    assert counter.values == {("sent", "retransmission"): 1.0}


async def test_what_waits_for_a_reader_that_goes_is_given_back_in_order(
        pair: tuple[socket.socket, socket.socket, str]) -> None:
    """A full queue is a busy reader, not a gone one; a closed socket is gone: what still
    waited goes to ``on_gone`` (the new worker of a reload then handles it itself), and the
    next send says so."""
    sender, reader, path = pair
    given: list[Frame] = []
    box = Outbox(sender, path, _counter(), given.extend)
    for n in range(20):
        assert box.send(_frame(n))
    waiting = [f.port for _, f, _ in box.waiting]
    assert waiting
    reader.close()
    Path(path).unlink()
    deadline = asyncio.get_running_loop().time() + BOUND
    while not given:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.001)
    assert [f.port for f in given] == waiting
    assert box.gone and not box.send(_frame(99))


async def test_a_reader_that_is_not_there_is_gone_at_once(tmp_path: Path) -> None:
    """No successor (a shutdown, not a reload): the send says so, nothing waits."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
        sender.setblocking(False)
        box = Outbox(sender, str(tmp_path / "nobody"), _counter())
        assert not box.send(_frame(1, "released", 0))
        assert box.gone and not box.waiting


async def test_without_on_gone_what_waited_is_counted_lost(
        pair: tuple[socket.socket, socket.socket, str]) -> None:
    sender, reader, path = pair
    counter = _counter()
    box = Outbox(sender, path, counter)
    for n in range(20):
        box.send(_frame(n))
    waiting = len(box.waiting)
    reader.close()
    Path(path).unlink()
    deadline = asyncio.get_running_loop().time() + BOUND
    while not box.gone:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.001)
    assert counter.get("sent", "lost_held") == waiting


async def test_beyond_most_a_frame_is_dropped_and_counted(
        pair: tuple[socket.socket, socket.socket, str], monkeypatch: pytest.MonkeyPatch) -> None:
    sender, _, path = pair
    monkeypatch.setattr(outbox, "MOST", 3 * BIG)
    counter = _counter()
    box = Outbox(sender, path, counter)
    for n in range(20):
        assert box.send(_frame(n))  # taken: sent, waiting, or dropped and counted
    assert box.octets <= 3 * BIG
    lost = counter.get("sent", "lost_held")
    assert lost and lost + len(box.waiting) + counter.get("sent", "held") == 20
    box.close()


async def test_a_reader_that_takes_nothing_has_what_waits_dropped(
        pair: tuple[socket.socket, socket.socket, str], monkeypatch: pytest.MonkeyPatch) -> None:
    sender, _, path = pair
    monkeypatch.setattr(outbox, "STUCK", 0.05)
    counter = _counter()
    box = Outbox(sender, path, counter)
    for n in range(20):
        box.send(_frame(n))
    deadline = asyncio.get_running_loop().time() + BOUND
    while box.waiting:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)
    assert counter.get("sent", "lost_held") + counter.get("sent", "held") == 20
    assert counter.get("sent", "lost_held") and not box.gone  # dropped, not taken as gone


async def test_close_sends_what_waits_while_the_reader_reads(
        pair: tuple[socket.socket, socket.socket, str]) -> None:
    """An exiting worker's last frames ("ended"): sent within the wait, blocking, while the
    reader (another process; a thread here) takes them."""
    sender, reader, path = pair
    counter = _counter()
    box = Outbox(sender, path, counter)
    frames = [_frame(n) for n in range(20)] + [_frame(20, "ended", 0)]
    for f in frames:
        box.send(f)
    assert box.waiting
    got: list[Frame] = []
    thread = threading.Thread(target=_read_blocking, args=(reader, len(frames), got))
    thread.start()
    box.close(BOUND)  # blocks this loop, as in an exiting worker
    thread.join(BOUND)
    assert [f.port for f in got] == list(range(21))
    assert counter.get("sent", "ended") == 1


def _read_blocking(reader: socket.socket, count: int, got: list[Frame]) -> None:
    reader.settimeout(BOUND)
    got.extend(DECODER.decode(reader.recv(1 << 20)) for _ in range(count))


def test_frames_carry_every_field() -> None:
    frame = Frame("in", "udp", "::1", 5060, None, "w0.1", b"x")
    assert DECODER.decode(msgspec.msgpack.encode(frame)) == frame
