"""baresip (Debian ``baresip``, libre's digest client) registers with a password and calls
another baresip through the proxy, answering 401 and 407 (RFC 3261 §22.2, §22.3); one with a
wrong password never gets a binding."""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path

from harness.serverproc import free_udp_port
from tests.peers import baresip
from tests.signaling.auth.peers import auth_server

USERS = {"1000": "s3cret-1000", "1001": "s3cret-1001"}
#: baresip quits after this many seconds (-t); a bound, not a wait: every check below reads
#: what happened in the SIP trace.
RUN = 8
def _baresip(server_port: int, user: str, password: str, *commands: str,
             seconds: int = RUN) -> subprocess.Popen[str]:
    conf = Path(tempfile.mkdtemp(prefix="baresip-"))
    return baresip.start(
        conf, baresip.config(f"127.0.0.1:{free_udp_port()}", f"{conf}/played.wav"),
        f"<sip:{user}@127.0.0.1:{server_port};transport=udp>;auth_pass={password};"
        "regint=600;answermode=auto\n", seconds, commands)


def _until(proc: subprocess.Popen[str], marker: str) -> str:
    """baresip's output up to the first line holding ``marker`` (or all of it, when it quits
    first: its -t bounds the wait)."""
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if marker in line:
            break
    return "".join(seen)


def _trace(proc: subprocess.Popen[str], head: str = "") -> str:
    out, _ = proc.communicate(timeout=RUN + 30)
    return re.sub(r"\x1b\[[0-9;]*m", "", head + out)


def _statuses(trace: str, method: str) -> list[int]:
    """Statuses of the responses baresip received for ``method``, in order."""
    found = []
    for block in trace.split("\n#\n"):
        m = re.search(r"^SIP/2\.0 (\d{3}) ", block, re.M)
        if m and re.search(rf"^CSeq: \d+ {method}\s*$", block, re.M) and "-> 127.0.0.1" in block:
            found.append(int(m.group(1)))
    return found


def test_baresip_registers_and_calls_through_the_proxy_with_digest() -> None:
    with auth_server(USERS) as srv:
        callee = _baresip(srv.udp_port, "1001", USERS["1001"], seconds=RUN + 4)
        # Its registration first: a call to an unregistered user is 480.
        head = _until(callee, "[1 binding]")
        caller = _baresip(srv.udp_port, "1000", USERS["1000"],
                          f"/dial sip:1001@127.0.0.1:{srv.udp_port}")
        caller_trace, callee_trace = _trace(caller), _trace(callee, head)
    assert _statuses(caller_trace, "REGISTER")[:2] == [401, 200], caller_trace
    assert "Proxy-Authorization: Digest username=\"1000\"" in caller_trace
    invite = _statuses(caller_trace, "INVITE")
    assert 407 in invite and 200 in invite and invite.index(407) < invite.index(200), invite
    assert "answering call on line 1 from sip:1000@" in callee_trace, callee_trace
    assert "Call established: sip:1000@" in callee_trace, callee_trace
    assert "Call established: sip:1001@" in caller_trace, caller_trace
    assert "s3cret" not in srv.log


def test_baresip_with_a_wrong_password_gets_no_binding() -> None:
    with auth_server(USERS) as srv:
        trace = _trace(_baresip(srv.udp_port, "1000", "not-the-password", seconds=4))
    statuses = _statuses(trace, "REGISTER")
    assert statuses and set(statuses) == {401}, trace
    assert "[1 binding]" not in trace
