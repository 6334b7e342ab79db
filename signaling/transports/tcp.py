"""SIP over TCP and TLS (RFC 3261 §18, §26.2; RFC 5630 for ``sips:``): one transport class, the
TLS listener is the same class given an SSL context.

Connections and where messages go:

- Framing is ``protocols.sip.framing.SipStream``: Content-Length framing with the parser's size
  limit, CRLF CRLF pings answered with a CRLF pong (RFC 5626 §3.5.1), garbage or an oversized
  message closes the connection (a 513 first for an oversized request), each counted by reason.
- Every connection has an id, and every message read from it carries the id in its ``Peer``:
  responses go back on the connection the request came on (§18.2.2), and a binding registered
  over a connection stores the id, so requests for that user are sent over the connection its
  REGISTER came on (the flow of RFC 5626 §5.3, applied to every client: a phone behind NAT is
  reachable only over the connection it opened).  RFC 5923 aliases are not used: they let a
  peer's connection carry requests to whatever its Via names, which needs TLS to be safe, while
  the flow is exact and works for TCP too.  When the connection is gone, the binding's Contact
  address is tried with a new connection (a phone that listens, or a server), so bindings
  outlive their connection until they expire, as they do over UDP.
- A request for an address with no connection reuses one with that remote address (incoming or
  outgoing) or opens one (§18.1.1), queuing a few messages while it connects.  When that fails,
  ``on_connect_failed`` is told the address (the SIP core fails the transactions waiting on it,
  §17.1.4), and ``was_refused`` says whether the peer refused (a TCP reset): the proxy's cue to
  retry a request it moved off UDP for its size over UDP after all (§18.1.1).
- When an established connection closes, ``on_lost`` is told its id: the SIP core fails the
  client transactions that sent over it and heard nothing back yet (§17.1.4), so a request to
  a flow that died under it goes to the instance's next flow at once (RFC 5626 §5.3).

Bounds (``StreamLimits``), each one counted when it bites (``sip_stream_events``):

- connections in total and per source address: past either, a new connection is closed at once;
- idle connections are closed after ``idle_timeout`` (clients keep theirs alive with CRLF pings,
  RFC 5626 §4.4.1 every 95-120 s, or by re-registering);
- a message begun must complete within ``message_timeout``: a peer trickling a header section
  (slowloris) or stalling mid-body loses the connection; the buffer never exceeds the size limit;
- TLS handshakes are bounded per source and in total while in progress (the counts of
  ``signaling.transports.tlsgate``), closed and counted when not finished within
  ``handshake_timeout``;
- bytes written but not yet taken by a slow reader are bounded: past ``max_write_buffer`` a
  message to it is dropped and counted (SIP then times out as for any lost message).

TLS (``--sip-tls``, and ``--sip-wss`` through ``signaling.transports.ws``): the listener
accepts plain TCP and each accepted connection runs its TLS itself over memory BIOs
(``StreamConn.data_received``, ``signaling.transports.tlsstream``, which says why: a read costs
fewer instructions than the event loop's TLS, and no 256 kB buffer per connection), under
whatever frames the plaintext (``StreamTransport.received``: SIP framing here, WebSocket in
``ws.py``); the gate counts its handshake from its first byte.  Connections the server opens to
TLS peers use the event loop's TLS (``_connect``).

Backpressure (Shen & Schulzrinne): when ``overloaded()`` says the worker queues are full, the
connection that just delivered stops being read; TCP flow control then slows the sender down in
the kernel, instead of the server accepting requests it can only answer 503.  Reading resumes
for every paused connection once the queues drain (checked every ``RESUME_CHECK`` seconds).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

from protocols.sip.framing import PING, PONG, SipStream, StreamClosed
from protocols.sip.parser import MAX_MESSAGE_SIZE
from signaling.config import Config
from signaling.logs import RateLimitedLog
from signaling.metrics import Metrics
from signaling.transports.base import Peer, TransportInfo
from signaling.transports.tlsgate import HandshakeGate
from signaling.transports.tlsstream import TlsStream
from signaling.worker import inherited_socket

__all__ = ["CONNECT_QUEUE", "LINGER", "RESUME_CHECK", "SWEEP_INTERVAL", "StreamConn",
           "StreamLimits", "StreamTransport", "stream_limits"]

log = logging.getLogger(__name__)

#: Seconds between sweeps for idle, stalled and never-handshaken connections.  Timeouts are
#: tens of seconds, so a one-second granularity is plenty and costs one pass per second.
SWEEP_INTERVAL = 1.0
#: Seconds between checks whether paused connections may be read again.  Short against T1
#: (500 ms), so a drained queue refills before clients notice.
RESUME_CHECK = 0.05
#: Messages held for an outgoing connection while it is being opened: a request and its
#: CANCEL or a few forked requests; more means the peer is not answering anyway.
CONNECT_QUEUE = 16
#: Seconds a connection closed after an error answer is still read, and what it sends discarded,
#: so the answer is not lost to a reset (see ``StreamConn.linger``).  Bounds the work a peer that
#: goes on sending (the rest of a 10 MB message) can still cause.
LINGER = 2.0
#: Seconds to open an outgoing connection (TCP and TLS handshakes) before giving up.
CONNECT_TIMEOUT = 5.0
#: Addresses whose last connection attempt was refused, remembered (oldest forgotten first)
#: for the §18.1.1 fallback to UDP; a few thousand cost well under a megabyte.
REFUSED_MEMORY = 4096


@dataclass(frozen=True, slots=True)
class StreamLimits:
    """The bounds of one stream listener; see the module documentation."""

    max_connections: int = 10_000
    max_per_source: int = 100
    idle_timeout: float = 300.0
    message_timeout: float = 10.0
    handshake_timeout: float = 10.0
    max_message: int = MAX_MESSAGE_SIZE
    #: 256 kB: a few hundred SIP messages; a peer further behind than that is not reading.
    max_write_buffer: int = 256 * 1024


def stream_limits(cfg: Config) -> StreamLimits:
    """The configured bounds (``--tcp-*``); the others keep their defaults."""
    return StreamLimits(max_connections=cfg.tcp_max_connections,
                        max_per_source=cfg.tcp_max_per_source,
                        idle_timeout=cfg.tcp_idle_timeout)


#: ``SipCore.receive``; what it returns (whether the bytes parsed) is not needed: a framed
#: message that does not parse is answered 400 and the stream stays in step.
Receive = Callable[[bytes, Peer], object]


class StreamConn(asyncio.Protocol):
    """One connection: its TLS (an accepted one on a TLS listener), its framing state and the
    bookkeeping the owner reads.  The plaintext goes to ``owner.received``; ``stream`` is None
    for a listener that frames otherwise (WebSocket, ``signaling.transports.ws``)."""

    __slots__ = ("addr", "conn_id", "draining", "established", "last", "out", "owner",
                 "partial_since", "paused", "peer", "pending", "source", "stream", "timer",
                 "tls", "transport")

    def __init__(self, owner: StreamTransport, now: float,
                 stream: SipStream | None = None) -> None:
        self.owner = owner
        self.conn_id = owner.new_conn_id()
        self.stream = stream
        self.transport: asyncio.Transport | None = None
        self.peer: Peer | None = None
        self.addr: tuple[str, int] | None = None
        self.established = False
        self.last = now
        self.partial_since: float | None = None
        self.paused = False
        #: Since when the connection is only read to be discarded (``linger``).
        self.draining: float | None = None
        #: Messages waiting for an outgoing connection to open.
        self.pending: list[bytes] | None = None
        #: Messages written in this turn of the event loop, sent together by ``flush``.
        self.out: list[bytes] | None = None
        #: An accepted TLS connection's TLS, run here over memory BIOs (``tlsstream``); None
        #: for TCP and for TLS connections we opened (the event loop's TLS transport).
        self.tls: TlsStream | None = None
        #: The handshake's deadline while it runs; the address it is counted under.
        self.timer: asyncio.TimerHandle | None = None
        self.source = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        plain = cast(asyncio.Transport, transport)
        if self.owner.gate is not None and self.pending is None:
            self._start_tls(plain)  # accepted on a TLS listener: our TLS, handshake first
            return
        self.owner.opened(self, plain)

    def _start_tls(self, transport: asyncio.Transport) -> None:
        """An accepted TLS connection: counted by the gate (refused past its bounds before
        any TLS work), timed out, then handshaken in ``data_received``."""
        gate = self.owner.gate
        assert gate is not None and self.owner.ssl_context is not None
        peer = transport.get_extra_info("peername")
        self.source = str(peer[0]) if peer else ""
        if gate.begin(self.source) is not None:
            transport.abort()
            return
        self.transport = transport
        self.tls = TlsStream(self.owner.ssl_context)
        self.timer = self.owner.loop.call_later(gate.timeout, self._handshake_over,
                                                "handshake_timeout")
        self.owner.handshaking.add(self)

    def _handshake_over(self, event: str, close: bool = True) -> None:
        """The handshake ended: ``handshake_done``, ``handshake_failed`` (an alert, if TLS
        wrote one, is sent before the close) or ``handshake_timeout``; counted once."""
        timer, gate, transport = self.timer, self.owner.gate, self.transport
        if timer is None or gate is None or transport is None:
            return  # counted already
        self.timer = None
        timer.cancel()
        self.owner.handshaking.discard(self)
        gate.end(self.source, event)
        if event == "handshake_done":
            return
        tls, self.tls, self.transport = self.tls, None, None
        if not close:
            return
        if event == "handshake_failed" and tls is not None and not transport.is_closing():
            transport.write(tls.output())
            transport.close()
        else:
            transport.abort()

    def data_received(self, data: bytes) -> None:
        tls = self.tls
        if tls is None:
            self.owner.received(self, data)
            return
        try:
            if tls.handshaking:
                done = tls.handshake(data)
                data = b""
                self._send_tls_output(tls)
                if not done:
                    return
                self._handshake_over("handshake_done")
                assert self.transport is not None
                self.owner.opened(self, self.transport)
                if self.peer is None:
                    return  # refused by the connection limits
            plain = tls.decrypt(data)
        except ssl.SSLError as exc:
            if self.timer is not None:
                log.debug("TLS handshake from %s failed: %s", self.source, exc)
                self._handshake_over("handshake_failed")
            else:
                self.close("tls_error")  # a record that does not decrypt: the stream is lost
            return
        if tls.outgoing.pending:
            self._send_tls_output(tls)
        if plain:
            self.owner.received(self, plain)
        if tls.closed:
            self.close("peer_closed")

    def _send_tls_output(self, tls: TlsStream) -> None:
        output = tls.output()
        if output and self.transport is not None:
            self.transport.write(output)

    def eof_received(self) -> bool:
        # The peer will send nothing more (a half-close): SIP has no use for the other half,
        # so close it rather than keep a half-open connection (and its slot) around.  Mid-
        # handshake it is a failed handshake, counted so in ``connection_lost``.
        if self.timer is None:
            self.owner.count("peer_closed")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        # A reset or a close mid-handshake: a failed one (the transport is closed already).
        self._handshake_over("handshake_failed", close=False)
        self.owner.lost(self)

    def write(self, data: bytes) -> bool:
        """Queue ``data`` to be sent at the end of this turn of the event loop (``flush``):
        the answers the workers produce in one turn (a client with several requests
        outstanding gets them together) leave in one write, so in one TLS record and one
        send(2) instead of one each."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return False
        out = self.out
        if out is not None:
            out.append(data)
            return True
        if transport.get_write_buffer_size() > self.owner.limits.max_write_buffer:
            self.owner.count("write_buffer_full")
            return False
        self.out = [data]
        loop = self.owner.loop
        loop.call_soon(self.flush)
        self.last = loop.time()
        return True

    def flush(self) -> None:
        out, self.out = self.out, None
        transport = self.transport
        if out and transport is not None and not transport.is_closing():
            data = out[0] if len(out) == 1 else b"".join(out)
            tls = self.tls
            if tls is not None:
                try:
                    data = tls.encrypt(data)
                except ssl.SSLError:
                    self.tls = None  # the TLS state is broken: nothing more can be sent
                    transport.abort()
                    return
            transport.write(data)

    def close(self, event: str) -> None:
        self.owner.count(event)
        self.flush()
        if self.transport is not None:
            if self.tls is not None and not self.transport.is_closing():
                self.transport.write(self.tls.shutdown())  # close_notify, RFC 8446 §6.1
            self.transport.close()

    def linger(self, event: str | None) -> None:
        """Close after an error answer: our side is shut at once, what the peer still sends
        is read and discarded for up to ``LINGER`` seconds.  Closing with unread data would
        send a reset, and the reset can destroy the answer before the peer reads it.
        ``event``: what to count (None: counted already)."""
        transport = self.transport
        if transport is None or self.tls is not None or not transport.can_write_eof():
            # TLS has no half-close: close_notify, then close (``close``).
            self.flush()
            if event is not None:
                self.owner.count(event)
            if transport is not None:
                if self.tls is not None and not transport.is_closing():
                    transport.write(self.tls.shutdown())
                transport.close()
            return
        if event is not None:
            self.owner.count(event)
        self.flush()
        transport.write_eof()
        self.draining = self.owner.loop.time()


class StreamTransport:
    """A SIP stream listener (``name`` "tcp", or "tls" with ``ssl_context``) and its connections.

    ``receive`` gets every framed message with the ``Peer`` it came from (``SipCore.receive``);
    ``on_closed`` is awaited with the id of each connection that closed (the registry drops its
    bindings); ``overloaded`` is asked after each read (backpressure, see the module docs).
    """

    def __init__(self, name: str, receive: Receive, metrics: Metrics, node_id: str, *,
                 host: str, limits: StreamLimits | None = None,
                 ssl_context: ssl.SSLContext | None = None,
                 client_ssl: ssl.SSLContext | None = None,
                 on_closed: Callable[[str], Awaitable[object]] | None = None,
                 overloaded: Callable[[], bool] | None = None,
                 on_connect_failed: Callable[[str, str, int], object] | None = None,
                 on_lost: Callable[[str, str], object] | None = None) -> None:
        self.name = name
        self.on_connect_failed = on_connect_failed
        #: Told (transport name, connection id) when an established connection closes.
        self.on_lost = on_lost
        self._refused: dict[tuple[str, int], None] = {}
        self.receive = receive
        self.node_id = node_id
        self.limits = limits or StreamLimits()
        self.ssl_context = ssl_context
        self.gate: HandshakeGate | None = None
        if ssl_context is not None:
            self.gate = HandshakeGate(name, metrics,
                                      per_source=self.limits.max_per_source,
                                      total=self.max_connections,
                                      timeout=self.limits.handshake_timeout)
        self.client_ssl = client_ssl
        self.on_closed = on_closed
        self.overloaded = overloaded or (lambda: False)
        self.advertised_host = host
        self.info = self._info(0)
        self.loop = asyncio.get_running_loop()
        self.conns: dict[str, StreamConn] = {}
        self._by_addr: dict[tuple[str, int], StreamConn] = {}
        self._per_source: dict[str, int] = {}
        self._connecting: dict[tuple[str, int], StreamConn] = {}
        self._paused: set[StreamConn] = set()
        #: Accepted TLS connections whose handshake runs (``StreamConn._start_tls``).
        self.handshaking: set[StreamConn] = set()
        self._resume: asyncio.TimerHandle | None = None
        self._ids = itertools.count(1)
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[Any]] = set()
        # While the registry is down every closing connection fails the same way: one line
        # a minute, with the count, instead of a traceback per connection.
        self._cleanup_failures = RateLimitedLog(logging.getLogger(type(self).__module__), 60.0)
        self._register_metrics(metrics)

    def _register_metrics(self, metrics: Metrics) -> None:
        self.c_events = metrics.fast_counter(
            "sip_stream_events", "SIP stream connection events, by transport", ["transport",
                                                                                 "event"])
        self.c_closed = metrics.fast_counter(
            "sip_stream_framing_errors", "SIP stream connections closed for bad framing",
            ["transport", "reason"])
        metrics.callback_gauge("sip_stream_connections", "Open SIP stream connections",
                               ["transport"], self._gauge)

    def count(self, event: str) -> None:
        """Count a connection event (``sip_stream_events``)."""
        self.c_events.inc(self.name, event)

    def _info(self, port: int) -> TransportInfo:
        token = "TLS" if self.ssl_context is not None else "TCP"
        return TransportInfo(self.name, reliable=True, via_token=token,
                             host=self.advertised_host, port=port, uri_transport=token.lower())

    def _gauge(self) -> dict[tuple[str, ...], float]:
        return {(self.name,): float(len(self.conns))}

    def new_conn_id(self) -> str:
        # The transport's name keeps ids apart from WebSocket ones in the shared registry.
        return f"{self.node_id}/{self.name}/{next(self._ids)}"

    # -- life cycle ------------------------------------------------------------------------------

    async def start(self, host: str, port: int) -> tuple[str, int]:
        # Plain TCP even for TLS: each connection runs its handshake (``StreamConn._start_tls``).
        # A supervised worker accepts on its supervisor's socket (signaling/supervisor.py).
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = inherited_socket(f"sip_{self.name}", family, socket.SOCK_STREAM)
        where: dict[str, Any] = {"sock": sock} if sock else {"host": host, "port": port}
        self._server = await self.loop.create_server(self._accepted, backlog=1024, **where)
        bound = self._server.sockets[0].getsockname()
        self.info = self._info(int(bound[1]))
        self._sweeper = self.loop.create_task(self._sweep(), name=f"sip-{self.name}-sweep")
        log.info("SIP over %s listening on %s:%s", self.name.upper(), bound[0], bound[1])
        return str(bound[0]), int(bound[1])

    def stop_accepting(self) -> None:
        """Close the listening socket only (this process's copy of it): connections that are
        open stay until ``close``; new ones go to whoever else listens (a supervisor's next
        worker on the same socket)."""
        if self._server is not None:
            self._server.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        if self._resume is not None:
            self._resume.cancel()
        for conn in [*self.conns.values(), *self._connecting.values(), *self.handshaking]:
            if conn.transport is not None:
                conn.transport.abort()
        if self._server is not None:
            await self._server.wait_closed()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        if self.gate is not None:
            await self.gate.close()

    # -- connections -----------------------------------------------------------------------------

    def max_connections(self) -> int:
        """The listener's bound on connections in total, TLS handshakes included (the
        gate's ``total``)."""
        return self.limits.max_connections

    def _accepted(self) -> StreamConn:
        return StreamConn(self, self.loop.time(), SipStream(self.limits.max_message))

    def _refusal(self, source: str) -> str | None:
        """Why a connection accepted from ``source`` is closed at once, if it is."""
        if len(self.conns) >= self.limits.max_connections:
            return "rejected_total_limit"
        if self._per_source.get(source, 0) >= self.limits.max_per_source:
            return "rejected_source_limit"
        return None

    def opened(self, conn: StreamConn, transport: asyncio.Transport) -> None:
        conn.transport = transport
        peername = transport.get_extra_info("peername")
        addr = (str(peername[0]), int(peername[1]))
        source = addr[0]
        outgoing = conn.pending is not None
        if not outgoing:
            refused = self._refusal(source)
            if refused is not None:
                conn.close(refused)
                return
        conn.addr = addr
        conn.peer = Peer(self.name, addr[0], addr[1], conn.conn_id)
        conn.established = True
        conn.last = self.loop.time()
        self.conns[conn.conn_id] = conn
        self._by_addr[addr] = conn
        self._per_source[source] = self._per_source.get(source, 0) + 1
        self.count("connected" if outgoing else "accepted")
        if outgoing:
            self._refused.pop(addr, None)
            pending, conn.pending = conn.pending or [], None
            for data in pending:
                conn.write(data)

    def received(self, conn: StreamConn, data: bytes) -> None:
        peer = conn.peer
        if peer is None or conn.draining is not None:
            return  # refused in ``opened`` (its close is under way), or lingering
        now = self.loop.time()
        conn.last = now
        stream = conn.stream
        assert stream is not None
        for item in stream.receive(data):
            if isinstance(item, bytes):
                self.receive(item, peer)
            elif item is PING:
                conn.write(PONG)
            elif isinstance(item, StreamClosed):
                self.c_closed.inc(self.name, item.reason)
                if item.answer is not None and conn.write(item.answer):
                    conn.linger("framing_error")
                else:
                    conn.close("framing_error")
                return
        if stream.in_message:
            if conn.partial_since is None:
                conn.partial_since = now
        else:
            conn.partial_since = None
        self.pause_if_overloaded(conn)

    def pause_if_overloaded(self, conn: StreamConn) -> None:
        """Backpressure (see the module docs): called after each read."""
        if self.overloaded() and not conn.paused and conn.transport is not None:
            conn.transport.pause_reading()
            conn.paused = True
            self._paused.add(conn)
            self.count("paused_reading")
            if self._resume is None:
                self._resume = self.loop.call_later(RESUME_CHECK, self._try_resume)

    def _try_resume(self) -> None:
        self._resume = None
        if self.overloaded():
            self._resume = self.loop.call_later(RESUME_CHECK, self._try_resume)
            return
        now = self.loop.time()
        for conn in self._paused:
            conn.paused = False
            conn.last = now  # the wait was ours, not the peer's idleness
            self.resumed(conn, now)
            if conn.transport is not None and not conn.transport.is_closing():
                conn.transport.resume_reading()
        self._paused.clear()

    def resumed(self, conn: StreamConn, now: float) -> None:
        """Reading ``conn`` resumes after a pause: deadlines the wait ate into start over."""

    def lost(self, conn: StreamConn) -> None:
        if self.forget(conn):
            self.count("closed")
            self.announce_closed(conn.conn_id)

    def forget(self, conn: StreamConn) -> bool:
        """Drop a closed connection from the tables; False if it was never established."""
        self._paused.discard(conn)
        if conn.addr is not None and self._connecting.get(conn.addr) is conn:
            del self._connecting[conn.addr]
        if not conn.established:
            return False
        conn.established = False
        del self.conns[conn.conn_id]
        assert conn.addr is not None
        if self._by_addr.get(conn.addr) is conn:
            del self._by_addr[conn.addr]
        source = conn.addr[0]
        left = self._per_source[source] - 1
        if left:
            self._per_source[source] = left
        else:
            del self._per_source[source]
        return True

    def announce_closed(self, conn_id: str) -> None:
        """Tell the SIP core (``on_lost``) and the registry (``on_closed``) that a connection
        that carried SIP closed."""
        if self.on_lost is not None:
            self.on_lost(self.name, conn_id)
        if self.on_closed is not None:
            task = self.loop.create_task(self._closed(conn_id))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def _closed(self, conn_id: str) -> None:
        assert self.on_closed is not None
        try:
            await self.on_closed(conn_id)
        except Exception as exc:  # the registry may be down; the bindings expire on their own
            self.count("cleanup_failed")
            self._cleanup_failures.warning(
                "registry", "could not remove the bindings of closed connection %s: %s: %s",
                conn_id, type(exc).__name__, exc)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            now = self.loop.time()
            for conn in list(self.conns.values()):
                if not conn.paused:
                    self.check(conn, now)

    def check(self, conn: StreamConn, now: float) -> None:
        """The sweep's look at one connection (not paused): linger, stall and idle bounds."""
        if conn.draining is not None:
            if now - conn.draining > LINGER and conn.transport is not None:
                conn.transport.abort()
        elif conn.partial_since is not None and \
                now - conn.partial_since > self.limits.message_timeout:
            conn.close("stalled_message")
        elif now - conn.last > self.limits.idle_timeout:
            conn.close("idle_timeout")

    # -- sending ---------------------------------------------------------------------------------

    def holds(self, conn_id: str) -> bool:
        return conn_id in self.conns

    def send(self, data: bytes, peer: Peer) -> bool:
        """Over the connection ``peer`` names, else one to its address (§18.1.1)."""
        if peer.conn_id is not None:
            conn = self.conns.get(peer.conn_id)
            if conn is not None:
                return conn.write(data)
            # The connection is gone: a binding's peer carries its Contact's address, which
            # a client that listens can be reached at (§18.1.1).  A request's peer carries its
            # source address: connecting there is §18.2.2's last resort for a response, and
            # fails (counted) when nothing listens on that port.
            self.count("connection_gone")
        if not peer.host or not peer.port:
            self.count("no_address")
            return False
        addr = (peer.host, peer.port)
        conn = self._by_addr.get(addr)
        if conn is not None:
            return conn.write(data)
        return self._queue_connect(addr, data)

    def _queue_connect(self, addr: tuple[str, int], data: bytes) -> bool:
        conn = self._connecting.get(addr)
        if conn is not None:
            assert conn.pending is not None
            if len(conn.pending) >= CONNECT_QUEUE:
                self.count("connect_queue_full")
                return False
            conn.pending.append(data)
            return True
        if len(self.conns) + len(self._connecting) >= self.limits.max_connections:
            self.count("rejected_total_limit")
            return False
        conn = StreamConn(self, self.loop.time(), SipStream(self.limits.max_message))
        conn.pending = [data]
        conn.addr = addr
        self._connecting[addr] = conn
        task = self.loop.create_task(self._connect(conn, addr))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
        return True

    async def _connect(self, conn: StreamConn, addr: tuple[str, int]) -> None:
        kwargs: dict[str, Any] = {}
        if self.ssl_context is not None:
            kwargs = {"ssl": self.client_ssl or ssl.create_default_context(),
                      "server_hostname": addr[0],
                      "ssl_handshake_timeout": self.limits.handshake_timeout}
        try:
            await asyncio.wait_for(
                self.loop.create_connection(lambda: conn, addr[0], addr[1], **kwargs),
                CONNECT_TIMEOUT)
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            self.count("connect_failed")
            log.debug("SIP %s connection to %s:%s failed: %s", self.name, *addr, exc)
            if isinstance(exc, ConnectionRefusedError | ConnectionResetError):
                self._note_refused(addr)
            if self._connecting.get(addr) is conn:
                del self._connecting[addr]
            if self.on_connect_failed is not None:
                self.on_connect_failed(self.name, *addr)
        finally:
            if self._connecting.get(addr) is conn:
                del self._connecting[addr]

    def _note_refused(self, addr: tuple[str, int]) -> None:
        self._refused.pop(addr, None)
        if len(self._refused) >= REFUSED_MEMORY:
            del self._refused[next(iter(self._refused))]
        self._refused[addr] = None

    def was_refused(self, host: str, port: int) -> bool:
        """The last connection attempt to ``host:port`` was refused (a TCP reset)."""
        return (host, port) in self._refused

    # -- questions -------------------------------------------------------------------------------

    def ssl_object(self, conn_id: str) -> ssl.SSLObject | None:
        """The TLS state of a connection (its peer's certificate), for trusted-peer checks."""
        conn = self.conns.get(conn_id)
        if conn is None or conn.transport is None:
            return None
        if conn.tls is not None:
            return conn.tls.sslobj
        return cast(ssl.SSLObject | None, conn.transport.get_extra_info("ssl_object"))
