"""A span per admin API request when tracing is on (imported only then).

The caller's W3C ``traceparent`` (and ``tracestate``) is the parent: a script or an operator's
tool that traces its own work sees the admin request in its trace, whatever the node's
``--trace-sample`` (parent-based sampling follows the caller's sampled flag).  Requests without
a trace context start a new trace for ``--trace-sample`` of them, like calls.  The span is the
current one while the handler runs, so log lines written meanwhile carry its ids in the JSON
log format (``signaling.logs``).  Names carry the route template (``admin GET
/api/v1/dialogs/{dialog_id}``), never the path, so names stay few; attributes follow the
OpenTelemetry HTTP conventions (``http.request.method``, ``http.route``, ``url.path``,
``http.response.status_code``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware
from opentelemetry.trace import SpanKind, get_current_span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from signaling.tracing import Tracing

__all__ = ["current_ids", "tracing_middleware"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_PROPAGATOR = TraceContextTextMapPropagator()


def tracing_middleware(tracing: Tracing) -> Middleware:
    """The middleware (outermost: its span sees the answer the client gets)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        parent = None
        if "traceparent" in request.headers:
            parent = _PROPAGATOR.extract(dict(request.headers))
            if not get_current_span(parent).get_span_context().is_valid:
                parent = None  # a malformed header is ignored (W3C Trace Context §3.2.2)
        if parent is None and not tracing.sampled():
            return await handler(request)
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "(unmatched)"
        with tracing.tracer.start_as_current_span(
                f"admin {request.method} {route}", context=parent, kind=SpanKind.SERVER,
                attributes={"http.request.method": request.method, "http.route": route,
                            "url.path": request.path[:256]}) as span:
            response = await handler(request)
            span.set_attribute("http.response.status_code", response.status)
            return response

    return middleware


def current_ids() -> tuple[str, str] | None:
    """The current span's (trace id, span id) in hex, for JSON log lines."""
    ctx = get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")
