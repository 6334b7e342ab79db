"""Idle WebSocket connections held by the server, each with a registration (issue 3).

``--connections`` (default 10,000) clients open a WebSocket to the server (subprotocol ``sip``,
RFC 7118), each registers its own user over it (``ws<N>@127.0.0.1``, Via ``SIP/2.0/WS``,
``.invalid`` contact as browsers send), gets its 200, and then stays idle, answering the
server's pings.  The script prints the server's resident memory before and with every
connection open, the memory per connection, the server CPU time per connection set up
(handshake + REGISTER), and checks that every registration is present with a query REGISTER
over UDP for each user.

The clients are minimal RFC 6455 clients on asyncio (handshake, masked frames, pong) so the
generator's own memory does not limit the count; they run in this process, pinned to core 0;
the server is pinned to core 1.  Both get RLIMIT_NOFILE raised to ``NOFILE``.

``--wss``: secure WebSocket (RFC 7118 over TLS 1.3, the server's ``--sip-wss`` with a P-256
certificate made for the run, verified by the clients; Via ``SIP/2.0/WSS``), the connections
a WebRTC page served over HTTPS opens.  Target (issue 15, as for TLS): <= 30 kB each.

    python -m benchmarks.bench_ws_idle [--connections 10000] [--hold 5] [--wss]
"""

from __future__ import annotations

import asyncio
import base64
import os
import ssl
import tempfile
from pathlib import Path

from benchmarks.bench_register import ServerUnderTest
from benchmarks.idle import SETUP_TIMEOUT, count_registered, measure, parse_and_pin, raise_nofile
from harness.serverproc import free_tcp_port
from tests.tlscerts import make_pki

__all__ = ["IdleClient", "main"]

def _frame(opcode: int, payload: bytes) -> bytes:
    """A masked client frame (RFC 6455 §5.2, §5.3)."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, 0x80 | n])
    else:
        head = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class IdleClient(asyncio.Protocol):
    """One WebSocket SIP client: handshake, one REGISTER, then idle answering pings."""

    def __init__(self, index: int, host: str, port: int, udp_port: int,
                 via: str = "WS") -> None:
        self.index = index
        self.via = via
        self.host = host
        self.port = port
        self.udp_port = udp_port
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.upgraded = False
        self.registered: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.pings = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write((f"GET / HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                         f"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                         f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                         f"Sec-WebSocket-Protocol: sip\r\n\r\n").encode())

    def _register(self) -> bytes:
        n = self.index
        return (f"REGISTER sip:127.0.0.1 SIP/2.0\r\n"
                f"Via: SIP/2.0/{self.via} c{n}.invalid;branch=z9hG4bK-ws{n}\r\n"
                f"Max-Forwards: 70\r\n"
                f"From: <sip:ws{n}@127.0.0.1>;tag=t{n}\r\nTo: <sip:ws{n}@127.0.0.1>\r\n"
                f"Call-ID: ws-idle-{n}\r\nCSeq: 1 REGISTER\r\n"
                f"Contact: <sip:ws{n}@c{n}.invalid;transport=ws>\r\nExpires: 3600\r\n"
                f"Content-Length: 0\r\n\r\n").encode()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.upgraded:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head, self.buffer = self.buffer[:end], self.buffer[end + 4:]
            if not head.startswith(b"HTTP/1.1 101"):
                self._fail(f"handshake refused: {head[:80]!r}")
                return
            self.upgraded = True
            assert self.transport is not None
            self.transport.write(_frame(0x1, self._register()))
        self._frames()

    def _frames(self) -> None:
        while len(self.buffer) >= 2:
            opcode, n = self.buffer[0] & 0x0F, self.buffer[1] & 0x7F
            start = 2
            if n == 126:
                if len(self.buffer) < 4:
                    return
                n, start = int.from_bytes(self.buffer[2:4], "big"), 4
            elif n == 127:
                if len(self.buffer) < 10:
                    return
                n, start = int.from_bytes(self.buffer[2:10], "big"), 10
            if len(self.buffer) < start + n:
                return
            payload, self.buffer = self.buffer[start:start + n], self.buffer[start + n:]
            self._frame_received(opcode, payload)

    def _frame_received(self, opcode: int, payload: bytes) -> None:
        assert self.transport is not None
        if opcode == 0x9:  # ping: answer with the same payload (RFC 6455 §5.5.2)
            self.pings += 1
            self.transport.write(_frame(0xA, payload))
        elif opcode in (0x1, 0x2) and not self.registered.done():
            status = int(payload[8:11]) if payload.startswith(b"SIP/2.0 ") else 0
            self.registered.set_result(status)
        elif opcode == 0x8:
            self._fail("closed by the server")

    def _fail(self, why: str) -> None:
        if not self.registered.done():
            self.registered.set_exception(RuntimeError(why))
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(f"connection lost: {exc}")


async def _open(index: int, port: int, udp_port: int, clients: list[IdleClient],
                ctx: ssl.SSLContext | None) -> bool:
    loop = asyncio.get_running_loop()
    via = "WS" if ctx is None else "WSS"
    _, client = await loop.create_connection(
        lambda: IdleClient(index, "127.0.0.1", port, udp_port, via), "127.0.0.1", port,
        ssl=ctx, server_hostname="sip.example.com" if ctx is not None else None)
    clients.append(client)
    return await asyncio.wait_for(client.registered, SETUP_TIMEOUT) == 200


async def _run(connections: int, hold: float, wss: bool, tmp: Path) -> None:
    ws_port = free_tcp_port()
    ctx: ssl.SSLContext | None = None
    # Every client comes from 127.0.0.1: the per-source bound on connections (and on TLS
    # handshakes) is raised, as bench_tls_idle and bench_register_tls do.
    per_source = ["--tcp-max-per-source", str(connections + 10)]
    if wss:
        pki = make_pki(tmp)
        ctx = ssl.create_default_context(cafile=str(pki.ca))
        listen = ["--sip-wss", f"127.0.0.1:{ws_port}", "--tls-cert", str(pki.cert("server")),
                  "--tls-key", str(pki.key("server")), *per_source]
    else:
        listen = ["--sip-ws", f"127.0.0.1:{ws_port}", *per_source]
    server = ServerUnderTest("ours", [*listen, "--log-level", "warning"])
    server.start(preexec_fn=raise_nofile)
    clients: list[IdleClient] = []

    def alive() -> int:
        return sum(1 for c in clients if c.transport is not None
                   and not c.transport.is_closing())

    async def registered() -> int:
        return await asyncio.get_running_loop().run_in_executor(
            None, count_registered, server.port, connections, "ws",
            lambda n: f"<sip:ws{n}@c{n}.invalid;transport=ws>".encode())

    try:
        await measure(server, "secure WebSocket" if wss else "WebSocket", hold, connections,
                      [_open(i, ws_port, server.port, clients, ctx) for i in range(connections)],
                      alive, registered,
                      lambda: f"; pings answered by the clients: {sum(c.pings for c in clients)}")
    finally:
        for c in clients:
            if c.transport is not None:
                c.transport.close()
        server.stop()


def main(argv: list[str] | None = None) -> None:
    args = parse_and_pin(argv, __doc__, "WebSocket SIP clients",
                         [("--wss", "secure WebSocket (TLS) instead of plain")])
    with tempfile.TemporaryDirectory(prefix="bench-wss-idle-") as tmp:
        asyncio.run(_run(args.connections, args.hold, args.wss, Path(tmp)))


if __name__ == "__main__":
    main()
