"""A server with authentication on and a subscriber file, for the tests with real peers."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from harness.serverproc import ServerProcess
from signaling.auth.subscribers import Subscriber

__all__ = ["auth_server", "write_subscribers"]


def write_subscribers(users: dict[str, str], realm: str = "127.0.0.1") -> Path:
    """A subscriber file (HA1 hashes only) for ``users`` (name -> password)."""
    path = Path(tempfile.mkstemp(prefix="subscribers-", suffix=".jsonl")[1])
    with path.open("w") as fh:
        for user, password in users.items():
            fh.write(json.dumps(Subscriber.create(user, realm, password).to_json()) + "\n")
    return path


def auth_server(users: dict[str, str], *extra: str, ws: bool = False,
                admin: bool = False) -> ServerProcess:
    """``signaling serve --auth on`` knowing ``users``; flags after the harness's defaults."""
    path = write_subscribers(users)
    return ServerProcess("--auth", "on", "--pike-rate", "100", "--subscribers", str(path),
                         *extra, ws=ws, admin=admin)
