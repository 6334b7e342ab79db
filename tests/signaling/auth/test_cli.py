"""``signaling subscribers add|remove|list`` as a user runs it, beside a running server."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.serverproc import ServerProcess
from tests.signaling.auth.sipauth import DOMAIN, Client, open_peer


async def _settles(client: Client, password: str, status: int) -> int:
    """Register until the answer is ``status`` (the server rereads the file within a second
    of a change); bounded, so a server that never sees the change fails."""
    deadline = time.monotonic() + 10.0
    n = 0
    while True:
        n += 1
        got = (await client.register(password, call_id=f"try{n}"))[0].status
        if got == status or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.2)


def _cli(path: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "signaling", "subscribers",
                           "--subscribers", str(path), *args],
                          input=stdin, capture_output=True, text=True, timeout=60, env={})


async def test_add_list_remove_seen_by_a_running_server() -> None:
    path = Path(tempfile.mkdtemp()) / "subscribers.jsonl"
    with ServerProcess("--auth", "on", "--domain", DOMAIN, "--subscribers", str(path),
                       ws=False) as srv:
        added = _cli(path, "add", f"alice@{DOMAIN}", stdin="wonderland\n")
        assert added.returncode == 0 and added.stdout.strip() == f"added alice@{DOMAIN}"
        assert "wonderland" not in path.read_text() + added.stdout + added.stderr
        assert json.loads(path.read_text())["user"] == "alice"
        listed = _cli(path, "list")
        assert listed.stdout.splitlines() == [f"alice@{DOMAIN}\tMD5,SHA-256,SHA-512-256"]
        alice = Client(await open_peer(), srv.udp_port, "alice")
        assert await _settles(alice, "wonderland", 200) == 200
        assert _cli(path, "remove", f"alice@{DOMAIN}").returncode == 0
        assert _cli(path, "remove", f"alice@{DOMAIN}").returncode == 1
        assert await _settles(alice, "wonderland", 401) == 401
        assert _cli(path, "list").stdout == ""
    assert "wonderland" not in srv.log


def test_bad_identity_and_empty_password_are_refused() -> None:
    path = Path(tempfile.mkdtemp()) / "subscribers.jsonl"
    bad = _cli(path, "add", "alice", stdin="pw\n")
    assert bad.returncode == 2 and "USER@DOMAIN" in bad.stderr
    empty = _cli(path, "add", "alice@example.com", stdin="\n")
    assert empty.returncode == 2 and "empty password" in empty.stderr
    assert not path.exists()
