"""Run the real server (``python -m signaling serve``) as a child process for black-box tests.

``ServerProcess`` picks free loopback ports, starts the server, waits until its SIP UDP port
answers an OPTIONS (the server's own health probe), and on ``stop()`` sends SIGTERM and collects
the log.  Tests use ``sip_request`` to send one datagram and read the answer.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["OPEN", "ServerProcess", "free_tcp_port", "free_udp_port", "free_udp_ports", "options",
           "server_env", "sip_request"]

#: Ports for servers under test: away from the fixtures' range (services.PORT_RANGE).
SERVER_PORTS = (20000, 29999)
START_TIMEOUT = 20.0
#: Tests that are not about authentication run an open server (the server's default is
#: digest authentication and a per-source rate limit); auth tests pass ``--auth on`` after it.
OPEN = ("--auth", "off", "--pike-rate", "0")
_taken: set[int] = set()


def _free(kinds: tuple[int, ...], count: int = 1) -> int:
    """The first of ``count`` consecutive ports free now for each of ``kinds`` (and not handed
    out before)."""
    for _ in range(1000):
        first = random.randint(SERVER_PORTS[0], SERVER_PORTS[1] - count + 1)
        block = range(first, first + count)
        if _taken.intersection(block) or not all(_bindable(k, block) for k in kinds):
            continue
        _taken.update(block)
        return first
    raise RuntimeError("no free port")


def _bindable(kind: int, ports: range) -> bool:
    socks: list[socket.socket] = []
    try:
        for port in ports:
            socks.append(socket.socket(socket.AF_INET, kind))
            socks[-1].bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        for s in socks:
            s.close()


def server_env() -> dict[str, str]:
    """This process's environment for a server under test, without the ``SIGNALING_*``
    configuration a developer may have exported; the test switches (``SIGNALING_TEST_*``,
    which the configuration ignores) go through, so the edit check of
    signaling/forwarding.py runs in server processes as it does in process."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith("SIGNALING_") or k.startswith("SIGNALING_TEST_")}


def free_udp_port() -> int:
    """A port free for UDP and for TCP both: a server started on ``--sip-udp HOST:PORT``
    listens for SIP over TCP on the same port unless told otherwise (RFC 3261 §18,
    ``signaling.config.load_config``), and a SIPp or peer given it may use either."""
    return _free((socket.SOCK_DGRAM, socket.SOCK_STREAM))


def free_udp_ports(count: int) -> int:
    """The first of ``count`` consecutive free UDP ports (SIPp's ``-mp`` takes four: audio
    RTP/RTCP and video RTP/RTCP)."""
    return _free((socket.SOCK_DGRAM,), count)


def _accepts(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def free_tcp_port() -> int:
    return _free((socket.SOCK_STREAM,))


def options(port: int, branch: str = "z9hG4bKprobe", host: str = "127.0.0.1",
            local_port: int = 0) -> bytes:
    unique = random.randint(0, 1 << 30)
    return (
        f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{local_port or 5099};branch={branch}{unique};rport\r\n"
        f"From: <sip:probe@127.0.0.1>;tag=probe\r\nTo: <sip:{host}:{port}>\r\n"
        f"Call-ID: probe-{random.randint(0, 1 << 30)}\r\nCSeq: 1 OPTIONS\r\n"
        f"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def sip_request(port: int, data: bytes, timeout: float = 2.0,
                host: str = "127.0.0.1") -> bytes | None:
    """Send one datagram from a fresh socket and return the first answer (None on timeout)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.bind(("127.0.0.1", 0))
        s.sendto(data, (host, port))
        try:
            return s.recv(65535)
        except TimeoutError:
            return None


class ServerProcess:
    """``signaling serve`` on private ports; ``extra`` adds flags (e.g. ``--domain``)."""

    def __init__(self, *extra: str, ws: bool = True, admin: bool = False,
                 diameter: bool = False, env: dict[str, str] | None = None) -> None:
        self.udp_port = free_udp_port()
        self.ws_port = free_tcp_port() if ws else None
        self.admin_port = free_tcp_port() if admin else None
        self.diameter_port = free_tcp_port() if diameter else None
        self.extra = list(extra)
        #: SIP over TCP: on the UDP port unless the test gives ``--sip-tcp`` (RFC 3261 §18).
        self.tcp_port = self._tcp_port()
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = Path(tempfile.mkstemp(prefix="signaling-", suffix=".log")[1])
        self.log = ""

    def _tcp_port(self) -> int | None:
        if "--sip-tcp" not in self.extra:
            return self.udp_port
        value = self.extra[self.extra.index("--sip-tcp") + 1]
        return None if value == "off" else int(value.rpartition(":")[2]) or None

    def args(self) -> list[str]:
        def hp(port: int | None) -> str:
            return f"127.0.0.1:{port}" if port else "off"
        # One process unless the test asks for more: the default (one per CPU) would make
        # every black-box test depend on the machine's CPU count.
        processes = [] if "--processes" in self.extra else ["--processes", "1"]
        return [sys.executable, "-m", "signaling", "serve", *processes,
                "--sip-udp", hp(self.udp_port), "--sip-ws", hp(self.ws_port),
                "--admin", hp(self.admin_port), "--diameter", hp(self.diameter_port),
                "--spool", str(self.log_path.with_suffix(".spool")),
                "--subscribers", str(self.log_path.with_suffix(".subscribers")),
                *OPEN, *self.extra]

    def start(self) -> ServerProcess:
        env = server_env()
        env.update(self.env)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.args(), stdout=log, stderr=subprocess.STDOUT,
                                         env=env)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}: {self.read_log()}")
            # UDP answers first; the stream listeners (WebSocket, Diameter) bind after it, so
            # a test that connects at once could find them not yet listening (seen in CI).
            if (sip_request(self.udp_port, options(self.udp_port), timeout=0.2) is not None
                    and all(_accepts(port) for port in (self.ws_port, self.diameter_port,
                                                        self.tcp_port) if port is not None)):
                return
        raise RuntimeError(f"server not ready: {self.read_log()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss_kib(self) -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def read_log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Stop the server; returns its exit status (0 for a clean shutdown)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log = self.read_log()
        return self.proc.returncode

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
