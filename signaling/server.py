"""The server: wires the listeners, the SIP core, the registrar and the registry together.

Start order: registry, SIP core (workers), then listeners, so nothing arrives before it can be
handled.  Stop order (SIGTERM/SIGINT): stop taking new requests (new ones get 503), let queued
work and live transactions finish within ``shutdown_timeout``, close WebSocket connections, stop
the listeners, close the registry.

What is not configured is not imported: the admin API (aiohttp), Diameter, the records writer
(asyncpg), the WebSocket transport and tracing (OpenTelemetry) are imported where the server
builds them, and only then.  A reload starts a new interpreter per worker beside the workers
serving, and its imports are most of what it costs them (benchmarks/README.md, session 13).
An error in such a module is still reported at start, by the server configured to use it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import TYPE_CHECKING

from protocols.sip import parser as sip_parser
from protocols.sip.digest import challenge_head
from signaling import worker
from signaling.auth.guard import Guard, GuardLimits, parse_networks
from signaling.auth.policy import Authenticator
from signaling.auth.subscribers import FileSubscribers, SubscriberStore, make_store
from signaling.config import Config
from signaling.handoff import Handoff
from signaling.logs import RateLimitedLog, set_trace_ids
from signaling.metrics import Metrics
from signaling.proxy import Proxy
from signaling.registrar import Registrar
from signaling.registry.base import Registry, registers_at_once
from signaling.registry.factory import make_registry
from signaling.registry.memory import MemoryRegistry
from signaling.router import Router
from signaling.shedwatch import ShedWatch
from signaling.siblings import Siblings
from signaling.sipcore import SipCore
from signaling.tls import TlsContexts, admin_tls, tls_settings
from signaling.transports.base import Peer, Transports
from signaling.transports.tcp import StreamTransport, stream_limits
from signaling.transports.udp import UdpTransport, start_udp

if TYPE_CHECKING:
    from signaling.admin import AdminServer
    from signaling.cdr import RecordHooks
    from signaling.diameter.server import DiameterServer
    from signaling.records.writer import RecordWriter
    from signaling.tracing import Tracing
    from signaling.transports.ws import WsTransport

__all__ = ["SWEEP_BATCH", "SWEEP_INTERVAL", "Server", "default_node_id"]

log = logging.getLogger(__name__)

#: How often expired bindings are swept.  Reads already hide expired bindings, so this only
#: bounds how long dead entries occupy memory; once a second keeps that to one second's worth.
SWEEP_INTERVAL = 1.0
#: Bindings removed per sweep call, so one sweep never holds the loop (or Redis) for long.
SWEEP_BATCH = 1000
#: At most one "sweep failed" line per this many seconds while the registry is unreachable.
SWEEP_LOG_INTERVAL = 60.0


class Server:
    """One node.  ``start()`` binds every configured listener; ``stop()`` shuts down cleanly."""

    def __init__(self, cfg: Config, registry: Registry | None = None) -> None:
        self.cfg = cfg
        self.metrics = Metrics()
        self.registry = registry if registry is not None else make_registry(
            cfg.registry, max_bindings_per_aor=cfg.max_bindings_per_aor,
            max_bytes=cfg.binding_memory << 20, max_dialogs=cfg.max_dialogs)
        self.node_id = cfg.node_id or default_node_id(cfg)
        self.guard = Guard(_guard_limits(cfg), self.metrics)
        #: The other workers of a multi-process server, whose connections this one uses.
        self.siblings = Siblings.for_worker(worker.current(), self.node_id, self.metrics)
        self.core = SipCore(cfg, self.metrics, Transports(), self.guard,
                            self.siblings.relay_out if self.siblings else None)
        if self.siblings is not None:
            self.siblings.connection_gone = self.core.connection_gone
        self.tracer: Tracing | None = None
        if cfg.trace_sample > 0:
            from signaling.tracing import Tracing  # OpenTelemetry only when tracing is on
            self.tracer = Tracing(endpoint=cfg.otlp_endpoint, sample=cfg.trace_sample,
                                    node_id=self.node_id, metrics=self.metrics,
                                    plain_ids=cfg.trace_plain_ids)
            from signaling.admin.spans import current_ids
            set_trace_ids(current_ids)  # JSON log lines name the current span
        settings = tls_settings(cfg)
        #: Raises ConfigError (exit 2) for a missing or unusable certificate or key.
        self.tls = TlsContexts(settings) if settings is not None else None
        if self.tls is not None:
            self.metrics.callback_gauge(
                "tls_certificate_expiry_timestamp_seconds",
                "notAfter of each TLS certificate served, Unix time", ["certificate"],
                self.tls.expiries)
        self.subscribers: SubscriberStore = make_store(cfg.subscribers)
        #: Kept with --auth off too: the admin API manages subscribers and blocks through it.
        self.auth = Authenticator(
            cfg, self.core, self.subscribers, self.guard, self.metrics,
            shared=_shared(self.registry),
            tls_identity=self._tls_identity if settings and settings.trusted_peers else None)
        checking = self.auth if self.auth.enabled else None
        if checking is not None and challenge_head is not None:
            self.core.answer_unparsed = checking.challenge_unparsed
        self.records: RecordWriter | None = None
        hooks: RecordHooks | None = None
        if cfg.database:
            from signaling.cdr import RecordHooks  # asyncpg: only with a database
            from signaling.records.writer import RecordWriter
            self.records = RecordWriter(cfg.database, cfg.spool, self.metrics)
            hooks = RecordHooks(self.records, self.node_id)
        self.registrar = Registrar(self.core, self.registry, self.metrics, self.node_id,
                                   on_event=hooks.registration if hooks else None,
                                   auth=checking)
        # With a registry whose REGISTER never waits on other work (it says so:
        # ``Registry.registers_at_once``) and the subscribers in a file, REGISTERs are answered
        # as they are read, not queued for a worker (``SipCore.answer_at_once``).  With Redis
        # the one I/O is the registry's script, written as the REGISTER is read and answered
        # from its reply's callback (``signaling.eager``).
        self.core.answer_at_once = registers_at_once(self.registry) and (
            checking is None or isinstance(self.subscribers, FileSubscribers))
        self.proxy = Proxy(self.core, self.registry, cfg, self.metrics, self.node_id,
                           self.tracer, auth=checking,
                           on_dialog_ended=hooks.dialog_ended if hooks else None,
                           reaches=self.siblings.reaches if self.siblings else None)
        self.diameter: DiameterServer | None = None
        if cfg.diameter is not None:
            from signaling.diameter.config import diameter_config
            from signaling.diameter.server import DiameterServer
            self.diameter = DiameterServer(diameter_config(cfg), self.metrics, self.registry,
                                           self.tracer)
        #: HTTPS for the admin listener (``--admin-tls-cert``); ConfigError as for SIP TLS.
        self.admin_tls = admin_tls(cfg) if cfg.admin is not None else None
        self.udp: UdpTransport | None = None
        self.ws: WsTransport | None = None
        self.wss: WsTransport | None = None
        #: The TCP and TLS listeners, by name.
        self.streams: dict[str, StreamTransport] = {}
        self.udp_address: tuple[str, int] | None = None
        self.ws_address: tuple[str, int] | None = None
        self.wss_address: tuple[str, int] | None = None
        #: Bound address of each stream listener, by name ("tcp", "tls").
        self.stream_addresses: dict[str, tuple[str, int]] = {}
        self.admin: AdminServer | None = None
        self.handoff: Handoff | None = None
        self.started_at = time.time()
        self._sweeper: asyncio.Task[None] | None = None
        self.shedwatch: ShedWatch | None = None
        self._stopped = asyncio.Event()

    def _tls_identity(self, peer: Peer) -> str | None:
        """The trusted identity (``--tls-trusted-peers``) that ``peer``'s mutual-TLS connection
        proved with its verified certificate (RFC 5922 §7.3), for the authenticator."""
        if peer.conn_id is None or self.tls is None:
            return None
        listener: StreamTransport | WsTransport | None = None
        if peer.transport == "tls":
            listener = self.streams.get("tls")
        elif peer.transport == "wss":
            listener = self.wss
        if listener is None:
            return None
        return self.tls.trusted_peer(listener.ssl_object(peer.conn_id))

    async def start(self) -> None:
        # Process-wide: one server per process.  Both parsers give the same messages
        # (tests/protocols/sip/test_speedups.py); "python" is for comparison and debugging.
        wanted = self.cfg.sip_parser == "c"
        if sip_parser.set_fast_path(wanted) != wanted:
            log.warning("the SIP parser's C fast path is not built: pure-Python parser only")
        if self.records is not None:
            await self.records.start()
        await self.subscribers.start()
        if self.cfg.auth == "off":
            log.warning("authentication is OFF (--auth off): anyone who reaches this server "
                        "can register any user and call through it")
        elif not await self.subscribers.count():
            log.warning("no subscribers yet, so every REGISTER is refused: add one with "
                        "`signaling subscribers add USER@%s` (asks for the password)",
                        min(self.core.domains))
        self.auth.start()
        tu = Handoff.for_worker(Router(self.registrar, self.proxy, self.tracer), self.core,
                                self.metrics, worker.current(), self.siblings)
        self.handoff = tu if isinstance(tu, Handoff) else None
        self.core.start(tu)
        if self.cfg.sip_udp is not None:
            self.udp = await start_udp(self.core, self.cfg.sip_udp, self.cfg.udp_buffer,
                                       self.cfg.advertised_host(), self.cfg.sip_udp_private)
            self.udp_address = self.udp.address
            if self.handoff is not None:  # a reload's new worker: not while the old one reads
                self.handoff.take_over(self.udp.pause_reading, self.udp.resume_reading)
        if self.cfg.sip_ws is not None:
            from signaling.transports.ws import WsTransport
            self.ws = WsTransport(self.core, self.cfg, self.metrics, self.node_id,
                                  self.registry.remove_connection)
            self.ws_address = await self.ws.start(*self.cfg.sip_ws)
        await self._start_secure_and_streams()
        self.proxy.start()
        if self.diameter is not None:
            await self.diameter.start()
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep(), name="sweeper")
        self.shedwatch = ShedWatch([("sip", self.core.c_shed)] + (
            [("diameter", self.diameter.m_shed)] if self.diameter is not None else []))
        self.shedwatch.start()
        if self.cfg.admin is not None:  # after the SIP listeners: /ready reports them
            from signaling.admin import AdminServer
            self.admin = AdminServer(self)
            await self.admin.start()
        log.info("signaling node %s started (registry %s, domains %s, SIP parser %s)",
                 self.node_id, self.cfg.registry, ", ".join(sorted(self.core.domains)),
                 "with C fast path" if sip_parser.ACCELERATED else "pure Python")

    def stop_taking_new(self) -> None:
        """A supervised worker leaving (reload, shutdown): stop reading and accepting on the
        sockets it shares with the slot's next worker, so new traffic goes there; what this
        one holds it finishes in ``stop``."""
        if self.udp is not None:
            self.udp.pause_reading()
        if self.ws is not None:
            self.ws.stop_accepting()
        if self.wss is not None:
            self.wss.stop_accepting()
        for stream in self.streams.values():
            stream.stop_accepting()
        if self.diameter is not None:
            self.diameter.stop_accepting()
        if self.handoff is not None:  # the slot's next worker may read now
            self.handoff.release()

    async def _start_secure_and_streams(self) -> None:
        cfg = self.cfg
        if self.tls is not None:
            self.tls.start()
        if cfg.sip_wss is not None:
            assert self.tls is not None  # config validation: sip_wss needs tls_cert
            from signaling.transports.ws import WsTransport
            self.wss = WsTransport(self.core, cfg, self.metrics, self.node_id,
                                   self.registry.remove_connection, name="wss",
                                   ssl_context=self.tls.front)
            self.wss_address = await self.wss.start(*cfg.sip_wss)
        for name, listen in (("tcp", cfg.sip_tcp), ("tls", cfg.sip_tls)):
            if listen is None:
                continue
            secure = name == "tls"
            assert not secure or self.tls is not None  # config validation
            transport = StreamTransport(
                name, self.core.receive, self.metrics, self.node_id,
                host=cfg.advertised_host(), limits=stream_limits(cfg),
                ssl_context=self.tls.front if secure and self.tls else None,
                client_ssl=self.tls.client_context() if secure and self.tls else None,
                overloaded=self.core.overloaded, on_connect_failed=self.core.connect_failed,
                on_lost=self.core.connection_closed)
            self.stream_addresses[name] = await transport.start(*listen)
            self.core.transports.add(transport)
            self.streams[name] = transport

    async def stop(self) -> None:
        log.info("shutting down: finishing in-flight transactions (at most %.1f s)",
                 self.cfg.shutdown_timeout)
        await self.core.stop(self.cfg.shutdown_timeout)
        await self.proxy.stop()
        await self.auth.stop()
        await self.subscribers.close()
        if self.diameter is not None:
            await self.diameter.close(min(self.cfg.shutdown_timeout, 2.0))
        if self.shedwatch is not None:
            await self.shedwatch.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        # Together: each waits (WS_CLOSE_TIMEOUT at most) for its clients' closing handshakes.
        await asyncio.gather(*(ws.close() for ws in (self.ws, self.wss) if ws is not None))
        for stream in self.streams.values():
            self.core.transports.remove(stream.info.name)
            await stream.close()
        if self.tls is not None:
            await self.tls.stop()
        if self.udp is not None:
            self.udp.close()
        if self.records is not None:
            await self.records.close()
        if self.admin is not None:  # kept until here so /ready says 503 while draining
            await self.admin.close()
        if self.tracer is not None:  # after the calls: their spans are exported, not lost
            await asyncio.get_running_loop().run_in_executor(None, self.tracer.shutdown)
            set_trace_ids(None)
        await self.registry.close()
        if self.handoff is not None:  # last: the old worker of a reload takes hand-offs to the end
            self.handoff.close()
        if self.siblings is not None:
            self.siblings.close()
        self._stopped.set()
        log.info("stopped")

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    async def _sweep(self) -> None:
        failures = RateLimitedLog(log, SWEEP_LOG_INTERVAL)
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            try:
                while await self.registry.expire(time.time(), SWEEP_BATCH) >= SWEEP_BATCH:
                    await asyncio.sleep(0)  # let traffic through between batches
            except Exception as exc:  # the registry may be unreachable: try again next tick
                failures.warning("sweep", "binding sweep failed: %s: %s",
                                 type(exc).__name__, exc)


def _shared(registry: Registry) -> Registry | None:
    """The registry when other processes share it (Redis, or the supervisor's over its
    socket): nonce counts are claimed there; an in-process one adds nothing to the local
    table."""
    return None if isinstance(registry, MemoryRegistry) else registry


def _guard_limits(cfg: Config) -> GuardLimits:
    return GuardLimits(pike_rate=cfg.pike_rate, pike_burst=cfg.pike_burst,
                       pike_block=cfg.pike_block, fail_limit=cfg.auth_fail_limit,
                       fail_window=cfg.auth_fail_window, fail_block=cfg.auth_fail_block,
                       max_sources=cfg.guard_table, trusted=tuple(parse_networks(cfg.trusted)))


def default_node_id(cfg: Config) -> str:
    """``host:port`` of the first SIP listener: this node's id in a shared registry."""
    port = cfg.sip_udp[1] if cfg.sip_udp else (cfg.sip_ws[1] if cfg.sip_ws else 0)
    return f"{socket.gethostname()}:{port}"
