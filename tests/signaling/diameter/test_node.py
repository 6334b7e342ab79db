"""DiameterNode routes requests by (Application-Id, command code) to registered applications.

A second application is a new object implementing ``Application``: here a small accounting
server (RFC 6733 §9, application 3) served beside Credit-Control over real TCP.
"""

from __future__ import annotations

import asyncio

import pytest

from protocols.diameter.allow import parse_allowed_peer
from protocols.diameter.builders import LocalIdentity, answer
from protocols.diameter.capabilities import build_cea
from protocols.diameter.codec import Message, decode_message
from protocols.diameter.constants import FLAG_P, FLAG_R, ResultCode
from protocols.diameter.doic import (
    HOST_REPORT,
    OC_SUPPORTED_FEATURES,
    OverloadReport,
    olr_avp,
    parse_olr,
    supported_features_avp,
    supports_doic,
)
from protocols.diameter.errors import RemoteProtocolError
from protocols.diameter.framer import Framer
from signaling.diameter import (
    CreditControlApplication,
    DiameterNode,
    DiameterServer,
)
from signaling.diameter import node as node_module
from signaling.metrics import Metrics
from signaling.registry.memory import MemoryRegistry
from tests.protocols.diameter.factory import DICT, caps, ccr
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
    node.register(CreditControlApplication(config, metrics, MemoryRegistry()))
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
    node.register(CreditControlApplication(config, Metrics(), MemoryRegistry()))
    with pytest.raises(ValueError, match="already"):
        node.register(CreditControlApplication(config, Metrics(), MemoryRegistry()))


# -- allowed peers (issue 20, RFC 6733 §5.3) -------------------------------------------------


def _cc_node(**overrides: object) -> DiameterNode:
    config = make_config(**overrides)
    node = DiameterNode(config, Metrics())
    node.register(CreditControlApplication(config, Metrics(), MemoryRegistry()))
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


# -- DOIC (RFC 7683, issue 13) ---------------------------------------------------------------


class _GatedStore(MemoryRegistry):
    """Holds the (single) worker in the store until released: the queue then fills."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()

    async def get_session(self, session_id: str) -> bytes | None:
        self.entered.set()
        await self.gate.wait()
        return await super().get_session(session_id)


def _doic(msg: Message) -> tuple[bool, OverloadReport | None]:
    return msg.find(OC_SUPPORTED_FEATURES) is not None, parse_olr(msg)


async def test_overloaded_node_reports_to_doic_peers_only() -> None:
    store = _GatedStore()
    srv = DiameterServer(make_config(workers=1, queue_size=4), Metrics(), store)
    await srv.start()
    try:
        doic = await Client.connect(srv.port)
        assert result_code(await doic.handshake("doic.test")) == 2001
        legacy = await Client.connect(srv.port)
        assert result_code(await legacy.handshake("legacy.test")) == 2001
        features = [supported_features_avp()]
        await doic.send(ccr(session="d0", rtype=4, hbh=0, extra=features))
        await asyncio.wait_for(store.entered.wait(), 10.0)  # the worker is held
        for i in range(1, 7):  # four fill the queue, two are shed at once
            await doic.send(ccr(session=f"d{i}", rtype=4, hbh=i, extra=features))
        shed = [await doic.recv() for _ in range(2)]
        for i in range(3):
            await legacy.send(ccr(session=f"l{i}", rtype=4, hbh=i))
        legacy_shed = [await legacy.recv() for _ in range(3)]
        store.gate.set()
        served = [await doic.recv() for _ in range(5)]
        assert [result_code(a) for a in shed] == [3004, 3004]  # the blunt fallback stays
        assert sorted(result_code(a) for a in served) == [2001] * 5
        for ans in shed + served:
            supported, olr = _doic(ans)
            assert supported and olr is not None
            assert olr.report_type == HOST_REPORT and olr.reduction >= 20 and olr.validity > 0
        for ans in legacy_shed:
            assert result_code(ans) == 3004 and _doic(ans) == (False, None)
        assert srv.m_doic.get("olr_sent") == 7
        await doic.close()
        await legacy.close()
    finally:
        store.gate.set()
        await srv.close(1.0)


async def test_one_full_shard_is_overload_enough_to_report() -> None:
    """A session's shard full while the others are idle: its shed answers carry the report."""
    store = _GatedStore()
    srv = DiameterServer(make_config(workers=4, queue_size=64), Metrics(), store)
    await srv.start()
    try:
        c = await Client.connect(srv.port)
        await c.handshake()
        features = [supported_features_avp()]
        await c.send(ccr(session="hot", rtype=4, hbh=0, extra=features))
        await asyncio.wait_for(store.entered.wait(), 10.0)
        for i in range(1, 18):  # one session, one shard of 16: the 17th is shed
            await c.send(ccr(session="hot", rtype=4, number=i, hbh=i, extra=features))
        shed = await c.recv()
        assert result_code(shed) == 3004 and shed.hop_by_hop == 17
        olr = parse_olr(shed)
        assert olr is not None and olr.reduction == 20  # a quarter full in all, but shedding
        store.gate.set()
        await c.close()
    finally:
        store.gate.set()
        await srv.close(1.0)


class _ScriptedPeer:
    """A Diameter server written for the test over a real socket: CEA, DWA, and a CCA carrying
    whatever OC-OLR the test sets; it records whether each CCR announced DOIC."""

    def __init__(self) -> None:
        self.olr: OverloadReport | None = None
        self.silent = False  # take requests, answer none
        self.announced: list[bool] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        framer = Framer()
        ident = LocalIdentity("peer.test", "test")
        while data := await reader.read(65536):
            for raw in framer.feed(data):
                msg = decode_message(raw)
                if not msg.is_request:
                    continue
                if msg.command_code == 257:
                    writer.write(build_cea(msg, 2001, caps("peer.test")).encode())
                elif msg.command_code == 280:
                    writer.write(answer(msg, 2001, ident).encode())
                else:
                    self.announced.append(supports_doic(msg))
                    if self.silent:
                        continue
                    extra = [olr_avp(self.olr)] if self.olr is not None else []
                    writer.write(answer(msg, 2001, ident, extra).encode())
        writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def _open_to(peer: _ScriptedPeer) -> DiameterNode:
    port = await peer.start()
    node = DiameterNode(make_config(connect_peers=(("peer.test", "127.0.0.1", port),)),
                        Metrics())
    await node.start()
    for _ in range(200):
        if [p.state for p in node.peers()] == ["I-Open"]:
            break
        await asyncio.sleep(0.05)
    return node


async def test_client_honours_the_peers_overload_reports() -> None:
    peer = _ScriptedPeer()
    node = await _open_to(peer)

    async def send(n: int) -> list[int]:
        return [result_code(await node.request("peer.test", ccr(rtype=4))) for _ in range(n)]

    try:
        assert await send(1) == [2001] and peer.announced == [True]  # we announce DOIC
        peer.olr = OverloadReport(10, HOST_REPORT, 50, 30)
        assert await send(1) == [2001]  # this answer carries the report
        codes = await send(10)
        assert codes.count(3004) == 5 and len(peer.announced) == 2 + 5  # half never left
        peer.olr = OverloadReport(9, HOST_REPORT, 100, 30)  # stale: ignored
        codes = await send(10)
        assert codes.count(3004) == 5 and codes.count(2001) == 5
        peer.olr = OverloadReport(11, HOST_REPORT, 0, 0)  # validity 0: the report ends
        while await send(1) != [2001]:
            pass
        peer.olr = None
        assert await send(10) == [2001] * 10
        assert node.m_doic.get("throttled") >= 10
    finally:
        await node.close(1.0)
        await peer.close()


async def test_requests_in_flight_are_bounded_and_time_out(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node_module, "MAX_PENDING_REQUESTS", 2)
    peer = _ScriptedPeer()
    peer.silent = True
    node = await _open_to(peer)
    try:
        waiting = [asyncio.ensure_future(node.request("peer.test", ccr(rtype=4), timeout=0.5))
                   for _ in range(2)]
        await asyncio.sleep(0)
        over = await node.request("peer.test", ccr(rtype=4))
        assert result_code(over) == 3004 and node.m_dropped.get("pending_limit") == 1
        for fut in waiting:
            with pytest.raises(TimeoutError):
                await fut
        assert node._in_flight == 0 and not any(node._pending.values())  # nothing left
    finally:
        await node.close(1.0)
        await peer.close()


async def test_unknown_or_closed_peer_is_answered_locally() -> None:
    node = DiameterNode(make_config(), Metrics())
    await node.start()
    try:
        ans = await node.request("nobody.test", ccr(rtype=4))
        assert result_code(ans) == ResultCode.DIAMETER_UNABLE_TO_DELIVER and ans.is_error
    finally:
        await node.close(1.0)


async def test_reports_flow_between_two_nodes() -> None:
    """Our reporting node and our reacting node: B sheds with OC-OLR, A throttles its share."""
    store = _GatedStore()
    b = DiameterServer(make_config(origin_host="b.test", workers=1, queue_size=4,
                                   doic_interval=3600.0), Metrics(), store)
    await b.start()
    a = DiameterNode(make_config(origin_host="a.test",
                                 connect_peers=(("b.test", "127.0.0.1", b.port),)), Metrics())
    await a.start()
    try:
        for _ in range(200):
            if [p.state for p in a.peers()] == ["I-Open"]:
                break
            await asyncio.sleep(0.05)
        def send(i: int) -> asyncio.Future[Message]:
            return asyncio.ensure_future(a.request("b.test", ccr(session=f"c{i}", rtype=4)))

        first = [send(0)]
        await asyncio.wait_for(store.entered.wait(), 10.0)  # B's only worker is held
        first += [send(i) for i in range(1, 10)]
        for _ in range(500):  # four fill B's queue; five are shed at once, with OC-OLR
            if sum(f.done() for f in first) == 5:
                break
            await asyncio.sleep(0.02)
        store.gate.set()
        answers = await asyncio.gather(*first)
        assert sorted(result_code(m) for m in answers) == [2001] * 5 + [3004] * 5
        assert b.reporter is not None and b.reporter.reduction == 20
        codes = [result_code(await a.request("b.test", ccr(session=f"n{i}", rtype=4)))
                 for i in range(10)]
        assert codes.count(3004) == 2  # exactly the 20% asked for, answered by A itself
        assert a.m_doic.get("throttled") == 2 and a.m_doic.get("report_received") == 1
        assert b.m_requests.get("CCR") == 18
    finally:
        store.gate.set()
        await a.close(1.0)
        await b.close(1.0)
