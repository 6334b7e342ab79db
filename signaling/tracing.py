"""OpenTelemetry traces of calls, transactions and registrations (issue 17).

Off by default (``--trace-sample 0``): the proxy and the registrar then hold ``None`` instead of
a tracer and make no tracing call at all on any message path.  When on, the shape is:

- a **call** span (kind SERVER) per dialog-creating INVITE, from the INVITE to the dialog's end,
  with the events ``ringing`` (first 18x with a To tag), ``answered`` (2xx), ``confirmed``
  (ACK) and ``ended`` (by whom, final status);
- a **transaction** span (kind SERVER) per request the proxy handles (INVITE, BYE, re-INVITE,
  MESSAGE ...), a child of its call when the call is known here, ended with the final status
  sent upstream;
- a **registration** span per REGISTER, ended with the registrar's answer.

W3C trace context: a ``traceparent`` (and ``tracestate``) header on an incoming request is the
parent of its spans (a call placed by a traced application keeps one trace), and the proxy puts
its own span's ``traceparent`` on what it forwards, so a traced callee joins the trace too.
Sampling is parent-based: a request that brings a trace context follows its sampled flag; a
new trace is started for ``--trace-sample`` of the others.  That ratio is decided here, first,
with one random draw, so an unsampled REGISTER or call costs that draw and nothing more (the
SDK's ratio sampler would be asked only after the attributes and the span were built: at 1%
that made a REGISTER a third dearer, bench_tracing).  An in-dialog request of a call that was
not sampled starts no trace of its own.

Attributes follow the OpenTelemetry semantic conventions where they exist (``network.peer.*``,
``network.transport``, ``network.protocol.name``); SIP has none, so ours are stable names under
``sip.``.  Call-ID and AOR are personal data in many jurisdictions: they are exported as a
keyed hash unless ``--trace-plain-ids`` (the key is per process start, so ids from one node
correlate within a run, which is what a trace needs).

Export never slows signaling: finished spans go into a bounded queue (``EXPORT_QUEUE``) that a
thread drains in batches to the OTLP/HTTP endpoint; when the queue is full (collector down or
slow) spans are dropped and counted (``signaling_trace_spans_dropped_total``), never logged one
by one.  The SDK's own batch processor logs a warning per dropped span, which a storm would turn
into a log flood: hence this small processor.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from opentelemetry.trace import (
    Span,
    SpanKind,
    Status,
    StatusCode,
    get_current_span,
    set_span_in_context,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from protocols.sip.message import Request
from signaling.metrics import Metrics
from signaling.transports.base import Peer

__all__ = ["EXPORT_BATCH", "EXPORT_QUEUE", "BoundedExportProcessor", "Tracing"]

log = logging.getLogger(__name__)

#: Finished spans waiting for export.  A call makes about four; 20,000 is several seconds of a
#: loaded node, ~20 MB at worst, and the bound that keeps a dead collector from growing memory.
EXPORT_QUEUE = 20_000
#: Spans per OTLP request: the collector's usual batch size.
EXPORT_BATCH = 512
#: Seconds between exports when the queue is not filling faster: the SDK's default schedule
#: delay (OTEL_BSP_SCHEDULE_DELAY).  An export is an HTTP request whose fixed cost dwarfs a
#: span's: at low rates shorter intervals send many tiny batches (bench_tracing).
EXPORT_INTERVAL = 5.0
#: Calls and transactions with an open span: bounded like the tables they shadow, so spans of
#: calls that never end (a bug, a lost BYE beyond the dialog table's own bounds) cannot pile up.
MAX_OPEN_SPANS = 100_000

_PROPAGATOR = TraceContextTextMapPropagator()


class BoundedExportProcessor(SpanProcessor):
    """Batches finished spans to an exporter from a thread; a full queue drops and counts."""

    def __init__(self, exporter: SpanExporter, metrics: Metrics, *, queue: int = EXPORT_QUEUE,
                 batch: int = EXPORT_BATCH, interval: float = EXPORT_INTERVAL) -> None:
        self._exporter = exporter
        self._queue: deque[ReadableSpan] = deque()
        self._bound = queue
        self._batch = batch
        self._interval = interval
        self._wake = threading.Event()
        self._stopping = False
        self.c_spans = metrics.fast_counter("trace_spans", "Finished trace spans, by outcome",
                                            ["outcome"])
        self._thread = threading.Thread(target=self._run, name="otlp-export", daemon=True)
        self._thread.start()

    def on_start(self, span: Any, parent_context: Context | None = None) -> None:
        """Nothing to do when a span starts: only finished spans are exported."""

    def on_end(self, span: ReadableSpan) -> None:
        if len(self._queue) >= self._bound:
            self.c_spans.inc("dropped")
            return
        self._queue.append(span)  # deque.append is atomic: no lock on the signaling thread
        if len(self._queue) >= self._batch:
            self._wake.set()

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(self._interval)
            self._wake.clear()
            self._drain()
        self._drain()

    def _drain(self) -> None:
        while self._queue:
            batch = [self._queue.popleft() for _ in range(min(self._batch, len(self._queue)))]
            try:
                ok = self._exporter.export(batch) is SpanExportResult.SUCCESS
            except Exception:  # a collector's failure must never reach signaling
                ok = False
            self.c_spans.inc("exported" if ok else "export_failed", amount=len(batch))

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        self._wake.set()
        deadline = timeout_millis / 1000
        waited = 0.0
        while self._queue and waited < deadline:
            threading.Event().wait(0.05)
            waited += 0.05
        return not self._queue

    def shutdown(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join(5.0)
        self._exporter.shutdown()


class Tracing:
    """The spans of one node's SIP side (see the module docstring)."""

    def __init__(self, *, endpoint: str, sample: float, node_id: str, metrics: Metrics,
                 plain_ids: bool = False, exporter: SpanExporter | None = None) -> None:
        resource = Resource.create({"service.name": "signaling",
                                    "service.instance.id": node_id})
        # Roots are only ever started once ``_root`` decided to sample them.
        self.provider = TracerProvider(sampler=ParentBased(ALWAYS_ON), resource=resource)
        self.sample = sample
        self.processor = BoundedExportProcessor(
            exporter if exporter is not None else OTLPSpanExporter(endpoint=endpoint, timeout=5),
            metrics)
        self.provider.add_span_processor(self.processor)
        self.tracer = self.provider.get_tracer("signaling")
        self.plain_ids = plain_ids
        self._key = os.urandom(16)
        self._calls: dict[str, Span] = {}
        self._txns: dict[object, Span] = {}
        metrics.callback_gauge("trace_open_spans", "Calls and transactions with an open span",
                               [], lambda: {(): float(len(self._calls) + len(self._txns))})

    # -- ids -----------------------------------------------------------------------------------

    def ident(self, value: str) -> str:
        """``value`` as exported: itself with ``--trace-plain-ids``, else a keyed hash."""
        if self.plain_ids:
            return value
        return hashlib.blake2s(value.encode("utf-8", "surrogateescape"), key=self._key,
                               digest_size=8).hexdigest()

    # -- calls ---------------------------------------------------------------------------------

    def sampled(self) -> bool:
        """Whether to start a new trace (``--trace-sample``): one random draw."""
        return random.random() < self.sample

    def _parent(self, request: Request) -> tuple[bool, Context | None]:
        """Whether ``request`` is traced, and the trace context it brings (None: a new
        trace)."""
        if request.extra:
            incoming = _incoming(request)
            if incoming is not None:
                return True, incoming
        return self.sampled(), None

    def call_started(self, dialog_id: str, invite: Request, peer: Peer) -> None:
        if len(self._calls) >= MAX_OPEN_SPANS:
            return
        traced, parent = self._parent(invite)
        if not traced:
            return
        span = self.tracer.start_span("SIP call", context=parent,
                                      kind=SpanKind.SERVER,
                                      attributes=self._request_attributes(invite, peer))
        self._calls[dialog_id] = span

    def call_event(self, dialog_id: str, name: str, attributes: Mapping[str, Any] = {}) -> None:
        span = self._calls.get(dialog_id)
        if span is not None:
            span.add_event(name, dict(attributes))

    def call_ended(self, dialog_id: str, ended_by: str, status: int) -> None:
        span = self._calls.pop(dialog_id, None)
        if span is None:
            return
        span.add_event("ended", {"sip.ended_by": ended_by or "unknown"})
        if status:
            span.set_attribute("sip.status_code", status)
        if status >= 500 or ended_by == "timeout":
            span.set_status(Status(StatusCode.ERROR))
        span.end()

    # -- transactions --------------------------------------------------------------------------

    def transaction_started(self, key: object, request: Request, peer: Peer,
                            dialog_id: str | None) -> None:
        if len(self._txns) >= MAX_OPEN_SPANS:
            return
        if dialog_id is not None:
            call = self._calls.get(dialog_id)
            if call is None:
                return  # a call not sampled (or not seen here): its requests are not either
            parent: Context | None = set_span_in_context(call)
        else:
            traced, parent = self._parent(request)
            if not traced:
                return
        self._txns[key] = self.tracer.start_span(
            f"SIP {request.method}", context=parent, kind=SpanKind.SERVER,
            attributes=self._request_attributes(request, peer))

    def traceparent(self, key: object) -> list[tuple[str, str]]:
        """The W3C trace context headers to put on what the transaction forwards."""
        span = self._txns.get(key)
        if span is None or not span.get_span_context().is_valid:
            return []
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, context=set_span_in_context(span))
        return [(name, carrier[name]) for name in ("traceparent", "tracestate")
                if name in carrier]

    def transaction_answered(self, key: object, status: int) -> None:
        span = self._txns.pop(key, None)
        if span is None:
            return
        span.set_attribute("sip.status_code", status)
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))
        span.end()

    # -- registrations -------------------------------------------------------------------------

    def registration(self, request: Request, peer: Peer, status: int, start_ns: int) -> None:
        """One REGISTER, from ``start_ns`` (time.time_ns) to now."""
        traced, parent = self._parent(request)
        if not traced:
            return
        attributes = self._request_attributes(request, peer)
        attributes["sip.aor"] = self.ident(str(request.to.uri))
        attributes["sip.status_code"] = status
        span = self.tracer.start_span("SIP REGISTER", context=parent,
                                      kind=SpanKind.SERVER, attributes=attributes,
                                      start_time=start_ns)
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))
        span.end()

    def shutdown(self) -> None:
        for span in [*self._calls.values(), *self._txns.values()]:
            span.end()
        self._calls.clear()
        self._txns.clear()
        self.provider.shutdown()

    def _request_attributes(self, request: Request, peer: Peer) -> dict[str, Any]:
        return {
            "network.protocol.name": "sip",
            "network.transport": "udp" if peer.transport == "udp" else "tcp",
            "network.peer.address": peer.host,
            "network.peer.port": peer.port,
            "sip.transport": peer.transport,
            "sip.method": request.method,
            "sip.call_id": self.ident(request.call_id),
        }


def _incoming(request: Request) -> Context | None:
    """The parent context a request brings in valid ``traceparent``/``tracestate`` headers."""
    carrier = _trace_headers(request.extra)
    if not carrier:
        return None
    context = _PROPAGATOR.extract(carrier)
    return context if get_current_span(context).get_span_context().is_valid else None


def _trace_headers(extra: Sequence[tuple[str, str]]) -> dict[str, str]:
    return {name.lower(): value for name, value in extra
            if name.lower() in ("traceparent", "tracestate")}
