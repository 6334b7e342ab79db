"""SIP over WebSocket (RFC 7118) with the websockets library.

- The ``sip`` subprotocol is required (RFC 7118 §4.1): a handshake without it is refused.
- One SIP message per WebSocket message, text or binary (§4.2).
- Each connection has an id; a binding registered over it records that id (and this node), so
  requests for that user go back over the same connection (§5), and when the connection closes
  its bindings are removed from the registry and the SIP core is told
  (``SipCore.connection_closed``: the requests sent over it still waiting fail at once).
- WSS (``name`` "wss") is the same listener over TLS, with the contexts of signaling.tls
  (certificates reloaded without a restart, TLS 1.2 and 1.3 only).  Its TLS handshakes go
  through ``signaling.transports.tlsgate``: bounded per source (``tcp_max_per_source``) and
  counted against ``ws_max_connections`` while in progress, closed and counted when they do
  not finish within ``TLS_HANDSHAKE_TIMEOUT``.
- Pings detect dead peers (the library closes a connection whose pong does not come in time).
- Outgoing messages are framed and written at once (no queue, no writer task per connection:
  idle connections are what there are most of).  The bytes a slow reader has not taken yet are
  bounded: past ``WS_MAX_WRITE_BUFFER`` a message to it is dropped and counted
  (``send_queue_full``; SIP over a reliable transport then times out like any lost message).
- Once open, a connection drops its opening handshake's request and response (their headers
  are a few kB per connection, never read again).
- Connections still in their opening handshake count against ``ws_max_connections`` and show
  in ``signaling_ws_handshakes`` (the library bounds a handshake to ``open_timeout``), so a
  crowd of clients that connect and never finish the handshake is visible and bounded.
- A peer whose last ``WS_MAX_BAD_MESSAGES`` messages were all unparseable is not speaking SIP:
  it is closed (1008, policy violation, RFC 6455 §7.4.1) and counted (``closed_garbage``),
  instead of costing a parse per message for as long as it likes.  Each bad message already
  got its 400 (or a counted drop) from the SIP core.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any, cast

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.typing import Origin, Subprotocol

from signaling.config import Config, HostPort
from signaling.logs import RateLimitedLog
from signaling.metrics import Metrics
from signaling.sipcore import SipCore
from signaling.tls import TLS_HANDSHAKE_TIMEOUT
from signaling.transports.base import Peer, TransportInfo
from signaling.transports.tlsgate import HandshakeGate
from signaling.worker import inherited_socket

__all__ = ["WS_CLOSE_TIMEOUT", "WS_MAX_BAD_MESSAGES", "WS_MAX_WRITE_BUFFER", "WsTransport"]

log = logging.getLogger(__name__)

#: Bytes written to one connection and not yet taken by the peer: 256 kB (as for TCP and TLS,
#: ``StreamLimits.max_write_buffer``) absorbs a burst (forked calls, NOTIFY storms); a peer
#: further behind than that is not reading.
WS_MAX_WRITE_BUFFER = 256 * 1024
#: Seconds to wait for the peer's half of the closing handshake (the library default is 10).
WS_CLOSE_TIMEOUT = 2.0
#: Consecutive unparseable messages after which a connection is closed.  A real SIP stack
#: with a bug sends one or two bad messages among good ones; sixteen in a row is not SIP.
WS_MAX_BAD_MESSAGES = 16


class WsTransport:
    """The WebSocket listener and the table of live connections."""

    def __init__(self, core: SipCore, cfg: Config, metrics: Metrics, node_id: str,
                 on_closed: Callable[[str], Awaitable[object]], *, name: str = "ws",
                 listen: HostPort | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.core = core
        self.cfg = cfg
        self.node_id = node_id
        self.on_closed = on_closed
        #: "ws", or "wss" over TLS (``ssl_context``, RFC 7118 §5: Via token WSS).
        self.name = name
        self.listen = listen if listen is not None else cfg.sip_ws
        self.ssl_context = ssl_context
        self.gate: HandshakeGate | None = None
        if ssl_context is not None:
            self.gate = HandshakeGate(name, ssl_context, metrics,
                                      per_source=cfg.tcp_max_per_source,
                                      total=cfg.ws_max_connections,
                                      timeout=TLS_HANDSHAKE_TIMEOUT)
        self.conns: dict[str, ServerConnection] = {}
        self._ids = itertools.count(1)
        self._server: Server | None = None
        kind = "WebSocket" if name == "ws" else "secure WebSocket"
        self.c_ws = metrics.fast_counter(f"{name}_events", f"{kind} connection events",
                                         ["event"])
        metrics.callback_gauge(f"{name}_connections", f"Open {kind} connections", [],
                               lambda: {(): float(len(self.conns))})
        metrics.callback_gauge(f"{name}_handshakes", f"{kind} connections in their opening "
                               "handshake", [], lambda: {(): float(self.handshakes)})
        self.max_bad_messages = WS_MAX_BAD_MESSAGES
        # While the registry is down every closing connection fails the same way: one line
        # a minute, with the count, instead of a traceback per connection.
        self._cleanup_failures = RateLimitedLog(log, 60.0)
        #: Set when bound (``start``): the port is known only then.
        self.info = self._info(0)

    def _info(self, port: int) -> TransportInfo:
        # RFC 7118 §5.2: Via SIP/2.0/WS or WSS; ``transport=ws`` in a sip: URI, the secure
        # one is asked for with sips: (Transports.for_uri), or ``transport=wss`` as deployed.
        return TransportInfo(self.name, reliable=True, via_token=self.name.upper(),
                             host=self.cfg.advertised_host(), port=port,
                             uri_transport=self.name)

    async def start(self) -> tuple[str, int]:
        assert self.listen is not None
        host, port = self.listen
        origins: list[Origin | None] | None = None
        if self.cfg.ws_origins:
            origins = [Origin(o) for o in self.cfg.ws_origins]
        # A supervised worker accepts on its supervisor's socket (signaling/supervisor.py).
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = inherited_socket(f"sip_{self.name}", family, socket.SOCK_STREAM)
        where: dict[str, Any] = {"sock": sock} if sock else {"host": host, "port": port}
        self._server = await serve(
            self._handler, **where,
            subprotocols=[Subprotocol("sip")],
            process_request=self._check_request,
            origins=origins,
            compression=None,  # SIP messages are small; deflate costs CPU and memory per peer
            max_size=self.cfg.ws_max_size,
            max_queue=64,
            ping_interval=self.cfg.ws_ping_interval,
            ping_timeout=self.cfg.ws_ping_timeout,
            # A peer that stopped answering pings will not answer the closing handshake
            # either: give up on it quickly so its bindings go with it (RFC 7118 §5).
            close_timeout=WS_CLOSE_TIMEOUT,
            server_header="signaling",
            **self._tls_options(),
        )
        sock = next(iter(self._server.sockets))
        bound = sock.getsockname()
        self.info = self._info(int(bound[1]))
        self.core.transports.add(self)
        log.info("SIP %s listening on %s:%s", self.name.upper(), bound[0], bound[1])
        return str(bound[0]), int(bound[1])

    @property
    def connections(self) -> int:
        """TCP connections on the listener: open WebSockets and handshakes in progress (TLS
        and WebSocket)."""
        tls = self.gate.in_progress if self.gate is not None else 0
        return tls + (len(self._server.handler_tasks) if self._server is not None else 0)

    @property
    def handshakes(self) -> int:
        """Connections accepted whose opening handshake has not completed (or failed) yet."""
        return max(0, self.connections - len(self.conns))

    def _tls_options(self) -> dict[str, Any]:
        """Over TLS the listener accepts plain TCP and each connection's handshake goes
        through the gate (bounded per source, timed out and counted) before the WebSocket
        connection is made."""
        if self.gate is None:
            return {}
        gate = self.gate

        class _TlsConnection(ServerConnection):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                # First the plain TCP connection (to the gate), then the TLS one (from it).
                if transport.get_extra_info("ssl_object") is None:
                    gate.start(transport, self)
                else:
                    super().connection_made(transport)

        return {"create_connection": _TlsConnection}

    def _check_request(self, conn: ServerConnection, request: Request) -> Response | None:
        offered = request.headers.get_all("Sec-WebSocket-Protocol")
        protocols = {p.strip().lower() for h in offered for p in h.split(",")}
        if "sip" not in protocols:
            self.c_ws.inc("rejected_subprotocol")
            return _refuse(HTTPStatus.BAD_REQUEST, "the 'sip' subprotocol is required (RFC 7118)")
        # This connection is one of ``connections`` already: the others, handshakes included.
        if self.connections - 1 >= self.cfg.ws_max_connections:
            self.c_ws.inc("rejected_capacity")
            return _refuse(HTTPStatus.SERVICE_UNAVAILABLE, "too many connections")
        return None

    def holds(self, conn_id: str) -> bool:
        return conn_id in self.conns

    def send(self, data: bytes, peer: Peer) -> bool:
        ws = self.conns.get(peer.conn_id) if peer.conn_id is not None else None
        if ws is None or ws.protocol.state is not State.OPEN:
            return False
        if ws.transport.get_write_buffer_size() > WS_MAX_WRITE_BUFFER:
            self.c_ws.inc("send_queue_full")
            return False
        # RFC 7118 §4.2: text frames for UTF-8 messages, binary otherwise.  Framed and handed
        # to the transport now, as the library's own ``send`` does after its flow control.
        try:
            data.decode()
        except UnicodeDecodeError:
            ws.protocol.send_binary(data)
        else:
            ws.protocol.send_text(data)
        ws.send_data()
        return True

    def ssl_object(self, conn_id: str) -> ssl.SSLObject | None:
        """The TLS state of a WSS connection (its peer's certificate), for trusted-peer
        checks; None over plain WS or once closed."""
        ws = self.conns.get(conn_id)
        if ws is None:
            return None
        return cast(ssl.SSLObject | None, ws.transport.get_extra_info("ssl_object"))

    async def _handler(self, ws: ServerConnection) -> None:
        # The secure listener's ids carry its name: both share the registry's id space.
        prefix = self.node_id if self.name == "ws" else f"{self.node_id}/{self.name}"
        conn_id = f"{prefix}/{next(self._ids)}"
        # Never read again once open: a few kB of headers per idle connection.  The request
        # is emptied in place, not dropped: the library's parser keeps a reference to it (and
        # takes a None ``ws.request`` to mean that the next event is the handshake's).
        if ws.request is not None:
            ws.request.headers.clear()
        ws.response = None
        self.conns[conn_id] = ws
        self.c_ws.inc("opened")
        host, port = str(ws.remote_address[0]), int(ws.remote_address[1])
        peer = Peer(self.name, host, port, conn_id)
        bad = 0
        try:
            async for message in ws:
                data = message.encode() if isinstance(message, str) else message
                if self.core.receive(data, peer):
                    bad = 0
                    continue
                bad += 1
                if bad >= self.max_bad_messages:
                    self.c_ws.inc("closed_garbage")
                    await ws.close(1008, "not SIP")
                    break
        except ConnectionClosed:
            pass
        finally:
            del self.conns[conn_id]
            self.c_ws.inc("closed")
            # What went over it and heard nothing back fails now (§17.1.4), as for TCP and
            # TLS: a request to an RFC 5626 flow then goes to the instance's next flow.
            self.core.connection_closed(self.name, conn_id)
            await self._closed(conn_id)

    async def _closed(self, conn_id: str) -> None:
        try:
            await self.on_closed(conn_id)
        except Exception as exc:  # the registry may be down; the bindings expire on their own
            self.c_ws.inc("cleanup_failed")
            self._cleanup_failures.warning(
                "registry", "could not remove the bindings of closed connection %s: %s: %s",
                conn_id, type(exc).__name__, exc)

    def stop_accepting(self) -> None:
        """Close the listening socket only (this process's copy of it): connections that are
        open stay until ``close``; new ones go to whoever else listens (a supervisor's next
        worker on the same socket)."""
        if self._server is not None:
            self._server.server.close()

    async def close(self) -> None:
        self.core.transports.remove(self.info.name)
        if self._server is not None:
            self._server.close(close_connections=True)
            await self._server.wait_closed()
        if self.gate is not None:
            await self.gate.close()


def _refuse(status: HTTPStatus, text: str) -> Response:
    body = f"{text}\n".encode()
    headers = Headers([("Content-Type", "text/plain"), ("Content-Length", str(len(body))),
                       ("Connection", "close")])
    return Response(status.value, status.phrase, headers, body)
