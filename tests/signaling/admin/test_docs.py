"""The docs page: open without a token, rendered by a real browser (headless Chromium) from the
served OpenAPI document, with nothing fetched from anywhere else."""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path

import aiohttp

from harness.serverproc import ServerProcess
from signaling.admin.docs import CSP
from tests.signaling.admin.helpers import session

CHROMIUM = "/usr/bin/chromium"
#: Bound on one headless page load (start-up dominates; a busy CI machine is slow).
BROWSER_TIMEOUT = 120


def _dump_dom(url: str) -> str:
    with tempfile.TemporaryDirectory() as profile:
        out = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-background-networking", "--no-first-run",
             f"--user-data-dir={profile}", "--virtual-time-budget=10000", "--dump-dom", url],
            capture_output=True, text=True, timeout=BROWSER_TIMEOUT, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


async def test_page_and_document_are_open_and_the_page_is_locked_down(
        server: ServerProcess) -> None:
    assert server.admin_port is not None
    async with session(server.admin_port, token=None) as http:
        async with http.get("/docs") as resp:
            assert resp.status == 200 and resp.content_type == "text/html"
            assert resp.headers["Content-Security-Policy"] == CSP
            page = await resp.text()
        async with http.get("/docs/docs.js") as resp:
            assert resp.status == 200 and resp.content_type == "text/javascript"
            script = await resp.text()
        async with http.get("/api/v1/openapi.json") as resp:
            assert resp.status == 200
        async with http.get("/api/v1/stats") as resp:
            assert resp.status == 401  # the API itself still needs the token
    # Only this origin: no absolute URL to fetch anything from.
    assert not re.search(r"(src|href)=\"(https?:)?//", page)
    assert "http://" not in script and "https://" not in script


async def test_chromium_renders_every_operation(server: ServerProcess) -> None:
    assert server.admin_port is not None
    async with aiohttp.ClientSession() as http, http.get(
            f"http://127.0.0.1:{server.admin_port}/api/v1/openapi.json") as resp:
        doc = await resp.json()
    operations = [op for ops in doc["paths"].values() for op in ops.values()]
    dom = _dump_dom(f"http://127.0.0.1:{server.admin_port}/docs")
    assert f'data-rendered="{len(operations)}"' in dom, dom[:3000]
    for op in operations:
        assert f'id="{op["operationId"]}"' in dom
    assert "Could not load the document" not in dom
    assert doc["info"]["title"] in dom and "patchConfig" in dom
    # Path templates and the lock on secured operations are shown.
    assert "/api/v1/registrations/{aor}" in dom and "bearer token" in dom


def test_static_files_ship_with_the_package() -> None:
    root = Path(__file__).resolve().parents[3]
    pyproject = (root / "pyproject.toml").read_text()
    assert '"signaling.admin" = ["static/*.html", "static/*.js"]' in pyproject
    for name in ("docs.html", "docs.js"):
        assert (root / "signaling/admin/static" / name).is_file()
