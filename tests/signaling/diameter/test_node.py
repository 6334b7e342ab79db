"""DiameterNode routes requests by (Application-Id, command code) to registered applications.

A second application is a new object implementing ``Application``: here a small accounting
server (RFC 6733 §9, application 3) served beside Credit-Control over real TCP.
"""

from __future__ import annotations

import pytest

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
