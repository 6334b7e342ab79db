"""``signaling.handoff``: the old and the new worker of one slot during a reload, in process
(two SIP cores without sockets, ``tests/signaling/corekit.py``; real Unix datagram sockets
between them).  The end-to-end cases (real workers, SIGHUP) are in test_supervisor.py.

In one process the two cannot read while the other sends: everything the old worker sends
as it releases the slot is sent before the new one reads any of it, which is what a worker
under load saw (its successor busy starting): the reader's queue holds
``net.unix.max_dgram_qlen`` datagrams (10 by default) and a send beyond that is refused."""

from __future__ import annotations

import asyncio
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from protocols.sip.message import Response
from protocols.sip.parser import parse_message
from protocols.sip.txkeys import MAGIC_COOKIE, TransactionKey
from signaling.handoff import HELD_PER_FRAME, Handoff
from signaling.metrics import Metrics
from signaling.router import Router
from signaling.siblings import DECODER, handoff_path
from signaling.transports.base import Peer
from signaling.worker import WorkerInfo
from tests.signaling.corekit import Node, node

#: Seconds a test waits for what it expects; a bound, never the measure.
BOUND = 30.0
PEER = Peer("udp", "192.0.2.20", 5080)


@pytest.fixture
def run_dir() -> Iterator[str]:
    """Short: a Unix socket's path is at most 107 octets."""
    path = tempfile.mkdtemp(prefix="ho-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _handoff(n: Node, run_dir: str, generation: int) -> Handoff:
    info = WorkerInfo(slot=0, generation=generation, fds={}, ready_fd=-1, run_dir=run_dir)
    return Handoff(Router(n.registrar, n.proxy), n.core, Metrics(), info)


def _lost(h: Handoff) -> dict[tuple[str, ...], float]:
    return {k: v for k, v in h.c_handoff.values.items() if k[1].startswith("lost_")}


def _ringing(n: int) -> bytes:
    """A 180 for a request nobody here sent: a stray response, handed to the predecessor."""
    return (f"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch={MAGIC_COOKIE}"
            f"-old{n}\r\nFrom: <sip:a@example.com>;tag=a\r\nTo: <sip:b@example.com>;tag=b\r\n"
            f"Call-ID: stray-{n}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n").encode()


async def test_the_slot_is_released_behind_every_held_frame(run_dir: str) -> None:
    """The old worker holds 20 frames' worth of answered REGISTERs (kept for Timer J).  Sent
    back to back, all but the first ~10 frames were refused, and the "released" after them:
    the new worker then read the slot's sockets only after ``RELEASE_WAIT`` (5 s), while
    their queue overflowed.  Now every key arrives, then "released" (not the timer)."""
    async with node() as old, node() as new:
        keys: set[TransactionKey] = {(f"{MAGIC_COOKIE}-r{n}", "192.0.2.10", 5070, "REGISTER")
                                     for n in range(20 * HELD_PER_FRAME)}
        for key in keys:
            old.core.answered.remember(key, b"SIP/2.0 200 OK\r\n\r\n", old.core.now())
        leaving, taking = _handoff(old, run_dir, 1), _handoff(new, run_dir, 2)
        resumed = asyncio.Event()
        paused: list[bool] = []
        taking.take_over(lambda: paused.append(True), resumed.set)
        assert paused
        leaving.release()
        await asyncio.wait_for(resumed.wait(), BOUND)
        assert taking.c_handoff.get("received", "released") == 1  # not the timer
        assert taking.inherited == keys
        assert taking.c_handoff.get("received", "held") == 20
        assert not _lost(leaving)
        leaving.close()
        taking.close()


async def test_a_busy_predecessor_is_not_taken_for_gone(run_dir: str) -> None:
    """The predecessor reads nothing for a while (its queue full): what the new worker hands
    it waits, in order, and the predecessor is still known (taken as gone, the hand-over
    stopped and what followed was served as new).  When it then exits, what it never read is
    the new worker's to handle."""
    async with node() as new:
        busy = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        busy.bind(handoff_path(run_dir, 0, 1))
        busy.setblocking(False)
        taking = _handoff(new, run_dir, 2)
        taking.take_over(lambda: None, lambda: None)
        assert DECODER.decode(busy.recv(1 << 16)).kind == "hello"
        for n in range(60):
            response = parse_message(_ringing(n))
            assert isinstance(response, Response)
            taking.on_stray_response(response, PEER)
        assert taking.predecessor is not None
        first = [DECODER.decode(busy.recv(1 << 16)) for _ in range(5)]
        assert [f.data for f in first] == [_ringing(n) for n in range(5)]
        assert taking._to_previous is not None and taking._to_previous.waiting
        busy.close()
        Path(handoff_path(run_dir, 0, 1)).unlink()
        deadline = asyncio.get_running_loop().time() + BOUND
        while taking.predecessor is not None:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.001)
        # Every one it never read came back and was handled here (a stray response: counted).
        returned = taking.c_handoff.get("received", "returned")
        assert returned and returned + taking.c_handoff.get("sent", "response") == 60
        assert new.core.c_resp_in.total() >= returned
        taking.close()


async def test_a_predecessor_with_a_full_queue_is_waited_for(run_dir: str) -> None:
    """Its queue full when the new worker says hello: alive, so the new worker waits for
    its "released" before reading (it used to read at once, beside it)."""
    async with node() as new:
        busy = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        busy.bind(handoff_path(run_dir, 0, 1))
        filler = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        filler.setblocking(False)
        try:
            while True:
                filler.sendto(b"x" * 1000, handoff_path(run_dir, 0, 1))
        except BlockingIOError:
            pass
        taking = _handoff(new, run_dir, 2)
        paused: list[bool] = []
        taking.take_over(lambda: paused.append(True), lambda: None)
        assert paused and taking.predecessor is not None
        taking.close()
        filler.close()
        busy.close()
