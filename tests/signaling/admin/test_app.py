"""The admin listener: where it binds, its token, its life cycle, malformed requests."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest

from harness.serverproc import ServerProcess
from signaling.admin import app as app_module
from signaling.config import Config
from signaling.server import Server
from tests.signaling.admin.helpers import TOKEN, scrape, session, value, wait_admin
from tests.tlscerts import make_pki

_GENERATED = re.compile(r"signaling: admin API token \(generated\): (\S+)")


def test_default_listener_is_loopback_not_the_sip_interface() -> None:
    cfg = Config()
    assert cfg.admin == ("127.0.0.1", 8081)
    assert cfg.sip_udp is not None and cfg.admin[0] != cfg.sip_udp[0]


async def test_generated_token_is_printed_once_and_works() -> None:
    server = ServerProcess("--domain", "example.com", admin=True).start()
    try:
        wait_admin(server)
        assert server.admin_port is not None
        tokens = _GENERATED.findall(server.read_log())
        assert len(tokens) == 1
        (token,) = tokens
        assert len(token) >= 43  # 32 random bytes, base64url
        async with session(server.admin_port, token=token) as http, \
                http.get("/api/v1/config") as resp:
            assert resp.status == 200
            assert (await resp.json())["config"]["admin_token"] == "***"
        async with session(server.admin_port, token="guess") as http, \
                http.get("/api/v1/config") as resp:
            assert resp.status == 401
    finally:
        assert server.stop() == 0
    assert server.log.count(token) == 1  # printed once, never logged again


async def test_token_from_the_environment() -> None:
    server = ServerProcess(admin=True, env={"SIGNALING_ADMIN_TOKEN": "from-env-token"}).start()
    try:
        wait_admin(server)
        assert server.admin_port is not None
        async with session(server.admin_port, token="from-env-token") as http, \
                http.get("/api/v1/stats") as resp:
            assert resp.status == 200
    finally:
        assert server.stop() == 0
    assert not _GENERATED.search(server.log)
    assert "from-env-token" not in server.log


def _config(admin: tuple[str, int] | None) -> Config:
    return Config(sip_udp=("0.0.0.0", 0), sip_ws=None, admin=admin, admin_token=TOKEN,
                  diameter=None, domain=["example.com"])


async def test_listener_starts_with_the_server_and_closes_with_it() -> None:
    server = Server(_config(("127.0.0.1", 0)))
    await server.start()
    try:
        assert server.admin is not None and server.admin.address is not None
        host, port = server.admin.address
        assert host == "127.0.0.1"  # even though SIP listens on 0.0.0.0
        async with aiohttp.ClientSession() as http, http.get(
                f"http://127.0.0.1:{port}/health") as resp:
            assert resp.status == 200
    finally:
        await server.stop()
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return
    writer.close()
    raise AssertionError("admin port still accepting after stop()")


async def test_admin_off_means_no_listener() -> None:
    server = Server(_config(None))
    await server.start()
    try:
        assert server.admin is None
    finally:
        await server.stop()


async def test_malformed_http_is_answered_400_and_counted(server: ServerProcess) -> None:
    assert server.admin_port is not None
    async with session(server.admin_port, token=None) as http:
        before = await scrape(http)
        # (Non-HTTP bytes as the first request, e.g. TLS, aiohttp logs at debug level only:
        # the filter never sees those, so they are not counted.)
        for garbage in (b"GET / HTTP/1.1\r\nX-Bad: \x00\r\n\r\n",
                        b"GET /health HTTP/1.1\r\nBad Header: x\r\n\r\n"):
            with socket.create_connection(("127.0.0.1", server.admin_port), timeout=3) as s:
                s.sendall(garbage)
                # Answered by aiohttp's parser before any handler: a plain-text 400.
                assert s.recv(65535).split(b"\r\n")[0] in (b"HTTP/1.0 400 Bad Request",
                                                           b"HTTP/1.1 400 Bad Request")
        after = await scrape(http)
    assert (value(after, "signaling_admin_malformed_requests_total")
            - value(before, "signaling_admin_malformed_requests_total")) == 2
    assert "Traceback" not in server.read_log()


async def test_half_open_connections_are_closed_after_the_idle_timeout(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Clients that connect and send nothing, or half a request, are closed (issue 20 #6)."""
    monkeypatch.setattr(app_module, "IDLE_TIMEOUT", 1.0)
    server = Server(_config(("127.0.0.1", 0)))
    await server.start()
    try:
        assert server.admin is not None and server.admin.address is not None
        port = server.admin.address[1]
        conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(200)]
        for i, (_, writer) in enumerate(conns):
            if i % 2:  # half of them send a request line and one header, never the end
                writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n")
                await writer.drain()
        started = time.monotonic()
        # Each read returns b"" (EOF) once the server closed that connection; the bound is
        # far above the 1 s timeout so a busy machine cannot fail it, and far below the
        # library's default of an hour.
        async with asyncio.timeout(30):
            ends = await asyncio.gather(*(reader.read() for reader, _ in conns))
        assert all(end == b"" for end in ends)
        assert time.monotonic() - started >= 0.5  # not refused at once: closed when idle
        # The listener still serves a client that does send its request.
        async with aiohttp.ClientSession() as http, http.get(
                f"http://127.0.0.1:{port}/health") as resp:
            assert resp.status == 200
        for _, writer in conns:
            writer.close()
    finally:
        await server.stop()


# -- HTTPS (--admin-tls-cert / --admin-tls-key) ----------------------------------------------


def _curl(url: str, ca: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """curl, a real HTTPS client, verifying the server against the test CA by name."""
    return subprocess.run(["curl", "-sS", "--max-time", "20", "--cacert", str(ca),
                           "-o", "-", "-w", "\n%{http_code} %{ssl_verify_result}", *args, url],
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("processes", ["1", "2"])
def test_admin_api_over_https(processes: str, tmp_path: Path) -> None:
    """One process, or the supervisor's front of two workers: HTTPS only, the certificate
    verified by name, the API and /metrics answer; plain HTTP gets no answer."""
    pki = make_pki(tmp_path / "pki")
    server = ServerProcess("--processes", processes, "--admin-token", TOKEN,
                           "--admin-tls-cert", str(pki.cert("server")),
                           "--admin-tls-key", str(pki.key("server")), admin=True).start()
    try:
        wait_admin(server)
        base = f"https://localhost:{server.admin_port}"
        deadline = time.monotonic() + 60  # the front answers before its workers serve
        while not _curl(f"{base}/ready", pki.ca).stdout.endswith("\n200 0"):
            assert time.monotonic() < deadline, server.read_log()
            time.sleep(0.2)
        out = _curl(f"{base}/api/v1/stats", pki.ca, "-H", f"Authorization: Bearer {TOKEN}")
        assert out.returncode == 0 and out.stdout.endswith("\n200 0"), out
        out = _curl(f"{base}/metrics", pki.ca)
        assert out.returncode == 0 and out.stdout.endswith("\n200 0"), out
        assert "signaling_build_info" in out.stdout
        # A client that does not know the CA refuses the server; plain HTTP is not spoken.
        out = subprocess.run(["curl", "-sS", "--max-time", "20", f"{base}/health"],
                             capture_output=True, text=True, timeout=60, check=False)
        assert out.returncode == 60, out  # CURLE_PEER_FAILED_VERIFICATION
        out = subprocess.run(["curl", "-sS", "--max-time", "20",
                              f"http://127.0.0.1:{server.admin_port}/health"],
                             capture_output=True, text=True, timeout=60, check=False)
        assert out.returncode != 0 and "200" not in out.stdout, out
        log = server.read_log()
        assert f"on https://127.0.0.1:{server.admin_port}" in log, log
    finally:
        assert server.stop() == 0
    assert "Traceback" not in server.log


@pytest.mark.parametrize("processes", ["1", "2"])
def test_bad_admin_certificate_is_a_one_line_error(processes: str, tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    missing = tmp_path / "nope.crt"
    for cert, key, expected in (
            (missing, pki.key("server"), f"admin_tls_cert: certificate file {missing} does not "
                                         "exist"),
            (pki.cert("server"), pki.key("other"), "admin_tls_cert: cannot use certificate")):
        server = ServerProcess("--processes", processes, "--admin-tls-cert", str(cert),
                               "--admin-tls-key", str(key), admin=True)
        out = subprocess.run(server.args(), capture_output=True, text=True, timeout=60,
                             check=False)
        assert out.returncode == 2, out
        errors = [line for line in out.stderr.splitlines() if "configuration error" in line]
        assert len(errors) == 1 and expected in errors[0], out.stderr
        assert "Traceback" not in out.stderr
