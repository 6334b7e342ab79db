"""SIPp registers unique users with passwords, answering 401 with its ``[authentication]``.

SIPp 3.6 computes MD5 only and reads the first challenge, so the server offers MD5 alone here
(``--auth-algorithms MD5``).  Every user must register; the same users with wrong passwords
must all fail (the second REGISTER gets a fresh 401, not the 200 the scenario expects).
"""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path

from harness.sipp_runner import Sipp
from protocols.sip.digest import authorization, parse_challenge
from protocols.sip.message import Response
from protocols.sip.parser import parse_message
from tests.signaling.auth.peers import auth_server

USERS = 200
#: Far below capacity: correctness, not speed (benchmarks/bench_register_auth.py measures).
RATE = 100


def _injection(users: dict[str, str]) -> str:
    path = Path(tempfile.mkstemp(prefix="sipp-users-", suffix=".csv")[1])
    lines = ["SEQUENTIAL"] + [f"{u};[authentication username={u} password={p}]"
                              for u, p in users.items()]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_sipp_registers_unique_users_with_digest_and_wrong_passwords_fail() -> None:
    users = {f"u{n}": f"pw-{n}-secret" for n in range(USERS)}
    with auth_server(users, "--auth-algorithms", "MD5", "--pike-rate", "0") as srv:
        remote = f"127.0.0.1:{srv.udp_port}"
        good = Sipp("register-auth", remote, calls=USERS, rate=RATE,
                    extra=["-inf", _injection(users)]).start().wait()
        assert good.ok and good.successful == USERS, good.output + good.errors
        # Fewer than --auth-fail-limit (10): each gets its fresh 401 rather than a block.
        wrong = {u: p + "x" for u, p in list(users.items())[:8]}
        bad = Sipp("register-auth", remote, calls=len(wrong), rate=RATE, timeout=10,
                   extra=["-inf", _injection(wrong)]).start().wait()
        assert bad.successful == 0 and bad.failed == len(wrong), bad.output + bad.errors


def _register_contact(server_port: int, user: str, password: str, contact_port: int) -> int:
    """REGISTER ``user`` with Contact at ``contact_port``, answering the 401 (the SIPp UAS
    cannot register itself); returns the final status."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(5.0)
        local = s.getsockname()[1]
        auth = ""
        status = 0
        for cseq in (1, 2):
            s.sendto((
                f"REGISTER sip:127.0.0.1 SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK-r{cseq}{contact_port}\r\n"
                f"Max-Forwards: 70\r\nFrom: <sip:{user}@127.0.0.1>;tag=r{contact_port}\r\n"
                f"To: <sip:{user}@127.0.0.1>\r\nCall-ID: reg-{contact_port}\r\n"
                f"CSeq: {cseq} REGISTER\r\nContact: <sip:{user}@127.0.0.1:{contact_port}>\r\n"
                f"{auth}Expires: 600\r\nContent-Length: 0\r\n\r\n").encode(),
                ("127.0.0.1", server_port))
            resp = parse_message(s.recv(65535))
            assert isinstance(resp, Response)
            status = resp.status
            if status != 401:
                return status
            chal = parse_challenge(resp.headers("WWW-Authenticate")[0])
            auth = "Authorization: " + authorization(
                chal, method="REGISTER", uri="sip:127.0.0.1", username=user,
                password=password) + "\r\n"
        return status


def _keyword(user: str, password: str) -> str:
    path = Path(tempfile.mkstemp(prefix="sipp-auth-", suffix=".csv")[1])
    path.write_text(f"SEQUENTIAL\n[authentication username={user} password={password}]\n")
    return str(path)


CALLS = 20


def test_sipp_calls_through_the_proxy_as_an_authenticated_user() -> None:
    users = {"caller": "caller-pw-1", "callee": "callee-pw-2"}
    with auth_server(users, "--auth-algorithms", "MD5") as srv:
        remote = f"127.0.0.1:{srv.udp_port}"
        callee = Sipp("uas", calls=CALLS, timeout=30)
        assert _register_contact(srv.udp_port, "callee", users["callee"], callee.port) == 200
        callee.start()
        try:
            caller = Sipp("uac-auth", remote, service="callee", calls=CALLS, rate=10,
                          keys={"user": "caller"},
                          extra=["-inf", _keyword("caller", users["caller"])]).start().wait()
        finally:
            answered = callee.wait()
        assert caller.ok and caller.successful == CALLS, caller.errors[-3000:]
        assert answered.ok and answered.successful == CALLS, answered.errors[-3000:]
        # Without the password the call never reaches the callee.  (SIPp takes the second
        # 407 for a retransmission of the first and waits: the call only times out.)
        callee = Sipp("uas", calls=1, timeout=8)
        assert _register_contact(srv.udp_port, "callee", users["callee"], callee.port) == 200
        callee.start()
        try:
            intruder = Sipp("uac-auth", remote, service="callee", calls=1, timeout=6,
                            keys={"user": "caller"},
                            extra=["-inf", _keyword("caller", "guessed")]).start().wait()
        finally:
            untouched = callee.wait()
        assert intruder.successful == 0, intruder.errors[-3000:]
        assert untouched.created == 0 and untouched.successful == 0  # no INVITE reached it
