"""A real OTLP/HTTP traces endpoint for the tests: what a collector would receive.

An aiohttp endpoint that decodes every export with the official ``opentelemetry-proto``
definitions (``ExportTraceServiceRequest``) and keeps the spans.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

__all__ = ["Receiver", "attributes", "receiver"]


class Receiver:
    """An OTLP/HTTP traces endpoint that keeps every span it is sent, decoded."""

    def __init__(self) -> None:
        self.spans: list[Any] = []
        self.arrived = asyncio.Event()

    async def traces(self, request: web.Request) -> web.Response:
        body = ExportTraceServiceRequest()
        body.ParseFromString(await request.read())
        for resource_spans in body.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                self.spans.extend(scope_spans.spans)
        self.arrived.set()
        return web.Response(status=200, content_type="application/x-protobuf")

    def named(self, name: str) -> list[Any]:
        return [s for s in self.spans if s.name == name]

    async def wait_for(self, name: str, count: int = 1, timeout: float = 30.0) -> list[Any]:
        async with asyncio.timeout(timeout):
            while len(self.named(name)) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.named(name)


@asynccontextmanager
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    rx = Receiver()
    app = web.Application()
    app.router.add_post("/v1/traces", rx.traces)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield rx, f"http://127.0.0.1:{port}/v1/traces"
    finally:
        await runner.cleanup()


def attributes(span: Any) -> dict[str, Any]:
    """A decoded span's attributes: strings and integers."""
    out: dict[str, Any] = {}
    for kv in span.attributes:
        value = kv.value
        out[kv.key] = value.string_value if value.HasField("string_value") else value.int_value
    return out
