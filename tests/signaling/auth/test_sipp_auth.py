"""SIPp registers unique users with passwords, answering 401 with its ``[authentication]``.

SIPp 3.6 computes MD5 only and reads the first challenge, so the server offers MD5 alone here
(``--auth-algorithms MD5``).  Every user must register; the same users with wrong passwords
must all fail (the second REGISTER gets a fresh 401, not the 200 the scenario expects).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from tests.signaling.auth.peers import auth_server
from tests.sipp_runner import Sipp

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
