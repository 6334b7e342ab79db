"""Frames to one worker's hand-off socket, in order, through its short queue.

The workers of a multi-process server pass frames over Unix datagram sockets
(``signaling.handoff``: a reload's old and new worker of one slot; ``signaling.siblings``).
Such a socket queues at most ``net.unix.max_dgram_qlen`` datagrams for its reader (10 by
default), whatever its receive buffer, and a non-blocking sender is refused (EAGAIN) beyond
that until the reader takes one.  Ten is nothing to a worker stopping under load: as it
releases its slot, it passes on the keys of every transaction it holds, the answered REGISTERs
kept until Timer J among them (§17.2.2: 64*T1), ~160 frames at 2,000 REGISTERs/s.  Sent back to
back, all but the first ten or so were refused, and so, often, was the "released" after them:
the new worker then waited ``handoff.RELEASE_WAIT`` (5 s) before reading the slot's sockets,
whose queue filled (8 MB) and overflowed, and every client of that slot was answered seconds
late or not at all (bench_reload near capacity, benchmarks/README.md: "the reload's bump").

``Outbox`` keeps what the reader's queue cannot take yet and sends it, in order, as the reader
makes room (tried again every ``RETRY`` seconds), so a frame is never overtaken by a later one
and a full queue is not mistaken for a reader that has gone.  Only a reader that has gone
(its socket closed: ECONNREFUSED, ENOENT) ends it: what was still waiting is given back to
``on_gone``, which handles it as if never sent.  Bounded (``MOST`` octets waiting; beyond, a
frame is dropped and counted, as the kernel would drop a datagram), and what waits for a
reader that takes nothing for ``STUCK`` seconds is dropped and counted too.
"""

from __future__ import annotations

import asyncio
import collections
import socket
import time
from collections.abc import Callable

import msgspec

from signaling.metrics import FastCounter
from signaling.transports.base import Peer

__all__ = ["DECODER", "ENCODER", "MOST", "RETRY", "STUCK", "Frame", "Outbox"]

#: Seconds between tries while the reader's queue is full: a reader on the same machine takes
#: a batch of frames per wake-up of its loop (64), so the queue has room again within about
#: one iteration of its loop; a millisecond costs the waiting frames about that.
RETRY = 0.001
#: Octets of frames waiting at most: every key a worker at 4,000 REGISTERs/s holds for Timer
#: J (~130,000, ~60 octets each: ~8 MB) fits twice.  Beyond, a frame is dropped.
MOST = 16 << 20
#: Seconds a reader may take nothing before it is taken as gone: longer than any pause of a
#: live worker's loop (a full garbage collection, a replica's copy), and no longer than the
#: new worker of a reload waits for its predecessor anyway (``handoff.RELEASE_WAIT``).
STUCK = 5.0


class Frame(msgspec.Struct, array_like=True, frozen=True):
    """One message between two workers (``signaling.handoff`` reads them; ``signaling.siblings``
    and the hand-off send them through an ``Outbox``)."""

    #: "in": receive ``data`` as if read from ``peer``; "out": send ``data`` to ``peer``;
    #: "gone": ``peer``'s connection closed before an "out" frame for it could be sent.
    kind: str
    transport: str
    host: str
    port: int
    conn_id: str | None
    #: the sending worker's name (``w<slot>.<generation>``)
    origin: str
    data: bytes

    @property
    def peer(self) -> Peer:
        return Peer(self.transport, self.host, self.port, self.conn_id)


ENCODER = msgspec.msgpack.Encoder()
DECODER = msgspec.msgpack.Decoder(Frame)


class Outbox:
    """Frames to ``path`` (one reader), in order; see the module docstring.

    ``counter`` counts each frame by ``("sent", label)`` once the reader's queue took it, or
    ``("sent", "lost_" + label)`` when it is dropped (queue over ``MOST``, or the reader
    stuck), where ``label`` is what ``send`` was given (the frame's kind by default); what a
    gone reader never took goes back to ``on_gone`` uncounted, or without one is counted
    lost."""

    def __init__(self, sock: socket.socket, path: str, counter: FastCounter,
                 on_gone: Callable[[list[Frame]], None] | None = None) -> None:
        self.sock = sock
        self.path = path
        self.counter = counter
        self.on_gone = on_gone
        self.waiting: collections.deque[tuple[bytes, Frame, str]] = collections.deque()
        self.octets = 0
        #: Whether the reader has gone (nothing is sent any more).
        self.gone = False
        self._retry: asyncio.TimerHandle | None = None
        self._progress = 0.0

    def send(self, frame: Frame, label: str | None = None) -> bool:
        """Sent, queued behind what waits (sent by the retries), or dropped and counted; False
        only when the reader is found gone now (the frame is then the caller's to handle:
        ``on_gone`` gets only what waited, from a retry, never inside this call)."""
        if self.gone:
            return False
        label = label or frame.kind
        data = ENCODER.encode(frame)
        if self.waiting:
            if self.octets + len(data) > MOST:
                self.counter.inc("sent", "lost_" + label)
            else:
                self.waiting.append((data, frame, label))
                self.octets += len(data)
            return True
        try:
            self.sock.sendto(data, self.path)
        except BlockingIOError:  # its queue is full: it has not read yet
            self.waiting.append((data, frame, label))
            self.octets += len(data)
            self._progress = time.monotonic()
            self._retry = asyncio.get_running_loop().call_later(RETRY, self._again)
            return True
        except OSError:  # its socket is closed: it has gone
            self.gone = True
            return False
        self.counter.inc("sent", label)
        return True

    def flush(self) -> None:
        """Send what waits, in order, until the reader's queue is full."""
        while self.waiting:
            data, _, label = self.waiting[0]
            try:
                self.sock.sendto(data, self.path)
            except BlockingIOError:  # its queue is full: it has not read yet
                if time.monotonic() - self._progress >= STUCK:
                    self._drop_all()
                    return
                if self._retry is None:
                    self._retry = asyncio.get_running_loop().call_later(RETRY, self._again)
                return
            except OSError:  # its socket is closed: it has gone
                self._gone()
                return
            self.waiting.popleft()
            self.octets -= len(data)
            self._progress = time.monotonic()
            self.counter.inc("sent", label)

    def close(self, wait: float = 0.0) -> None:
        """No more tries: what still waits is sent within ``wait`` seconds, blocking (the
        reader takes it meanwhile), or dropped."""
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        deadline = time.monotonic() + wait
        while self.waiting and not self.gone:
            self.flush()
            if self._retry is not None:
                self._retry.cancel()
                self._retry = None
            if not self.waiting or time.monotonic() >= deadline:
                break
            time.sleep(RETRY)
        self._drop_all()

    def _again(self) -> None:
        self._retry = None
        self.flush()

    def _drop_all(self) -> None:
        for _, _, label in self.waiting:
            self.counter.inc("sent", "lost_" + label)
        self.waiting.clear()
        self.octets = 0

    def _gone(self) -> None:
        self.gone = True
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self.on_gone is None:
            self._drop_all()
            return
        left = [frame for _, frame, _ in self.waiting]
        self.waiting.clear()
        self.octets = 0
        if left:
            self.on_gone(left)
