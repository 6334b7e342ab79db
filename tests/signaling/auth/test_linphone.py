"""linphonec (Debian ``linphone-cli``: liblinphone and belle-sip) registers with a password and
calls baresip through the proxy, answering the 401 and the 407 (RFC 3261 §22.2, §22.3), and
is called by it.  Offered SHA-256 before MD5 (RFC 8760 §2.4), it answers with SHA-256: that
path is exercised by a real client here.

linphonec never starts its core (no socket, no REGISTER, no error on its console) without a
writable ``$HOME/.local/share/linphone`` for its database: each one gets a fresh home.  It runs
on a pseudo-terminal, as on a user's console, whose output the waits read; every check reads
its SIP trace (``-d 6`` logs every message sent and received).
"""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import tempfile
import time
from pathlib import Path

from harness.serverproc import free_tcp_port, free_udp_port
from tests.signaling.auth.peers import auth_server
from tests.signaling.auth.test_baresip import _baresip, _trace, _until

USERS = {"1000": "s3cret-1000", "1001": "s3cret-1001"}
#: Bounds of the waits (seconds): each ends as soon as what it waits for is seen.
REGISTERED = 20
CALL = 30


class Linphonec:
    """One linphonec on a pseudo-terminal, registered (or trying) as ``user``."""

    def __init__(self, server_port: int, user: str, password: str, transport: str = "udp",
                 root_ca: Path | None = None) -> None:
        """Registered over ``transport`` (udp, tcp or tls; for tls ``root_ca`` verifies the
        server's certificate, by the name ``localhost``: belle-sip's TLS (mbedTLS) does not
        match IP subjectAltNames) at ``server_port``, the port of that transport."""
        self.home = Path(tempfile.mkdtemp(prefix="linphonec-"))
        (self.home / ".local" / "share" / "linphone").mkdir(parents=True)
        self.log = self.home / "log"
        rc = self.home / "linphonerc"
        ports = {name: (free_udp_port() if name == "udp" else free_tcp_port())
                 if name == transport else -1 for name in ("udp", "tcp", "tls")}
        ca = f"root_ca={root_ca}\nverify_server_certs=1\n" if root_ca is not None else ""
        rc.write_text(f"""[sip]
sip_port={ports["udp"]}
sip_tcp_port={ports["tcp"]}
sip_tls_port={ports["tls"]}
{ca}default_proxy=0
[sound]
echocancellation=0
[proxy_0]
reg_proxy=<sip:{"localhost" if root_ca else "127.0.0.1"}:{server_port};transport={transport}>
reg_identity=<sip:{user}@127.0.0.1:{server_port}>
reg_expires=600
reg_sendregister=1
[auth_info_0]
username={user}
passwd={password}
realm=127.0.0.1
domain=127.0.0.1
""")
        master, slave = pty.openpty()
        self.tty = master
        # -a: answers incoming calls by itself.
        self.proc = subprocess.Popen(
            ["linphonec", "-c", str(rc), "-a", "-d", "6", "-l", str(self.log)],
            stdin=slave, stdout=slave, stderr=slave, close_fds=True,
            env={**os.environ, "HOME": str(self.home)})
        os.close(slave)
        self.output = ""

    def command(self, line: str) -> None:
        os.write(self.tty, line.encode() + b"\n")

    def wait_output(self, pattern: str, timeout: float) -> bool:
        """Read the console until ``pattern`` (a regular expression) shows; False at the
        bound or when linphonec is gone."""
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.output):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            ready, _, _ = select.select([self.tty], [], [], min(left, 0.5))
            if ready:
                try:
                    self.output += os.read(self.tty, 65536).decode(errors="replace")
                except OSError:  # the terminal closed: linphonec exited
                    return False
        return True

    def registered(self, timeout: float = REGISTERED) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.command("status register")
            if self.wait_output(r"registered, identity=", 1.0):
                return True
        return False

    def trace(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.command("quit")
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        os.close(self.tty)


def _sent(trace: str, start: str) -> list[str]:
    """The messages linphonec sent whose first line starts with ``start``."""
    return [m for m in re.split(r"message sent to \[[^\]]*\], size: \[\d+\] bytes\n", trace)[1:]
            if m.startswith(start)]


def _received_statuses(trace: str, method: str) -> list[int]:
    found = []
    for block in re.split(r"received \[\d+\] new bytes from \[[^\]]*\]:\n", trace)[1:]:
        m = re.match(r"SIP/2\.0 (\d{3}) ", block)
        if m and re.search(rf"^CSeq: \d+ {method}\s*$", block[:block.find("\n\n")], re.M):
            found.append(int(m.group(1)))
    return found


def test_linphonec_registers_with_sha256_and_calls_another_through_the_proxy() -> None:
    """SHA-256 offered first (baresip 1.0 could not follow: it reads only the first
    challenge), answered with SHA-256 for REGISTER (401) and INVITE (407)."""
    with auth_server(USERS, "--auth-algorithms", "SHA-256,MD5") as srv:
        callee = Linphonec(srv.udp_port, "1001", USERS["1001"])
        caller = Linphonec(srv.udp_port, "1000", USERS["1000"])
        try:
            assert callee.registered(), callee.output + callee.trace()[-5000:]
            assert caller.registered(), caller.output + caller.trace()[-5000:]
            caller.command(f"call sip:1001@127.0.0.1:{srv.udp_port}")
            connected = caller.wait_output(r"Call \d+ with .*1001.* connected", CALL)
            answered = callee.wait_output(r"Call \d+ with .*1000.* connected", CALL)
        finally:
            caller.stop()
            callee.stop()
        trace = caller.trace()
    assert connected and answered, caller.output + callee.output + trace[-5000:]
    registers = _sent(trace, "REGISTER ")
    # The first challenge offered is SHA-256, and linphone answers it (RFC 8760 §2.4).
    assert re.search(r"^Authorization: +Digest .*algorithm=SHA-256", registers[-1], re.M), \
        registers
    assert _received_statuses(trace, "REGISTER")[:2] == [401, 200], trace[-5000:]
    invites = _sent(trace, "INVITE ")
    assert "Proxy-Authorization" not in invites[0]
    assert re.search(r"^Proxy-Authorization: +Digest .*algorithm=SHA-256", invites[-1], re.M), \
        invites[-1]
    statuses = _received_statuses(trace, "INVITE")
    assert 407 in statuses and 200 in statuses and statuses.index(407) < statuses.index(200)
    assert "s3cret" not in srv.log


def test_linphonec_calls_baresip_through_the_proxy() -> None:
    with auth_server(USERS) as srv:
        callee = _baresip(srv.udp_port, "1001", USERS["1001"], seconds=CALL)
        head = _until(callee, "[1 binding]")  # a call to an unregistered user is 480
        caller = Linphonec(srv.udp_port, "1000", USERS["1000"])
        try:
            assert caller.registered(), caller.output + caller.trace()[-5000:]
            caller.command(f"call sip:1001@127.0.0.1:{srv.udp_port}")
            connected = caller.wait_output(r"Call \d+ with .*1001.* connected", CALL)
        finally:
            caller.stop()
            callee.terminate()  # done: its -t is only the bound
        trace = caller.trace()
        callee_trace = _trace(callee, head)
    assert connected, caller.output + trace[-5000:]
    assert re.search(r"^Authorization: +Digest .*algorithm=MD5", _sent(trace, "REGISTER ")[-1],
                     re.M)
    statuses = _received_statuses(trace, "INVITE")
    assert 407 in statuses and 200 in statuses and statuses.index(407) < statuses.index(200)
    assert "answering call on line 1 from sip:1000@" in callee_trace, callee_trace
    assert "s3cret" not in srv.log


def test_baresip_calls_linphonec_which_answers() -> None:
    with auth_server(USERS) as srv:
        callee = Linphonec(srv.udp_port, "1000", USERS["1000"])
        try:
            assert callee.registered(), callee.output + callee.trace()[-5000:]
            caller = _baresip(srv.udp_port, "1001", USERS["1001"],
                              f"/dial sip:1000@127.0.0.1:{srv.udp_port}", seconds=CALL)
            established = _until(caller, "Call established: sip:1000@")
            answered = callee.wait_output(r"Call \d+ with .*1001.* connected", CALL)
            caller.terminate()  # done: its -t is only the bound
            caller_trace = _trace(caller, established)
        finally:
            callee.stop()
    assert "Call established: sip:1000@" in caller_trace, caller_trace
    assert answered, callee.output
    assert "Proxy-Authorization: Digest username=\"1001\"" in caller_trace
