"""``signaling serve`` as a user runs it: exit statuses and messages."""

from __future__ import annotations

import socket
import subprocess
import sys

from signaling.cli import build_parser
from tests.serverproc import free_udp_port


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


def test_port_taken_is_status_1() -> None:
    port = free_udp_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", port))
        proc = _run("serve", "--sip-udp", f"127.0.0.1:{port}", "--sip-ws", "off",
                    "--admin", "off", "--diameter", "off")
    assert proc.returncode == 1
    assert "cannot start" in proc.stderr


def test_every_option_has_a_flag() -> None:
    help_text = build_parser().format_help()
    assert "serve" in help_text
    serve = build_parser().parse_args(["serve", "--domain", "a,b", "--domain", "c", "--relay"])
    assert serve.domain == ["a,b", "c"]
    assert serve.relay is True
