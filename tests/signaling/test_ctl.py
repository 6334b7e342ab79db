"""``signaling ctl`` against a running server's admin API, as an operator types it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.serverproc import ServerProcess
from signaling.ctl import table
from tests.signaling.admin.helpers import TOKEN, call, register, wait_admin


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    proc = ServerProcess("--domain", "example.com", "--admin-token", TOKEN, admin=True,
                         diameter=True).start()
    wait_admin(proc)
    try:
        yield proc
    finally:
        assert proc.stop() == 0
        assert "Traceback" not in proc.log


def ctl(server: ServerProcess, *args: str, token: str | None = TOKEN,
        extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNALING_")}
    env["SIGNALING_ADMIN_URL"] = f"http://127.0.0.1:{server.admin_port}"
    if token is not None:
        env["SIGNALING_ADMIN_TOKEN"] = token
    env.update(extra_env or {})
    return subprocess.run([sys.executable, "-m", "signaling", "ctl", *args],
                          capture_output=True, text=True, timeout=30, env=env)


def test_stats_as_table_and_json(server: ServerProcess) -> None:
    out = ctl(server, "stats")
    assert out.returncode == 0, out.stderr
    header, *rows = out.stdout.splitlines()
    assert header.split() == ["NAME", "VALUE"]
    values = dict(line.split(None, 1) for line in rows)
    assert values["node_id"] == server_node(server)
    assert "tables.transactions" in values and "sip.requests_received" in values
    data = json.loads(ctl(server, "--json", "stats").stdout)
    assert data["node_id"] == values["node_id"]


def server_node(server: ServerProcess) -> str:
    return str(json.loads(ctl(server, "--json", "stats").stdout)["node_id"])


def test_registrations_listed_fetched_and_removed(server: ServerProcess) -> None:
    assert register(server.udp_port, "ctl-alice", contact_port=5071) == 200
    out = ctl(server, "registrations", "--prefix", "sip:ctl-alice")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:3] == ["AOR", "CONTACT", "EXPIRES_AT"]
    assert "sip:ctl-alice@example.com" in lines[1]
    assert "sip:ctl-alice@127.0.0.1:5071" in lines[1]
    page = json.loads(ctl(server, "--json", "registrations", "--prefix", "sip:ctl-alice").stdout)
    (item,) = page["items"]
    key = item["bindings"][0]["key"]
    one = ctl(server, "registration", "sip:ctl-alice@example.com")
    assert "sip:ctl-alice@127.0.0.1:5071" in one.stdout
    assert ctl(server, "unregister", "sip:ctl-alice@example.com", key).returncode == 0
    gone = ctl(server, "registration", "sip:ctl-alice@example.com")
    assert gone.returncode == 1
    assert gone.stderr.startswith("signaling ctl: 404: no bindings for")


def test_dialogs_listed_and_terminated(server: ServerProcess) -> None:
    a, b, call_id = call(server.udp_port, "ctl-bob")
    try:
        listing = json.loads(ctl(server, "--json", "dialogs").stdout)
        (dialog,) = [d for d in listing["items"] if d["call_id"] == call_id]
        table_out = ctl(server, "dialogs").stdout
        assert dialog["id"] in table_out and "confirmed" in table_out
        done = ctl(server, "terminate", dialog["id"])
        assert done.returncode == 0, done.stderr
        assert "terminated" in done.stdout
    finally:
        a.close()
        b.close()


def test_config_read_and_live_change(server: ServerProcess) -> None:
    out = ctl(server, "config")
    rows = dict([*line.split(None, 1), ""][:2] for line in out.stdout.splitlines()[1:])
    assert rows["admin_token"] == "***"  # masked, as the API shows it
    changed = ctl(server, "--json", "config", "--set", "queue_size=77",
                  "--set", "log_level=info")
    assert changed.returncode == 0, changed.stderr
    assert json.loads(changed.stdout)["config"]["queue_size"] == 77
    refused = ctl(server, "config", "--set", "workers=3")
    assert refused.returncode == 1 and "read-only" in refused.stderr


def test_diameter_peers_and_sessions(server: ServerProcess) -> None:
    out = ctl(server, "peers")
    assert out.returncode == 0
    assert out.stdout.split()[:2] == ["ORIGIN_HOST", "ORIGIN_REALM"]
    assert ctl(server, "sessions").returncode == 0


def test_token_from_a_file_and_missing_or_wrong_tokens(server: ServerProcess,
                                                       tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    assert ctl(server, "--token-file", str(token_file), "stats", token=None).returncode == 0
    missing = ctl(server, "stats", token=None)
    assert missing.returncode == 2 and "no token" in missing.stderr
    wrong = ctl(server, "stats", token="wrong")
    assert wrong.returncode == 1 and "401: invalid bearer token" in wrong.stderr


def test_unreachable_server_is_status_2(server: ServerProcess) -> None:
    out = ctl(server, "stats", extra_env={"SIGNALING_ADMIN_URL": "http://127.0.0.1:1"})
    assert out.returncode == 2 and "cannot reach the admin API" in out.stderr


def test_table_layout() -> None:
    assert table([{"a": 1, "bb": None}, {"a": "long value", "bb": 2}], ("a", "bb")) == (
        "A           BB\n1\nlong value  2")
