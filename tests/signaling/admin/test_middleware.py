"""Bearer authentication and JSON errors, over real HTTP.

Auth rules and aiohttp's own errors (404, 405, 413) are checked against the real server process;
the catch-all for bugs is checked on a real aiohttp server whose only handler raises, since the
server's own handlers have no known bug to trigger.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from harness.serverproc import ServerProcess
from harness.services import RedisServer
from signaling.admin.app import MAX_API_REQUESTS
from signaling.admin.middleware import ApiError, auth_middleware, error_middleware
from signaling.config import Config
from signaling.metrics import Metrics
from signaling.registry.redis import RedisRegistry
from signaling.server import Server
from tests.signaling.admin.helpers import TOKEN, session


async def _status(port: int, path: str, authorization: str | None) -> tuple[int, dict[str, str],
                                                                            object]:
    headers = {"Authorization": authorization} if authorization is not None else {}
    async with aiohttp.ClientSession() as http, http.get(
            f"http://127.0.0.1:{port}{path}", headers=headers) as resp:
        body = await resp.json() if resp.content_type == "application/json" else None
        return resp.status, dict(resp.headers), body


async def test_api_requires_the_bearer_token(server: ServerProcess) -> None:
    port = server.admin_port
    assert port is not None
    status, headers, body = await _status(port, "/api/v1/stats", None)
    assert status == 401
    assert headers["WWW-Authenticate"] == 'Bearer realm="signaling"'
    assert body == {"error": "bearer token required", "status": 401}
    for wrong in ("Bearer nope", f"Basic {TOKEN}", "Bearer", f"Bearer {TOKEN}x", "",
                  f"Token {TOKEN}"):
        status, headers, body = await _status(port, "/api/v1/stats", wrong)
        assert status == 401, wrong
        assert headers["WWW-Authenticate"] == 'Bearer realm="signaling", error="invalid_token"'
        assert body == {"error": "invalid bearer token", "status": 401}
    # RFC 7235 §2.1: the scheme is case-insensitive.
    for right in (f"Bearer {TOKEN}", f"bearer {TOKEN}", f"BEARER  {TOKEN} "):
        status, _, _ = await _status(port, "/api/v1/stats", right)
        assert status == 200, right


async def test_auth_covers_unknown_api_paths_but_not_the_document(
        server: ServerProcess) -> None:
    port = server.admin_port
    assert port is not None
    for path in ("/api/v1/nothing-here", "/api/v1", "/api/v1/openapi.json/x",
                 "/api/v1/openapi.jsonx"):
        status, _, _ = await _status(port, path, None)
        assert status == 401, path
    # Issue 17: the document (and the docs page reading it) is readable without the token.
    status, _, _ = await _status(port, "/api/v1/openapi.json", None)
    assert status == 200
    status, _, body = await _status(port, "/api/v1/nothing-here", f"Bearer {TOKEN}")
    assert (status, body) == (404, {"error": "Not Found", "status": 404})


async def test_probes_and_metrics_are_open(server: ServerProcess) -> None:
    port = server.admin_port
    assert port is not None
    for path in ("/health", "/ready", "/metrics"):
        async with aiohttp.ClientSession() as http, http.get(
                f"http://127.0.0.1:{port}{path}") as resp:
            assert resp.status == 200, path


async def test_aiohttp_errors_come_out_as_json(server: ServerProcess) -> None:
    port = server.admin_port
    assert port is not None
    async with session(port) as http:
        async with http.get("/no/such/page") as resp:
            assert resp.status == 404
            assert await resp.json() == {"error": "Not Found", "status": 404}
        async with http.put("/api/v1/config", json={}) as resp:
            assert resp.status == 405
            assert resp.headers["Allow"] == "GET,PATCH"
            assert await resp.json() == {"error": "Method Not Allowed", "status": 405}
        async with http.patch("/api/v1/config", data=b"{" + b" " * 70_000 + b"}",
                              headers={"Content-Type": "application/json"}) as resp:
            assert resp.status == 413
            assert await resp.json() == {"error": "Request Entity Too Large", "status": 413}


async def _failing_app() -> TestServer:
    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("secret internal detail")

    async def refused(request: web.Request) -> web.Response:
        raise ApiError(418, "no coffee", {"X-Why": "teapot"})

    metrics = Metrics()
    app = web.Application(middlewares=[
        error_middleware(metrics.fast_counter("admin_requests", "", ["method", "status"])),
        auth_middleware("t")])
    app.router.add_get("/broken", broken)
    app.router.add_get("/refused", refused)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


async def test_a_bug_is_a_json_500_without_internals(caplog: pytest.LogCaptureFixture) -> None:
    server = await _failing_app()
    try:
        async with aiohttp.ClientSession(base_url=str(server.make_url("/"))) as http:
            with caplog.at_level(logging.ERROR, logger="signaling.admin.middleware"):
                async with http.get("/broken", headers={"Accept": "text/html"}) as resp:
                    assert resp.status == 500
                    assert resp.content_type == "application/json"
                    text = await resp.text()
            async with http.get("/refused") as resp:
                assert resp.status == 418
                assert resp.headers["X-Why"] == "teapot"
                assert await resp.json() == {"error": "no coffee", "status": 418}
    finally:
        await server.close()
    assert text == '{"error":"internal error (logged on the server)","status":500}'
    assert "secret" not in text and "Traceback" not in text
    # The operator's log has the whole story.
    (record,) = [r for r in caplog.records if r.name == "signaling.admin.middleware"]
    assert record.exc_info is not None and "secret internal detail" in str(record.exc_info[1])


async def test_api_saturation_is_a_prompt_503_while_probes_answer() -> None:
    redis = RedisServer(appendonly=False).start()
    # A real Redis registry with a registry timeout (10 s) well above the time the requests
    # take to reach their handlers on a busy machine, so the parked requests are still parked
    # when the extra one arrives.
    registry = RedisRegistry.from_url(redis.url, timeout=10.0)
    server = Server(Config(sip_udp=None, sip_ws=None, admin=("127.0.0.1", 0),
                           admin_token=TOKEN, diameter=None, registry=redis.url),
                    registry=registry)
    assert redis.proc is not None
    await server.start()
    try:
        assert server.admin is not None and server.admin.address is not None
        await registry.ping()
        redis.proc.send_signal(signal.SIGSTOP)  # every registry call now waits its timeout
        connector = aiohttp.TCPConnector(limit=MAX_API_REQUESTS + 10)
        async with session(server.admin.address[1], connector=connector) as http:
            async def get(path: str) -> tuple[int, dict[str, str], Any]:
                async with http.get(path) as resp:
                    return resp.status, dict(resp.headers), await resp.json()

            parked = [asyncio.create_task(get("/api/v1/registrations"))
                      for _ in range(MAX_API_REQUESTS)]
            # All of them in their handlers, waiting on Redis, however slow the machine.
            full = f"signaling_admin_requests_in_progress {float(MAX_API_REQUESTS)}"
            async with asyncio.timeout(30):
                while full not in server.metrics.exposition().decode():
                    await asyncio.sleep(0.05)
            status, headers, body = await get("/api/v1/stats")
            probe, _, _ = await get("/health")
            results = await asyncio.gather(*parked)
    finally:
        redis.proc.send_signal(signal.SIGCONT)
        await server.stop()
        redis.close()
    assert (status, body) == (503, {"error": "too many admin requests in progress",
                                    "status": 503})
    assert headers["Retry-After"] == "1"
    assert probe == 200
    # The parked ones end with the registry's own bound, not hanging.
    assert {r[0] for r in results} == {503}
    assert all(r[2]["error"].startswith("registry unavailable") for r in results)
    assert "signaling_admin_busy_total 1.0" in server.metrics.exposition().decode()
