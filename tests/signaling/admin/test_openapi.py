"""The OpenAPI document matches what is served: route for route, and under schemathesis.

Two checks from two sides: the document fetched over HTTP lists exactly the routes the running
aiohttp app has (no undocumented route, no documented ghost); and schemathesis, driven by that
document against a live server process with data in it (registrations, a confirmed call), finds
no server error and no answer that breaks the document (status codes, content types, schemas,
headers, auth, unsupported methods).
"""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path
from typing import Any

from harness.serverproc import ServerProcess
from signaling.config import Config
from signaling.server import Server
from tests.signaling.admin.helpers import TOKEN, call, register, session, wait_admin

#: Test cases per operation and phase: enough to cover every parameter's bounds and the error
#: paths (about 700 requests in all) while keeping the run to seconds.
MAX_EXAMPLES = 30
#: Fixed so a CI failure can be replayed; change it to explore other inputs.
SEED = 20261121
#: Bound on the whole schemathesis run.
SCHEMATHESIS_TIMEOUT = 300


def _in_process_config() -> Config:
    return Config(sip_udp=("127.0.0.1", 0), sip_ws=None, admin=("127.0.0.1", 0),
                  admin_token=TOKEN, diameter=None, domain=["example.com"])


async def test_document_lists_exactly_the_served_routes() -> None:
    server = Server(_in_process_config())
    await server.start()
    try:
        assert server.admin is not None and server.admin.address is not None
        host, port = server.admin.address
        assert host == "127.0.0.1"
        async with session(port) as http, http.get("/api/v1/openapi.json") as resp:
            assert resp.status == 200
            assert resp.content_type == "application/json"
            doc: dict[str, Any] = await resp.json()
        served = {(r.method, r.resource.canonical)
                  for r in server.admin.app.router.routes() if r.resource is not None}
    finally:
        await server.stop()
    documented = {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}
    assert served == documented
    assert doc["openapi"] == "3.1.0"
    for path, ops in doc["paths"].items():
        for op in ops.values():
            secured = path.startswith("/api/v1") and path != "/api/v1/openapi.json"
            assert ("security" in op) is secured, path
            assert ("401" in op["responses"]) is secured, path
            assert "503" in op["responses"] or not secured, path
            for ref in _refs(op):
                assert ref.removeprefix("#/components/schemas/") in doc["components"]["schemas"]


def _refs(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_schemathesis_finds_no_server_error_and_no_contract_break(tmp_path: Path) -> None:
    server = ServerProcess("--domain", "example.com", "--admin-token", TOKEN, admin=True,
                           diameter=True).start()
    sockets = []
    try:
        assert server.admin_port is not None
        wait_admin(server)
        # Data for the operations that need existing resources (followed through the links).
        for i in range(3):
            assert register(server.udp_port, f"st{random.randint(0, 1 << 30)}x{i}") == 200
        a, b, _ = call(server.udp_port, f"callee{random.randint(0, 1 << 30)}")
        sockets += [a, b]
        url = f"http://127.0.0.1:{server.admin_port}/api/v1/openapi.json"
        run = subprocess.run(
            [str(Path(sys.executable).with_name("schemathesis")), "run", url,
             "--header", f"Authorization: Bearer {TOKEN}", "--checks", "all",
             "--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED), "--workers", "1",
             "--no-color"],
            cwd=tmp_path, capture_output=True, text=True, timeout=SCHEMATHESIS_TIMEOUT,
            check=False)
        assert server.alive(), server.read_log()[-3000:] + run.stdout[-3000:]
    finally:
        for s in sockets:
            s.close()
        status = server.stop()
    failures = run.stdout[run.stdout.find("FAILURES"):]
    assert run.returncode == 0, failures[:8000] + run.stderr[-2000:]
    assert "Test cases:" in run.stdout
    assert status == 0
    assert "Traceback" not in server.log, server.log[-4000:]
