"""The admin API's request handlers: short adapters from HTTP to the server's own views.

Handlers never hold state: they read the server's tables (transactions, WebSocket connections,
dialogs, Diameter peers) synchronously, and call the registry with a bound on time
(``REGISTRY_CALL_TIMEOUT``) so a dead Redis gives a prompt 503 + Retry-After instead of a
hanging request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import TypeVar

import msgspec
from aiohttp import web

import signaling.admin.schemas as s
from signaling.admin.livecfg import LIVE_OPTIONS, PatchError, apply_patch, decode_patch
from signaling.admin.middleware import ApiError, json_response
from signaling.admin.observe import Observer
from signaling.admin.view import ServerView
from signaling.config import Config, describe
from signaling.dialogs import DialogInfo
from signaling.registry.base import RegistryError

__all__ = [
    "METRICS_CONTENT_TYPE",
    "READY_TIMEOUT",
    "REGISTRY_CALL_TIMEOUT",
    "RETRY_AFTER",
    "AdminApi",
    "bounded",
    "parse_query",
    "path_param",
]

#: Bound on one registry call made for the API.  Far above a healthy Redis round trip, short
#: enough that an operator's request fails fast while Redis is away.
REGISTRY_CALL_TIMEOUT = 5.0
#: Bound on the readiness probe's registry ping: load balancers probe every few seconds and
#: treat a slow answer as a failure anyway.
READY_TIMEOUT = 1.0
#: Retry-After sent with a 503 from an unreachable registry (RFC 9110 §10.2.3).
RETRY_AFTER = 5

Q = TypeVar("Q", bound=msgspec.Struct)
T = TypeVar("T")

#: The Prometheus text exposition format, version 0.0.4 (what prometheus_client generates).
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def parse_query(request: web.Request, kind: type[Q]) -> Q:
    """The query string as ``kind``; 400 naming the bad parameter otherwise."""
    try:
        return msgspec.convert(dict(request.query.items()), kind, strict=False)
    except msgspec.ValidationError as exc:
        raise ApiError(400, f"query: {exc}") from None


async def bounded(aw: Awaitable[T]) -> T:
    """A registry call bounded in time; 503 + Retry-After when the registry cannot answer."""
    try:
        async with asyncio.timeout(REGISTRY_CALL_TIMEOUT):
            return await aw
    except (TimeoutError, RegistryError) as exc:
        raise ApiError(503, f"registry unavailable: {str(exc) or 'timeout'}",
                       {"Retry-After": str(RETRY_AFTER)}) from None


def path_param(request: web.Request, name: str) -> str:
    """A path parameter within the documented length (``MAX_PATH_PARAM``), else 400."""
    value = request.match_info[name]
    if len(value) > s.MAX_PATH_PARAM:
        raise ApiError(400, f"{name}: longer than {s.MAX_PATH_PARAM} characters")
    return value


def _short(text: str, limit: int = 200) -> str:
    """``text`` quoted for an error message, cut so an answer never echoes a huge input."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _by_label(values: dict[tuple[str, ...], float]) -> dict[str, int]:
    out: dict[str, int] = {}
    for labels, value in values.items():
        key = "/".join(labels)
        out[key] = out.get(key, 0) + int(value)
    return out


class AdminApi:
    """Handlers bound to one server (see ``signaling.admin.routes`` for the table)."""

    def __init__(self, server: ServerView, observer: Observer) -> None:
        self.server = server
        self.observer = observer

    # -- health and metrics ------------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        return json_response(s.Health(status="alive", uptime=self.observer.server_uptime()))

    async def ready(self, request: web.Request) -> web.Response:
        checks = self.server.listeners()
        checks["registry"] = await self._registry_ping()
        database_up = self.server.database_up
        if database_up is not None:
            checks["database"] = "ok" if database_up() else "not connected"
        ok = all(v == "ok" for v in checks.values())
        return json_response(s.Ready(ready=ok, checks=checks), 200 if ok else 503)

    async def _registry_ping(self) -> str:
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                await self.server.registry.ping()
        except TimeoutError:
            return f"no answer within {READY_TIMEOUT} s"
        except (RegistryError, OSError) as exc:
            return f"unavailable: {exc}"
        return "ok"

    async def metrics(self, request: web.Request) -> web.Response:
        body = self.server.metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})

    # -- registrations -----------------------------------------------------------------------

    async def list_registrations(self, request: web.Request) -> web.Response:
        q = parse_query(request, s.RegistrationQuery)
        registry = self.server.registry
        aors = await bounded(registry.list_aors(q.offset, q.limit, q.prefix))
        now = time.time()
        found = await bounded(asyncio.gather(*(registry.lookup(a, now) for a in aors)))
        items = [s.AorBindings(aor, b) for aor, b in zip(aors, found, strict=True)]
        return json_response(s.RegistrationPage(q.offset, q.limit, q.prefix,
                                                self.observer.aors, items))

    async def get_registration(self, request: web.Request) -> web.Response:
        aor = path_param(request, "aor")
        bindings = await bounded(self.server.registry.lookup(aor, time.time()))
        if not bindings:
            raise ApiError(404, f"no bindings for {_short(aor)}")
        return json_response(s.AorBindings(aor, bindings))

    async def delete_binding(self, request: web.Request) -> web.Response:
        aor, key = path_param(request, "aor"), path_param(request, "key")
        if not await bounded(self.server.registry.remove_binding(aor, key)):
            raise ApiError(404, f"no binding {_short(key)} for {_short(aor)}")
        return web.Response(status=204)

    # -- dialogs -----------------------------------------------------------------------------

    async def list_dialogs(self, request: web.Request) -> web.Response:
        q = parse_query(request, s.PageQuery)
        items = [_dialog(d) for d in self.server.dialogs.list(q.offset, q.limit)]
        return json_response(s.DialogPage(q.offset, q.limit, self.observer.dialog_counts(),
                                          items))

    async def get_dialog(self, request: web.Request) -> web.Response:
        dialog_id = path_param(request, "dialog_id")
        info = self.server.dialogs.get(dialog_id)
        if info is None:
            raise ApiError(404, f"no dialog {_short(dialog_id)}")
        return json_response(_dialog(info))

    async def terminate_dialog(self, request: web.Request) -> web.Response:
        dialog_id = path_param(request, "dialog_id")
        if not await self.server.dialogs.terminate(dialog_id):
            raise ApiError(404, f"no dialog {_short(dialog_id)}")
        return json_response(s.Terminated(dialog_id, True))

    # -- diameter ----------------------------------------------------------------------------

    async def diameter_peers(self, request: web.Request) -> web.Response:
        dia = self.server.diameter
        return json_response(s.DiameterPeers(dia is not None,
                                             [] if dia is None else dia.peers()))

    async def diameter_sessions(self, request: web.Request) -> web.Response:
        q = parse_query(request, s.SessionQuery)
        dia = self.server.diameter
        if dia is None:
            return json_response(s.DiameterSessions(False, 0, []))
        return json_response(s.DiameterSessions(True, dia.session_count(),
                                                dia.sessions(q.limit)))

    # -- stats and config --------------------------------------------------------------------

    async def stats(self, request: web.Request) -> web.Response:
        srv = self.server
        return json_response(s.Stats(
            node_id=srv.node_id, started_at=srv.started_at,
            uptime=self.observer.server_uptime(), sip=self._sip_stats(),
            registrations=_by_label(srv.sip.registrations.values),
            diameter=self._diameter_stats(),
            queues=s.QueueStats(srv.queues.queue_size, srv.queues.depths()),
            tables=self._table_stats()))

    def _sip_stats(self) -> s.SipStats:
        c = self.server.sip
        return s.SipStats(
            requests_received=int(c.requests_received.total()),
            responses_sent=int(c.responses_sent.total()),
            requests_sent=int(c.requests_sent.total()),
            responses_received=int(c.responses_received.total()),
            retransmissions=int(c.retransmissions.total()),
            rejected=int(c.rejected.total()),
            dropped=_by_label(c.dropped.values), shed=_by_label(c.shed.values))

    def _diameter_stats(self) -> s.DiameterStats:
        dia = self.server.diameter
        if dia is None:
            return s.DiameterStats({}, {}, 0)
        return s.DiameterStats(_by_label(dia.m_requests.values), _by_label(dia.m_answers.values),
                               int(dia.m_shed.total()))

    def _table_stats(self) -> s.TableStats:
        srv = self.server
        dia = srv.diameter
        return s.TableStats(
            transactions=srv.transactions(),
            ws_connections=srv.ws_connections(),
            registered_aors=self.observer.aors, registered_bindings=self.observer.bindings,
            dialogs=sum(self.observer.dialog_counts().values()),
            diameter_peers=len(dia.peers()) if dia is not None else 0,
            diameter_sessions=dia.session_count() if dia is not None else 0)

    async def get_config(self, request: web.Request) -> web.Response:
        return json_response(self._config_view())

    async def patch_config(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            apply_patch(self.server, decode_patch(body))
        except PatchError as exc:
            raise ApiError(exc.status, str(exc)) from None
        return json_response(self._config_view())

    def _config_view(self) -> s.ConfigView:
        config = msgspec.convert(describe(self.server.cfg), Config)
        return s.ConfigView(config=config, live=list(LIVE_OPTIONS))


def _dialog(info: DialogInfo) -> s.DialogView:
    """The proxy's dialog info as the API's view (unknown extra fields are left out)."""
    return msgspec.convert(msgspec.to_builtins(info), s.DialogView)
