"""SIP over WebSocket (RFC 7118) against the in-process server's real listener."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import socket
import ssl
import types
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.http11 import Request

from protocols.sip.message import NameAddr, Response
from protocols.sip.parser import parse_message
from signaling.server import Server
from signaling.transports import ws as ws_module
from signaling.transports.base import Peer
from signaling.transports.ws import WS_MAX_BAD_MESSAGES, WS_MAX_WRITE_BUFFER, WsConn
from tests.peers.sipua import UdpUA, WsUA
from tests.signaling.inproc import running_server
from tests.tlscerts import Pki, make_pki


def _ws_register(user: str, cseq: int = 1, expires: int = 600, call_id: str = "") -> str:
    call_id = call_id or uuid.uuid4().hex
    return (f"REGISTER sip:127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bK{uuid.uuid4().hex}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:{user}@127.0.0.1>;tag=w{cseq}\r\n"
            f"To: <sip:{user}@127.0.0.1>\r\nCall-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\n"
            f"Contact: <sip:{user}@df7jal23ls0d.invalid;transport=ws>\r\nExpires: {expires}\r\n"
            f"Content-Length: 0\r\n\r\n")


async def test_register_over_ws_text_and_binary_and_removal_on_close() -> None:
    async with running_server() as srv:
        assert srv.ws_address is not None
        url = f"ws://127.0.0.1:{srv.ws_address[1]}"
        async with connect(url, subprotocols=["sip"]) as ws:  # type: ignore[list-item]
            assert ws.subprotocol == "sip"
            await ws.send(_ws_register("wsa"))
            text = await ws.recv()
            assert isinstance(text, str)  # RFC 7118 §4.2: UTF-8 message, text frame
            resp = parse_message(text.encode())
            assert isinstance(resp, Response) and resp.status == 200
            await ws.send(_ws_register("wsb").encode())  # binary frames are accepted too
            resp2 = parse_message((await ws.recv()).encode())  # type: ignore[union-attr]
            assert isinstance(resp2, Response) and resp2.status == 200
            bindings = await srv.registry.lookup("sip:wsa@127.0.0.1", 0.0)
            assert len(bindings) == 1
            assert bindings[0].transport == "ws"
            assert bindings[0].connection_id is not None
        # RFC 7118 §5: the connection is gone, so are the bindings made over it.
        for _ in range(50):
            if await srv.registry.count_bindings() == 0:
                break
            await asyncio.sleep(0.05)
        assert await srv.registry.lookup("sip:wsa@127.0.0.1", 0.0) == []
        assert await srv.registry.lookup("sip:wsb@127.0.0.1", 0.0) == []


async def test_sip_subprotocol_is_required() -> None:
    async with running_server() as srv:
        assert srv.ws_address is not None
        url = f"ws://127.0.0.1:{srv.ws_address[1]}"
        with pytest.raises(InvalidStatus) as err:
            async with connect(url):
                pass
        assert err.value.response.status_code == 400


async def test_origin_allow_list() -> None:
    async with running_server(ws_origins=["https://app.example"]) as srv:
        assert srv.ws_address is not None
        url = f"ws://127.0.0.1:{srv.ws_address[1]}"
        with pytest.raises(InvalidStatus) as err:
            async with connect(url, subprotocols=["sip"],  # type: ignore[list-item]
                               origin="https://evil.example"):  # type: ignore[arg-type]
                pass
        assert err.value.response.status_code == 403
        async with connect(url, subprotocols=["sip"],  # type: ignore[list-item]
                           origin="https://app.example") as ws:  # type: ignore[arg-type]
            await ws.send(_ws_register("origin-ok"))
            assert "200 OK" in str(await ws.recv())


async def test_oversized_message_closes_the_connection() -> None:
    async with running_server(ws_max_size=2048) as srv:
        assert srv.ws_address is not None
        url = f"ws://127.0.0.1:{srv.ws_address[1]}"
        async with connect(url, subprotocols=["sip"]) as ws:  # type: ignore[list-item]
            await ws.send("X" * 5000)
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


def _reachable(root: object) -> list[object]:
    """Every object reachable from ``root`` (gc referents), not through modules, classes,
    functions or loggers (shared by every connection)."""
    seen: dict[int, object] = {}
    todo = [root]
    while todo:
        obj = todo.pop()
        if id(obj) in seen or isinstance(obj, type | types.ModuleType | types.FunctionType
                                         | logging.Logger | logging.LoggerAdapter):
            continue
        seen[id(obj)] = obj
        todo.extend(gc.get_referents(obj))
    return list(seen.values())


def _gauge(srv: Server, name: str) -> float:
    for line in srv.metrics.exposition().decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not exported")


async def _until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)


async def test_pending_handshakes_are_counted_and_bounded() -> None:
    """TCP connections that never finish the opening handshake count in a gauge and against
    ws_max_connections (issue 20 #6): they cannot crowd out SIP clients unseen."""
    async with running_server(ws_max_connections=20) as srv:
        assert srv.ws_address is not None and srv.ws is not None
        port = srv.ws_address[1]
        pending = [await asyncio.open_connection("127.0.0.1", port) for _ in range(20)]
        pending[0][1].write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # half a handshake
        await _until(lambda: _gauge(srv, "signaling_ws_handshakes") == 20)
        assert srv.ws.connections == 20
        assert _gauge(srv, "signaling_ws_connections") == 0
        with pytest.raises(InvalidStatus) as err:
            async with connect(f"ws://127.0.0.1:{port}",
                               subprotocols=["sip"]):  # type: ignore[list-item]
                pass
        assert err.value.response.status_code == 503
        for _, writer in pending:
            writer.close()
        await _until(lambda: _gauge(srv, "signaling_ws_handshakes") == 0)
        async with connect(f"ws://127.0.0.1:{port}",
                           subprotocols=["sip"]) as ws:  # type: ignore[list-item]
            await ws.send(_ws_register("after-crowd"))
            assert "200 OK" in str(await ws.recv())


async def test_clients_sending_only_garbage_are_closed_and_counted() -> None:
    async with running_server() as srv:
        assert srv.ws_address is not None
        url = f"ws://127.0.0.1:{srv.ws_address[1]}"
        clients = [await connect(url, subprotocols=["sip"])  # type: ignore[list-item]
                   for _ in range(50)]
        good = await connect(url, subprotocols=["sip"])  # type: ignore[list-item]
        try:
            for ws in clients:
                for i in range(WS_MAX_BAD_MESSAGES):
                    await ws.send(b"\x00garbage %d\r\n\r\n" % i)
            for ws in clients:
                with pytest.raises(ConnectionClosed) as closed:
                    async with asyncio.timeout(20):
                        while True:
                            await ws.recv()  # the 400s, if any, then the close
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
            assert "closed_garbage" in srv.metrics.exposition().decode()
            assert 'signaling_ws_events_total{event="closed_garbage"} 50.0' in \
                srv.metrics.exposition().decode()
            # A bad message now and then among good ones is not garbage: the count restarts.
            for _ in range(3):
                for i in range(WS_MAX_BAD_MESSAGES - 1):
                    await good.send(b"\x00garbage %d\r\n\r\n" % i)
                await good.send(_ws_register("mostly-good"))
                async with asyncio.timeout(20):
                    while "200 OK" not in str(await good.recv()):
                        pass
        finally:
            for ws in clients:
                await ws.close()
            await good.close()


async def test_closing_connections_while_redis_is_down_log_one_line(
        caplog: pytest.LogCaptureFixture) -> None:
    """The bindings of a closed connection cannot be removed while Redis is down: counted,
    and summarised in one line instead of a traceback per connection."""
    import logging

    from harness.services import RedisServer
    from signaling.registry.factory import make_registry

    redis = RedisServer(appendonly=False).start()
    try:
        async with running_server(registry=make_registry(redis.url)) as srv:
            assert srv.ws_address is not None
            url = f"ws://127.0.0.1:{srv.ws_address[1]}"
            redis.kill()
            with caplog.at_level(logging.WARNING, logger="signaling.transports.ws"):
                for _ in range(20):
                    async with connect(url, subprotocols=["sip"]):  # type: ignore[list-item]
                        pass
                await _until(lambda: 'event="cleanup_failed"} 20.0' in
                             srv.metrics.exposition().decode())
            lines = [r for r in caplog.records if "could not remove" in r.getMessage()]
            assert len(lines) == 1 and not lines[0].exc_info
    finally:
        redis.stop()


async def test_a_websocket_flow_that_closes_under_a_request_gives_way_to_the_next_flow() -> None:
    """A WebSocket connection that closes tells the SIP core, as TCP and TLS ones do: the
    INVITE sent over it that heard nothing back fails at once (§17.1.4: its answer could only
    have come over that connection), not at Timer B, and the instance's other flow gets it
    (RFC 5626 §5.3)."""
    async with running_server() as srv:
        assert srv.ws_address is not None and srv.udp_address is not None
        udp = srv.udp_address[1]
        flows = [await WsUA("obw", "127.0.0.1", udp, srv.ws_address[1]).start()
                 for _ in range(2)]
        caller = await UdpUA("caller", "127.0.0.1", udp).start()
        try:
            for reg_id, flow in enumerate(flows, 1):
                req = flow.register()
                params = {**req.contacts[0].params, "reg-id": str(reg_id),
                          "+sip.instance": '"<urn:uuid:00000000-0000-1000-8000-0000000000ee>"'}
                req.contacts = [NameAddr(req.contacts[0].uri, params=params)]
                req.extra.append(("Supported", "outbound"))
                await flow.send(req)
                await flow.response(200, "REGISTER")
            await caller.send(caller.invite("obw"))
            await flows[0].request("INVITE")
            await flows[0].close()  # no answer: the connection goes
            got = await flows[1].request("INVITE")
            await flows[1].send(flows[1].reply(got, 486, tag="busy"))
            await caller.response(486)
            assert srv.proxy.c_proxy.get("flow_failed_next_flow") == 1
        finally:
            await caller.close()
            await flows[1].close()


async def test_open_connection_keeps_no_handshake_headers_and_bounds_its_writes() -> None:
    """An idle connection holds no opening-handshake headers and no send queue (memory per
    idle connection, issue 15); what a peer has not taken is bounded: past
    WS_MAX_WRITE_BUFFER a message is dropped and counted, and sending resumes below it."""
    async with running_server() as srv:
        assert srv.ws_address is not None and srv.ws is not None
        url = f"ws://127.0.0.1:{srv.ws_address[1]}"
        async with connect(url, subprotocols=["sip"]) as ws:  # type: ignore[list-item]
            await ws.send(_ws_register("bounded"))
            assert "200 OK" in str(await ws.recv())
            [(conn_id, server_side)] = srv.ws.conns.items()
            assert isinstance(server_side, WsConn) and server_side.is_open
            # Nothing of the opening handshake is reachable from the open connection's
            # protocol state: no request, no headers; and no send queue while idle.
            held = _reachable(server_side.ws)
            assert not [o for o in held if isinstance(o, Request | Headers)]
            assert server_side.out is None and server_side.tail == b""
            peer = Peer("ws", "127.0.0.1", 1, conn_id)
            transport = server_side.transport
            assert transport is not None
            real = transport.get_write_buffer_size
            transport.get_write_buffer_size = lambda: WS_MAX_WRITE_BUFFER + 1  # type: ignore[method-assign]
            assert not srv.ws.send(b"OPTIONS sip:x SIP/2.0\r\n\r\n", peer)
            assert srv.ws.c_ws.get("send_queue_full") == 1
            transport.get_write_buffer_size = real  # type: ignore[method-assign]
            assert srv.ws.send(b"OPTIONS sip:y SIP/2.0\r\n\r\n", peer)
            assert await ws.recv() == "OPTIONS sip:y SIP/2.0\r\n\r\n"  # a text frame
            assert srv.ws.send(b"\xff\xfe", peer)
            assert await ws.recv() == b"\xff\xfe"  # not UTF-8: a binary frame (RFC 7118 §4.2)


def _client_frame(payload: bytes, opcode: int = 0x1, fin: bool = True) -> bytes:
    """A masked client frame (RFC 6455 §5.2, §5.3)."""
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    head += bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


_HANDSHAKE = (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
              b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
              b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: sip\r\n\r\n")


async def _read_until(reader: asyncio.StreamReader, needle: bytes) -> bytes:
    data = b""
    async with asyncio.timeout(20):
        while needle not in data:
            chunk = await reader.read(65_536)
            assert chunk, f"closed before {needle!r}: {data!r}"
            data += chunk
    return data


async def test_handshake_split_anywhere_and_a_frame_right_behind_it() -> None:
    """The end of the handshake's head may straddle reads, and a client may send its first
    frame in the same segment as the end of the head: nothing is lost in the switch from
    the handshake's protocol to the open one."""
    async with running_server() as srv:
        assert srv.ws_address is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.ws_address[1])
        try:
            frame = _client_frame(_ws_register("split").encode())
            cut = len(_HANDSHAKE) - 2  # between the two CRLFs that end the head
            for piece in (_HANDSHAKE[:10], _HANDSHAKE[10:cut], _HANDSHAKE[cut:] + frame):
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(0.05)
            data = await _read_until(reader, b"SIP/2.0 200 OK")
            assert data.startswith(b"HTTP/1.1 101 ")
            assert b"Sec-WebSocket-Protocol: sip\r\n" in data
        finally:
            writer.close()


async def test_a_fragmented_message_is_one_sip_message() -> None:
    """RFC 6455 §5.4: a message may come in fragments; RFC 7118 §4.2: it is one SIP message."""
    async with running_server() as srv:
        assert srv.ws_address is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.ws_address[1])
        try:
            writer.write(_HANDSHAKE)
            await _read_until(reader, b"\r\n\r\n")
            message = _ws_register("fragments").encode()
            writer.write(_client_frame(message[:50], fin=False)
                         + _client_frame(message[50:120], opcode=0x0, fin=False)
                         + _client_frame(b"", opcode=0x9)  # a ping between fragments
                         + _client_frame(message[120:], opcode=0x0))
            data = await _read_until(reader, b"SIP/2.0 200 OK")
            assert b"\x8a\x00" in data  # the ping's pong
            assert await srv.registry.lookup("sip:fragments@127.0.0.1", 0.0)
        finally:
            writer.close()


async def test_a_connection_that_never_opens_is_closed_and_counted(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ws_module, "WS_OPEN_TIMEOUT", 0.2)
    async with running_server() as srv:
        assert srv.ws_address is not None and srv.ws is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.ws_address[1])
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # and nothing more
        async with asyncio.timeout(20):
            assert await reader.read() == b""  # closed by the server
        writer.close()
        assert srv.ws.c_ws.get("open_timeout") == 1
        await _until(lambda: srv.ws is not None and srv.ws.connections == 0)


async def test_connections_per_source_are_bounded() -> None:
    """The stream listener's per-source bound (--tcp-max-per-source) holds for WebSocket."""
    async with running_server(tcp_max_per_source=3) as srv:
        assert srv.ws_address is not None and srv.ws is not None
        url = f"ws://127.0.0.1:{srv.ws_address[1]}"
        open_ = [await connect(url, subprotocols=["sip"])  # type: ignore[list-item]
                 for _ in range(3)]
        try:
            with pytest.raises((ConnectionClosed, OSError, EOFError, InvalidHandshake)):
                async with connect(url, subprotocols=["sip"]):  # type: ignore[list-item]
                    pass
            assert srv.ws.c_ws.get("rejected_source_limit") == 1
            await open_[0].send(_ws_register("within-bound"))
            assert "200 OK" in str(await open_[0].recv())
        finally:
            for ws in open_:
                await ws.close()


async def test_reading_pauses_while_the_server_is_overloaded() -> None:
    """Backpressure (Shen & Schulzrinne), as for TCP: while the worker queues are full the
    connection that delivered is not read, and it is read again once they drain."""
    async with running_server() as srv:
        assert srv.ws_address is not None and srv.ws is not None
        url = f"ws://127.0.0.1:{srv.ws_address[1]}"
        async with connect(url, subprotocols=["sip"]) as ws:  # type: ignore[list-item]
            full = True
            srv.ws.overloaded = lambda: full
            await ws.send(_ws_register("paused"))
            assert "200 OK" in str(await ws.recv())  # admitted, then the reading paused
            [conn] = srv.ws.conns.values()
            await _until(lambda: conn.paused)
            await ws.send(_ws_register("later"))
            await asyncio.sleep(0.2)
            assert await srv.registry.lookup("sip:later@127.0.0.1", 0.0) == []
            full = False
            assert "200 OK" in str(await ws.recv())
            assert srv.ws.c_ws.get("paused_reading") == 1
            # A ping's answer may have waited unread while we paused: its wait starts over.
            assert isinstance(conn, WsConn)
            conn.deadline, conn.why = 1.0, "ping_timeout"
            srv.ws.resumed(conn, 100.0)
            assert conn.deadline == 100.0 + srv.cfg.ws_ping_timeout and conn.heard == 100.0
            conn.deadline = None


# -- WSS: the TLS of signaling/transports/tlsstream.py under the WebSocket framing -------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _wss(pki: Pki) -> dict[str, Any]:
    return {"sip_wss": "127.0.0.1:0", "tls_cert": str(pki.cert("server")),
            "tls_key": str(pki.key("server"))}


class _TlsClient:
    """A TLS client over memory BIOs on a raw TCP connection: the test decides how the bytes
    are cut into writes."""

    def __init__(self, pki: Pki, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        ctx = ssl.create_default_context(cafile=str(pki.ca))
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.sslobj = ctx.wrap_bio(self.incoming, self.outgoing,
                                   server_hostname="sip.example.com")
        self.reader, self.writer = reader, writer

    async def send_in_pieces(self, data: bytes, size: int) -> None:
        for i in range(0, len(data), size):
            self.writer.write(data[i:i + size])
            await self.writer.drain()
            await asyncio.sleep(0.01)  # separate reads are likely, not needed for the checks

    async def handshake(self, size: int) -> None:
        async with asyncio.timeout(20):
            while True:
                try:
                    self.sslobj.do_handshake()
                except ssl.SSLWantReadError:
                    await self.send_in_pieces(self.outgoing.read(), size)
                    chunk = await self.reader.read(65_536)
                    assert chunk, "closed mid-handshake"
                    self.incoming.write(chunk)
                else:
                    await self.send_in_pieces(self.outgoing.read(), size)  # our Finished
                    return

    async def read_until(self, needle: bytes) -> bytes:
        data = b""
        async with asyncio.timeout(20):
            while needle not in data:
                chunk = await self.reader.read(65_536)
                assert chunk, f"closed before {needle!r}: {data!r}"
                self.incoming.write(chunk)
                with contextlib.suppress(ssl.SSLWantReadError):
                    while self.incoming.pending:
                        data += self.sslobj.read(65_536)
        return data


async def test_wss_runs_its_own_tls_split_across_reads_and_honours_close_notify(
        pki: Pki) -> None:
    """A WSS connection is the listener's own TLS over memory BIOs (no event-loop TLS
    transport under it): a handshake and records cut into small writes still open the
    WebSocket and carry a REGISTER, whose record also holds the upgrade request; the client's
    close_notify (RFC 8446 §6.1) closes the connection, answered with ours, counted, and its
    binding goes with it (RFC 7118 §5)."""
    async with running_server(**_wss(pki)) as srv:
        wss = srv.wss
        assert wss is not None and wss.gate is not None and srv.wss_address is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.wss_address[1])
        client = _TlsClient(pki, reader, writer)
        try:
            await client.handshake(size=37)
            assert wss.gate.c_events.get("wss", "handshake_done") == 1
            client.sslobj.write(_HANDSHAKE + _client_frame(_ws_register("split").encode()))
            await client.send_in_pieces(client.outgoing.read(), size=53)
            data = await client.read_until(b"SIP/2.0 200 OK")
            assert data.startswith(b"HTTP/1.1 101 ")
            (conn,) = wss.conns.values()
            assert conn.transport is not None and conn.tls is not None
            assert conn.transport.get_extra_info("ssl_object") is None
            assert wss.ssl_object(conn.conn_id) is conn.tls.sslobj
            assert await srv.registry.lookup("sip:split@127.0.0.1", 0.0)
            with contextlib.suppress(ssl.SSLWantReadError):
                client.sslobj.unwrap()  # our close_notify; the server's is awaited below
            writer.write(client.outgoing.read())
            async with asyncio.timeout(20):
                rest = await reader.read()  # up to the server's close
            client.incoming.write(rest)
            client.sslobj.unwrap()  # the server's close_notify came: no SSLWantReadError
        finally:
            writer.close()
        await _until(lambda: wss.connections == 0 and wss.open == 0)
        assert wss.c_ws.get("peer_closed") == 1 and wss.c_ws.get("closed") == 1
        for _ in range(50):
            if await srv.registry.count_bindings() == 0:
                break
            await asyncio.sleep(0.05)
        assert await srv.registry.lookup("sip:split@127.0.0.1", 0.0) == []


async def test_a_wss_handshake_that_never_finishes_is_closed_and_counted(pki: Pki) -> None:
    """A ClientHello begun and never finished holds a handshake slot until the gate's timeout,
    then the connection is closed and counted (issue 15); it never became a WebSocket."""
    async with running_server(**_wss(pki)) as srv:
        wss = srv.wss
        assert wss is not None and wss.gate is not None and srv.wss_address is not None
        wss.gate.timeout = 0.5
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.wss_address[1])
        writer.write(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a ClientHello begun
        await _until(lambda: wss.gate is not None and wss.gate.in_progress == 1)
        assert _gauge(srv, "signaling_wss_handshakes") == 1
        # Closed by the server: an EOF, or a reset (the handshake is aborted).
        async with asyncio.timeout(20):
            with contextlib.suppress(ConnectionError):
                assert await reader.read() == b""
        writer.close()
        assert wss.gate.c_events.get("wss", "handshake_timeout") == 1
        assert wss.gate.in_progress == 0 and wss.connections == 0 and not wss.handshaking
        assert wss.c_ws.get("opened") == 0


async def test_a_wss_connection_that_never_opens_is_closed_with_close_notify(
        pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    """TLS done but no WebSocket request within WS_OPEN_TIMEOUT: closed (with our
    close_notify, which asyncio's TLS client reads as a clean EOF) and counted."""
    monkeypatch.setattr(ws_module, "WS_OPEN_TIMEOUT", 0.2)
    async with running_server(**_wss(pki)) as srv:
        wss = srv.wss
        assert wss is not None and wss.gate is not None and srv.wss_address is not None
        ctx = ssl.create_default_context(cafile=str(pki.ca))
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", srv.wss_address[1], ssl=ctx, server_hostname="sip.example.com")
        async with asyncio.timeout(20):
            assert await reader.read() == b""
        writer.close()
        assert wss.c_ws.get("open_timeout") == 1
        assert wss.gate.c_events.get("wss", "handshake_done") == 1
        await _until(lambda: wss.connections == 0)


async def test_shutdown_1001_reaches_a_slow_reader() -> None:
    """RFC 6455 §7.4.1: at shutdown each open WebSocket is closed with 1001, and the listener
    waits (WS_CLOSE_TIMEOUT at most) for the closing handshakes: a client that reads slowly,
    with what it has not read yet still in our write buffer, gets everything and then the
    1001 (it used to be aborted at once, the 1001 lost with the buffer)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    async with running_server() as srv:
        assert srv.ws_address is not None and srv.ws is not None
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", srv.ws_address[1]))
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(_HANDSHAKE + _client_frame(_ws_register("slow").encode()))
        await _read_until(reader, b"SIP/2.0 200 OK")
        [(conn_id, conn)] = srv.ws.conns.items()
        transport = conn.transport
        assert transport is not None
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        message = b"OPTIONS sip:slow@127.0.0.1 SIP/2.0\r\nX: " + b"y" * 4000 + b"\r\n\r\n"
        for _ in range(40):  # 160 kB the client does not read yet
            assert srv.ws.send(message, Peer("ws", "127.0.0.1", 1, conn_id))
        await asyncio.sleep(0.1)
        assert transport.get_write_buffer_size() > 0

        async def read_slowly() -> bytes:
            await asyncio.sleep(0.5)
            data = b""
            async with asyncio.timeout(20):
                while chunk := await reader.read(65_536):
                    data += chunk
                    if data.endswith(_GOING_AWAY):
                        writer.write(_client_frame(b"\x03\xe9", opcode=0x8))  # our half
            writer.close()
            return data

        reading = asyncio.ensure_future(read_slowly())
    data = await reading
    assert data.count(b"OPTIONS sip:slow@") == 40 and data.endswith(_GOING_AWAY)


#: The server's close frame with status 1001 and no reason (RFC 6455 §5.5.1).
_GOING_AWAY = b"\x88\x02\x03\xe9"


async def test_a_frame_that_trickles_in_is_timed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """A frame sent a byte at a time (slowloris) is bounded in time, not only in size: past
    WS_MESSAGE_TIMEOUT from its first byte its connection is closed and counted; a peer that
    sends whole messages slowly is not (each message is whole when its frame ends)."""
    monkeypatch.setattr(ws_module, "WS_MESSAGE_TIMEOUT", 0.5)
    async with running_server() as srv:
        assert srv.ws_address is not None and srv.ws is not None
        slow_r, slow_w = await asyncio.open_connection("127.0.0.1", srv.ws_address[1])
        calm_r, calm_w = await asyncio.open_connection("127.0.0.1", srv.ws_address[1])
        for w in (slow_w, calm_w):
            w.write(_HANDSHAKE)
        for r in (slow_r, calm_r):
            await _read_until(r, b"\r\n\r\n")
        frame = _client_frame(_ws_register("trickle").encode())
        closed = False
        async with asyncio.timeout(20):
            for i, byte in enumerate(frame[:-1]):
                slow_w.write(bytes([byte]))
                if i % 20 == 0:  # a whole message now and then on the other connection
                    calm_w.write(_client_frame(_ws_register(f"calm{i}").encode()))
                await asyncio.sleep(0.05)
                if slow_r.at_eof() or (await _eof_within(slow_r, 0.0)):
                    closed = True
                    break
        assert closed, "the trickled frame was not timed out"
        assert srv.ws.c_ws.get("stalled_message") == 1
        assert not calm_r.at_eof()
        await _until(lambda: srv.ws is not None and len(srv.ws.conns) == 1)
        for w in (slow_w, calm_w):
            w.close()


async def _eof_within(reader: asyncio.StreamReader, timeout: float) -> bool:
    """Whether the server closed ``reader``'s connection (what it sent before is read).  A
    reset is a close too: bytes of ours that reach a socket the server has closed make its
    kernel answer RST (RFC 2525 §2.17), which can end the read before the FIN is seen."""
    try:
        async with asyncio.timeout(timeout or 0.001):
            while await reader.read(65_536):
                pass
            return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
