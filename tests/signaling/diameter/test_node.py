"""DiameterNode routes requests by (Application-Id, command code) to registered applications.

A second application is a new object implementing ``Application``: here a small accounting
server (RFC 6733 §9, application 3) served beside Credit-Control over real TCP.
"""

from __future__ import annotations

import pytest

from protocols.diameter.allow import parse_allowed_peer
from protocols.diameter.builders import LocalIdentity, answer
from protocols.diameter.codec import Message
from protocols.diameter.constants import FLAG_P, FLAG_R, ResultCode
from protocols.diameter.errors import RemoteProtocolError
from signaling.diameter import (
    CreditControlApplication,
    DiameterNode,
    InMemoryCCSessionStore,
)
from signaling.metrics import Metrics
from tests.protocols.diameter.factory import DICT, ccr
from tests.signaling.diameter.client import Client, result_code
from tests.signaling.diameter.conftest import make_config


class Accounting:
    """A toy accounting server: answers ACR with 2001 and remembers who sent what."""

    application_id = 3
    commands = frozenset({271})

    def __init__(self) -> None:
        self.identity = LocalIdentity("server.test", "test")
        self.seen: list[tuple[str, int]] = []
        self.started = self.closed = False

    async def start(self) -> None:
        self.started = True

    async def close(self) -> None:
        self.closed = True

    async def handle(self, request: Message, peer: str) -> Message:
        number = DICT.value(request.avps[-1])
        if number == 99:
            raise RemoteProtocolError("refused", ResultCode.DIAMETER_UNABLE_TO_COMPLY)
        self.seen.append((peer, number))
        return answer(request, ResultCode.DIAMETER_SUCCESS, self.identity, [
            DICT.make("Accounting-Record-Type", 2), DICT.make("Accounting-Record-Number", number)])


def acr(number: int, hbh: int) -> Message:
    avps = [DICT.make("Session-Id", f"acct;{hbh}"), DICT.make("Origin-Host", "client.test"),
            DICT.make("Origin-Realm", "test"), DICT.make("Destination-Realm", "test"),
            DICT.make("Accounting-Record-Type", 2),
            DICT.make("Accounting-Record-Number", number)]
    return Message(271, FLAG_R | FLAG_P, 3, hbh, hbh, avps)


async def test_requests_reach_the_application_registered_for_them() -> None:
    metrics = Metrics()
    config = make_config(acct_application_ids=(3,))
    node = DiameterNode(config, metrics)
    accounting = Accounting()
    node.register(accounting)
    node.register(CreditControlApplication(config, metrics, InMemoryCCSessionStore()))
    await node.start()
    try:
        assert accounting.started
        c = await Client.connect(node.port)
        assert result_code(await c.handshake()) == 2001
        await c.send(acr(7, hbh=1))
        aca = await c.recv()
        assert aca.command_code == 271 and result_code(aca) == 2001
        assert accounting.seen == [("client.test", 7)]
        await c.send(ccr(rtype=4, number=0, hbh=2))  # Credit-Control still served beside it
        assert result_code(await c.recv()) == 2001
        await c.send(acr(99, hbh=3))  # the application's error becomes the answer
        assert result_code(await c.recv()) == ResultCode.DIAMETER_UNABLE_TO_COMPLY
        await c.close()
    finally:
        await node.close(1.0)
    assert accounting.closed


async def test_advertised_application_without_a_handler_is_3001() -> None:
    node = DiameterNode(make_config(acct_application_ids=(3,)), Metrics())
    await node.start()
    try:
        c = await Client.connect(node.port)
        await c.handshake()
        await c.send(acr(1, hbh=5))
        ans = await c.recv()
        assert result_code(ans) == ResultCode.DIAMETER_COMMAND_UNSUPPORTED and ans.is_error
        await c.close()
    finally:
        await node.close(1.0)


def test_register_refuses_unadvertised_or_taken_routes() -> None:
    node = DiameterNode(make_config(), Metrics())  # advertises Credit-Control only
    with pytest.raises(ValueError, match="not advertised"):
        node.register(Accounting())
    config = make_config()
    node.register(CreditControlApplication(config, Metrics(), InMemoryCCSessionStore()))
    with pytest.raises(ValueError, match="already"):
        node.register(CreditControlApplication(config, Metrics(), InMemoryCCSessionStore()))


# -- allowed peers (issue 20, RFC 6733 §5.3) -------------------------------------------------


def _cc_node(**overrides: object) -> DiameterNode:
    config = make_config(**overrides)
    node = DiameterNode(config, Metrics())
    node.register(CreditControlApplication(config, Metrics(), InMemoryCCSessionStore()))
    return node


async def test_unknown_peer_gets_cea_3010_and_is_closed() -> None:
    node = _cc_node(allowed_peers=(parse_allowed_peer("pcef.test@127.0.0.1"),))
    await node.start()
    try:
        c = await Client.connect(node.port)
        cea = await c.handshake("stranger.test")
        assert cea.command_code == 257 and result_code(cea) == 3010 and cea.is_error
        assert await c.closed()
        assert node.peers() == [] and node.m_dropped.get("unknown_peer") == 1
        c = await Client.connect(node.port)
        assert result_code(await c.handshake("pcef.test")) == 2001
        await c.close()
    finally:
        await node.close(1.0)


async def test_impostor_from_another_address_cannot_take_a_pinned_name() -> None:
    """Before: whoever sent a CER first with a name held it and the real peer was refused."""
    node = _cc_node(allowed_peers=(parse_allowed_peer("pcef.test@127.0.0.1"),
                                   parse_allowed_peer("*@127.0.0.2")))
    await node.start()
    try:
        impostor = await Client.connect(node.port, source="127.0.0.2")
        assert result_code(await impostor.handshake("pcef.test")) == 3010
        assert await impostor.closed()
        real = await Client.connect(node.port, source="127.0.0.1")
        assert result_code(await real.handshake("pcef.test")) == 2001
        await real.send(ccr(rtype=4, number=0))
        assert result_code(await real.recv()) == 2001
        other = await Client.connect(node.port, source="127.0.0.2")  # the wildcard still works
        assert result_code(await other.handshake("other.test")) == 2001
        await other.close()
        await real.close()
    finally:
        await node.close(1.0)


async def test_idle_sockets_leave_room_for_configured_peers() -> None:
    """Before: max_connections idle sockets locked every real peer out until they left."""
    node = _cc_node(allowed_peers=(parse_allowed_peer("pcef.test@127.0.0.1"),
                                   parse_allowed_peer("*@127.0.0.3")),
                    max_connections=6, reserved_connections=2, cer_timeout=30.0)
    await node.start()
    try:
        idle = [await Client.connect(node.port, source="127.0.0.2") for _ in range(8)]
        # The four unreserved slots hold the four newest; each newcomer evicted the oldest.
        closed = [await c.closed(timeout=0.5) for c in idle[:4]]
        assert all(closed) and node.m_dropped.get("evicted_before_cer") == 4
        real = [await Client.connect(node.port, source="127.0.0.1") for _ in range(2)]
        assert result_code(await real[0].handshake("pcef.test")) == 2001
        # Both connections from the pinned address got a slot (the reserved ones).
        assert node.m_dropped.get("connection_limit") == 0
        await real[0].send(ccr(rtype=4, number=0))
        assert result_code(await real[0].recv()) == 2001
        for c in idle[4:] + real:
            await c.close()
    finally:
        await node.close(1.0)


async def test_silent_connection_is_closed_after_the_cer_timeout() -> None:
    node = _cc_node(cer_timeout=0.3)
    await node.start()
    try:
        c = await Client.connect(node.port, source="127.0.0.2")
        assert await c.closed(timeout=10.0)
        assert node.m_dropped.get("cer_timeout") == 1
    finally:
        await node.close(1.0)
