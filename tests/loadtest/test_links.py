"""Links on real sockets: UDP source ports toward a peer, WebSocket connections (RFC 7118)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from loadtest.links import WS_QUEUE_MAX, Link, open_udp, open_ws


class Host:
    def __init__(self) -> None:
        self.got: list[tuple[bytes, Any, Link]] = []
        self.arrived = asyncio.Event()

    def on_message(self, data: bytes, addr: Any, link: Link) -> None:
        self.got.append((data, addr, link))
        self.arrived.set()


class Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.tr: Any = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.tr.sendto(b"echo " + data, addr)


async def test_udp_links_have_ports_of_their_own_and_deliver_to_the_host() -> None:
    loop = asyncio.get_running_loop()
    tr, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
    peer = tr.get_extra_info("sockname")[:2]
    host = Host()
    local_ip, links = await open_udp(host, peer, 3, "127.0.0.1")
    try:
        assert local_ip == "127.0.0.1"
        assert len({link.local[1] for link in links}) == 3  # three source ports
        links[1].send(b"hello")
        async with asyncio.timeout(10):
            await host.arrived.wait()
        data, addr, link = host.got[0]
        assert data == b"echo hello" and tuple(addr) == tuple(peer) and link is links[1]
        assert all(link.errors == 0 for link in links)
    finally:
        for link in links:
            link.close()
        tr.close()


async def test_a_udp_link_counts_the_answers_the_kernel_dropped_on_its_full_buffer() -> None:
    """What an injector reading slower than the server answers loses: the kernel drops the
    datagrams its socket's buffer cannot hold, and the link says how many, so that they are
    not taken for answers the server never sent."""
    host = Host()
    _, (link,) = await open_udp(host, ("127.0.0.1", 9), 1, "127.0.0.1")
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock = link.tr.get_extra_info("socket")  # type: ignore[union-attr]
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        assert link.rx_drops() == 0
        # The loop does not run while these are sent: nothing is read meanwhile.
        for _ in range(200):
            peer.sendto(b"x" * 500, ("127.0.0.1", link.local[1]))
        dropped = link.rx_drops()
        assert 0 < dropped < 200
        assert link.rx_queued() > (200 - dropped) * 500  # unread: the payloads and more
        async with asyncio.timeout(10):
            while len(host.got) < 200 - dropped:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        assert len(host.got) == 200 - dropped and link.rx_drops() == dropped
        assert link.rx_queued() == 0  # all read
    finally:
        peer.close()
        link.close()


async def test_websocket_links_carry_sip_frames_and_count_what_they_cannot_send() -> None:
    async def handler(ws: ServerConnection) -> None:
        async for msg in ws:
            text = msg if isinstance(msg, str) else msg.decode()
            await ws.send(f"echo {text}")

    async with serve(handler, "127.0.0.1", 0, subprotocols=["sip"]) as server:  # type: ignore[list-item]
        port = next(iter(server.sockets)).getsockname()[1]
        host = Host()
        (link,) = await open_ws(host, f"ws://127.0.0.1:{port}/", 1)
        try:
            assert link.ws.subprotocol == "sip"
            assert link.host.endswith(b".invalid")  # RFC 7118 §5.2 Via host
            link.send(b"OPTIONS")
            async with asyncio.timeout(10):
                await host.arrived.wait()
            assert host.got[0][0] == b"echo OPTIONS" and host.got[0][2] is link
            # A full queue is a counted drop, not unbounded memory.
            link.out.extend([b"x"] * WS_QUEUE_MAX)
            link.send(b"one too many")
            assert link.errors == 1
        finally:
            link.close()


async def test_a_websocket_that_cannot_open_fails_the_open() -> None:
    with pytest.raises(OSError):
        await open_ws(Host(), "ws://127.0.0.1:9/", 2)
