"""JsSIP (npm ``jssip`` under Node, tests/peers/jssip) registers over WebSocket (RFC 7118)
with a password, answering the 401 (RFC 3261 §22.2); with a wrong password it is refused.

JsSIP computes MD5 only and reads the first challenge: the server's default offer."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from tests.signaling.auth.peers import auth_server
from tests.signaling.test_websocket_client import NODE_TIMEOUT, _read_line, jssip

__all__ = ["jssip"]  # the fixture, shared with the WebSocket client tests

USERS = {"alice": "wonder-land-42"}


def _register(jssip_dir: Path, ws_port: int, password: str) -> dict[str, object]:
    node = shutil.which("node")
    assert node is not None
    proc = subprocess.Popen(
        [node, str(jssip_dir / "register.js"), f"ws://127.0.0.1:{ws_port}",
         "sip:alice@127.0.0.1"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "SIP_PASSWORD": password})
    try:
        outcome: dict[str, object] = json.loads(_read_line(proc, NODE_TIMEOUT))
    finally:
        proc.communicate(timeout=NODE_TIMEOUT)  # closes stdin: register.js exits
    return outcome


def test_jssip_registers_with_a_password_and_not_without_it(jssip: Path) -> None:
    with auth_server(USERS, ws=True) as srv:
        assert srv.ws_port is not None
        good = _register(jssip, srv.ws_port, USERS["alice"])
        assert good["event"] == "registered" and good["status"] == 200, good
        bad = _register(jssip, srv.ws_port, "not-her-password")
        assert bad["event"] == "registrationFailed" and bad["status"] == 401, bad
    assert "wonder-land-42" not in srv.log
