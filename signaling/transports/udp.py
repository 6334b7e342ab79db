"""SIP over UDP (RFC 3261 §18): one message per datagram, on the event loop's datagram API.

The socket buffers are sized at start: a burst of retransmissions or a registration storm arrives
faster than one loop iteration drains it, and the kernel's default (~200 KB) drops datagrams
silently before any counter can see them.  The size actually granted (capped by
net.core.rmem_max) is logged, because the operator must raise the sysctl if it is short.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import cast

from signaling.config import HostPort
from signaling.sipcore import Peer, SipCore

__all__ = ["UdpTransport", "start_udp"]

log = logging.getLogger(__name__)


class UdpTransport(asyncio.DatagramProtocol):
    """Feeds every datagram to ``SipCore.receive``; never raises into the loop."""

    def __init__(self, core: SipCore) -> None:
        self.core = core
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport implements the DatagramTransport API without subclassing it.
        self.transport = cast(asyncio.DatagramTransport, transport)
        self.core.udp = self.transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.core.receive(data, Peer("udp", addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like: the datagram is lost, the socket lives on.
        self.core.c_drop.inc("udp_error")

    def connection_lost(self, exc: Exception | None) -> None:
        self.core.udp = None


def _size_buffers(sock: socket.socket, size: int) -> tuple[int, int]:
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        with contextlib.suppress(OSError):  # the kernel caps it at rmem_max/wmem_max anyway
            sock.setsockopt(socket.SOL_SOCKET, opt, size)
    return (sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF))


async def start_udp(core: SipCore, listen: HostPort, buffer_size: int) -> UdpTransport:
    loop = asyncio.get_running_loop()
    host, port = listen
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    rcv, snd = _size_buffers(sock, buffer_size)
    sock.bind((host, port))
    sock.setblocking(False)
    _, proto = await loop.create_datagram_endpoint(lambda: UdpTransport(core), sock=sock)
    bound = sock.getsockname()
    log.info("SIP UDP listening on %s:%s (receive buffer %d bytes, send buffer %d bytes, "
             "requested %d)", bound[0], bound[1], rcv, snd, buffer_size)
    return proto
