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
