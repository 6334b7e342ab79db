"""CreditControlApplication over real TCP: sessions bounded per peer (issue 20)."""

from __future__ import annotations

from protocols.diameter.constants import FLAG_E
from signaling.diameter import DiameterServer
from signaling.metrics import Metrics
from signaling.registry.memory import MemoryRegistry
from tests.protocols.diameter.factory import ccr
from tests.signaling.diameter.client import Client, result_code
from tests.signaling.diameter.conftest import make_config


async def test_one_peer_cannot_take_more_than_its_sessions() -> None:
    """Before: one peer's CCR-Initials filled the store and every peer got 3004 after it."""
    srv = DiameterServer(make_config(max_peer_sessions=3), Metrics(), MemoryRegistry())
    await srv.start()
    try:
        flood = await Client.connect(srv.port)
        assert result_code(await flood.handshake("flood.test")) == 2001
        for i in range(3):
            await flood.send(ccr(session=f"f{i}", rtype=1, number=0, hbh=i))
            assert result_code(await flood.recv()) == 2001
        await flood.send(ccr(session="f3", rtype=1, number=0, hbh=3))
        busy = await flood.recv()
        assert result_code(busy) == 3004 and busy.flags & FLAG_E
        await flood.send(ccr(session="f0", rtype=2, number=1, hbh=4, used=5))
        assert result_code(await flood.recv()) == 2001  # its open sessions go on
        await flood.send(ccr(session="e", rtype=4, number=0, hbh=5))
        assert result_code(await flood.recv()) == 2001  # events open no session
        other = await Client.connect(srv.port)
        assert result_code(await other.handshake("other.test")) == 2001
        await other.send(ccr(session="o1", rtype=1, number=0, hbh=6))
        assert result_code(await other.recv()) == 2001  # another peer is served
        await flood.send(ccr(session="f0", rtype=3, number=2, hbh=7))
        assert result_code(await flood.recv()) == 2001
        await flood.send(ccr(session="f3", rtype=1, number=0, hbh=8))
        assert result_code(await flood.recv()) == 2001  # room again after a termination
        app = srv.credit_control
        assert app.peer_sessions("flood.test") == 3 and app.peer_sessions("other.test") == 1
        assert app.m_refused.get("peer_sessions") == 1
        await flood.close()
        await other.close()
    finally:
        await srv.close(1.0)
