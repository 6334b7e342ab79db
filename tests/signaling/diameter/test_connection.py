"""Connection: framing across reads, flow control, and close-after-flush, over real TCP."""

from __future__ import annotations

import asyncio

from signaling.diameter.server import DiameterServer
from tests.protocols.diameter.factory import ccr, cer
from tests.signaling.diameter.client import Client, result_code


async def test_messages_split_across_tcp_segments(server: DiameterServer) -> None:
    c = await Client.connect(server.port)
    wire = cer().encode() + ccr(rtype=4, number=0, hbh=3).encode()
    for i in range(0, len(wire), 7):  # 7-byte writes: every header and AVP split
        await c.send(wire[i : i + 7])
        await asyncio.sleep(0)
    assert result_code(await c.recv()) == 2001
    cca = await c.recv()
    assert result_code(cca) == 2001 and cca.hop_by_hop == 3
    await c.close()


async def test_pipelined_requests_all_answered(server: DiameterServer) -> None:
    c = await Client.connect(server.port)
    await c.handshake()
    batch = b"".join(ccr(session=f"p{i}", rtype=4, number=0, hbh=i).encode()
                     for i in range(50))
    await c.send(batch)
    answers = [await c.recv() for _ in range(50)]
    assert sorted(a.hop_by_hop for a in answers) == list(range(50))
    assert {result_code(a) for a in answers} == {2001}
    await c.close()


async def test_slow_reader_backpressure(server: DiameterServer) -> None:
    """A peer that stops reading pauses our writes; nothing is lost once it reads again."""
    c = await Client.connect(server.port)
    await c.handshake()
    n = 3000
    batch = b"".join(ccr(session=f"b{i}", rtype=4, number=0, hbh=i).encode()
                     for i in range(n))
    c.writer.transport.set_write_buffer_limits(high=1 << 22)
    c.writer.write(batch)
    await asyncio.sleep(0.3)  # answers pile up in the server's socket buffer meanwhile
    answers = [await c.recv() for _ in range(n)]
    assert len({a.hop_by_hop for a in answers}) == n
    await c.close()
