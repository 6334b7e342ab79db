"""A real server process with the admin API on, shared by the tests of one module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness.serverproc import ServerProcess, free_tcp_port
from tests.signaling.admin.helpers import TOKEN, wait_admin


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    proc = ServerProcess("--domain", "example.com", "--admin-token", TOKEN,
                         "--sip-tcp", f"127.0.0.1:{free_tcp_port()}", admin=True,
                         diameter=True).start()
    assert proc.admin_port is not None
    wait_admin(proc)
    try:
        yield proc
    finally:
        status = proc.stop()
        assert status == 0, proc.log
        assert "Traceback" not in proc.log, proc.log
