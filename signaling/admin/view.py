"""What the admin API may see and change of a running server: one typed view.

The admin layer used to walk the server's object graph (``server.proxy.dialogs``,
``getattr(server, "diameter", None)``) with ``Any`` where the coupling was widest.  Instead,
``view_of`` reads the server once, at the admin listener's start, into a ``ServerView``: plain
values, counters and small protocols naming exactly the operations the API uses.  The admin
modules import nothing else of the server, so a refactoring of the server changes ``view_of``
and nothing behind it, and mypy checks every use.

Everything is read-only except the live limits of ``PATCH /api/v1/config`` (``LiveTargets``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from signaling.auth.guard import Guard
from signaling.auth.subscribers import SubscriberStore
from signaling.config import Config
from signaling.dialogs import DialogInfo
from signaling.diameter.server import PeerInfo, SessionInfo
from signaling.metrics import FastCounter, Metrics
from signaling.registry.base import Registry

if TYPE_CHECKING:
    from signaling.server import Server
    from signaling.tracing import Tracing

__all__ = [
    "AuthView",
    "DialogsView",
    "DiameterView",
    "LiveTargets",
    "QueuesView",
    "ServerView",
    "SipCounters",
    "view_of",
]


class DialogsView(Protocol):
    """The proxy's dialog table (``signaling.dialogs.DialogTable``)."""

    def __len__(self) -> int: ...
    def counts_by_state(self) -> dict[str, int]: ...
    def list(self, offset: int = 0, limit: int = 100) -> list[DialogInfo]: ...
    def get(self, dialog_id: str) -> DialogInfo | None: ...
    async def terminate(self, dialog_id: str) -> bool: ...


class DiameterView(Protocol):
    """The Diameter node: its peers, Credit-Control sessions and counters."""

    def peers(self) -> list[PeerInfo]: ...
    def sessions(self, limit: int = 100) -> list[SessionInfo]: ...
    def session_count(self) -> int: ...
    @property
    def m_requests(self) -> FastCounter: ...
    @property
    def m_answers(self) -> FastCounter: ...
    @property
    def m_shed(self) -> FastCounter: ...


class QueuesView(Protocol):
    """The SIP core's sharded work queues."""

    @property
    def queue_size(self) -> int: ...
    def depths(self) -> list[int]: ...


@dataclass(frozen=True, slots=True)
class SipCounters:
    """The SIP core's message counters, by the names the API gives them."""

    requests_received: FastCounter
    responses_sent: FastCounter
    requests_sent: FastCounter
    responses_received: FastCounter
    retransmissions: FastCounter
    rejected: FastCounter
    dropped: FastCounter
    shed: FastCounter
    registrations: FastCounter


@dataclass(frozen=True, slots=True)
class LiveTargets:
    """What besides ``cfg`` learns a live option's new value."""

    resize_queues: Callable[[int], None]
    set_registrar_limit: Callable[[str, int], None]
    set_max_dialogs: Callable[[int], None]


@dataclass(frozen=True, slots=True)
class AuthView:
    """Subscribers and source blocks (signaling.auth)."""

    subscribers: SubscriberStore
    guard: Guard
    #: The guard's clock (the event loop's monotonic time).
    now: Callable[[], float]


@dataclass(frozen=True, slots=True)
class ServerView:
    """A running node as the admin API sees it (see the module docstring)."""

    cfg: Config
    metrics: Metrics
    node_id: str
    started_at: float
    registry: Registry
    sip: SipCounters
    queues: QueuesView
    live: LiveTargets
    #: Live SIP transactions.
    transactions: Callable[[], int]
    #: Open WebSocket connections, handshakes included.
    ws_connections: Callable[[], int]
    #: Listener name -> "ok" or why not, for ``/ready``.
    listeners: Callable[[], dict[str, str]]
    #: PostgreSQL connection state for ``/ready``; None when records are off.
    database_up: Callable[[], bool] | None
    dialogs: DialogsView
    diameter: DiameterView | None
    #: The node's OpenTelemetry tracing, None while it is off (``--trace-sample 0``).
    tracing: Tracing | None = None
    #: Subscribers and blocks; None on a node built without them.
    auth: AuthView | None = None


def view_of(server: Server) -> ServerView:
    """The view of ``server``: the one place that knows the server's shape."""
    core, cfg = server.core, server.cfg

    def listeners() -> dict[str, str]:
        checks = {"sip_core": "ok" if core.accepting else "shutting down"}
        if cfg.sip_udp is not None:
            up = server.udp is not None and "udp" in core.transports
            checks["sip_udp"] = "ok" if up else "not listening"
        if cfg.sip_ws is not None:
            checks["sip_ws"] = "ok" if server.ws_address is not None else "not listening"
        for name in ("tcp", "tls", "wss"):
            if getattr(cfg, f"sip_{name}") is not None:
                checks[f"sip_{name}"] = "ok" if name in core.transports else "not listening"
        if cfg.diameter is not None and server.diameter is not None:
            checks["diameter"] = "ok"
        return checks

    def set_registrar_limit(name: str, value: int) -> None:
        setattr(server.registrar, name, value)

    def set_max_dialogs(value: int) -> None:
        server.proxy.dialogs.max_dialogs = value

    records = server.records
    return ServerView(
        cfg=cfg, metrics=server.metrics, node_id=server.node_id, started_at=server.started_at,
        registry=server.registry,
        sip=SipCounters(core.c_req_in, core.c_resp_out, core.c_req_out, core.c_resp_in,
                        core.c_retrans, core.c_reject, core.c_drop, core.c_shed,
                        server.registrar.c_register),
        queues=core.dispatcher,
        live=LiveTargets(core.dispatcher.resize, set_registrar_limit, set_max_dialogs),
        # Answers kept for retransmissions are transactions' Completed states (sipcore).
        transactions=lambda: len(core.table) + len(core.answered),
        ws_connections=lambda: server.ws.connections if server.ws is not None else 0,
        listeners=listeners,
        database_up=(lambda: records.database_up) if records is not None else None,
        dialogs=server.proxy.dialogs, diameter=server.diameter, tracing=server.tracer,
        auth=AuthView(server.subscribers, server.guard, core.now))
