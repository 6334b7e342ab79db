"""An in-process server on ephemeral loopback ports, and an asyncio UDP client for it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from protocols.sip.message import Request, Response
from protocols.sip.parser import parse_message
from signaling.config import load_config
from signaling.registry.base import Registry
from signaling.server import Server

__all__ = ["UdpPeer", "running_server"]


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
