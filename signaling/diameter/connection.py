"""One TCP connection carrying Diameter (RFC 6733 §2.1): framing in, writes with flow control.

The protocol callback does only the cheap, ordered work: it frames the byte stream and hands
each message to the server synchronously.  Writes made in one loop iteration are joined into
one send; when the kernel buffer fills, asyncio calls ``pause_writing``: we stop reading that
peer and its workers ``await drain()`` before writing more, so a peer that does not read slows
itself down instead of growing our memory.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
from typing import TYPE_CHECKING

from protocols.diameter.errors import FramingError
from protocols.diameter.framer import Framer
from protocols.diameter.peer import PeerMachine

if TYPE_CHECKING:
    from signaling.diameter.node import DiameterNode

__all__ = ["Connection"]

_ids = itertools.count(1)


class Connection(asyncio.Protocol):
    """A Diameter transport connection; ``peer`` is set once its CER was accepted."""

    def __init__(self, server: DiameterNode, outgoing: bool = False) -> None:
        self.server = server
        # Ours (dialled to a configured peer) rather than accepted.
        self.outgoing = outgoing
        self.id = next(_ids)
        self.transport: asyncio.Transport | None = None
        self.framer = Framer()
        self.peer: PeerMachine | None = None
        self.address = ""
        self.ip = ""
        self.paused = False
        self.closed = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._out: list[bytes] = []
        self.cer_timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport implements the Transport API without subclassing it.
        self.transport = transport  # type: ignore[assignment]
        peername = transport.get_extra_info("peername")
        self.address = f"{peername[0]}:{peername[1]}" if peername else "?"
        self.ip = str(peername[0]) if peername else ""
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Answers are small and latency matters more than packet count (RFC 6733 §2.1).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.connection_made(self)

    def data_received(self, data: bytes) -> None:
        try:
            messages = self.framer.feed(data)
        except FramingError as exc:
            for raw in exc.before:
                self.server.message_received(self, raw)
            self.server.framing_error(self, exc)
            return
        on_message = self.server.message_received
        for raw in messages:
            on_message(self, raw)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.cer_timer is not None:
            self.cer_timer.cancel()
        self._wake()
        self.server.connection_lost(self)

    def pause_writing(self) -> None:
        # A peer that does not read its answers stops being read: requests answered inline
        # (3004 sheds, errors, DWAs) could otherwise pile up in our write buffer.
        self.paused = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.paused = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()
        self._wake()

    # -- used by the server -------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Queue ``data``; everything written in one loop iteration goes out in one send.

        Workers answer many pipelined requests per iteration; one ``send`` per answer was the
        largest cost in the server's profile, so they are joined and flushed by ``call_soon``.
        """
        if self.closed or self.transport is None:
            return
        out = self._out
        out.append(data)
        if len(out) == 1:
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        out, self._out = self._out, []
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(out))

    async def drain(self) -> None:
        """Wait while the transport's write buffer is above its high-water mark."""
        while self.paused and not self.closed:
            fut = asyncio.get_running_loop().create_future()
            self._drain_waiters.append(fut)
            await fut

    def close(self) -> None:
        """Close after the buffered writes are flushed (an answer, then the disconnect)."""
        if not self.closed and self.transport is not None:
            self._flush()
            self.closed = True
            self.transport.close()

    def _wake(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)
