"""Connection: framing across reads, flow control, and close-after-flush, over real TCP."""

from __future__ import annotations

import asyncio

from protocols.diameter.constants import AvpCode
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
    """Every pipelined request gets exactly one answer, matched by hop-by-hop and Session-Id.

    The whole batch can arrive in one read, before any worker runs, and the shard a session
    lands on depends on the process's string hash seed: a shard may fill, and a full shard is
    answered DIAMETER_TOO_BUSY (3004, E bit) at once by design (§7.1.3).  So each answer is
    2001 or 3004, never anything else, never lost or doubled, and the queue serves some.
    """
    c = await Client.connect(server.port)
    await c.handshake()
    n = 50
    batch = b"".join(ccr(session=f"p{i}", rtype=4, number=0, hbh=i).encode()
                     for i in range(n))
    await c.send(batch)
    answers = [await c.recv() for _ in range(n)]
    assert sorted(a.hop_by_hop for a in answers) == list(range(n))
    codes = []
    for a in answers:
        sid = a.find(AvpCode.SESSION_ID)
        assert sid is not None and sid.data.decode() == f"p{a.hop_by_hop}"
        code = result_code(a)
        assert code in (2001, 3004), code
        assert a.is_error == (code == 3004)
        codes.append(code)
    assert 2001 in codes
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
