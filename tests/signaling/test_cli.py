"""``signaling serve`` as a user runs it: exit statuses and messages."""

from __future__ import annotations

import contextlib
import gc
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.serverproc import ServerProcess, free_udp_port, options, sip_request
from signaling.cli import (
    GC_GEN0_THRESHOLD,
    GC_GEN1_THRESHOLD,
    GC_GEN2_THRESHOLD,
    _tune_gc,
    build_parser,
)


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "signaling", *args], capture_output=True,
                          text=True, timeout=30, env=env)


def test_bad_configuration_is_one_line_and_status_2() -> None:
    proc = _run("serve", "--workers", "0")
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "configuration error: workers" in proc.stderr


def test_unknown_environment_variable_is_status_2() -> None:
    proc = _run("serve", env={"SIGNALING_NOPE": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2
    assert "SIGNALING_NOPE" in proc.stderr


def test_missing_or_bad_certificate_is_one_line_and_status_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    for cert, expected in ((tmp_path / "none.pem", "does not exist"),
                           (bad, "cannot use certificate")):
        proc = _run("serve", "--sip-udp", "off", "--sip-ws", "off", "--admin", "off",
                    "--diameter", "off", "--sip-tls", "127.0.0.1:0", "--tls-cert", str(cert),
                    "--tls-key", str(cert))
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip().count("\n") == 0, proc.stderr
        assert "configuration error: tls_cert" in proc.stderr and expected in proc.stderr


@pytest.mark.parametrize("kind", [socket.SOCK_DGRAM, socket.SOCK_STREAM])
def test_port_taken_is_status_1(kind: int) -> None:
    """UDP and TCP both listen on --sip-udp's port by default (RFC 3261 §18): either taken
    stops the start."""
    port = free_udp_port()
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", port))
        if kind == socket.SOCK_STREAM:
            s.listen()
        proc = _run("serve", "--sip-udp", f"127.0.0.1:{port}", "--sip-ws", "off",
                    "--admin", "off", "--diameter", "off")
    assert proc.returncode == 1
    assert "cannot start" in proc.stderr


def test_unreachable_subscriber_database_is_status_1() -> None:
    proc = _run("serve", "--sip-udp", f"127.0.0.1:{free_udp_port()}", "--sip-ws", "off",
                "--admin", "off", "--diameter", "off",
                "--subscribers", "postgresql://nobody@127.0.0.1:1/none")
    assert proc.returncode == 1
    assert "cannot start: subscribers database" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_every_option_has_a_flag() -> None:
    help_text = build_parser().format_help()
    assert "serve" in help_text
    serve = build_parser().parse_args(["serve", "--domain", "a,b", "--domain", "c", "--relay"])
    assert serve.domain == ["a,b", "c"]
    assert serve.relay is True


def _first_answer(server: ServerProcess) -> None:
    """Poll with OPTIONS every 2 ms and return at the first answer: as early in the server's
    start-up as anything outside can tell it is there."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(0.002)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert server.proc is not None and server.proc.poll() is None, server.read_log()
            s.sendto(options(server.udp_port), ("127.0.0.1", server.udp_port))
            with contextlib.suppress(TimeoutError, ConnectionRefusedError):
                if s.recv(65535):
                    return
        raise AssertionError("no answer")


def test_sigterm_as_soon_as_it_answers_is_a_clean_stop() -> None:
    """The UDP listener answers before start-up has finished (WebSocket, admin API, Diameter
    and the collector tuning come after it): a SIGTERM in that window is still a clean
    stop with status 0, never the default action that kills the process."""
    for _ in range(3):
        server = ServerProcess(admin=True, diameter=True)
        with open(server.log_path, "wb") as log:
            server.proc = subprocess.Popen(server.args(), stdout=log, stderr=subprocess.STDOUT)
        _first_answer(server)
        assert server.stop() == 0, server.log[-2000:]


def test_udp_port_held_by_another_server_is_status_1() -> None:
    """Issue 17: with SO_REUSEADDR a second server bound the same UDP port and took part of
    the first one's traffic."""
    first = ServerProcess("--domain", "example.com").start()
    try:
        proc = _run("serve", "--sip-udp", f"127.0.0.1:{first.udp_port}", "--sip-ws", "off",
                    "--admin", "off", "--diameter", "off")
        assert proc.returncode == 1
        assert "cannot start" in proc.stderr
        assert first.alive()
    finally:
        assert first.stop() == 0


def test_version() -> None:
    from signaling.metrics import version

    proc = _run("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"signaling {version()}"
    assert version() != "0"


def test_json_log_format_is_one_object_per_line() -> None:
    server = ServerProcess("--domain", "example.com", "--log-format", "json",
                           "--node-id", "node-j", "--admin-token", "t" * 32, admin=True).start()
    try:
        assert sip_request(server.udp_port, options(server.udp_port)) is not None
    finally:
        assert server.stop() == 0
    lines = [json.loads(line) for line in server.log.splitlines() if line.strip()]
    assert len(lines) >= 3
    for entry in lines:
        assert {"ts", "level", "logger", "message", "node", "pid"} <= set(entry)
        assert entry["node"] == "node-j"
    messages = [e["message"] for e in lines]
    assert any(m.startswith("signaling node node-j started") for m in messages)
    assert messages[-1] == "stopped"


def test_unknown_log_format_is_status_2() -> None:
    proc = _run("serve", "--log-format", "yaml")
    assert proc.returncode == 2 and "log_format" in proc.stderr


def test_tune_gc_sets_the_thresholds_and_keeps_full_collections_rare() -> None:
    before = gc.get_threshold()
    try:
        _tune_gc()
        assert gc.get_threshold() == (GC_GEN0_THRESHOLD, GC_GEN1_THRESHOLD, GC_GEN2_THRESHOLD)
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
    # Short young and middle collections (their pauses grow with the first two), full ones
    # no more often than 50,000 x 50 x 1,000 made them: one per 2.5e9 net allocations.
    assert GC_GEN0_THRESHOLD * GC_GEN1_THRESHOLD <= 50_000
    assert GC_GEN0_THRESHOLD * GC_GEN1_THRESHOLD * GC_GEN2_THRESHOLD >= 2_500_000_000
