"""The UDP listener: buffers sized at start and logged, one message per datagram."""

from __future__ import annotations

import logging
import socket

import pytest

from signaling.transports.udp import _size_buffers
from tests.signaling.inproc import UdpPeer, running_server


def test_buffers_are_sized_to_what_the_kernel_grants() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        rcv, snd = _size_buffers(s, 1 << 20)
    # Linux doubles the request for bookkeeping and caps it at rmem_max/wmem_max.
    assert rcv >= min(1 << 20, 212992) and snd > 0


async def test_listener_logs_achieved_buffer_size(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="signaling.transports.udp")
    async with running_server(udp_buffer=4 << 20) as srv:
        assert srv.udp_address is not None
        peer = await UdpPeer.open()
        peer.send(b"\r\n\r\n", srv.udp_address[1])  # a keepalive is a counted drop
        assert await peer.silent(0.2)
        peer.close()
    assert any("receive buffer" in r.getMessage() for r in caplog.records)


async def test_requests_that_queued_too_long_in_the_kernel_are_dropped_and_counted() -> None:
    import asyncio

    from protocols.sip.message import Response
    from tests.signaling.test_sipcore import _req

    async with running_server(domain=["example.com"], max_receive_delay=0.2,
                              retry_after=9) as srv:
        assert srv.udp is not None and srv.udp_address is not None
        port = srv.udp_address[1]
        peer = await UdpPeer.open()
        srv.udp.pause_reading()  # the server falls behind: datagrams wait in the kernel
        for i in range(3):
            peer.send(_req("REGISTER", "sip:example.com", peer.port, branch=f"z9hG4bKq{i}",
                           call_id=f"queued-{i}", extra="Contact: <sip:a@10.0.0.1>"), port)
        await asyncio.sleep(0.4)
        srv.udp.resume_reading()
        # The reader is behind: answering costs a parse and a send, so late new requests are
        # dropped unanswered and counted (signaling/overload.py); the clients retransmit.
        assert await peer.silent(0.5)
        assert srv.core.overload.c_dropped.get("receive_delay", "REGISTER") == 3
        assert len(srv.core.table) == 0  # shed before any transaction was created
        fresh = _req("REGISTER", "sip:example.com", peer.port, branch="z9hG4bKfresh",
                     call_id="fresh", extra="Contact: <sip:a@10.0.0.1>")
        peer.send(fresh, port)
        ok = await peer.final()
        assert isinstance(ok, Response) and ok.status == 200
        peer.close()


async def test_peers_are_reused_per_address_and_the_cache_stays_bounded() -> None:
    from protocols.sip.message import Response
    from tests.signaling.test_sipcore import _req

    async with running_server() as srv:
        assert srv.udp is not None and srv.udp_address is not None
        port = srv.udp_address[1]
        srv.udp.peer_cache = 2
        peers = [await UdpPeer.open() for _ in range(3)]
        for round_ in range(2):
            for i, peer in enumerate(peers):
                peer.send(_req("OPTIONS", f"sip:127.0.0.1:{port}", peer.port,
                               branch=f"z9hG4bKp{round_}{i}", call_id=f"peer-{i}"), port)
                # Every answer goes back to the address its request came from (§18.2.2).
                answer = await peer.final()
                assert isinstance(answer, Response) and answer.call_id == f"peer-{i}"
                assert len(srv.udp._readers[0][2]) <= 2
        cached = next(iter(srv.udp._readers[0][2].values()))
        assert cached.transport == "udp" and cached.host == "127.0.0.1"
        assert cached.port in {p.port for p in peers}
        for peer in peers:
            peer.close()
