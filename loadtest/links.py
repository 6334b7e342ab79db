"""Where a UA's messages go: a UDP socket toward the target, or a WebSocket (RFC 7118).

Links know nothing of transactions: every datagram or WebSocket message they receive goes to
their ``LinkHost`` (the engine's UAC, which hands requests on to the UAS side), and each link
counts its own send errors (ICMP errors on UDP, frames dropped on a full or dead WebSocket).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import struct
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol, cast

__all__ = [
    "MAX_SOCKETS",
    "MAX_WS_CONNECTIONS",
    "Link",
    "LinkHost",
    "UdpLink",
    "WsLink",
    "open_udp",
    "open_ws",
]

#: Source sockets at most: each is a file descriptor, and a thousand ports already defeat any
#: per-source accounting on the server.
MAX_SOCKETS = 1024
#: Socket buffers asked of the kernel: a 10 ms burst at 30k/s of 500-byte messages is 150 KB;
#: 4 MB absorbs scheduling hiccups of the responder without drops.
SOCKET_BUFFER = 4 * 1024 * 1024
#: WebSocket connections at most, and frames waiting per connection before we count a drop.
MAX_WS_CONNECTIONS = 1000
WS_QUEUE_MAX = 10_000
#: ``getsockopt(SOL_SOCKET, SO_MEMINFO)`` (Linux 4.6+; not in the socket module): the socket's
#: memory counters, ``SK_MEMINFO_VARS`` u32s of which the ninth, ``SK_MEMINFO_DROPS``, counts
#: the datagrams the kernel dropped on it, its receive buffer full.
SO_MEMINFO = 55
SK_MEMINFO_VARS = 9
SK_MEMINFO_DROPS = 8
#: ... and the first, ``SK_MEMINFO_RMEM_ALLOC``, the bytes its receive queue holds (what the
#: kernel charges for them: each datagram's buffer, more than its payload).
SK_MEMINFO_RMEM_ALLOC = 0


class LinkHost(Protocol):
    def on_message(self, data: bytes, addr: Any, link: Link) -> None: ...


class Link:
    """A UA's way to the server; ``errors`` counts what could not be sent."""

    __slots__ = ("errors",)

    def __init__(self) -> None:
        self.errors = 0

    def send(self, data: bytes) -> None:
        raise NotImplementedError

    def rx_drops(self) -> int:
        """Messages toward us the kernel dropped so far (a stream transport drops none)."""
        return 0

    def rx_queued(self) -> int:
        """Bytes of messages toward us waiting in the kernel to be read (0: none known)."""
        return 0

    def reply(self, data: bytes, addr: Any) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class UdpLink(Link, asyncio.DatagramProtocol):
    __slots__ = ("addr", "host", "local", "tr")

    def __init__(self, host: LinkHost, target: tuple[str, int]) -> None:
        super().__init__()
        self.host = host
        self.addr = target
        self.tr: asyncio.DatagramTransport | None = None
        self.local: tuple[str, int] = ("0.0.0.0", 0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport does not subclass asyncio.DatagramTransport: a cast, no check.
        self.tr = cast(asyncio.DatagramTransport, transport)
        sock = transport.get_extra_info("socket")
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
        # (ICMP errors are not asked for with IP_RECVERR: uvloop 0.23 crashes reading the
        # socket's error queue.  An unreachable server shows as timeouts instead.)
        self.local = sock.getsockname()[:2]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.host.on_message(data, addr, self)

    def error_received(self, exc: Exception) -> None:
        self.errors += 1  # ICMP unreachable etc.: the timers will notice

    def send(self, data: bytes) -> None:
        self.tr.sendto(data, self.addr)  # type: ignore[union-attr]

    def rx_drops(self) -> int:
        """Answers the kernel dropped on this socket, its receive buffer full: an injector
        that reads slower than the server answers loses them, and its transactions then
        retransmit and time out as if the server had not answered.  0 where the kernel has
        no ``SO_MEMINFO`` or the socket is closed."""
        return self._meminfo(SK_MEMINFO_DROPS)

    def rx_queued(self) -> int:
        """Bytes of answers waiting in this socket's receive queue: an injector at its limit
        reads them late, and their latency is then partly its own."""
        return self._meminfo(SK_MEMINFO_RMEM_ALLOC)

    def _meminfo(self, index: int) -> int:
        sock = None if self.tr is None else self.tr.get_extra_info("socket")
        if sock is None:
            return 0
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 4 * SK_MEMINFO_VARS)
        except OSError:
            return 0
        if len(raw) < 4 * (index + 1):
            return 0
        return int(struct.unpack_from("I", raw, 4 * index)[0])

    def reply(self, data: bytes, addr: Any) -> None:
        self.tr.sendto(data, addr)  # type: ignore[union-attr]

    def close(self) -> None:
        if self.tr is not None:
            self.tr.close()


class WsLink(Link):
    """One WebSocket connection (RFC 7118, subprotocol "sip") shared by the UAs hashed to it."""

    __slots__ = ("host", "out", "sink", "task", "wake", "ws")

    def __init__(self, sink: LinkHost, index: int) -> None:
        super().__init__()
        self.sink = sink
        self.out: deque[bytes] = deque()
        self.wake = asyncio.Event()
        self.ws: Any = None
        self.host = b"st%05d.invalid" % index  # RFC 7118 §5.2: a random .invalid Via host
        self.task: asyncio.Task[None] | None = None

    def send(self, data: bytes) -> None:
        if len(self.out) >= WS_QUEUE_MAX or (self.task is not None and self.task.done()):
            self.errors += 1
            return
        self.out.append(data)
        self.wake.set()

    def reply(self, data: bytes, addr: Any) -> None:
        self.send(data)

    async def run(self, url: str, ready: asyncio.Future[None]) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed

        async with connect(url, subprotocols=["sip"]) as ws:  # type: ignore[list-item]
            self.ws = ws
            if not ready.done():
                ready.set_result(None)
            reader = asyncio.create_task(self._read(ws))
            try:
                while not reader.done():
                    await self.wake.wait()
                    self.wake.clear()
                    while self.out:
                        await ws.send(self.out.popleft().decode("utf-8", "replace"))
            except ConnectionClosed:
                pass  # the reader sees the same close
            finally:
                reader.cancel()
        # The server closed the connection: this task ends, later sends count as errors and
        # the transactions on it time out (no reconnect within a run).
        self.errors += len(self.out)
        self.out.clear()

    async def _read(self, ws: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        with contextlib.suppress(ConnectionClosed):
            async for msg in ws:
                data = msg.encode() if isinstance(msg, str) else bytes(msg)
                self.sink.on_message(data, None, self)
        self.wake.set()  # let the writer loop see the end

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()


async def open_udp(host: LinkHost, target: tuple[str, int], n: int,
                   bind_host: str) -> tuple[str, list[UdpLink]]:
    """``n`` UDP sockets toward ``target`` (at most MAX_SOCKETS), and our source address."""
    loop = asyncio.get_running_loop()
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(target)  # no packet: just asks the kernel for the source IP
        local_ip = str(probe.getsockname()[0])
    finally:
        probe.close()
    links = []
    for _ in range(max(1, min(n, MAX_SOCKETS))):
        link = UdpLink(host, target)
        await loop.create_datagram_endpoint(_factory(link), local_addr=(bind_host, 0))
        links.append(link)
    return local_ip, links


async def open_ws(host: LinkHost, url: str, n: int) -> list[WsLink]:
    """``n`` WebSocket connections to ``url`` (at most MAX_WS_CONNECTIONS), all open."""
    loop = asyncio.get_running_loop()
    links, readies = [], []
    for i in range(max(1, min(n, MAX_WS_CONNECTIONS))):
        link = WsLink(host, i)
        ready: asyncio.Future[None] = loop.create_future()
        link.task = asyncio.create_task(link.run(url, ready))
        link.task.add_done_callback(functools.partial(_fail_ready, ready=ready))
        readies.append(ready)
        links.append(link)
    try:
        await asyncio.gather(*readies)
    except BaseException:
        for link in links:
            link.close()
        raise
    return links


def _factory(link: UdpLink) -> Callable[[], UdpLink]:
    return lambda: link


def _fail_ready(task: asyncio.Task[None], ready: asyncio.Future[None]) -> None:
    if ready.done():
        return
    exc = task.exception() if not task.cancelled() else asyncio.CancelledError()
    ready.set_exception(exc or ConnectionError("WebSocket closed"))
