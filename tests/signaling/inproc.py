"""An in-process server on ephemeral loopback ports, and an asyncio UDP client for it."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from protocols.sip.message import Request, Response
from protocols.sip.parser import parse_message
from signaling.config import load_config
from signaling.registry.base import Registry
from signaling.server import Server
from signaling.transports.udp import UdpTransport
from signaling.transports.udpshed import KernelShed

__all__ = ["UdpPeer", "arrivals_stamped", "owned_shed", "running_server"]


@asynccontextmanager
async def running_server(registry: Registry | None = None,
                         **options: Any) -> AsyncIterator[Server]:
    flags: dict[str, Any] = {"sip_udp": "127.0.0.1:0", "sip_ws": "127.0.0.1:0",
                             "admin": "off", "diameter": "off",
                             # not about authentication: open (auth tests pass auth="on")
                             "auth": "off", "pike_rate": "0"}
    flags.update(options)
    server = Server(load_config(flags, env={}), registry=registry)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


#: SO_TIMESTAMPNS and its control message (Linux, asm-generic/socket.h), as the server's.
_SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
#: Tries of ``arrivals_stamped``, 10 ms apart: far more than the kernel's work item needs.
_STAMP_TRIES = 3000


async def arrivals_stamped() -> None:
    """Return once the kernel stamps datagrams as they arrive, not as they are read.

    The server learns how long a datagram waited in the kernel from its SO_TIMESTAMPNS
    stamp (``signaling/transports/udp.py``).  The kernel stamps on arrival only while its
    timestamp switch (a static key) is on, and the first socket to ask for stamps, with none
    asking before, turns it on from a work item (``net_enable_timestamp`` with
    CONFIG_JUMP_LABEL), not at once; a datagram that arrives before that work runs is
    stamped when it is read (``__sock_recv_timestamp``: "Race occurred between timestamp
    enabling and packet receiving"), so it reads as having waited 0.  A test that holds
    datagrams in the kernel to make them late (``pause_reading``) right after a server
    started could so see them read as fresh on a busy machine, where the work item runs
    late: admitted and answered.  The switch is global and stays on while any socket asks
    (the server's does), so this waits on the kernel's own evidence: a datagram sent to a
    socket of ours bears a stamp older than a clock reading taken after it was sent and
    before it was read (stamped on reading, it would bear a later one)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind(("127.0.0.1", 0))
        sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        sock.setblocking(False)
        for _ in range(_STAMP_TRIES):
            sock.sendto(b"stamp?", sock.getsockname())  # loopback: queued when this returns
            between = time.time()
            while True:  # a softirq the kernel deferred delivers it a moment later
                try:
                    _, ancillary, _, _ = sock.recvmsg(16, socket.CMSG_SPACE(16))
                    break
                except BlockingIOError:
                    await asyncio.sleep(0.001)
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS:
                    sec, nsec = struct.unpack_from("@qq", value)
                    if sec + nsec * 1e-9 < between:
                        return
            await asyncio.sleep(0.01)
        raise AssertionError("the kernel never stamped a datagram on arrival")
    finally:
        sock.close()


class UdpPeer(asyncio.DatagramProtocol):
    """A UDP endpoint that queues every message it receives, parsed."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[Request | Response] = asyncio.Queue()
        self.raw: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None

    @classmethod
    async def open(cls, host: str = "127.0.0.1") -> UdpPeer:
        """Bound to ``host`` (another loopback address is another source to the server)."""
        loop = asyncio.get_running_loop()
        _, peer = await loop.create_datagram_endpoint(cls, local_addr=(host, 0))
        return peer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.raw.append(data)
        self.inbox.put_nowait(parse_message(data))

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def send(self, data: bytes, port: int) -> None:
        assert self.transport is not None
        self.transport.sendto(data, ("127.0.0.1", port))

    async def recv(self, timeout: float = 2.0) -> Request | Response:
        return await asyncio.wait_for(self.inbox.get(), timeout)

    async def final(self, timeout: float = 2.0) -> Response:
        """The next final response (provisionals skipped)."""
        while True:
            msg = await self.recv(timeout)
            if isinstance(msg, Response) and msg.status >= 200:
                return msg

    async def silent(self, seconds: float) -> bool:
        """True if nothing arrives within ``seconds``."""
        try:
            await asyncio.wait_for(self.inbox.get(), seconds)
        except TimeoutError:
            return True
        return False

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def owned_shed(srv: Server) -> tuple[UdpTransport, KernelShed]:
    """The server's UDP transport and its kernel shed, once the transport owns the filter
    (claimed at its first tick: ``KernelShed.claim``)."""
    udp = srv.udp
    assert udp is not None and udp.shed is not None
    for _ in range(50):
        if udp.shed.owned:
            break
        await asyncio.sleep(0.1)
    assert udp.shed.owned
    return udp, udp.shed
