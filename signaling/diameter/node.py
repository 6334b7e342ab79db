"""The Diameter node: TCP listener, peer machines, worker pool, routing to applications.

The node is everything RFC 6733 says a Diameter node does before an application sees a
request: connections, capabilities exchange, watchdogs, disconnects, queueing and overload.
Applications (``signaling.diameter.application.Application``) are registered by
(Application-Id, command codes); a request is routed to the one that serves it.

Flow of a message (ARCHITECTURE "Backpressure"):

0. ``connection_made`` admits a connection only while there is room (``_admit``: slots kept
   for allowed addresses, silent connections give way, issue 20).
1. ``Connection.data_received`` frames the stream; each message comes to ``message_received``
   synchronously.  A connection without a peer yet must start with a CER (§5.6.1); anything
   else is answered DIAMETER_UNKNOWN_PEER (3010, E bit) and the connection closed, because no
   peer identity exists to process it for.  A CER from a peer the ``PeerPolicy`` does not
   admit (``protocols.diameter.allow``) gets a CEA with 3010 and is closed the same way.
2. CER/CEA, DWR/DWA, DPR/DPA are handled on the spot through the peer's ``PeerMachine`` (the
   §5.6 table), so watchdogs and capability exchanges never wait behind application traffic.
3. Application requests go through the machine (which feeds the watchdog) and are then queued,
   by Session-Id, on a bounded shard of the ``Dispatcher``.  A full shard is answered
   DIAMETER_TOO_BUSY (3004, E bit, §7.1.3) at once and counted.
4. A worker validates the request (§7 errors with Failed-AVP), hands it to the application
   registered for its (Application-Id, command code), and writes the answer; it awaits
   ``drain`` while the peer's socket is backed up.
5. DOIC (RFC 7683, ``protocols.diameter.doic``): an answer to a request that announced
   OC-Supported-Features carries ours, and an OC-OLR while the queue's load makes the
   ``Reporter`` ask for a reduction; 3004 stays the blunt fallback of a full shard.

Our own requests (``request``, the client side toward ``connect_peers``) carry
OC-Supported-Features; each peer's OC-OLRs go into its ``Reactor``, and the share of requests
it asks us to shed is answered here with 3004 without being sent.

Timers: each peer's ``next_deadline()`` (state timeout or RFC 3539 watchdog) arms one
``call_at`` handle; a handle that fires early (the watchdog moved on since) just re-arms.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from protocols.diameter.allow import PeerPolicy
from protocols.diameter.builders import answer, answer_from_header, error_answer
from protocols.diameter.capabilities import negotiate, parse_capabilities
from protocols.diameter.codec import Message, decode_message, leading_session_id
from protocols.diameter.constants import FLAG_R, AvpCode, CommandCode, ResultCode
from protocols.diameter.doic import (
    OC_SUPPORTED_FEATURES,
    Reactor,
    Reporter,
    supported_features_avp,
    supports_doic,
)
from protocols.diameter.errors import (
    DiameterError,
    FramingError,
    PeerStateError,
    RemoteProtocolError,
)
from protocols.diameter.peer import (
    CE_TIMEOUT,
    Closed,
    Connect,
    Deliver,
    Disconnect,
    Dropped,
    Opened,
    PeerMachine,
    PeerState,
    Send,
)
from protocols.diameter.validation import validate_request
from signaling.diameter.application import Application
from signaling.diameter.config import DiameterConfig
from signaling.diameter.connection import Connection
from signaling.dispatch import Dispatcher
from signaling.logs import RateLimitedLog
from signaling.metrics import Metrics
from signaling.worker import inherited_socket

__all__ = ["DEFAULT_REQUEST_TIMEOUT", "MAX_PENDING_REQUESTS", "DiameterNode", "PeerInfo"]

log = logging.getLogger(__name__)
#: Messages a peer's state does not accept are counted per message
#: (``signaling_diameter_dropped_total``) and logged at most once per peer per 10 s.
_bad_input = RateLimitedLog(log, 10.0)

# Plain ints for the per-message path (an IntEnum member read costs ~50 ns).
_RESULT_CODE = int(AvpCode.RESULT_CODE)
_SESSION_ID = int(AvpCode.SESSION_ID)
_DWR = int(CommandCode.DEVICE_WATCHDOG)

_BASE_COMMANDS = frozenset({CommandCode.CAPABILITIES_EXCHANGE, CommandCode.DEVICE_WATCHDOG,
                            CommandCode.DISCONNECT_PEER})
_COMMAND_NAMES = {257: "CER", 258: "RAR", 271: "ACR", 272: "CCR", 274: "ASR", 275: "STR",
                  280: "DWR", 282: "DPR"}

_Item = tuple[Connection, Message]

# How long ``request`` waits for a peer's answer.  RFC 6733 leaves it to the application; a
# few seconds is what Credit-Control clients use (RFC 4006 §13 Tx suggests 10 s at most).
DEFAULT_REQUEST_TIMEOUT = 10.0

# Our requests awaiting answers, all peers together (ARCHITECTURE: pending Diameter requests
# are bounded).  Beyond it ``request`` answers 3004 itself: at 10 s per answer at most, this is
# 1,000 requests/s of headroom, far above what this node originates.
MAX_PENDING_REQUESTS = 10_000

# Refused CERs are counted each; the log gets one line per this many seconds at most.
_REFUSAL_LOG_INTERVAL = 10.0


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """One peer as the admin API shows it."""

    origin_host: str
    origin_realm: str
    state: str
    watchdog: str
    address: str
    product_name: str
    applications: tuple[int, ...]
    dwr_sent: int
    dwa_received: int


class DiameterNode:
    """Diameter over TCP: peers and connections; requests routed to registered applications."""

    def __init__(self, config: DiameterConfig, metrics: Metrics) -> None:
        self.config = config
        self.metrics = metrics
        self.local = config.capabilities()
        self.identity = self.local.identity
        self.dictionary = config.make_dictionary()
        self.applications = self.local.applications
        self._apps: list[Application] = []
        self._routes: dict[tuple[int, int], Application] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._conns: dict[int, Connection] = {}
        self._peers: dict[str, PeerMachine] = {}
        self._conn_of: dict[int, PeerMachine] = {}
        self._timers: dict[PeerMachine, asyncio.TimerHandle] = {}
        # Configured peers we connect to (initiator role): address, reconnect timer, dials.
        self._targets: dict[PeerMachine, tuple[str, int]] = {}
        self._reconnects: dict[PeerMachine, asyncio.TimerHandle] = {}
        self._dials: set[asyncio.Task[None]] = set()
        self._closing = False
        self.policy = PeerPolicy(config.allowed_peers, config.connect_peers)
        # Incoming connections that have not sent their CER yet, oldest first.
        self._unidentified: dict[int, Connection] = {}
        self._refusals = 0
        self._refusal_logged = -_REFUSAL_LOG_INTERVAL
        # DOIC (RFC 7683): our reports as a reporting node; each peer's as a reacting node.
        # Sequence numbers start from the clock so they keep growing across restarts (§7.4).
        self.reporter = Reporter(int(time.time()), config.doic_interval) if config.doic else None
        self._reactors: dict[str, Reactor] = {}
        self._shed_seen = 0.0
        # Our requests awaiting answers: connection id -> hop-by-hop -> future.
        self._pending: dict[int, dict[int, asyncio.Future[Message]]] = {}
        self._in_flight = 0
        shards = max(1, config.workers)
        self._dispatcher: Dispatcher[_Item] = Dispatcher(
            shards, max(1, config.queue_size // shards), self._work, self._work_failed)
        self._declare_metrics()

    # -- lifecycle ----------------------------------------------------------------------

    def register(self, app: Application) -> None:
        """Serve ``app``'s commands; its Application-Id must be one this node advertises."""
        if app.application_id not in self.applications:
            raise ValueError(f"application {app.application_id} is not advertised in CER/CEA "
                             "(add it to auth_application_ids or acct_application_ids)")
        for command in app.commands:
            key = (app.application_id, command)
            if key in self._routes:
                raise ValueError(f"command {command} of application {app.application_id} "
                                 "already has an application")
            self._routes[key] = app
        self._apps.append(app)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for app in self._apps:
            await app.start()
        self._dispatcher.start()
        # A supervised worker accepts on its supervisor's socket (signaling/supervisor.py).
        family = socket.AF_INET6 if ":" in self.config.host else socket.AF_INET
        sock = inherited_socket("diameter", family, socket.SOCK_STREAM)
        if sock is not None:
            self._server = await self._loop.create_server(lambda: Connection(self), sock=sock)
        else:
            self._server = await self._loop.create_server(
                lambda: Connection(self), self.config.host, self.config.port,
                reuse_address=True)
        for host, address, port in self.config.connect_peers:
            peer = PeerMachine(self.local, tw=self.config.watchdog_interval, initiator=True)
            self._peers[host] = peer
            self._targets[peer] = (address, port)
            self._guarded(peer, lambda p: p.start(self._loop_().time()))
        log.info("diameter listening on %s:%d as %s", self.config.host, self.port,
                 self.config.origin_host)

    @property
    def port(self) -> int:
        """The bound port (useful when the configured port is 0)."""
        if self._server is None or not self._server.sockets:
            return self.config.port
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def stop_accepting(self) -> None:
        """Stop listening (this process's copy of the socket); open peers stay until
        ``close`` (a supervisor's next worker accepts the new ones)."""
        if self._server is not None:
            self._server.close()

    async def close(self, timeout: float) -> None:
        """Stop accepting, answer what is queued, send DPR to every open peer (§5.4) and wait
        for their DPAs, then close everything; all within ``timeout`` seconds."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        for conn in list(self._conns.values()):
            if conn.peer is None and conn.id not in self._conn_of:
                conn.close()  # never identified itself: nobody to say goodbye to
        # §5.4: disconnect once pending requests are answered (half the time at most).
        await self._dispatcher.drain(timeout / 2)
        for peer in list(self._peers.values()):
            if peer.state in (PeerState.R_OPEN, PeerState.I_OPEN):
                self._guarded(peer, lambda p: p.stop(loop.time()))
        while loop.time() < deadline and any(
                p.state is PeerState.CLOSING for p in self._peers.values()):
            await asyncio.sleep(0.01)
        for conn in list(self._conns.values()):
            conn.close()
        for handle in [*self._timers.values(), *self._reconnects.values()]:
            handle.cancel()
        self._timers.clear()
        self._reconnects.clear()
        for task in list(self._dials):
            task.cancel()
        await asyncio.gather(*self._dials, return_exceptions=True)
        await self._dispatcher.stop()
        for app in self._apps:
            await app.close()
        if self._server is not None:
            await self._server.wait_closed()

    # -- read-only views for the admin API ----------------------------------------------

    def peers(self) -> list[PeerInfo]:
        out = []
        for host, peer in self._peers.items():
            remote = peer.remote
            conn = self._conns.get(peer.open_conn or -1)
            out.append(PeerInfo(
                origin_host=host,
                origin_realm=remote.origin_realm if remote else "",
                state=peer.state.value,
                watchdog=peer.watchdog.state.value,
                address=conn.address if conn else "",
                product_name=remote.product_name if remote else "",
                applications=tuple(sorted(remote.applications)) if remote else (),
                dwr_sent=peer.sent_dwr,
                dwa_received=peer.received_dwa,
            ))
        return out

    # -- metrics ------------------------------------------------------------------------

    def _declare_metrics(self) -> None:
        m = self.metrics
        self.m_requests = m.fast_counter(
            "diameter_requests", "Diameter requests received, by command", ["command"])
        self.m_answers = m.fast_counter(
            "diameter_answers", "Diameter answers sent, by Result-Code", ["result_code"])
        self.m_shed = m.fast_counter(
            "diameter_shed", "Requests answered DIAMETER_TOO_BUSY because the queue was full")
        self.m_dropped = m.fast_counter(
            "diameter_dropped", "Messages or connections dropped without an answer, by reason",
            ["reason"])
        self.m_doic = m.fast_counter(
            "diameter_doic", "DOIC (RFC 7683): OC-OLR sent, reports received, requests "
            "throttled", ["kind"])
        m.callback_gauge("diameter_doic_reduction", "Traffic reduction this node asks of DOIC "
                         "peers, percent", [], lambda: {(): float(
                             self.reporter.reduction if self.reporter is not None else 0)})
        self.m_watchdog = m.fast_counter(
            "diameter_watchdog", "Watchdog messages (RFC 3539), by kind", ["kind"])
        m.callback_gauge("diameter_peers", "Diameter peers by state (RFC 6733 §5.6)", ["state"],
                         self._peer_states)
        m.callback_gauge("diameter_connections", "Open Diameter TCP connections", [],
                         lambda: {(): float(len(self._conns))})
        m.callback_gauge("diameter_queue_depth", "Requests waiting for a Diameter worker", [],
                         lambda: {(): float(sum(self._dispatcher.depths()))})

    def _peer_states(self) -> dict[tuple[str, ...], float]:
        counts: dict[tuple[str, ...], float] = {(s.value,): 0.0 for s in PeerState}
        for peer in self._peers.values():
            counts[(peer.state.value,)] += 1
        return counts

    def _count_answer(self, code: int) -> None:
        self.m_answers.inc(_code_label(code))

    # -- connection events (called by Connection) ---------------------------------------

    def connection_made(self, conn: Connection) -> None:
        reason = "closing" if self._closing else self._admit(conn)
        if reason is not None:
            self.m_dropped.inc(reason)
            if conn.transport is not None:
                conn.transport.abort()
            return
        self._conns[conn.id] = conn
        if conn.outgoing:
            return  # ours: the CER is ours to send (_dial_task)
        # A connection must identify itself with a CER in time (§5.6 Timeout) or go; until
        # then it holds one of the unreserved slots.
        self._unidentified[conn.id] = conn
        conn.cer_timer = self._loop_().call_later(
            self.config.cer_timeout, self._cer_timeout, conn)

    def _admit(self, conn: Connection) -> str | None:
        """Room for this connection?  None, or why not (issue 20: configured peers keep room).

        The last ``reserved_connections`` slots are only for our own connections and those
        from addresses the allow list names.  When the other slots are full, the oldest
        connection still waiting for its CER gives way: idle sockets cannot hold a slot
        for longer than it takes the next connection to arrive, and a real peer sends its
        CER right after connecting.
        """
        limit = self.config.max_connections
        if conn.outgoing or self.policy.known_address(conn.ip):
            return None if len(self._conns) < limit else "connection_limit"
        if len(self._conns) < limit - self.config.reserved_connections:
            return None
        for waiting in self._unidentified.values():
            if not self.policy.known_address(waiting.ip):
                self.m_dropped.inc("evicted_before_cer")
                self._identified(waiting)
                waiting.close()
                self._conns.pop(waiting.id, None)
                return None
        return "connection_limit"

    def _identified(self, conn: Connection) -> None:
        """The connection is a peer's now (or ours): no CER deadline, no unreserved slot."""
        self._unidentified.pop(conn.id, None)
        if conn.cer_timer is not None:
            conn.cer_timer.cancel()
            conn.cer_timer = None

    def connection_lost(self, conn: Connection) -> None:
        self._conns.pop(conn.id, None)
        self._unidentified.pop(conn.id, None)
        for fut in self._pending.pop(conn.id, {}).values():
            if not fut.done():
                fut.set_exception(ConnectionError(f"connection to {conn.address} lost"))
        peer = self._conn_of.pop(conn.id, None)
        if peer is not None:
            self._guarded(peer, lambda p: p.disconnected(conn.id, self._loop_().time()))

    def framing_error(self, conn: Connection, exc: FramingError) -> None:
        """§7.1.5 5011/5015: answer if the header was readable, then close: no boundary left."""
        self.m_dropped.inc("framing")
        if exc.header is not None:
            ans = answer_from_header(exc.header, exc, self.identity)
            if ans is not None:
                self._write(conn, ans)
        conn.close()

    def message_received(self, conn: Connection, raw: bytes) -> None:
        try:
            msg = decode_message(raw)
        except RemoteProtocolError as exc:
            self._broken_message(conn, raw, exc)
            return
        if msg.is_request:
            self.m_requests.inc(_COMMAND_NAMES.get(msg.command_code) or str(msg.command_code))
        peer = conn.peer
        if peer is None:
            self._unbound(conn, msg)
        elif msg.command_code in _BASE_COMMANDS:
            self._base_message(conn, peer, msg)
        else:  # an application request, or the answer to one of ours (``request``)
            self._guarded(peer, lambda p: p.receive(conn.id, msg, self._loop_().time()), conn, msg)

    # -- message handling ---------------------------------------------------------------

    def _broken_message(self, conn: Connection, raw: bytes, exc: RemoteProtocolError) -> None:
        # The message boundary is intact (the framer checked the length), only its AVPs are
        # not: answer 5014 with the offending AVP header and keep the connection (§7.1.5).
        ans = answer_from_header(raw[:20], exc, self.identity)
        if ans is None:
            self.m_dropped.inc("broken_answer")
            return
        sid = leading_session_id(raw)
        if sid is not None:
            ans.avps.insert(0, sid)  # §6.2: echo the Session-Id when it could be read
        self._write(conn, ans)

    def _unbound(self, conn: Connection, msg: Message) -> None:
        if not msg.is_request:
            self.m_dropped.inc("answer_before_cer")
            conn.close()
            return
        if msg.command_code != CommandCode.CAPABILITIES_EXCHANGE:
            exc = RemoteProtocolError("no capabilities exchange on this connection",
                                      ResultCode.DIAMETER_UNKNOWN_PEER)
            self._write(conn, error_answer(msg, exc, self.identity))
            conn.close()
            return
        try:
            validate_request(msg, self.dictionary, self.applications)
            remote = parse_capabilities(msg)
            if not self.policy.admits(remote.origin_host, remote.origin_realm, conn.ip):
                self._refused_peer(remote.origin_host, conn)
                raise RemoteProtocolError("unknown peer", ResultCode.DIAMETER_UNKNOWN_PEER)
            negotiate(self.local, remote)
        except RemoteProtocolError as exc:
            # §5.3: refuse with a CEA carrying the error, then drop the connection.
            self._write(conn, answer(
                msg, exc.result_code, self.identity, self.local.avps(),
                error_bit=exc.error_bit, error_message=exc.reason, failed_avps=exc.failed_avps))
            conn.close()
            return
        self._accept_cer(conn, msg, remote.origin_host)

    def _refused_peer(self, host: str, conn: Connection) -> None:
        """Count it; log one line per ``_REFUSAL_LOG_INTERVAL`` at most (a flood of CERs)."""
        self.m_dropped.inc("unknown_peer")
        self._refusals += 1
        now = self._loop_().time()
        if now >= self._refusal_logged + _REFUSAL_LOG_INTERVAL:
            log.warning("diameter: refused %d CER(s) from peers not allowed (3010), the last "
                        "%r from %s; see --diameter-allow", self._refusals, host, conn.ip)
            self._refusals = 0
            self._refusal_logged = now

    def _accept_cer(self, conn: Connection, msg: Message, host: str) -> None:
        peer = self._peers.get(host)
        if peer is None:
            peer = PeerMachine(self.local, tw=self.config.watchdog_interval)
            self._peers[host] = peer
        self._conn_of[conn.id] = peer
        self._identified(conn)
        self._guarded(peer, lambda p: p.incoming_cer(conn.id, msg, self._loop_().time()), conn)
        if peer.r_conn == conn.id:
            conn.peer = peer
        else:
            self._conn_of.pop(conn.id, None)
            if peer.state is PeerState.CLOSED and peer not in self._targets and (
                    self._peers.get(host) is peer):
                del self._peers[host]  # the CER was refused: leave no peer state behind

    def _base_message(self, conn: Connection, peer: PeerMachine, msg: Message) -> None:
        if msg.is_request:
            try:
                validate_request(msg, self.dictionary, self.applications)
            except RemoteProtocolError as exc:
                self._write(conn, error_answer(msg, exc, self.identity))
                return
        elif msg.command_code == CommandCode.DEVICE_WATCHDOG:
            self.m_watchdog.inc("dwa_received")
        if msg.is_request and msg.command_code == CommandCode.DEVICE_WATCHDOG:
            self.m_watchdog.inc("dwr_received")
        self._guarded(peer, lambda p: p.receive(conn.id, msg, self._loop_().time()), conn, msg)

    def _guarded(self, peer: PeerMachine, step: Callable[[PeerMachine], None],
                 conn: Connection | None = None,
                 msg: Message | None = None) -> None:
        """Run one machine step, then carry out its commands; a state error costs one message."""
        try:
            step(peer)
        except PeerStateError as exc:
            self.m_dropped.inc("peer_state")
            host = peer.remote.origin_host if peer.remote else "(unknown)"
            _bad_input.info(host, "diameter peer %s: %s", host, exc)
            if conn is not None and msg is not None and msg.is_request:
                self._write(conn, error_answer(msg, RemoteProtocolError(
                    str(exc), ResultCode.DIAMETER_UNABLE_TO_COMPLY), self.identity))
        except DiameterError as exc:
            self.m_dropped.inc("peer_error")
            _bad_input.info("(peer error)", "diameter peer error: %s", exc)
        self._run_outbox(peer)

    def _run_outbox(self, peer: PeerMachine) -> None:
        for cmd in peer.take_outbox():
            if isinstance(cmd, Deliver):
                conn = self._conns.get(cmd.conn)
                if conn is None:
                    continue
                if cmd.message.is_request:
                    self._enqueue(conn, cmd.message)
                else:
                    self._answered(conn, cmd.message)
            elif isinstance(cmd, Send):
                conn = self._conns.get(cmd.conn)
                if conn is not None:
                    if cmd.message.command_code == _DWR and (
                            cmd.message.is_request):
                        self.m_watchdog.inc("dwr_sent")
                    self._write(conn, cmd.message)
            elif isinstance(cmd, Disconnect):
                conn = self._conns.get(cmd.conn)
                self._conn_of.pop(cmd.conn, None)
                if conn is not None:
                    conn.close()
            elif isinstance(cmd, Connect):
                self._dial(peer)
            elif isinstance(cmd, Dropped):
                self.m_dropped.inc(cmd.reason)
            elif isinstance(cmd, Opened):
                log.info("diameter peer %s open", cmd.remote.origin_host)
            elif isinstance(cmd, Closed):
                self._peer_closed(peer)
        self._arm(peer)

    def _peer_closed(self, peer: PeerMachine) -> None:
        if peer in self._targets:
            # A configured peer stays known; reconnect after Tc (RFC 6733 §2.1).
            if not self._closing and peer not in self._reconnects:
                self._reconnects[peer] = self._loop_().call_later(
                    self.config.reconnect_interval, self._reconnect, peer)
            return
        host = peer.remote.origin_host if peer.remote else None
        if host is not None and self._peers.get(host) is peer:
            del self._peers[host]
        handle = self._timers.pop(peer, None)
        if handle is not None:
            handle.cancel()

    def _reconnect(self, peer: PeerMachine) -> None:
        self._reconnects.pop(peer, None)
        if not self._closing and peer.state is PeerState.CLOSED:
            self._guarded(peer, lambda p: p.start(self._loop_().time()))

    def _dial(self, peer: PeerMachine) -> None:
        """I-Snd-Conn-Req: open the transport connection to a configured peer."""
        task = self._loop_().create_task(self._dial_task(peer))
        self._dials.add(task)
        task.add_done_callback(self._dials.discard)

    async def _dial_task(self, peer: PeerMachine) -> None:
        address, port = self._targets[peer]
        loop = self._loop_()
        try:
            _transport, conn = await asyncio.wait_for(
                loop.create_connection(lambda: Connection(self, outgoing=True), address, port),
                CE_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            log.info("diameter connect to %s:%d failed: %s", address, port, exc)
            self.m_dropped.inc("connect_failed")
            if peer.state in (PeerState.WAIT_CONN_ACK, PeerState.WAIT_CONN_ACK_ELECT):
                self._guarded(peer, lambda p: p.connect_failed(loop.time()))
            return
        if conn.id not in self._conns or peer.state not in (
                PeerState.WAIT_CONN_ACK, PeerState.WAIT_CONN_ACK_ELECT):
            conn.close()  # refused (limit, shutdown) or the machine gave up meanwhile
            return
        conn.peer = peer
        self._conn_of[conn.id] = peer
        self._guarded(peer, lambda p: p.connected(conn.id, loop.time()))

    def _write(self, conn: Connection, msg: Message) -> None:
        if not msg.is_request:
            rc = msg.find(_RESULT_CODE)
            if rc is not None and len(rc.data) == 4:
                self._count_answer(int.from_bytes(rc.data, "big"))
        conn.write(msg.encode())

    # -- timers -------------------------------------------------------------------------

    def _arm(self, peer: PeerMachine) -> None:
        deadline = peer.next_deadline()
        handle = self._timers.get(peer)
        if deadline is None or (peer.state is PeerState.CLOSED and self._peers.get(
                peer.remote.origin_host if peer.remote else "") is not peer):
            if handle is not None:
                handle.cancel()
                del self._timers[peer]
            return
        if handle is not None:
            if handle.when() <= deadline:
                return  # fires early, finds nothing due, re-arms then
            handle.cancel()
        self._timers[peer] = self._loop_().call_at(deadline, self._peer_timer, peer)

    def _peer_timer(self, peer: PeerMachine) -> None:
        self._timers.pop(peer, None)
        self._guarded(peer, lambda p: p.on_timer(self._loop_().time()))

    def _cer_timeout(self, conn: Connection) -> None:
        if conn.peer is None and not conn.closed:
            self.m_dropped.inc("cer_timeout")
            conn.close()

    def _loop_(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop

    # -- application requests -----------------------------------------------------------

    def _enqueue(self, conn: Connection, msg: Message) -> None:
        first = msg.avps[0] if msg.avps else None
        key = first.data.decode("utf-8", "replace") if first is not None and (
            first.code == _SESSION_ID) else ""
        if not self._dispatcher.submit(key, (conn, msg)):
            # ARCHITECTURE backpressure: a full queue is answered in protocol terms, §7.1.3.
            self.m_shed.inc()
            exc = RemoteProtocolError("too busy", ResultCode.DIAMETER_TOO_BUSY)
            self._write(conn, self._overload_report(msg, error_answer(msg, exc, self.identity)))

    async def _work(self, item: _Item) -> None:
        conn, msg = item
        if conn.closed:
            self.m_dropped.inc("connection_gone")
            return
        peer = conn.peer
        remote = peer.remote if peer is not None else None
        ans = await self._process(msg, remote.origin_host if remote is not None else "")
        self._write(conn, self._overload_report(msg, ans))
        if conn.paused:
            await conn.drain()

    def _work_failed(self, item: _Item, exc: BaseException) -> None:
        conn, msg = item
        log.error("diameter request failed", exc_info=exc)
        self._write(conn, error_answer(msg, RemoteProtocolError(
            "internal error", ResultCode.DIAMETER_UNABLE_TO_COMPLY), self.identity))

    def _overload_report(self, req: Message, ans: Message) -> Message:
        """DOIC (RFC 7683 §5.1): answers to requests that announced OC-Supported-Features
        carry ours, and OC-OLR while we ask for a reduction; legacy peers get neither."""
        reporter = self.reporter
        if reporter is None or not supports_doic(req):
            return ans
        reporter.observe(self._load, self._loop_().time())
        avps = reporter.answer_avps()
        ans.avps.extend(avps)
        if len(avps) > 1:
            self.m_doic.inc("olr_sent")
        return ans

    def _load(self) -> float:
        """The DOIC load figure: the queue's fill, or full if requests were shed since the
        last look (a shard can fill while the others are idle: shedding is overload)."""
        shed = self.m_shed.total()
        if shed > self._shed_seen:
            self._shed_seen = shed
            return 1.0
        return sum(self._dispatcher.depths()) / self.config.queue_size

    # -- our requests to peers (client side) --------------------------------------------

    async def request(self, host: str, msg: Message,
                      timeout: float = DEFAULT_REQUEST_TIMEOUT) -> Message:
        """Send an application request to the open peer ``host``; its answer, or ours.

        The request gets the peer's next hop-by-hop and end-to-end identifiers and our
        OC-Supported-Features (RFC 7683 §5.1).  Answered here, without sending: 3002
        DIAMETER_UNABLE_TO_DELIVER when the peer is not open, and 3004 DIAMETER_TOO_BUSY for
        the share of requests the peer's overload report asks us to shed (§6, loss
        algorithm).  Raises ``TimeoutError`` when no answer comes within ``timeout``.
        """
        loop = self._loop_()
        peer = self._peers.get(host)
        conn = None
        if peer is not None and peer.state in (PeerState.R_OPEN, PeerState.I_OPEN):
            conn = self._conns.get(peer.open_conn or -1)
        if peer is None or conn is None:
            return error_answer(msg, RemoteProtocolError(
                f"peer {host} not open", ResultCode.DIAMETER_UNABLE_TO_DELIVER), self.identity)
        if self._in_flight >= MAX_PENDING_REQUESTS:
            self.m_dropped.inc("pending_limit")
            return error_answer(msg, RemoteProtocolError(
                f"{MAX_PENDING_REQUESTS} requests awaiting answers",
                ResultCode.DIAMETER_TOO_BUSY), self.identity)
        reactor = self._reactors.setdefault(host, Reactor())  # one per peer we send to
        if not reactor.admit(loop.time()):
            self.m_doic.inc("throttled")
            return error_answer(msg, RemoteProtocolError(
                f"{host} asked for {reactor.reduction(loop.time())}% less traffic (DOIC)",
                ResultCode.DIAMETER_TOO_BUSY), self.identity)
        avps = msg.avps if msg.find(OC_SUPPORTED_FEATURES) else [
            *msg.avps, supported_features_avp()]
        out = Message(msg.command_code, msg.flags | FLAG_R, msg.application_id,
                      peer.next_hop_by_hop(), peer.next_end_to_end(), avps)
        waiting = self._pending.setdefault(conn.id, {})
        fut: asyncio.Future[Message] = loop.create_future()
        waiting[out.hop_by_hop] = fut
        self._in_flight += 1
        try:
            self._guarded(peer, lambda p: p.send(out, loop.time()))
            ans = await asyncio.wait_for(fut, timeout)
        finally:
            self._in_flight -= 1
            waiting.pop(out.hop_by_hop, None)
        if reactor.receive(ans, loop.time()):
            self.m_doic.inc("report_received")
        return ans

    def _answered(self, conn: Connection, ans: Message) -> None:
        fut = self._pending.get(conn.id, {}).pop(ans.hop_by_hop, None)
        if fut is None or fut.done():
            self.m_dropped.inc("unexpected_answer")  # late (timed out) or never asked
            return
        fut.set_result(ans)

    async def _process(self, msg: Message, peer: str) -> Message:
        try:
            command = validate_request(msg, self.dictionary, self.applications)
            app = self._routes.get((msg.application_id, command.code))
            if app is None:
                raise RemoteProtocolError(f"{command.name} is not served here",
                                          ResultCode.DIAMETER_COMMAND_UNSUPPORTED)
            return await app.handle(msg, peer)
        except RemoteProtocolError as exc:
            return error_answer(msg, exc, self.identity)


_CODE_LABELS: dict[int, str] = {}


def _code_label(code: int) -> str:
    label = _CODE_LABELS.get(code)
    if label is None:
        label = _CODE_LABELS[code] = str(code)
    return label
