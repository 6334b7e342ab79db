"""Private Redis, Redis Cluster and PostgreSQL instances for the tests (real servers, never mocks).

Each class starts a server in its own temporary directory on a free loopback port and can stop,
kill and restart it on the same port (the durability and outage tests need that).  The pytest
fixtures in tests/conftest.py share one instance per session; environment variables name existing
instances instead (then nothing is started):

* ``SIGNALING_TEST_REDIS_URL``          e.g. ``redis://127.0.0.1:6379/0``
* ``SIGNALING_TEST_REDIS_CLUSTER_URL``  e.g. ``redis+cluster://127.0.0.1:7000``
* ``SIGNALING_TEST_DATABASE_URL``       e.g. ``postgresql://postgres@127.0.0.1:5432/postgres``

Tests isolate themselves inside a shared instance (a key prefix per test for Redis, a database per
test for Postgres), so an external instance is never flushed.
"""

from __future__ import annotations

import glob
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = [
    "PORT_RANGE",
    "PostgresServer",
    "RedisCluster",
    "RedisServer",
    "free_port",
    "postgres_bin",
]

# Ports assigned to these private instances (the project's port plan gives this range to the
# registry/records fixtures, so parallel helpers and CI jobs never collide).
PORT_RANGE = (39500, 39999)

# How long a server may take to accept connections.  initdb + postgres start in ~2 s here; a
# loaded 2-core CI machine can be several times slower.
START_TIMEOUT = 60.0

# How long a graceful stop may take before the process is killed.
STOP_TIMEOUT = 20.0

_used_ports: set[int] = set()


def free_port() -> int:
    """A loopback TCP port in ``PORT_RANGE`` that nobody listens on (and its +10000 bus port).

    Redis Cluster uses port + 10000 for its bus, so that one must be free too; ports above 55535
    would overflow, hence the range.
    """
    candidates = list(range(PORT_RANGE[0], PORT_RANGE[1] + 1))
    random.shuffle(candidates)
    for port in candidates:
        if port in _used_ports:
            continue
        if _bindable(port) and _bindable(port + 10000):
            _used_ports.add(port)
            return port
    raise RuntimeError(f"no free port in {PORT_RANGE}")


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _stop(proc: subprocess.Popen[bytes] | None, sig: int) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class RedisServer:
    """A private ``redis-server`` on 127.0.0.1."""

    def __init__(
        self,
        *,
        port: int | None = None,
        appendonly: bool = True,
        cluster: bool = False,
        base_dir: str | None = None,
    ) -> None:
        self.port = port or free_port()
        self.appendonly = appendonly
        self.cluster = cluster
        self.dir = Path(tempfile.mkdtemp(prefix=f"redis-{self.port}-", dir=base_dir))
        self.proc: subprocess.Popen[bytes] | None = None
        self._started = port is not None  # a caller-chosen port is never changed

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        """Start (or restart on the same port and data directory, keeping the AOF).

        A first start whose port was taken meanwhile (another test run picked it) moves to
        another free port; a restart keeps its port, as the tests of reconnection need.
        """
        attempts = 1 if self._started else 5
        for _ in range(attempts):
            self.proc = subprocess.Popen(
                self._command(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if self._wait_ours():
                self._started = True
                return self
            if self._started:
                break
            self.port = free_port()
        raise RuntimeError(f"redis-server could not start (see {self.dir / 'redis.log'})")

    def _command(self) -> list[str]:
        cmd = [
            shutil.which("redis-server") or "redis-server",
            "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
            # No RDB snapshots: durability comes from the AOF when asked for.
            "--save", "", "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec", "--protected-mode", "no",
            "--logfile", str(self.dir / "redis.log"), "--daemonize", "no",
        ]
        if self.cluster:
            cmd += [
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", "2000",
            ]
        return cmd

    def _wait_ours(self) -> bool:
        """True once *our* process answers PING on the port (its process_id matches, so a
        foreign server on the same port is never mistaken for it); False if ours exited."""
        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            # The port opens before the AOF is loaded; INFO answers LOADING until then.
            try:
                info = self.cli("INFO", "server", timeout=1.0)
            except subprocess.TimeoutExpired:  # something on the port that is not Redis
                info = ""
            if f"process_id:{self.proc.pid}" in info.split():
                return True
            time.sleep(0.05)
        self.kill()
        return False

    def cli(self, *args: str, timeout: float = 30.0) -> str:
        """Run ``redis-cli`` against this server and return its output."""
        out = subprocess.run(
            ["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), *args],
            capture_output=True, text=True, timeout=timeout, check=False,
        )
        return out.stdout

    def kill(self) -> None:
        """SIGKILL: the crash case (only what reached the AOF survives)."""
        _stop(self.proc, signal.SIGKILL)

    def stop(self) -> None:
        _stop(self.proc, signal.SIGTERM)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisCluster:
    """Three Redis masters on loopback joined with ``redis-cli --cluster create``."""

    # Three masters is the minimum Redis Cluster accepts; no replicas (tests need slots spread,
    # not fail-over).
    MASTERS = 3

    def __init__(self, *, appendonly: bool = False) -> None:
        self.base = tempfile.mkdtemp(prefix="redis-cluster-")
        self.nodes = [
            RedisServer(cluster=True, appendonly=appendonly, base_dir=self.base)
            for _ in range(self.MASTERS)
        ]

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def start(self) -> RedisCluster:
        try:
            return self._start()
        except BaseException:
            self.close()  # never leave half a cluster running
            raise

    def _start(self) -> RedisCluster:
        for node in self.nodes:
            node.start()
        addrs = [f"127.0.0.1:{n.port}" for n in self.nodes]
        out = subprocess.run(
            ["redis-cli", "--cluster", "create", *addrs, "--cluster-replicas", "0",
             "--cluster-yes"],
            capture_output=True, text=True, timeout=120, check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {out.stdout}{out.stderr}")
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if all("cluster_state:ok" in n.cli("CLUSTER", "INFO") for n in self.nodes):
                return self
            time.sleep(0.1)
        raise RuntimeError("cluster did not reach cluster_state:ok")

    def close(self) -> None:
        for node in self.nodes:
            node.close()
        shutil.rmtree(self.base, ignore_errors=True)


def postgres_bin(name: str) -> str:
    """Path of a PostgreSQL server binary (Debian keeps them out of PATH)."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"PostgreSQL binary {name} not found (apt-get install postgresql)")
    return path


class PostgresServer:
    """A private PostgreSQL cluster: ``initdb`` into a temp dir, ``postgres`` on a free port.

    PostgreSQL refuses to run as root, so as root the server runs as the ``postgres`` OS user
    (created by the Debian package) in a directory that user owns.  Authentication is ``trust``
    on loopback and on the private socket directory.
    """

    def __init__(self, *, port: int | None = None, fsync: bool = True) -> None:
        self.port = port or free_port()
        self.fsync = fsync
        self.dir = Path(tempfile.mkdtemp(prefix=f"pg-{self.port}-"))
        self.data = self.dir / "data"
        self.proc: subprocess.Popen[bytes] | None = None
        self._started = port is not None
        self._user: str | None = None
        if os.geteuid() == 0:
            self._user = "postgres"
            shutil.chown(self.dir, user="postgres", group="postgres")
        self._initdb()

    @property
    def dsn(self) -> str:
        return self.dsn_for("postgres")

    def dsn_for(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run_as(self) -> dict[str, object]:
        if self._user is None:
            return {}
        return {"user": self._user, "group": self._user, "extra_groups": []}

    def _initdb(self) -> None:
        out = subprocess.run(
            [postgres_bin("initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
             "-E", "UTF8", "--no-sync", "--locale=C"],
            capture_output=True, text=True, timeout=120, check=False, cwd=self.dir,
            **self._run_as(),  # type: ignore[call-overload]
        )
        if out.returncode != 0:
            raise RuntimeError(f"initdb failed: {out.stdout}{out.stderr}")

    def start(self) -> PostgresServer:
        """Start (or restart on the same port with the same data).

        As for Redis, a first start whose port was taken meanwhile moves to another port.
        """
        attempts = 1 if self._started else 5
        for _ in range(attempts):
            log = open(self.dir / "postgres.log", "ab")  # noqa: SIM115 - handed to the child
            try:
                self.proc = subprocess.Popen(
                    self._command(), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                    cwd=self.dir, **self._run_as(),  # type: ignore[call-overload]
                )
            finally:
                log.close()
            if self._wait_ready():
                self._started = True
                return self
            if self._started:
                break
            self.port = free_port()
        raise RuntimeError(f"postgres could not start (see {self.dir / 'postgres.log'})")

    def _command(self) -> list[str]:
        return [
            postgres_bin("postgres"), "-D", str(self.data), "-p", str(self.port),
            "-k", str(self.dir), "-c", "listen_addresses=127.0.0.1",
            "-c", f"fsync={'on' if self.fsync else 'off'}",
            # Small shared memory: several private clusters may run at once on a CI box.
            "-c", "shared_buffers=32MB", "-c", "max_connections=100",
        ]

    def _wait_ready(self) -> bool:
        """True once our postmaster reports "ready" in its own postmaster.pid (so a foreign
        server on the port is never mistaken for it); False if it exited."""
        assert self.proc is not None
        pidfile = self.data / "postmaster.pid"
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                lines = pidfile.read_text().splitlines()
            except OSError:
                lines = []
            # Line 1: the postmaster's pid; line 8: its status (postmaster.pid format).
            if len(lines) >= 8 and lines[0] == str(self.proc.pid) and lines[7].strip() == "ready":
                return True
            time.sleep(0.05)
        _stop(self.proc, signal.SIGKILL)
        return False

    def stop(self) -> None:
        """Fast shutdown (SIGINT): clients are disconnected, data is consistent."""
        _stop(self.proc, signal.SIGINT)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
