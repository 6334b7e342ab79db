"""Errors as JSON and bearer-token authentication for the admin API.

Every error the API gives, whether raised by a handler (``ApiError``), by aiohttp itself (no
route: 404, wrong method: 405, body over ``client_max_size``: 413) or by a bug, leaves as
``{"error": ..., "status": ...}`` with a JSON content type.  A bug is logged with its traceback
and answered 500 without internals: the traceback is for the operator's log, not for whoever
sent the request.

``/api/v1`` requires ``Authorization: Bearer <token>`` (RFC 6750 §2.1), except its OpenAPI
document.  The comparison is
constant-time (``hmac.compare_digest``) so response timing does not reveal how much of a guess
was right; a 401 carries ``WWW-Authenticate: Bearer`` (RFC 6750 §3), with
``error="invalid_token"`` when a token was presented but is wrong.  ``/health``, ``/ready`` and
``/metrics`` stay open for load balancers and Prometheus: the listener is loopback by default.
At most ``MAX_API_REQUESTS`` (see ``signaling.admin.app``) API requests run at once.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable, Mapping

import msgspec
from aiohttp import web
from aiohttp.typedefs import Middleware

from signaling.admin.schemas import ErrorBody
from signaling.metrics import FastCounter, Metrics

__all__ = [
    "API_PREFIX",
    "BUSY_RETRY_AFTER",
    "OPENAPI_PATH",
    "REALM",
    "ApiError",
    "auth_middleware",
    "error_middleware",
    "error_response",
    "json_response",
    "limit_middleware",
]

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
#: The OpenAPI document: under the prefix, yet open (describing the API reveals no data).
OPENAPI_PATH = f"{API_PREFIX}/openapi.json"
REALM = "signaling"
#: Methods counted by name in ``signaling_admin_requests_total``; anything else is "other", so
#: invented methods cannot grow the label set without bound.
_COUNTED_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: Headers of aiohttp's own errors worth keeping on the JSON version (405 lists what is allowed).
_KEPT_HEADERS = ("Allow", "WWW-Authenticate", "Retry-After")

#: Retry-After (seconds) when the API is saturated: requests finish within the registry
#: timeout, so a second later there is usually room again.
BUSY_RETRY_AFTER = 1

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    """An error answer a handler chose: status, message, optional headers."""

    def __init__(self, status: int, message: str,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


def json_response(body: object, status: int = 200,
                  headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(body=msgspec.json.encode(body), status=status,
                        content_type="application/json", headers=headers)


def error_response(status: int, message: str,
                   headers: Mapping[str, str] | None = None) -> web.Response:
    return json_response(ErrorBody(error=message, status=status), status, headers)


def error_middleware(requests: FastCounter) -> Middleware:
    """Turns every failure into a JSON error and counts answers by method and status."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await _answer(request, handler)
        method = request.method if request.method in _COUNTED_METHODS else "other"
        requests.inc(method, str(response.status))
        return response

    return middleware


async def _answer(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.message, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            return exc
        headers = {h: exc.headers[h] for h in _KEPT_HEADERS if h in exc.headers}
        return error_response(exc.status, exc.reason, headers)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("admin API: unexpected error on %s %s", request.method, request.path)
        return error_response(500, "internal error (logged on the server)")


def limit_middleware(limit: int, busy: FastCounter, metrics: Metrics) -> Middleware:
    """At most ``limit`` ``/api/v1`` requests in progress; more are answered 503 at once.

    API requests can be expensive (a page of registrations is a registry lookup per AOR) and
    slow when a backend is (up to the registry timeout): the bound keeps a burst of them, or a
    stuck backend, from piling up work.  Probes and ``/metrics`` are not counted, so they keep
    answering while the API is saturated.
    """
    in_flight = 0
    metrics.callback_gauge("admin_requests_in_progress",
                           f"Admin API requests being handled (at most {limit})", [],
                           lambda: {(): float(in_flight)})

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        nonlocal in_flight
        if not request.path.startswith(API_PREFIX):
            return await handler(request)
        if in_flight >= limit:
            busy.inc()
            raise ApiError(503, "too many admin requests in progress",
                           {"Retry-After": str(BUSY_RETRY_AFTER)})
        in_flight += 1
        try:
            return await handler(request)
        finally:
            in_flight -= 1

    return middleware


def auth_middleware(token: str) -> Middleware:
    """Requires the bearer ``token`` on every path under ``API_PREFIX``."""
    expected = token.encode()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if (path == API_PREFIX or path.startswith(API_PREFIX + "/")) and path != OPENAPI_PATH:
            _check(request.headers.get("Authorization"), expected)
        return await handler(request)

    return middleware


def _check(header: str | None, expected: bytes) -> None:
    if header is None:
        raise ApiError(401, "bearer token required",
                       {"WWW-Authenticate": f'Bearer realm="{REALM}"'})
    scheme, _, presented = header.strip().partition(" ")
    # RFC 7235 §2.1: the scheme is case-insensitive.
    if scheme.lower() != "bearer" or not hmac.compare_digest(
            presented.strip().encode("utf-8", "surrogateescape"), expected):
        raise ApiError(401, "invalid bearer token",
                       {"WWW-Authenticate": f'Bearer realm="{REALM}", error="invalid_token"'})
