"""SIP over WebSocket (RFC 7118) and secure WebSocket: the stream listener of
``signaling.transports.tcp`` framing with the websockets library's sans-I/O ``ServerProtocol``.

Why this shape: idle connections are what there are most of (a browser tab holds one for as
long as it is open), so a connection is one ``asyncio.Protocol`` object (``WsConn``) and the
library's protocol state, as for SIP over TCP and TLS: no task, queue or future per connection.
Everything a stream listener has is the TCP listener's own code (``StreamTransport``):
connection ids and tables, the per-source bound, TLS, idle and linger sweeps, backpressure (a
connection stops being read while the worker queues are full), the bound on bytes a slow reader
has not taken, and what a closed connection tells the SIP core and the registry.  A WSS
connection is a SIP-over-TLS connection with WebSocket framing where SIP framing was: its TLS
runs over memory BIOs in ``StreamConn`` (``signaling.transports.tlsstream``: TLS 1.2 and 1.3,
SNI, reload, handshakes bounded, timed out and counted by the gate, close_notify both ways), and
the plaintext comes to ``received`` here instead of to the SIP stream framing.  This replaced the
event loop's TLS, which kept a 256 kB read buffer per connection: ``bench_ws_idle --wss`` went
from 29.6 to 22.8 kB per idle registered connection (benchmarks/README.md).  What differs is
here:

- The opening handshake (RFC 6455 §4.2) is the library's: ``ServerProtocol.accept`` and
  ``send_response``.  Before it, the ``sip`` subprotocol is required (RFC 7118 §4.1: 400
  without it) and the listener's capacity is checked: connections still in their handshake
  (TLS or WebSocket) count against ``ws_max_connections``, a connection past it is answered
  503, and one that has not opened within ``WS_OPEN_TIMEOUT`` is closed (``open_timeout``).
  ``--ws-origins`` are checked by the library (403).
- Once open, the handshake's protocol object (its request and headers, its HTTP parser frame)
  is dropped and frames go to a new ``ServerProtocol`` created open (its ``state``
  argument): a few kB of headers per idle connection are never read again.  The handshake
  protocol is only ever given the bytes up to the end of the request's head, so nothing sent
  after it is lost in the exchange.
- One SIP message per WebSocket message, text or binary (RFC 7118 §4.2), fragments joined;
  messages we send go as text frames when UTF-8, binary otherwise.  The library bounds a
  message to ``ws_max_size`` (1009 and close); a frame or fragmented message not whole
  ``WS_MESSAGE_TIMEOUT`` seconds after its first byte is closed (``stalled_message``).
- A connection that has not been heard from for ``ws_ping_interval`` seconds is pinged, from
  the listener's sweep; no answer (any bytes) within ``ws_ping_timeout`` fails it (1011)
  (``ping_timeout``), and its bindings go with it (RFC 7118 §5).
- A peer whose last ``WS_MAX_BAD_MESSAGES`` messages were all unparseable is not speaking SIP:
  it is closed (1008, policy violation, RFC 6455 §7.4.1) and counted (``closed_garbage``),
  instead of costing a parse per message for as long as it likes.  Each bad message already got
  its 400 (or a counted drop) from the SIP core.
- Our closing handshake (1008 above, 1001 at shutdown) waits ``WS_CLOSE_TIMEOUT`` for the
  peer's close frame (at shutdown the listener waits for them too, so a slow reader still gets
  its 1001 before the connections left are aborted); a closing handshake the peer starts is
  answered and the TCP connection half-closed, then dropped after ``LINGER`` (the library's
  server side closes TCP first).
- No connection is opened from here: a WebSocket client cannot be connected to.

Metrics keep their names: ``<name>_events{event}`` (``ws_events`` / ``wss_events``),
``<name>_connections`` (open WebSockets) and ``<name>_handshakes`` (connections not open yet).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import cast

from websockets.datastructures import Headers
from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import SEND_EOF, State
from websockets.server import ServerProtocol
from websockets.typing import Origin, Subprotocol

from signaling.config import Config
from signaling.metrics import Metrics
from signaling.sipcore import SipCore
from signaling.tls import TLS_HANDSHAKE_TIMEOUT
from signaling.transports.base import Peer, TransportInfo
from signaling.transports.tcp import StreamConn, StreamLimits, StreamTransport

__all__ = ["WS_CLOSE_TIMEOUT", "WS_MAX_BAD_MESSAGES", "WS_MAX_WRITE_BUFFER", "WS_MESSAGE_TIMEOUT",
           "WS_OPEN_TIMEOUT", "WsConn", "WsTransport"]

#: Bytes written to one connection and not yet taken by the peer: 256 kB (as for TCP and TLS,
#: ``StreamLimits.max_write_buffer``) absorbs a burst (forked calls, NOTIFY storms); a peer
#: further behind than that is not reading.
WS_MAX_WRITE_BUFFER = 256 * 1024
#: Seconds to wait for the peer's half of a closing handshake we started.
WS_CLOSE_TIMEOUT = 2.0
#: Seconds from the TCP (or TLS) connection to an open WebSocket: a real client sends its
#: request at once; one that does not holds a connection slot for no one.
WS_OPEN_TIMEOUT = 10.0
#: Seconds a frame or a fragmented message may take to arrive whole, from its first byte: a
#: browser sends a SIP message (a few kB at most, ws_max_size) in one go; one still coming
#: after this long is trickled on purpose (slowloris) and its connection is closed.
WS_MESSAGE_TIMEOUT = 10.0
#: Consecutive unparseable messages after which a connection is closed.  A real SIP stack
#: with a bug sends one or two bad messages among good ones; sixteen in a row is not SIP.
WS_MAX_BAD_MESSAGES = 16
#: The ``Server`` header of our handshake answers.
SERVER_HEADER = "signaling"

#: Seconds between looks at the closing handshakes under way at shutdown (``close``).
_CLOSE_POLL = 0.02
_SIP = Subprotocol("sip")
_DATA = (Opcode.TEXT, Opcode.BINARY, Opcode.CONT)
#: The listener's event names that the WebSocket metrics have always called otherwise.
_EVENT_NAMES = {"write_buffer_full": "send_queue_full"}
_END_OF_HEAD = b"\r\n\r\n"


class WsConn(StreamConn):
    """One WebSocket connection: the stream connection's bookkeeping and the library's
    protocol state (``ws``: the handshake's until open, then a fresh open one)."""

    __slots__ = ("bad", "deadline", "fragments", "heard", "is_open", "tail", "why", "ws")
    owner: WsTransport

    def __init__(self, owner: WsTransport, now: float) -> None:
        super().__init__(owner, now)
        self.ws = owner.handshake_protocol()
        self.is_open = False
        #: When bytes last came in (pings are sent after ``ws_ping_interval`` of silence).
        self.heard = now
        #: When the wait ``why`` names ends: the open, a ping's answer, a closing handshake.
        self.deadline: float | None = None
        self.why = "open_timeout"
        #: Consecutive unparseable messages.
        self.bad = 0
        #: The frames of a fragmented message so far (RFC 6455 §5.4).
        self.fragments: list[bytes] | None = None
        #: The last bytes of the handshake read so far (the end of its head may straddle reads).
        self.tail = b""


class WsTransport(StreamTransport):
    """The WebSocket listener (``name`` "ws", or "wss" with ``ssl_context``, RFC 7118 §5: Via
    token WSS) and its connections; ``on_closed`` is awaited with the id of each WebSocket
    that closed (the registry drops its bindings)."""

    def __init__(self, core: SipCore, cfg: Config, metrics: Metrics, node_id: str,
                 on_closed: Callable[[str], Awaitable[object]], *, name: str = "ws",
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.core = core
        self.cfg = cfg
        #: Open WebSockets (the other connections are in their TLS or WebSocket handshake).
        self.open = 0
        self.max_bad_messages = WS_MAX_BAD_MESSAGES
        self._origins = [Origin(o) for o in cfg.ws_origins] if cfg.ws_origins else None
        # The total is checked at the handshake (503, below); ``max_connections()`` bounds
        # the TLS handshakes in progress (the gate), read from ``cfg`` at each.
        limits = StreamLimits(max_connections=cfg.ws_max_connections,
                              max_per_source=cfg.tcp_max_per_source,
                              idle_timeout=cfg.tcp_idle_timeout,
                              handshake_timeout=TLS_HANDSHAKE_TIMEOUT,
                              message_timeout=WS_MESSAGE_TIMEOUT,
                              max_write_buffer=WS_MAX_WRITE_BUFFER)
        super().__init__(name, core.receive, metrics, node_id, host=cfg.advertised_host(),
                         limits=limits, ssl_context=ssl_context, on_closed=on_closed,
                         overloaded=core.overloaded, on_lost=core.connection_closed)

    def _info(self, port: int) -> TransportInfo:
        # RFC 7118 §5.2: Via SIP/2.0/WS or WSS; ``transport=ws`` in a sip: URI, the secure
        # one is asked for with sips: (Transports.for_uri), or ``transport=wss`` as deployed.
        return TransportInfo(self.name, reliable=True, via_token=self.name.upper(),
                             host=self.advertised_host, port=port, uri_transport=self.name)

    def _register_metrics(self, metrics: Metrics) -> None:
        kind = "WebSocket" if self.name == "ws" else "secure WebSocket"
        self.c_ws = metrics.fast_counter(f"{self.name}_events", f"{kind} connection events",
                                         ["event"])
        metrics.callback_gauge(f"{self.name}_connections", f"Open {kind} connections", [],
                               lambda: {(): float(self.open)})
        metrics.callback_gauge(f"{self.name}_handshakes", f"{kind} connections in their "
                               "opening handshake", [], lambda: {(): float(self.handshakes)})

    def count(self, event: str) -> None:
        self.c_ws.inc(_EVENT_NAMES.get(event, event))

    def new_conn_id(self) -> str:
        # The secure listener's ids carry its name: both share the registry's id space.
        prefix = self.node_id if self.name == "ws" else f"{self.node_id}/{self.name}"
        return f"{prefix}/{next(self._ids)}"

    async def start(self, host: str, port: int) -> tuple[str, int]:
        bound = await super().start(host, port)
        self.core.transports.add(self)
        return bound

    async def close(self) -> None:
        """Close every open WebSocket with 1001 (RFC 6455 §7.4.1: the server is going away),
        then wait up to ``WS_CLOSE_TIMEOUT`` for the closing handshakes to end (§7.1.1: the
        peer answers with its close frame, the library then closes our side and the peer
        closes TCP) before the listener aborts what is left.  Aborting at once lost the 1001 to
        a slow reader: it was still in our write buffer when the reset went."""
        self.core.transports.remove(self.info.name)
        self.stop_accepting()
        going = [conn for conn in self.conns.values()
                 if cast(WsConn, conn).ws.state is State.OPEN]
        for conn in going:
            self._start_close(cast(WsConn, conn), CloseCode.GOING_AWAY, "")
        deadline = self.loop.time() + WS_CLOSE_TIMEOUT
        while any(conn.conn_id in self.conns for conn in going) and self.loop.time() < deadline:
            await asyncio.sleep(_CLOSE_POLL)
        await super().close()

    @property
    def connections(self) -> int:
        """TCP connections on the listener: open WebSockets and handshakes in progress (TLS
        and WebSocket)."""
        return (self.gate.in_progress if self.gate is not None else 0) + len(self.conns)

    @property
    def handshakes(self) -> int:
        """Connections accepted whose opening handshake has not completed (or failed) yet."""
        return max(0, self.connections - self.open)

    # -- connections -----------------------------------------------------------------------------

    def handshake_protocol(self) -> ServerProtocol:
        return ServerProtocol(origins=self._origins, subprotocols=[_SIP],
                              max_size=self.cfg.ws_max_size)

    def max_connections(self) -> int:
        # Read at each use: ``ws_max_connections`` may be changed while the server runs
        # (signaling.admin.livecfg), and the TLS handshake gate asks this too.
        return self.cfg.ws_max_connections

    def _accepted(self) -> WsConn:
        return WsConn(self, self.loop.time())

    def _refusal(self, source: str) -> str | None:
        # Past the total the client is told so (503 to its handshake, ``_answer``).
        if self._per_source.get(source, 0) >= self.limits.max_per_source:
            return "rejected_source_limit"
        return None

    def opened(self, conn: StreamConn, transport: asyncio.Transport) -> None:
        super().opened(conn, transport)
        if conn.established:
            cast(WsConn, conn).deadline = self.loop.time() + WS_OPEN_TIMEOUT

    def received(self, conn_: StreamConn, data: bytes) -> None:
        """The plaintext read from ``conn_`` (decrypted already on the WSS listener)."""
        conn = cast(WsConn, conn_)
        if conn.peer is None or conn.draining is not None:
            return  # refused at accept (its close is under way), or lingering
        now = self.loop.time()
        conn.last = conn.heard = now
        if not conn.is_open:
            self._handshake_bytes(conn, data)
        else:
            ws = conn.ws
            if ws.state is State.OPEN:
                conn.deadline = None  # any bytes answer a ping
            ws.receive_data(data)
            self._events(conn, ws)
            # A frame (its bytes wait in the library's reader) or a fragmented message under
            # way is bounded in time as a SIP message over TCP is (the sweep's
            # ``stalled_message``): its size alone is bounded (ws_max_size), and a peer that
            # trickles it a byte at a time would hold the connection for ever.
            if conn.fragments is not None or ws.reader.buffer:
                if conn.partial_since is None:
                    conn.partial_since = now
            else:
                conn.partial_since = None
        self.pause_if_overloaded(conn)

    def _handshake_bytes(self, conn: WsConn, data: bytes) -> None:
        """Give the handshake protocol the bytes up to the end of the request's head (the
        library bounds its lines and headers), and the open protocol the rest."""
        probe = conn.tail + data
        end = probe.find(_END_OF_HEAD)
        ws = conn.ws
        if end < 0:
            conn.tail = probe[-3:]
            ws.receive_data(data)
            self._events(conn, ws)
            return
        cut = end + len(_END_OF_HEAD) - len(conn.tail)
        conn.tail = b""
        ws.receive_data(data[:cut])
        self._events(conn, ws)
        rest = data[cut:]
        if rest and conn.is_open:
            conn.ws.receive_data(rest)
            self._events(conn, conn.ws)

    def _events(self, conn: WsConn, ws: ServerProtocol) -> None:
        for event in ws.events_received():
            if isinstance(event, Request):
                self._answer(conn, ws, event)
            elif isinstance(event, Frame) and event.opcode in _DATA \
                    and ws.state is State.OPEN:
                self._data_frame(conn, event)
        self._send_pending(conn, ws)

    def _answer(self, conn: WsConn, ws: ServerProtocol, request: Request) -> None:
        response = self._check_request(request) or ws.accept(request)
        response.headers["Server"] = SERVER_HEADER
        ws.send_response(response)
        if ws.state is not State.OPEN:
            return
        self._send_pending(conn, ws)
        # The handshake's request, headers and parser go with its protocol object.
        conn.ws = ServerProtocol(state=State.OPEN, max_size=self.cfg.ws_max_size)
        conn.is_open = True
        conn.deadline = None
        conn.why = "ping_timeout"
        self.open += 1
        self.count("opened")

    def _check_request(self, request: Request) -> Response | None:
        offered = request.headers.get_all("Sec-WebSocket-Protocol")
        protocols = {p.strip().lower() for h in offered for p in h.split(",")}
        if "sip" not in protocols:
            self.count("rejected_subprotocol")
            return _refuse(HTTPStatus.BAD_REQUEST, "the 'sip' subprotocol is required (RFC 7118)")
        # This connection is one of ``connections`` already: the others, handshakes included.
        if self.connections - 1 >= self.max_connections():
            self.count("rejected_capacity")
            return _refuse(HTTPStatus.SERVICE_UNAVAILABLE, "too many connections")
        return None

    def _data_frame(self, conn: WsConn, frame: Frame) -> None:
        part = frame.data if isinstance(frame.data, bytes) else bytes(frame.data)
        if not frame.fin:
            if conn.fragments is None:
                conn.fragments = []
            conn.fragments.append(part)
            return
        if conn.fragments is not None:
            conn.fragments.append(part)
            part, conn.fragments = b"".join(conn.fragments), None
        assert conn.peer is not None
        if self.core.receive(part, conn.peer):
            conn.bad = 0
            return
        conn.bad += 1
        if conn.bad >= self.max_bad_messages:
            self.count("closed_garbage")
            self._start_close(conn, 1008, "not SIP")

    def _start_close(self, conn: WsConn, code: int, reason: str) -> None:
        conn.ws.send_close(code, reason)
        self._send_pending(conn, conn.ws)
        conn.deadline = self.loop.time() + WS_CLOSE_TIMEOUT
        conn.why = "close_timeout"

    def _send_pending(self, conn: WsConn, ws: ServerProtocol) -> None:
        for chunk in ws.data_to_send():
            if chunk is SEND_EOF or not chunk:
                # The library closes its side: after a closing handshake, a failed connection
                # (1002, 1009, ...) or a refused handshake (counted when refused by us).
                failed = not conn.is_open and ws.handshake_exc is not None
                conn.linger("rejected_handshake" if failed else None)
                return
            conn.write(chunk)

    def lost(self, conn: StreamConn) -> None:
        if not self.forget(conn) or not cast(WsConn, conn).is_open:
            return
        self.open -= 1
        self.count("closed")
        # What went over it and heard nothing back fails now (§17.1.4), as for TCP and TLS: a
        # request to an RFC 5626 flow then goes to the instance's next flow.
        self.announce_closed(conn.conn_id)

    def resumed(self, conn: StreamConn, now: float) -> None:
        # A ping's answer may have waited unread in the kernel while we did not read: the
        # peer gets the whole timeout from now.
        ws_conn = cast(WsConn, conn)
        ws_conn.heard = now
        if ws_conn.deadline is not None and ws_conn.why == "ping_timeout":
            ws_conn.deadline = now + self.cfg.ws_ping_timeout

    def check(self, conn: StreamConn, now: float) -> None:
        ws_conn = cast(WsConn, conn)
        if ws_conn.draining is None:
            if ws_conn.deadline is not None:
                if now <= ws_conn.deadline:
                    return
                if ws_conn.why == "ping_timeout" and ws_conn.ws.state is State.OPEN:
                    # RFC 6455 §7.1.7: fail the connection, telling the peer why (1011).
                    self.count("ping_timeout")
                    ws_conn.ws.fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
                    self._send_pending(ws_conn, ws_conn.ws)
                else:
                    ws_conn.close(ws_conn.why)
                return
            interval = self.cfg.ws_ping_interval
            if ws_conn.is_open and interval > 0 and now - ws_conn.heard >= interval \
                    and ws_conn.ws.state is State.OPEN:
                ws_conn.ws.send_ping(b"")
                self._send_pending(ws_conn, ws_conn.ws)
                ws_conn.deadline = now + self.cfg.ws_ping_timeout
                return
        super().check(conn, now)

    # -- sending ---------------------------------------------------------------------------------

    def holds(self, conn_id: str) -> bool:
        conn = self.conns.get(conn_id)
        return conn is not None and cast(WsConn, conn).is_open

    def send(self, data: bytes, peer: Peer) -> bool:
        conn = self.conns.get(peer.conn_id) if peer.conn_id is not None else None
        if conn is None:
            return False
        ws = cast(WsConn, conn).ws
        if ws.state is not State.OPEN or not cast(WsConn, conn).is_open:
            return False
        # RFC 7118 §4.2: text frames for UTF-8 messages, binary otherwise.
        try:
            data.decode()
        except UnicodeDecodeError:
            ws.send_binary(data)
        else:
            ws.send_text(data)
        return conn.write(b"".join(ws.data_to_send()))


def _refuse(status: HTTPStatus, text: str) -> Response:
    body = f"{text}\n".encode()
    headers = Headers([("Content-Type", "text/plain"), ("Content-Length", str(len(body))),
                       ("Connection", "close")])
    return Response(status.value, status.phrase, headers, body)
