"""TLS handshakes on the WSS listener (signaling/transports/tlsgate.py): with real sockets and
real TLS clients against an in-process server.  Connections that never send a ClientHello
are counted while in progress, bounded per source address before any TLS work, closed when
the handshake timeout passes and counted; garbage instead of a ClientHello is a counted
failure; a real client from another address is served all along."""

from __future__ import annotations

import asyncio
import ssl
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidMessage

from signaling.server import Server
from tests.signaling.inproc import running_server
from tests.tlscerts import Pki, make_pki

PER_SOURCE = 5
#: The handshake timeout of these tests (the server's is TLS_HANDSHAKE_TIMEOUT, 10 s).
TIMEOUT = 1.0


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@asynccontextmanager
async def wss_server(pki: Pki) -> AsyncIterator[tuple[Server, int]]:
    async with running_server(sip_wss="127.0.0.1:0", tls_cert=str(pki.cert("server")),
                              tls_key=str(pki.key("server")),
                              tcp_max_per_source=PER_SOURCE) as srv:
        assert srv.wss is not None and srv.wss.gate is not None and srv.wss_address
        srv.wss.gate.timeout = TIMEOUT
        yield srv, srv.wss_address[1]


def _sample(srv: Server, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in srv.metrics.exposition().decode().splitlines():
        if line.startswith(f"{name}{{{want}}} "):
            return float(line.split()[1])
    return 0.0


def _events(srv: Server, event: str) -> float:
    return _sample(srv, "signaling_tls_handshakes_total", listener="wss", event=event)


async def _until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)


async def _closed(reader: asyncio.StreamReader) -> None:
    """The server closed the connection (EOF or a reset), bounded generously."""
    async with asyncio.timeout(20):
        try:
            while await reader.read(4096):
                pass
        except ConnectionError:
            pass


async def _register(port: int, pki: Pki, local: str = "127.0.0.1") -> str:
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    user = f"u{uuid.uuid4().hex[:8]}"
    async with connect(f"wss://127.0.0.1:{port}", ssl=ctx, server_hostname="sip.example.com",
                       subprotocols=["sip"],  # type: ignore[list-item]
                       local_addr=(local, 0)) as ws:
        await ws.send(
            f"REGISTER sip:127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/WSS x.invalid;branch=z9hG4bK{uuid.uuid4().hex}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:{user}@127.0.0.1>;tag=1\r\n"
            f"To: <sip:{user}@127.0.0.1>\r\nCall-ID: {uuid.uuid4().hex}\r\nCSeq: 1 REGISTER\r\n"
            f"Contact: <sip:{user}@x.invalid;transport=ws>\r\nContent-Length: 0\r\n\r\n")
        return str(await asyncio.wait_for(ws.recv(), 10)).split("\r\n", 1)[0]


async def test_stalled_handshakes_are_bounded_per_source_closed_and_counted(pki: Pki) -> None:
    async with wss_server(pki) as (srv, port):
        stalled = [await asyncio.open_connection("127.0.0.1", port) for _ in range(PER_SOURCE)]
        await _until(lambda: _sample(srv, "signaling_tls_handshakes_in_progress",
                                     listener="wss") == PER_SOURCE)
        assert srv.wss is not None and srv.wss.connections == PER_SOURCE
        # One more from the same address: refused before any TLS work.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await _closed(reader)
        writer.close()
        assert _events(srv, "rejected_source_limit") == 1
        # Another address is served meanwhile (and its handshake counted as done).
        assert await _register(port, pki, local="127.0.0.2") == "SIP/2.0 200 OK"
        assert _events(srv, "handshake_done") == 1
        # The stalled ones are closed once the timeout passes, and counted.
        for r, _ in stalled:
            await _closed(r)
        for _, w in stalled:
            w.close()
        await _until(lambda: _events(srv, "handshake_timeout") == PER_SOURCE)
        assert _sample(srv, "signaling_tls_handshakes_in_progress", listener="wss") == 0
        # The address is free again.
        assert await _register(port, pki) == "SIP/2.0 200 OK"


async def test_garbage_instead_of_a_client_hello_is_a_counted_failure(pki: Pki) -> None:
    async with wss_server(pki) as (srv, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n")
        await _closed(reader)
        writer.close()
        await _until(lambda: _events(srv, "handshake_failed") == 1)
        assert _events(srv, "handshake_timeout") == 0
        assert await _register(port, pki) == "SIP/2.0 200 OK"


async def test_a_client_certificate_the_server_cannot_verify_fails_the_handshake(
        pki: Pki, tmp_path: Path) -> None:
    """With mutual TLS, a client whose certificate is from an unknown CA is refused in the
    handshake and counted; one from the configured CA is served."""
    async with running_server(sip_wss="127.0.0.1:0", tls_cert=str(pki.cert("server")),
                              tls_key=str(pki.key("server")), tls_client_ca=str(pki.ca),
                              tls_require_client_cert=True) as srv:
        assert srv.wss_address is not None
        port = srv.wss_address[1]
        ctx = ssl.create_default_context(cafile=str(pki.ca))
        ctx.load_cert_chain(pki.cert("stranger"), pki.key("stranger"))
        # TLS 1.3: the client may finish its side first and learn of the refusal only when
        # its HTTP request meets the closed connection.
        with pytest.raises((ssl.SSLError, OSError, InvalidMessage)):
            async with connect(f"wss://127.0.0.1:{port}", ssl=ctx,
                               server_hostname="sip.example.com",
                               subprotocols=["sip"]) as ws:  # type: ignore[list-item]
                await ws.recv()
        await _until(lambda: _events(srv, "handshake_failed") == 1)
        good = ssl.create_default_context(cafile=str(pki.ca))
        good.load_cert_chain(pki.cert("client"), pki.key("client"))
        async with connect(f"wss://127.0.0.1:{port}", ssl=good,
                           server_hostname="sip.example.com",
                           subprotocols=["sip"]) as ws:  # type: ignore[list-item]
            await ws.ping()
        assert _events(srv, "handshake_done") == 1


async def test_the_total_follows_ws_max_connections_changed_while_running(pki: Pki) -> None:
    """The gate's total is the listener's ws_max_connections as it is now: changed while the
    server runs (PATCH /api/v1/config, signaling.admin.livecfg), it bounds the handshakes in
    progress from the next one on (it was fixed at start)."""
    async with wss_server(pki) as (srv, port):
        srv.cfg.ws_max_connections = 2
        stalled = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        await _until(lambda: _sample(srv, "signaling_tls_handshakes_in_progress",
                                     listener="wss") == 2)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await _closed(reader)
        writer.close()
        assert _events(srv, "rejected_total_limit") == 1
        srv.cfg.ws_max_connections = 4  # as apply_patch does, then no restart
        stalled += [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        await _until(lambda: _sample(srv, "signaling_tls_handshakes_in_progress",
                                     listener="wss") == 4)
        assert _events(srv, "rejected_total_limit") == 1
        for _, w in stalled:
            w.close()
