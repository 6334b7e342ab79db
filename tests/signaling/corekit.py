"""A node's SIP layer without sockets: SipCore, registrar and proxy over an in-memory transport.

Possible since ``SipCore`` takes its transports and its transaction user as collaborators: the
tests feed bytes in with ``receive`` and read what the node sent from ``RecordingTransport``,
so the registrar's and the proxy's decisions are checked without a listener, a process or a
port.  The real transports have tests of their own (tests/signaling/transports).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from protocols.sip.message import Request, Response
from protocols.sip.parser import parse_message
from signaling.config import load_config
from signaling.metrics import Metrics
from signaling.proxy import Proxy
from signaling.registrar import Registrar
from signaling.registry.memory import MemoryRegistry
from signaling.router import Router
from signaling.sipcore import SipCore
from signaling.transports.base import Peer, TransportInfo, Transports

__all__ = ["Node", "RecordingTransport", "node"]


class RecordingTransport:
    """A transport that keeps what it is asked to send, parsed, with its destination."""

    def __init__(self, name: str = "udp", *, reliable: bool = False, port: int = 5060,
                 uri_transport: str | None = None) -> None:
        self.info = TransportInfo(name, reliable=reliable, via_token=name.upper(),
                                  host="127.0.0.1", port=port, uri_transport=uri_transport)
        self.sent: asyncio.Queue[tuple[Request | Response, Peer]] = asyncio.Queue()

    def send(self, data: bytes, peer: Peer) -> bool:
        self.sent.put_nowait((parse_message(data), peer))
        return True

    def holds(self, conn_id: str) -> bool:
        return False  # it records, it keeps no connection

    async def next(self, timeout: float = 5.0) -> tuple[Request | Response, Peer]:
        return await asyncio.wait_for(self.sent.get(), timeout)

    async def final(self, timeout: float = 5.0) -> tuple[Response, Peer]:
        """The next final response sent (provisionals skipped)."""
        while True:
            msg, peer = await self.next(timeout)
            if isinstance(msg, Response) and msg.status >= 200:
                return msg, peer


class Node:
    def __init__(self, core: SipCore, registry: MemoryRegistry, udp: RecordingTransport,
                 registrar: Registrar, proxy: Proxy) -> None:
        self.core = core
        self.registry = registry
        self.udp = udp
        self.registrar = registrar
        self.proxy = proxy

    def receive(self, data: bytes, host: str = "192.0.2.10", port: int = 5070) -> None:
        self.core.receive(data, Peer("udp", host, port))


@asynccontextmanager
async def node(**options: Any) -> AsyncIterator[Node]:
    flags: dict[str, Any] = {"sip_udp": "127.0.0.1:5060", "sip_ws": "off", "admin": "off",
                             "diameter": "off", "domain": ["example.com"]}
    flags.update(options)
    cfg = load_config(flags, env={})
    metrics = Metrics()
    transports = Transports()
    udp = RecordingTransport()
    transports.add(udp)
    core = SipCore(cfg, metrics, transports)
    registry = MemoryRegistry()
    registrar = Registrar(core, registry, metrics, "node-1")
    proxy = Proxy(core, registry, cfg, metrics, "node-1")
    core.start(Router(registrar, proxy))
    try:
        yield Node(core, registry, udp, registrar, proxy)
    finally:
        await core.stop(0.1)
