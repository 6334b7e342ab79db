"""SIP over TCP and TLS, the transport alone: real sockets on loopback, real TLS handshakes.

The transport hands each framed message to ``receive``; here that is a list the test reads, and
``send`` answers go back through the transport like ``SipCore`` sends them.  The whole server
over TCP and TLS, with SIPp, is in tests/signaling/test_sip_tcp.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from harness.serverproc import ServerProcess, free_tcp_port, free_udp_port
from harness.sipp_runner import Sipp, SippResult, run_sipp
from protocols.sip.parser import parse_message
from signaling.metrics import Metrics
from signaling.tls import TlsContexts, TlsSettings
from signaling.transports.base import Peer
from signaling.transports.tcp import StreamLimits, StreamTransport
from tests.peers import baresip
from tests.peers.sipua import StreamUA, WsUA
from tests.signaling.auth.peers import auth_server
from tests.signaling.auth.test_linphone import USERS as LINPHONE_USERS
from tests.signaling.auth.test_linphone import Linphonec, _sent
from tests.siptools import registered_contacts
from tests.tlscerts import Pki, make_pki

MSG = (b"OPTIONS sip:bob@example.com SIP/2.0\r\n"
       b"Via: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bK776asdhds\r\n"
       b"From: <sip:alice@example.com>;tag=1928301774\r\n"
       b"To: <sip:bob@example.com>\r\n"
       b"Call-ID: a84b4c76e66710@pc33.example.com\r\n"
       b"CSeq: 314159 OPTIONS\r\n"
       b"Max-Forwards: 70\r\n"
       b"Content-Length: 0\r\n\r\n")


class Harness:
    """A transport on an ephemeral loopback port, with what it delivered and closed."""

    def __init__(self, **limits: object) -> None:
        self.limits = StreamLimits(**limits)  # type: ignore[arg-type]
        self.metrics = Metrics()
        self.got: asyncio.Queue[tuple[bytes, Peer]] = asyncio.Queue()
        self.closed: list[str] = []
        self.busy = False
        self.transport: StreamTransport | None = None
        self.port = 0

    async def start(self, name: str = "tcp", ssl_context: ssl.SSLContext | None = None,
                    client_ssl: ssl.SSLContext | None = None) -> Harness:
        self.transport = StreamTransport(
            name, lambda data, peer: self.got.put_nowait((data, peer)), self.metrics, "n1",
            host="127.0.0.1", limits=self.limits, ssl_context=ssl_context,
            client_ssl=client_ssl, on_closed=self._on_closed, overloaded=lambda: self.busy)
        _, self.port = await self.transport.start("127.0.0.1", 0)
        return self

    async def _on_closed(self, conn_id: str) -> None:
        self.closed.append(conn_id)

    @property
    def t(self) -> StreamTransport:
        assert self.transport is not None
        return self.transport

    def events(self, event: str) -> float:
        return self.t.c_events.get(self.t.name, event)

    def framing(self, reason: str) -> float:
        return self.t.c_closed.get(self.t.name, reason)

    async def message(self, timeout: float = 5.0) -> tuple[bytes, Peer]:
        return await asyncio.wait_for(self.got.get(), timeout)

    async def connect(self, ctx: ssl.SSLContext | None = None,
                      ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.wait_for(asyncio.open_connection(
            "127.0.0.1", self.port, ssl=ctx, server_hostname="sip.example.com" if ctx else None,
            limit=32 * 1024 * 1024), 5)


Maker = Callable[..., Harness]


@pytest.fixture
async def harness() -> AsyncIterator[Maker]:
    made: list[Harness] = []

    def make(**limits: object) -> Harness:
        h = Harness(**limits)
        made.append(h)
        return h

    yield make
    for h in made:
        if h.transport is not None:
            await h.t.close()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


async def until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def closed_by_server(reader: asyncio.StreamReader, timeout: float = 10.0) -> bytes:
    """Everything the server sent until it closed the connection."""
    return await asyncio.wait_for(reader.read(), timeout)


# --- messages both ways -----------------------------------------------------------------------


async def test_messages_in_and_answers_back_on_the_same_connection(harness: Maker) -> None:
    h = await harness().start()
    reader, writer = await h.connect()
    writer.write(MSG + b"\r\n" + MSG + MSG[:30])
    data, peer = await h.message()
    assert data == MSG and peer.transport == "tcp" and peer.host == "127.0.0.1"
    assert peer.port == writer.get_extra_info("sockname")[1]
    assert peer.conn_id is not None and peer.conn_id.startswith("n1/tcp/")
    assert (await h.message())[0] == MSG
    writer.write(MSG[30:])
    assert (await h.message())[0] == MSG
    assert h.t.send(b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n", peer)
    assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5) == (
        b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n")
    writer.close()
    await until(lambda: h.closed == [peer.conn_id])
    assert h.events("accepted") == 1 and h.events("closed") == 1
    # The connection is gone: a new one to the peer's address is tried, and fails (nothing
    # listens on the client's ephemeral port).
    assert h.t.send(b"late", peer)
    await until(lambda: h.events("connect_failed") == 1)
    assert h.events("connection_gone") == 1


async def test_ping_gets_a_pong(harness: Maker) -> None:
    h = await harness().start()
    reader, writer = await h.connect()
    writer.write(b"\r\n\r\n")
    assert await asyncio.wait_for(reader.readexactly(2), 5) == b"\r\n"
    writer.write(MSG)
    assert (await h.message())[0] == MSG
    writer.close()


async def test_request_to_an_address_opens_a_connection_and_reuses_it(harness: Maker) -> None:
    h = await harness().start()
    seen: asyncio.Queue[bytes] = asyncio.Queue()
    accepted = 0

    async def peer_server(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        while chunk := await r.read(65536):
            seen.put_nowait(chunk)
            w.write(MSG)  # something back over the connection we opened

    srv = await asyncio.start_server(peer_server, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        target = Peer("tcp", "127.0.0.1", port)
        assert h.t.send(b"first", target) and h.t.send(b"second", target)  # queued while connecting
        got = b""
        while got != b"firstsecond":
            got += await asyncio.wait_for(seen.get(), 5)
        data, via = await h.message()
        assert data == MSG and via.port == port  # what the peer sent back reaches receive
        assert h.t.send(b"third", target)
        assert await asyncio.wait_for(seen.get(), 5) == b"third"
        assert accepted == 1 and h.events("connected") == 1
    finally:
        srv.close()


async def test_unreachable_address_is_counted(harness: Maker) -> None:
    h = await harness().start()
    sock_port = 1  # nothing listens on port 1 of loopback
    assert h.t.send(b"x", Peer("tcp", "127.0.0.1", sock_port))
    await until(lambda: h.events("connect_failed") == 1)
    assert not h.t.send(b"x", Peer("tcp", "", 0, "n1/tcp/999"))
    assert h.events("connection_gone") == 1 and h.events("no_address") == 1


# --- bad input --------------------------------------------------------------------------------


async def test_garbage_after_a_valid_message(harness: Maker) -> None:
    h = await harness().start()
    reader, writer = await h.connect()
    writer.write(MSG + b"\x00\x01garbage\r\n\r\n")
    assert (await h.message())[0] == MSG
    assert await closed_by_server(reader) == b""
    assert h.framing("garbage") == 1 and h.events("framing_error") == 1
    await until(lambda: len(h.closed) == 1)


async def test_ten_megabyte_message_gets_513_and_a_close(harness: Maker) -> None:
    h = await harness().start()
    reader, writer = await h.connect()
    answer = asyncio.ensure_future(closed_by_server(reader, 30))
    big = b"x" * (10 * 1024 * 1024)
    writer.write(MSG.replace(b"Content-Length: 0", f"Content-Length: {len(big)}".encode()))
    try:  # the server stops taking the body at some point (our write side sees a reset)
        for i in range(0, len(big), 65536):
            writer.write(big[i : i + 65536])
            await writer.drain()
    except ConnectionError:
        pass
    response = parse_message(await answer)
    assert getattr(response, "status", None) == 513
    assert h.framing("too_large") == 1 and h.events("framing_error") == 1
    await until(lambda: not h.t.conns)
    assert h.got.empty()


async def test_half_open_connection_is_closed(harness: Maker) -> None:
    h = await harness().start()
    reader, writer = await h.connect()
    writer.write(MSG)
    await h.message()
    writer.write_eof()  # we will send nothing more
    assert await closed_by_server(reader) == b""
    assert h.events("peer_closed") == 1
    await until(lambda: len(h.closed) == 1 and not h.t.conns)


async def test_stalled_message_and_idle_connection_are_closed(harness: Maker) -> None:
    h = await harness(message_timeout=0.3, idle_timeout=1.5).start()
    r1, w1 = await h.connect()
    w1.write(MSG[:40])  # a header section that never ends
    r2, w2 = await h.connect()
    w2.write(MSG)  # a complete message, then silence
    await h.message()
    assert await closed_by_server(r1) == b""
    assert h.events("stalled_message") == 1 and h.events("idle_timeout") == 0
    assert await closed_by_server(r2) == b""
    assert h.events("idle_timeout") == 1


async def test_pings_keep_a_connection_alive(harness: Maker) -> None:
    h = await harness(idle_timeout=1.0).start()
    reader, writer = await h.connect()
    for _ in range(6):  # 3 s in all, three idle timeouts
        writer.write(b"\r\n\r\n")
        assert await asyncio.wait_for(reader.readexactly(2), 5) == b"\r\n"
        await asyncio.sleep(0.5)
    assert h.events("idle_timeout") == 0 and len(h.t.conns) == 1
    writer.close()


async def test_connection_limits_total_and_per_source(harness: Maker) -> None:
    h = await harness(max_per_source=2).start()
    kept = [await h.connect() for _ in range(2)]
    await until(lambda: len(h.t.conns) == 2)
    reader, _ = await h.connect()
    assert await closed_by_server(reader) == b""
    assert h.events("rejected_source_limit") == 1 and len(h.t.conns) == 2
    for _, w in kept:
        w.close()
    h2 = await harness(max_connections=1).start()
    _, w = await h2.connect()
    await until(lambda: len(h2.t.conns) == 1)
    reader, _ = await h2.connect()
    assert await closed_by_server(reader) == b""
    assert h2.events("rejected_total_limit") == 1
    w.close()


async def test_a_reader_that_does_not_read_is_bounded(harness: Maker) -> None:
    h = await harness(max_write_buffer=64 * 1024).start()
    _reader, writer = await h.connect()
    writer.write(MSG)
    _, peer = await h.message()
    chunk = b"x" * 60_000
    sent = 0
    while h.t.send(chunk, peer):  # the kernel buffers fill, then ours, then it stops
        sent += 1
        assert sent < 10_000
        await asyncio.sleep(0)
    assert h.events("write_buffer_full") == 1
    writer.close()


async def test_overload_stops_reading_until_the_queues_drain(harness: Maker) -> None:
    h = await harness().start()
    _reader, writer = await h.connect()
    h.busy = True
    writer.write(MSG)
    await h.message()  # delivered, then reading stops
    assert h.events("paused_reading") == 1
    writer.write(MSG * 3)
    await asyncio.sleep(0.3)
    assert h.got.empty()  # in the kernel buffers, not read
    h.busy = False
    for _ in range(3):
        assert (await h.message())[0] == MSG
    writer.close()


# --- TLS --------------------------------------------------------------------------------------


def tls_contexts(pki: Pki, **kw: object) -> TlsContexts:
    return TlsContexts(TlsSettings(cert=str(pki.cert("server")), key=str(pki.key("server")),
                                   **kw))  # type: ignore[arg-type]


async def test_tls_messages_and_trusted_peer(harness: Maker, pki: Pki) -> None:
    contexts = tls_contexts(pki, client_ca=str(pki.ca),
                            trusted_peers=frozenset({"trunk.example.net"}))
    h = await harness().start("tls", contexts.front)
    assert h.t.info.via_token == "TLS" and h.t.info.uri_transport == "tls"
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    ctx.load_cert_chain(pki.cert("client"), pki.key("client"))
    reader, writer = await h.connect(ctx)
    writer.write(MSG)
    data, peer = await h.message()
    assert data == MSG and peer.transport == "tls" and peer.conn_id
    assert contexts.trusted_peer(h.t.ssl_object(peer.conn_id)) == "trunk.example.net"
    h.t.send(b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n", peer)
    assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).startswith(b"SIP/2.0 200")
    writer.close()


async def test_tls_handshake_that_never_finishes_is_closed_and_counted(harness: Maker,
                                                                       pki: Pki) -> None:
    h = await harness(handshake_timeout=0.5).start("tls", tls_contexts(pki).front)
    silent_r, _silent_w = await h.connect()  # plain TCP: no ClientHello at all
    half_r, half_w = await h.connect()
    half_w.write(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a ClientHello cut short
    assert await closed_by_server(silent_r) == b""
    assert await closed_by_server(half_r) == b""
    gate = h.t.gate
    assert gate is not None
    await until(lambda: gate.c_events.get("tls", "handshake_timeout") == 2)
    assert not h.t.conns and not h.closed  # never a connection, nothing to clean up
    assert gate.in_progress == 0
    # and the listener still serves real clients
    _, writer = await h.connect(ssl.create_default_context(cafile=str(pki.ca)))
    writer.write(MSG)
    assert (await h.message())[0] == MSG
    writer.close()


async def test_tls_handshakes_that_fail_are_closed_and_counted(harness: Maker, pki: Pki) -> None:
    """The listener runs each handshake itself (signaling/transports/tlsstream.py): bytes that
    are not TLS, a client offering only TLS 1.1 and a client gone mid-handshake each end as
    one ``handshake_failed``, the connection closed and never a SIP connection; a client that
    completes is ``handshake_done`` and its close_notify closes its connection."""
    h = await harness(handshake_timeout=30).start("tls", tls_contexts(pki).front)
    gate = h.t.gate
    assert gate is not None
    garbage_r, garbage_w = await h.connect()
    garbage_w.write(MSG)
    assert await closed_by_server(garbage_r) == b""  # OpenSSL sends no alert to non-TLS
    old = ssl.create_default_context(cafile=str(pki.ca))
    old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await h.connect(old)
    _, gone_w = await h.connect()
    gone_w.write(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a ClientHello begun
    await until(lambda: gate.in_progress == 1)
    gone_w.transport.abort()
    await until(lambda: gate.c_events.get("tls", "handshake_failed") == 3)
    assert gate.in_progress == 0 and not h.t.conns and not h.t.handshaking
    _, writer = await h.connect(ssl.create_default_context(cafile=str(pki.ca)))
    writer.write(MSG)
    data, peer = await h.message()
    assert data == MSG and gate.c_events.get("tls", "handshake_done") == 1
    writer.close()  # close_notify, then FIN
    await until(lambda: peer.conn_id not in h.t.conns)
    assert h.closed == [peer.conn_id]


async def test_tls_handshakes_in_progress_are_bounded_per_source(harness: Maker,
                                                                 pki: Pki) -> None:
    """Before any TLS work: a source with ``max_per_source`` handshakes in progress gets
    its next connection closed at once (and counted); another address is served."""
    h = await harness(max_per_source=2, handshake_timeout=30).start(
        "tls", tls_contexts(pki).front)
    stalled = [await h.connect() for _ in range(2)]
    gate = h.t.gate
    assert gate is not None
    await until(lambda: gate.in_progress == 2)
    extra_r, _ = await h.connect()
    assert await closed_by_server(extra_r) == b""
    assert gate.c_events.get("tls", "rejected_source_limit") == 1
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    _, writer = await asyncio.wait_for(asyncio.open_connection(
        "127.0.0.1", h.port, ssl=ctx, server_hostname="sip.example.com",
        local_addr=("127.0.0.2", 0)), 5)
    writer.write(MSG)
    assert (await h.message())[0] == MSG
    writer.close()
    for _, w in stalled:
        w.close()
    await until(lambda: gate.in_progress == 0)


async def test_tls_outgoing_connection_verifies_the_server(harness: Maker,
                                                           pki: Pki) -> None:
    contexts = tls_contexts(pki)
    far = await harness().start("tls", contexts.front)
    near = await harness().start("tls", contexts.front,
                                 client_ssl=contexts.client_context(str(pki.ca)))
    assert near.t.send(MSG, Peer("tls", "127.0.0.1", far.port))
    data, peer = await far.message()
    assert data == MSG and peer.transport == "tls"
    # The system CAs do not know the test CA: the handshake fails and is counted.
    wrong = await harness().start("tls", contexts.front, client_ssl=contexts.client_context())
    assert wrong.t.send(MSG, Peer("tls", "127.0.0.1", far.port))
    await until(lambda: wrong.events("connect_failed") == 1)


# --- the whole server: several processes, SIPp --------------------------------------------------


async def test_stream_listeners_are_shared_by_the_workers_of_a_supervisor(pki: Pki) -> None:
    """``--processes 2``: the TCP, TLS and WSS listening sockets are bound once by the
    supervisor and accepted on by both workers (each binding its own failed from the second
    worker on); clients register over each of them, connection after connection."""
    ports = {name: free_tcp_port() for name in ("tcp", "tls", "wss")}
    srv = ServerProcess("--processes", "2", "--tls-cert", str(pki.cert("server")),
                        "--tls-key", str(pki.key("server")),
                        *(x for name, port in ports.items()
                          for x in (f"--sip-{name}", f"127.0.0.1:{port}")), ws=False).start()
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    try:
        for i in range(6):
            for ua in (StreamUA(f"tcp{i}", "127.0.0.1", srv.udp_port, ports["tcp"]),
                       StreamUA(f"tls{i}", "127.0.0.1", srv.udp_port, ports["tls"], ctx),
                       WsUA(f"wss{i}", "127.0.0.1", srv.udp_port, ports["wss"], ctx)):
                await ua.start()
                try:
                    await ua.send(ua.register())
                    await ua.response(200, "REGISTER", timeout=20)
                finally:
                    await ua.close()
    finally:
        assert srv.stop() == 0
    assert "Traceback" not in srv.log and "cannot start" not in srv.log, srv.log[-3000:]


# --- the whole server with SIPp over TCP ---------------------------------------------------------

#: The shared reference scenario: one REGISTER per call, user u<call number>, Via [transport].
REGISTER_XML = Path(__file__).resolve().parents[3] / ".." / "shared" / "reference" / "sipp" \
    / "register.xml"


@pytest.fixture(scope="module")
def tcp_server() -> Iterator[tuple[ServerProcess, int]]:
    port = free_tcp_port()
    srv = ServerProcess("--sip-tcp", f"127.0.0.1:{port}", "--log-level", "warning",
                        ws=False).start()
    try:
        yield srv, port
    finally:
        assert srv.stop() == 0
        assert "Traceback" not in srv.log, srv.log[-3000:]


def _sipp_ok(result: SippResult, calls: int) -> None:
    assert result.returncode == 0, (result.errors[-3000:], result.output[-2000:])
    assert (result.successful, result.failed) == (calls, 0), result.errors[-3000:]


@pytest.mark.parametrize("mode", ["tn", "t1"])
def test_sipp_registers_over_tcp(tcp_server: tuple[ServerProcess, int], mode: str) -> None:
    """SIPp over TCP, a connection per call (tn) and one for all (t1): every REGISTER gets
    its 200 back over the connection it came on."""
    _, port = tcp_server
    calls = 300
    result = run_sipp(str(REGISTER_XML), f"127.0.0.1:{port}", calls=calls, rate=300,
                      timeout=30, port=free_tcp_port(),
                      extra=["-t", mode, "-max_socket", "1000"])
    _sipp_ok(result, calls)


@pytest.mark.parametrize(("caller_t", "callee_t"), [("t1", "t1"), ("tn", "t1"),
                                                   ("u1", "t1"), ("t1", "u1")])
def test_sipp_calls_over_tcp_and_across_tcp_and_udp(tcp_server: tuple[ServerProcess, int],
                                                    caller_t: str, callee_t: str) -> None:
    """Complete calls (INVITE, 180, 200, ACK, BYE) between SIPp UAs over TCP, and between TCP
    and UDP through the proxy's transport switching (RFC 5658 double Record-Route): the
    scenarios fail a call whose 200 lacks a loose-routing Record-Route, and SIPp sends ACK and
    BYE along the route set it got."""
    server, port = tcp_server
    calls = 20
    user = f"callee-{caller_t}-{callee_t}"
    callee_tcp = callee_t != "u1"
    callee = Sipp("uas", calls=calls, timeout=30,
                  port=free_tcp_port() if callee_tcp else free_udp_port(),
                  extra=["-t", callee_t, "-max_socket", "1000"])
    contact = f"127.0.0.1:{callee.port}" + (";transport=tcp" if callee_tcp else "")
    reg = run_sipp("register", f"127.0.0.1:{port if callee_tcp else server.udp_port}",
                   keys={"user": user, "contact": contact, "expires": "600"}, timeout=10,
                   port=free_tcp_port() if callee_tcp else None,
                   extra=["-t", "t1" if callee_tcp else "u1"])
    _sipp_ok(reg, 1)
    callee.start()
    caller_tcp = caller_t != "u1"
    try:
        caller = run_sipp("uac", f"127.0.0.1:{port if caller_tcp else server.udp_port}",
                          service=user, calls=calls, rate=20, timeout=30,
                          port=free_tcp_port() if caller_tcp else None,
                          extra=["-t", caller_t, "-max_socket", "1000"])
    finally:
        answered = callee.wait()
    _sipp_ok(caller, calls)
    _sipp_ok(answered, calls)


# --- the whole server with SIPp over TLS ---------------------------------------------------------

@pytest.fixture(scope="module")
def tls_server(pki: Pki) -> Iterator[tuple[ServerProcess, int, int]]:
    """A server with TCP and TLS listeners (and UDP); its outgoing TLS connections trust the
    test CA (SSL_CERT_FILE, read by OpenSSL's default verify paths), so it can reach a SIPp UAS
    listening over TLS with the test's server certificate."""
    tcp, tls = free_tcp_port(), free_tcp_port()
    srv = ServerProcess("--sip-tcp", f"127.0.0.1:{tcp}", "--sip-tls", f"127.0.0.1:{tls}",
                        "--tls-cert", str(pki.cert("server")), "--tls-key",
                        str(pki.key("server")), "--log-level", "warning", ws=False,
                        env={"SSL_CERT_FILE": str(pki.ca)}).start()
    try:
        yield srv, tcp, tls
    finally:
        assert srv.stop() == 0
        assert "Traceback" not in srv.log, srv.log[-3000:]


def _sipp_tls(pki: Pki, cert: str, mode: str = "l1") -> list[str]:
    """SIPp's TLS options for ``-t mode``: over TLS it loads a certificate and key at start,
    even as a client; SIPp built without TLS refuses the options."""
    return ["-tls_cert", str(pki.cert(cert)), "-tls_key", str(pki.key(cert))] \
        if mode == "l1" else []


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_sipp_registers_over_tls(tls_server: tuple[ServerProcess, int, int], pki: Pki,
                                 version: str) -> None:
    """SIPp over TLS (``-t l1``, one connection for all, TLS 1.2 and 1.3): every REGISTER gets
    its 200 back over the TLS connection it came on."""
    _, _, tls = tls_server
    calls = 300
    result = run_sipp(str(REGISTER_XML), f"127.0.0.1:{tls}", calls=calls, rate=300,
                      timeout=30, port=free_tcp_port(),
                      extra=["-t", "l1", "-tls_version", version, "-max_socket", "1000",
                             *_sipp_tls(pki, "client")])
    _sipp_ok(result, calls)


#: How each SIPp of a call is reached: SIPp's -t mode, and the Contact's transport parameter.
_MODES = {"l1": ";transport=tls", "t1": ";transport=tcp", "u1": ""}


@pytest.mark.parametrize(("caller_t", "callee_t"), [("l1", "l1"), ("l1", "u1"), ("t1", "l1"),
                                                   ("u1", "l1")])
def test_sipp_calls_over_tls_and_across_tls_tcp_and_udp(
        tls_server: tuple[ServerProcess, int, int], pki: Pki, caller_t: str,
        callee_t: str) -> None:
    """Complete calls (INVITE, 180, 200, ACK, BYE) between SIPp UAs over TLS, and between TLS
    and UDP or TCP through the proxy: the callee SIPp registers over the transport it listens
    on, then the proxy opens a TLS connection to it (verifying its certificate) when its
    Contact says transport=tls; the scenarios fail a call whose 200 lacks a loose-routing
    Record-Route, and SIPp sends ACK and BYE along the route set it got (RFC 5658)."""
    server, tcp, tls = tls_server
    ports = {"l1": tls, "t1": tcp, "u1": server.udp_port}
    calls = 20
    user = f"tlscallee-{caller_t}-{callee_t}"
    callee_stream = callee_t != "u1"
    callee = Sipp("uas", calls=calls, timeout=30,
                  port=free_tcp_port() if callee_stream else free_udp_port(),
                  extra=["-t", callee_t, "-max_socket", "1000",
                         *_sipp_tls(pki, "server", callee_t)])
    contact = f"127.0.0.1:{callee.port}{_MODES[callee_t]}"
    reg = run_sipp("register", f"127.0.0.1:{ports[callee_t]}",
                   keys={"user": user, "contact": contact, "expires": "600"}, timeout=10,
                   port=free_tcp_port() if callee_stream else None,
                   extra=["-t", callee_t, *_sipp_tls(pki, "client", callee_t)])
    _sipp_ok(reg, 1)
    callee.start()
    try:
        caller = run_sipp("uac", f"127.0.0.1:{ports[caller_t]}", service=user, calls=calls,
                          rate=20, timeout=30,
                          port=free_tcp_port() if caller_t != "u1" else None,
                          extra=["-t", caller_t, "-max_socket", "1000",
                                 *_sipp_tls(pki, "client", caller_t)])
    finally:
        answered = callee.wait()
    _sipp_ok(caller, calls)
    _sipp_ok(answered, calls)


# --- the whole server with baresip over TLS ----------------------------------------------------

def test_baresip_registers_over_tls_and_answers_a_sipp_call(pki: Pki, tmp_path: Path) -> None:
    """baresip (a real UA by others) registers over TLS, verifying our certificate against the
    test CA, and answers a call a SIPp UAC places over UDP: the INVITE reaches it over the TLS
    connection it registered over, and the whole call (180, 200, ACK, BYE) succeeds."""
    tls_port = free_tcp_port()
    with ServerProcess("--sip-tls", f"127.0.0.1:{tls_port}", "--tls-cert",
                       str(pki.cert("server")), "--tls-key", str(pki.key("server")),
                       "--log-level", "warning", ws=False) as server:
        ua = baresip.start(
            tmp_path, baresip.config(ca=pki.ca),
            f'<sip:tlsbob@127.0.0.1;transport=tls>;regint=600;answermode=auto;'
            f'outbound="sip:127.0.0.1:{tls_port};transport=tls"\n', 180)
        try:
            # Generous: on a loaded CI machine baresip took over 20 s to start and register.
            deadline = time.monotonic() + 90
            while not registered_contacts(server.udp_port, "tlsbob"):
                assert time.monotonic() < deadline, "baresip did not register"
                assert ua.poll() is None
                time.sleep(0.2)
            contact = registered_contacts(server.udp_port, "tlsbob")[0]
            assert "transport=tls" in contact.lower()
            caller = run_sipp("uac", f"127.0.0.1:{server.udp_port}", service="tlsbob",
                              calls=1, timeout=20)
        finally:
            ua.terminate()
            out, _ = ua.communicate(timeout=10)
        log = out
        assert caller.ok, (log[-6000:], server.read_log()[-2000:])
        assert "{0/TLS/v4} 200 OK" in log, log[-2000:]
        assert server.alive()
    assert "Traceback" not in server.log


def test_linphonec_over_tcp_calls_linphonec_over_tls(pki: Pki) -> None:
    """linphonec (liblinphone and belle-sip, a real UA by others) registers over TCP and
    another over TLS (verifying our certificate against the test CA), each answering our
    digest challenge; the TCP one calls the TLS one through the proxy and both see the call
    connected.  Their SIP traces say which transport each message took."""
    tcp, tls = free_tcp_port(), free_tcp_port()
    with auth_server(LINPHONE_USERS, "--sip-tcp", f"127.0.0.1:{tcp}",
                     "--sip-tls", f"127.0.0.1:{tls}", "--tls-cert", str(pki.cert("server")),
                     "--tls-key", str(pki.key("server"))):
        callee = Linphonec(tls, "1001", LINPHONE_USERS["1001"], "tls", pki.ca)
        caller = Linphonec(tcp, "1000", LINPHONE_USERS["1000"], "tcp")
        try:
            assert callee.registered(), callee.output + callee.trace()[-5000:]
            assert caller.registered(), caller.output + caller.trace()[-5000:]
            caller.command(f"call sip:1001@127.0.0.1:{tcp};transport=tcp")
            connected = caller.wait_output(r"Call \d+ with .*1001.* connected", 30)
            answered = callee.wait_output(r"Call \d+ with .*1000.* connected", 30)
        finally:
            caller.stop()
            callee.stop()
        caller_trace, callee_trace = caller.trace(), callee.trace()
    assert connected and answered, caller.output + callee.output + caller_trace[-5000:]
    assert re.search(r"^Via: SIP/2\.0/TCP ", _sent(caller_trace, "INVITE ")[-1], re.M)
    assert re.search(r"^Via: SIP/2\.0/TLS ", _sent(callee_trace, "REGISTER ")[-1], re.M)
    # The INVITE reached the callee over its TLS connection, our TLS Via on top.
    received = callee_trace[callee_trace.find("INVITE sip:"):]
    assert re.search(r"^Via: SIP/2\.0/TLS 127\.0\.0\.1:" + str(tls), received, re.M), \
        received[:3000]


def test_bad_connections_leave_the_others_served(tcp_server: tuple[ServerProcess, int]) -> None:
    """Against the whole server: a 10 MB message (answered 513, closed), garbage after a valid
    message (closed), a half-open connection and a stalled header section are each bounded,
    while SIPp registers over TCP beside them without a failure."""
    server, port = tcp_server

    async def abuse() -> None:
        big_r, big_w = await asyncio.open_connection("127.0.0.1", port)
        bad_r, bad_w = await asyncio.open_connection("127.0.0.1", port)
        half_r, half_w = await asyncio.open_connection("127.0.0.1", port)
        _, stall_w = await asyncio.open_connection("127.0.0.1", port)
        answer = asyncio.ensure_future(closed_by_server(big_r, 30))
        big_w.write(MSG.replace(b"Content-Length: 0", b"Content-Length: 10485760"))
        with contextlib.suppress(ConnectionError):
            for _ in range(160):  # 10 MB in 64 kB writes, until the server stops taking it
                big_w.write(b"x" * 65536)
                await big_w.drain()
        assert b"SIP/2.0 513 " in await answer
        bad_w.write(MSG + b"\x00garbage")
        # Closed at once: the OPTIONS' answer, made later by a worker, may not make it.
        before_close = await closed_by_server(bad_r)
        assert before_close == b"" or before_close.startswith(b"SIP/2.0 ")
        half_w.write_eof()
        assert await closed_by_server(half_r) == b""
        stall_w.write(MSG[:50])
        stall_w.close()

    sipp = Sipp(str(REGISTER_XML), f"127.0.0.1:{port}", calls=200, rate=100, timeout=30,
                port=free_tcp_port(), extra=["-t", "t1", "-max_socket", "1000"]).start()
    asyncio.run(abuse())
    _sipp_ok(sipp.wait(), 200)
    assert server.alive()
