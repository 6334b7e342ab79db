"""What a worker takes from its supervisor, and what it imports (the whole life cycle runs in
test_supervisor.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import msgspec

from harness.serverproc import ServerProcess
from signaling.worker import WORKER_ENV, WorkerInfo


def _in_child(code: str, info: WorkerInfo | None, pass_fds: tuple[int, ...] = ()) -> str:
    env = {k: v for k, v in os.environ.items() if k != WORKER_ENV}
    if info is not None:
        env[WORKER_ENV] = msgspec.json.encode(info).decode()
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=60, pass_fds=pass_fds, check=True)
    return proc.stdout.strip()


def test_not_a_worker_without_the_variable() -> None:
    code = ("from signaling import worker; import socket; "
            "print(worker.current(), worker.inherited_socket('sip_udp', socket.AF_INET, "
            "socket.SOCK_DGRAM))")
    assert _in_child(code, None) == "None None"


def test_inherited_socket_and_ready_line() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.set_inheritable(True)
        read_fd, write_fd = os.pipe()
        info = WorkerInfo(slot=1, generation=3, fds={"sip_udp": sock.fileno()},
                          ready_fd=write_fd, supervisor=os.getpid())
        code = ("from signaling import worker; import socket; "
                "s = worker.inherited_socket('sip_udp', socket.AF_INET, socket.SOCK_DGRAM); "
                "worker.notify_ready({'port': s.getsockname()[1], 'name': worker.current().name})")
        try:
            _in_child(code, info, pass_fds=(sock.fileno(), write_fd))
        finally:
            os.close(write_fd)
        with os.fdopen(read_fd, "rb") as pipe:
            line = pipe.read()
        assert msgspec.json.decode(line) == {"port": sock.getsockname()[1], "name": "w1.3"}


def test_worker_whose_supervisor_is_gone_gets_sigterm() -> None:
    # The "supervisor" named is not the parent: die_with_parent sends SIGTERM at once.
    info = WorkerInfo(slot=0, generation=1, fds={}, ready_fd=-1, supervisor=1)
    code = ("import signal, time; from signaling import worker; "
            "signal.signal(signal.SIGTERM, lambda *a: (print('terminated'), exit(0))); "
            "worker.die_with_parent(); time.sleep(30); print('still alive')")
    assert _in_child(code, info) == "terminated"


def _imports_per_process(*flags: str, admin: bool) -> dict[str, int]:
    """How many processes of a real ``--processes 2`` server (the supervisor and its two
    workers) imported each module, from CPython's own report (``-X importtime``: one line per
    module a process imports, on its stderr, which the workers share with the supervisor)."""
    with ServerProcess("--processes", "2", *flags, ws=False, admin=admin,
                       env={"PYTHONPROFILEIMPORTTIME": "1"}) as server:
        deadline = time.monotonic() + 60
        while "2 workers serving" not in server.read_log():
            assert time.monotonic() < deadline, server.read_log()
            time.sleep(0.05)
    counts: dict[str, int] = {}
    for line in server.log.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            module = line.rsplit("|", 1)[1].strip()
            counts[module] = counts.get(module, 0) + 1
    return counts


def test_workers_import_only_what_they_serve() -> None:
    # A reload starts a new interpreter per worker beside the serving ones: what it imports
    # is CPU taken from them (benchmarks/README.md, session 13).  Without the admin API,
    # Diameter, a records database, WebSocket or tracing, no process imports their modules.
    counts = _imports_per_process(admin=False)
    # The report covers all three processes, one of them the supervisor.
    assert counts.get("signaling.sipcore") == 3
    assert counts.get("signaling.supervisor") == 1
    unused = ("aiohttp", "asyncpg", "opentelemetry", "signaling.admin", "signaling.diameter",
              "signaling.records.writer", "signaling.transports.ws", "signaling.tracing")
    assert sorted(m for m in counts if m.startswith(unused)) == []


def test_a_worker_serving_its_admin_api_imports_it() -> None:
    # Each worker serves a private admin API to the supervisor's front: then the two workers
    # and the supervisor import aiohttp, as configured (laziness must not leave it out).
    counts = _imports_per_process(admin=True)
    assert counts.get("signaling.supervisor") == 1
    assert counts.get("signaling.admin.app") == 3
    assert counts.get("aiohttp.web_app") == 3
    assert counts.get("signaling.admin.front") == 1
