"""Admin API spans: the caller's W3C trace context is followed, a real OTLP/HTTP receiver
(tests/otlp.py) gets the span, and log lines written meanwhile carry its ids."""

from __future__ import annotations

import json
import logging

import aiohttp
import pytest

from signaling.config import load_config
from signaling.logs import JsonFormatter
from signaling.server import Server
from tests.otlp import attributes, receiver
from tests.signaling.admin.helpers import TOKEN

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict[str, object]] = []
        self.setFormatter(JsonFormatter("n"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


@pytest.mark.parametrize("sample", ["0.000001", "1"])
async def test_admin_request_joins_the_callers_trace(sample: str) -> None:
    capture = _Capture()
    logger = logging.getLogger("signaling.admin.livecfg")  # logs each applied change
    logger.addHandler(capture)
    level = logger.level
    logger.setLevel(logging.INFO)
    async with receiver() as (rx, url):
        server = Server(load_config({
            "sip_udp": "127.0.0.1:0", "sip_ws": "off", "admin": "127.0.0.1:0",
            "diameter": "off", "admin_token": TOKEN, "trace_sample": sample,
            "otlp_endpoint": url}, env={}))
        await server.start()
        try:
            assert server.admin is not None and server.admin.address is not None
            base = f"http://127.0.0.1:{server.admin.address[1]}"
            async with aiohttp.ClientSession(headers={
                    "Authorization": f"Bearer {TOKEN}",
                    "traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"}) as http, \
                    http.patch(f"{base}/api/v1/config", json={"retry_after": 7}) as resp:
                assert resp.status == 200
            [span] = await rx.wait_for("admin PATCH /api/v1/config")
        finally:
            await server.stop()
            logger.removeHandler(capture)
            logger.setLevel(level)
    # Followed whatever the node's own ratio: the caller sampled it.
    assert span.trace_id.hex() == TRACE_ID and span.parent_span_id.hex() == PARENT_ID
    assert attributes(span) == {"http.request.method": "PATCH", "http.route": "/api/v1/config",
                                "url.path": "/api/v1/config",
                                "http.response.status_code": 200}
    [line] = [x for x in capture.lines if "retry_after" in str(x["message"])]
    assert line["trace_id"] == TRACE_ID and line["span_id"] == span.span_id.hex()


async def test_untraced_requests_follow_the_ratio_and_bad_headers_are_ignored() -> None:
    async with receiver() as (rx, url):
        server = Server(load_config({
            "sip_udp": "127.0.0.1:0", "sip_ws": "off", "admin": "127.0.0.1:0",
            "diameter": "off", "admin_token": TOKEN, "trace_sample": "0.000001",
            "otlp_endpoint": url}, env={}))
        await server.start()
        try:
            assert server.admin is not None and server.admin.address is not None
            base = f"http://127.0.0.1:{server.admin.address[1]}"
            async with aiohttp.ClientSession() as http:
                for headers in ({}, {"traceparent": "00-zz-yy-01"},
                                {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-00"}):
                    for _ in range(20):
                        async with http.get(f"{base}/health", headers=headers) as resp:
                            assert resp.status == 200
                # One traced request afterwards: everything before it was exported already
                # when it arrives (one exporter, in order).
                async with http.get(f"{base}/health", headers={
                        "traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"}) as resp:
                    assert resp.status == 200
            spans = await rx.wait_for("admin GET /health")
        finally:
            await server.stop()
    assert len(spans) == 1 and spans[0].trace_id.hex() == TRACE_ID
