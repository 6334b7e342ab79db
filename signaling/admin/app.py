"""The admin listener: an aiohttp application serving the route table on its own socket.

The listener is separate from every SIP and Diameter socket and defaults to 127.0.0.1:8081
(``--admin``), so the API is never reachable on the SIP interface unless the operator binds it
there on purpose.  The bearer token comes from ``--admin-token`` / ``SIGNALING_ADMIN_TOKEN``;
without one, a random token is generated at start and printed once to stderr (it is not stored
anywhere else, and the config view shows it masked).  With ``--admin-tls-cert`` and
``--admin-tls-key`` the listener speaks HTTPS only (TLS 1.2 and 1.3, the certificate reloaded
when its file changes, as for SIP over TLS: ``signaling.tls``).
"""

from __future__ import annotations

import logging
import secrets
import sys
from typing import TYPE_CHECKING

import msgspec
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from signaling.admin.handlers import AdminApi
from signaling.admin.middleware import auth_middleware, error_middleware, limit_middleware
from signaling.admin.observe import Observer
from signaling.admin.openapi import build_document
from signaling.admin.routes import Route, route_table
from signaling.admin.view import view_of
from signaling.metrics import FastCounter, Metrics, version

if TYPE_CHECKING:
    from signaling.server import Server
    from signaling.tracing import Tracing

__all__ = [
    "IDLE_TIMEOUT",
    "MAX_API_REQUESTS",
    "MAX_BODY_BYTES",
    "MAX_REQUEST_LINE",
    "TOKEN_BYTES",
    "AdminServer",
    "MalformedRequestFilter",
    "build_app",
]

log = logging.getLogger(__name__)

#: Largest request body read.  The only body is a PATCH of a few options (well under 1 KiB);
#: 64 KiB is generous and bounds what one request can make the server buffer (413 beyond).
MAX_BODY_BYTES = 64 * 1024
#: ``/api/v1`` requests in progress at once.  Operators and their scripts make a handful; 64
#: absorbs a dashboard's burst while bounding registry work (a page of registrations is up to
#: 1,000 lookups) and requests parked on a slow backend.
MAX_API_REQUESTS = 64
#: Random bytes in a generated token: 256 bits, beyond any guessing (RFC 6750 §5.2).
TOKEN_BYTES = 32
#: Seconds open admin requests get to finish when the server stops.
SHUTDOWN_TIMEOUT = 2.0
#: Pending connections on the admin socket: a few operators and one Prometheus.
BACKLOG = 128
#: Longest request line.  Path parameters are AORs and binding keys of up to
#: ``MAX_PATH_PARAM`` characters, and percent-encoding makes a 4-byte character 12 bytes: two
#: such parameters fit in 64 KiB, aiohttp's default 8 KiB does not (and its refusal is not JSON).
MAX_REQUEST_LINE = 64 * 1024
#: Seconds a connection may stay without a complete request: from accept to the end of the
#: first request's headers, and idle between requests.  aiohttp's default (3,630 s) let a
#: thousand clients that connect and send nothing (or half a header) hold a thousand sockets
#: for an hour.  Operators' tools send their request at once; Prometheus reconnects per scrape
#: when its interval is longer.
IDLE_TIMEOUT = 10.0


def build_app(api: AdminApi, token: str, metrics: Metrics,
              tracing: Tracing | None = None) -> tuple[web.Application, list[Route]]:
    """The aiohttp application and the route table it serves."""
    requests = metrics.fast_counter("admin_requests", "Admin API answers by method and status",
                                    ["method", "status"])
    busy = metrics.fast_counter("admin_busy", "Admin API requests refused 503: too many at once")
    middlewares = [error_middleware(requests), auth_middleware(token),
                   limit_middleware(MAX_API_REQUESTS, busy, metrics)]
    if tracing is not None:  # OpenTelemetry is imported only when tracing is on
        from signaling.admin.spans import tracing_middleware
        middlewares.insert(0, tracing_middleware(tracing))
    app = web.Application(middlewares=middlewares, client_max_size=MAX_BODY_BYTES)
    document: list[bytes] = []

    async def openapi(request: web.Request) -> web.Response:
        return web.Response(body=document[0], content_type="application/json")

    routes = route_table(api, openapi)
    document.append(msgspec.json.encode(build_document(routes, "signaling admin API",
                                                       version())))
    for r in routes:
        # add_route, not add_get: no implicit HEAD route that the document would not list.
        app.router.add_route(r.method, r.path, r.handler, name=r.operation_id)
    return app, routes


class MalformedRequestFilter(logging.Filter):
    """Counts unparsable HTTP requests instead of logging their tracebacks.

    aiohttp answers them 400 before any handler runs and logs each one at ERROR with a
    traceback.  A malformed request is the client's fault, and a scanner could fill the log
    with them: the counter (``signaling_admin_malformed_requests_total``) says how many.
    Non-HTTP bytes as a connection's first request (TLS to a plain port) aiohttp logs at debug
    level only, so unless the log level is debug those never reach the filter or the counter.
    """

    def __init__(self, counter: FastCounter) -> None:
        super().__init__()
        self.counter = counter

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            self.counter.inc()
            return False
        return True


class AdminServer:
    """Owns the admin listener, its token and the admin-side gauges."""

    def __init__(self, server: Server) -> None:
        self.server = view_of(server)
        cfg = server.cfg
        self.generated = not cfg.admin_token
        self.token = cfg.admin_token or secrets.token_urlsafe(TOKEN_BYTES)
        # Kept in the config so the config view shows it (masked) as set.
        cfg.admin_token = self.token
        self.observer = Observer(self.server)
        self.api = AdminApi(self.server, self.observer)
        self.app, self.routes = build_app(self.api, self.token, server.metrics,
                                          self.server.tracing)
        self.tls = server.admin_tls
        self.address: tuple[str, int] | None = None
        self._runner: web.AppRunner | None = None
        self._malformed = MalformedRequestFilter(server.metrics.fast_counter(
            "admin_malformed_requests", "Requests aiohttp could not parse (answered 400)"))

    async def start(self) -> tuple[str, int]:
        listen = self.server.cfg.admin
        assert listen is not None
        self.observer.start()
        logging.getLogger("aiohttp.server").addFilter(self._malformed)
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False,
                               shutdown_timeout=SHUTDOWN_TIMEOUT,
                               max_line_size=MAX_REQUEST_LINE,
                               keepalive_timeout=IDLE_TIMEOUT)
        await runner.setup()
        self._runner = runner
        site = web.TCPSite(runner, listen[0], listen[1], backlog=BACKLOG, reuse_address=True,
                           ssl_context=self.tls.front if self.tls is not None else None)
        await site.start()
        if self.tls is not None:
            self.tls.start(on_hup=False)
        sockname = runner.addresses[0]
        self.address = (str(sockname[0]), int(sockname[1]))
        if self.generated:
            # Printed once on stderr rather than logged: log records get shipped and kept.
            print(f"signaling: admin API token (generated): {self.token}", file=sys.stderr,
                  flush=True)
        log.info("admin API on %s://%s:%d (bearer token %s)",
                 "http" if self.tls is None else "https", *self.address,
                 "generated" if self.generated else "configured")
        return self.address

    async def close(self) -> None:
        logging.getLogger("aiohttp.server").removeFilter(self._malformed)
        await self.observer.close()
        if self.tls is not None:
            await self.tls.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
