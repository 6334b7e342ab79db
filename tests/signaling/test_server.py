"""The server end to end over real sockets: start, answer, shut down cleanly."""

from __future__ import annotations

import logging

import pytest

from harness.serverproc import ServerProcess, options, sip_request
from protocols.sip.message import Response
from protocols.sip.parser import parse_message


def test_starts_answers_options_and_stops_cleanly() -> None:
    server = ServerProcess("--domain", "example.com").start()
    try:
        answer = sip_request(server.udp_port, options(server.udp_port))
        assert answer is not None
        resp = parse_message(answer)
        assert isinstance(resp, Response)
        assert resp.status == 200
        assert "REGISTER" in (resp.header("Allow") or "")
    finally:
        status = server.stop()
    assert status == 0
    assert "Traceback" not in server.log
    assert "stopped" in server.log
    assert "SIP parser with C fast path" in server.log


def test_pure_python_parser_on_request() -> None:
    """``--sip-parser python``: the same answers from the pure-Python parser alone."""
    server = ServerProcess("--domain", "example.com", "--sip-parser", "python").start()
    try:
        answer = sip_request(server.udp_port, options(server.udp_port))
        assert answer is not None
        resp = parse_message(answer)
        assert isinstance(resp, Response) and resp.status == 200
    finally:
        assert server.stop() == 0
    assert "SIP parser pure Python" in server.log


async def test_shutdown_finishes_in_flight_work_and_refuses_new() -> None:
    import asyncio

    from protocols.sip.message import Response as _Response
    from signaling.config import load_config
    from signaling.server import Server
    from tests.signaling.inproc import UdpPeer
    from tests.signaling.test_sipcore import SlowRegistry, _req

    cfg = load_config({"sip_udp": "127.0.0.1:0", "sip_ws": "127.0.0.1:0", "admin": "off",
                       "diameter": "off", "domain": ["example.com"],
                       "shutdown_timeout": "5", "auth": "off"}, env={})
    server = Server(cfg, registry=SlowRegistry())
    await server.start()
    assert server.udp_address is not None
    port = server.udp_address[1]
    peer = await UdpPeer.open()
    peer.send(_req("REGISTER", "sip:example.com", peer.port, branch="z9hG4bKinflight",
                   call_id="inflight", extra="Contact: <sip:a@10.0.0.1>"), port)
    await asyncio.sleep(0.05)  # the REGISTER is in the worker, waiting on the registry
    stopping = asyncio.ensure_future(server.stop())
    await asyncio.sleep(0.05)
    peer.send(_req("REGISTER", "sip:example.com", peer.port, branch="z9hG4bKlate",
                   call_id="late", extra="Contact: <sip:b@10.0.0.1>"), port)
    answers: dict[str, int] = {}
    for _ in range(2):
        msg = await peer.recv(3.0)
        assert isinstance(msg, _Response)
        answers[msg.call_id] = msg.status
    await stopping
    peer.close()
    assert answers == {"inflight": 200, "late": 503}


async def test_diameter_initiator_from_configuration() -> None:
    """``--diameter-peer`` makes this node connect out (RFC 6733 §5.6 initiator) and open."""
    import asyncio

    from harness.serverproc import free_tcp_port
    from signaling.config import load_config
    from signaling.server import Server

    port_a = free_tcp_port()
    base = {"sip_udp": "127.0.0.1:0", "sip_ws": "off", "admin": "off"}
    a = Server(load_config({**base, "diameter": f"127.0.0.1:{port_a}",
                            "diameter_identity": "a.test", "diameter_realm": "test"}, env={}))
    b = Server(load_config({**base, "diameter": "127.0.0.1:0", "diameter_identity": "b.test",
                            "diameter_realm": "test",
                            "diameter_peer": [f"a.test@127.0.0.1:{port_a}"]}, env={}))
    await a.start()
    await b.start()
    try:
        assert a.diameter is not None and b.diameter is not None
        for _ in range(100):
            peers = b.diameter.peers()
            if peers and all("open" in p.state.lower() for p in peers):
                break
            await asyncio.sleep(0.05)
        assert [p.origin_host for p in b.diameter.peers()] == ["a.test"]
        assert "open" in b.diameter.peers()[0].state.lower()
        assert [p.origin_host for p in a.diameter.peers()] == ["b.test"]
    finally:
        await b.stop()
        await a.stop()


async def test_sweeper_logs_one_line_not_a_traceback_per_tick_while_redis_is_down(
        caplog: pytest.LogCaptureFixture) -> None:
    """Issue 20 #6: a dead Redis made the sweeper log a traceback every tick."""
    import asyncio

    from harness.services import RedisServer
    from signaling.config import load_config
    from signaling.server import SWEEP_INTERVAL, Server

    redis = RedisServer(appendonly=False).start()
    cfg = load_config({"sip_udp": "127.0.0.1:0", "sip_ws": "off", "admin": "off",
                       "diameter": "off", "domain": ["example.com"], "registry": redis.url},
                      env={})
    server = Server(cfg)
    await server.start()
    try:
        redis.kill()
        with caplog.at_level(logging.WARNING, logger="signaling.server"):
            await asyncio.sleep(SWEEP_INTERVAL * 5)  # five sweeps fail
        lines = [r for r in caplog.records if "binding sweep failed" in r.getMessage()]
        assert len(lines) == 1, [r.getMessage() for r in lines]
        assert not lines[0].exc_info  # one line, no traceback
        assert lines[0].pathname.endswith('server.py')
    finally:
        await server.stop()
        redis.stop()


async def test_register_through_redis_is_answered_at_once_after_the_write() -> None:
    """With Redis (issue 18) a UDP REGISTER takes the at-once path: no worker, no server
    transaction, no task; its 200 comes only once Redis holds the binding, a retransmission
    meanwhile is absorbed and one after gets the same 200.  With Redis gone the answer is
    503 + Retry-After (§21.5.4) and nothing is kept but that answer."""
    import asyncio

    from harness.services import RedisServer
    from protocols.sip.message import Response as _Response
    from signaling.config import load_config
    from signaling.server import Server
    from tests.signaling.inproc import UdpPeer
    from tests.signaling.test_sipcore import _req

    redis = RedisServer(appendonly=False).start()
    cfg = load_config({"sip_udp": "127.0.0.1:0", "sip_ws": "off", "admin": "off",
                       "diameter": "off", "domain": ["example.com"], "registry": redis.url,
                       "auth": "off"}, env={})
    server = Server(cfg)
    await server.start()
    peer = await UdpPeer.open()
    try:
        assert server.core.answer_at_once and server.udp_address is not None
        port = server.udp_address[1]
        tasks = len(asyncio.all_tasks())
        data = _req("REGISTER", "sip:example.com", peer.port, branch="z9hG4bKredis1",
                    call_id="redis-1", extra="Contact: <sip:a@10.0.0.1>")
        peer.send(data, port)
        peer.send(data, port)  # most likely still waiting for Redis: absorbed either way
        ok = await peer.recv(3.0)
        assert isinstance(ok, _Response) and ok.status == 200
        assert [b.contact for b in await server.registry.lookup("sip:bob@example.com",
                                                                0.0)] == ["sip:a@10.0.0.1"]
        assert len(server.core.table) == 0 and len(asyncio.all_tasks()) == tasks
        peer.send(data, port)
        answers = [await peer.recv(3.0)]
        while True:
            try:
                answers.append(await peer.recv(0.3))
            except TimeoutError:
                break
        assert all(isinstance(a, _Response) and a.status == 200 and a.to.tag == ok.to.tag
                   for a in answers)
        # Worked on once; each retransmission absorbed, the 200 resent to those after it.
        assert server.registrar.c_register.get("200") == 1
        assert server.core.c_retrans.get("received") == 2
        assert len(answers) == server.core.c_retrans.get("sent") >= 1

        redis.kill()
        peer.send(_req("REGISTER", "sip:example.com", peer.port, branch="z9hG4bKredis2",
                       call_id="redis-2", extra="Contact: <sip:b@10.0.0.1>"), port)
        down = await peer.recv(3.0)
        assert isinstance(down, _Response) and down.status == 503
        assert down.header("Retry-After") is not None
        assert server.core.waiting_count == 0 and not server.core.waiting
    finally:
        peer.close()
        await server.stop()
        redis.stop()


async def test_sigterm_answers_a_pending_invite_503_within_the_shutdown_bound() -> None:
    """Issue 20 item 7: an INVITE ringing a silent callee at SIGTERM got only its 100 Trying
    before the process exited.  Now the caller gets 503 + Retry-After by the shutdown bound
    (2 s here; Timer B and the ring timeout are far away), and the process exits cleanly."""
    import asyncio
    import time

    from tests.peers.sipua import UdpUA

    srv = ServerProcess("--shutdown-timeout", "2", "--retry-after", "7",
                        "--log-level", "warning", ws=False).start()
    caller = await UdpUA("alice", "127.0.0.1", srv.udp_port).start()
    callee = await UdpUA("silent", "127.0.0.1", srv.udp_port).start()
    try:
        await callee.send(callee.register())
        await callee.response(200, "REGISTER")
        invite = caller.invite("silent")
        await caller.send(invite)
        await caller.response(100)
        await callee.request("INVITE")  # reached the callee, which never answers
        started = time.monotonic()
        stopping = asyncio.ensure_future(asyncio.to_thread(srv.stop))
        final = await caller.recv(lambda m: isinstance(m, Response) and m.status >= 200,
                                  timeout=10.0)
        waited = time.monotonic() - started
        status = await stopping
    finally:
        await caller.close()
        await callee.close()
        if srv.alive():
            srv.stop()
    assert isinstance(final, Response) and final.call_id == invite.call_id
    assert (final.status, final.header("Retry-After")) == (503, "7")
    assert final.to.tag  # a final response from the proxy itself (§8.2.6.2)
    assert 1.5 < waited < 2 + 3.0, waited  # at the bound: in-flight work had its chance
    assert status == 0 and "Traceback" not in srv.log, srv.log[-2000:]


async def test_registers_are_answered_at_once_only_with_a_registry_that_declares_it() -> None:
    """``Registry.registers_at_once`` decides the registrar's path: the in-memory engine
    answers a UDP REGISTER as it is read (no server transaction); a subclass that waits on
    a gate, not declaring it, has its REGISTER queued for a worker in a transaction, answered
    once the gate opens."""
    import asyncio
    from collections.abc import Sequence

    from signaling.config import load_config
    from signaling.registry.base import Binding, ContactChange
    from signaling.registry.memory import MemoryRegistry
    from signaling.server import Server
    from tests.signaling.inproc import UdpPeer
    from tests.signaling.test_sipcore import _req

    class Gated(MemoryRegistry):
        def __init__(self) -> None:
            super().__init__()
            self.gate = asyncio.Event()

        async def register(self, aor: str, call_id: str, cseq: int,
                           changes: Sequence[ContactChange], now: float) -> list[Binding]:
            await self.gate.wait()
            return await super().register(aor, call_id, cseq, changes, now)

    cfg = load_config({"sip_udp": "127.0.0.1:0", "sip_ws": "off", "admin": "off",
                       "diameter": "off", "domain": ["example.com"], "auth": "off"}, env={})
    peer = await UdpPeer.open()
    try:
        plain = Server(cfg)
        await plain.start()
        try:
            assert plain.core.answer_at_once and plain.udp_address is not None
            peer.send(_req("REGISTER", "sip:example.com", peer.port, call_id="plain-1",
                           extra="Contact: <sip:a@10.0.0.1>"), plain.udp_address[1])
            assert (await peer.final(10.0)).status == 200
            assert len(plain.core.table) == 0  # answered as read: no transaction
        finally:
            await plain.stop()

        gated = Gated()
        server = Server(cfg, registry=gated)
        await server.start()
        try:
            assert not server.core.answer_at_once and server.udp_address is not None
            peer.send(_req("REGISTER", "sip:example.com", peer.port, call_id="gated-1",
                           extra="Contact: <sip:b@10.0.0.1>"), server.udp_address[1])
            async with asyncio.timeout(10.0):
                while len(server.core.table) == 0:  # its transaction, waiting on the gate
                    await asyncio.sleep(0.01)
            gated.gate.set()
            assert (await peer.final(10.0)).status == 200
            assert [b.contact for b in await gated.lookup("sip:bob@example.com", 0.0)] == [
                "sip:b@10.0.0.1"]
        finally:
            await server.stop()
    finally:
        peer.close()
