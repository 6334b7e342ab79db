"""sipvicious, the scanner attackers use, against the server with authentication on.

``svwar`` (extension enumeration) must learn nothing: unknown and known users get the same
answer.  ``svcrack`` (password guessing) finds a password within the guessing limit (the
control: the tool works against this server), and none beyond it: the source is blocked
first.  MD5 is offered alone because svcrack only computes MD5 answers; with SHA challenges
first it could never succeed and the test would prove nothing.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path

from tests.signaling.auth.peers import auth_server

USERS = {"1000": "s3cret", "1001": "hunter2"}
GUESS_LIMIT = 4


def _run(*args: str) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=120,
                          cwd=tempfile.gettempdir())
    return done.stdout + done.stderr


def _dictionary(words: list[str]) -> str:
    path = Path(tempfile.mkstemp(prefix="dict-", suffix=".txt")[1])
    path.write_text("\n".join(words) + "\n")
    return str(path)


def test_svwar_learns_no_extension() -> None:
    with auth_server(USERS, "--auth-algorithms", "MD5") as srv:
        target = f"udp://127.0.0.1:{srv.udp_port}"
        for method in ("REGISTER", "INVITE", "OPTIONS"):
            out = _run("svwar", "--force", "-m", method, "-e", "990-1010", target)
            assert "found nothing" in out, (method, out)
            # No row of svwar's result table ("| 1000 | reqauth |"); its warnings quote our
            # answers, whose random branch or nonce may hold the digits anywhere.
            assert not re.search(r"^\|\s*100[01]\s*\|", out, re.MULTILINE), (method, out)


def test_svcrack_finds_no_password_beyond_the_guessing_limit() -> None:
    with auth_server(USERS, "--auth-algorithms", "MD5",
                     "--auth-fail-limit", str(GUESS_LIMIT)) as srv:
        target = f"udp://127.0.0.1:{srv.udp_port}"
        within = _dictionary(["a", "b", "s3cret"])
        out = _run("svcrack", "-u1000", "-d", within, target)
        assert "s3cret" in out, out  # the control: the tool works against this server
        beyond = _dictionary([f"guess{i}" for i in range(GUESS_LIMIT + 2)] + ["hunter2"])
        out = _run("svcrack", "-u1001", "-d", beyond, target)
        assert "hunter2" not in out, out
        # It gave up because the server stopped answering it: the source was blocked.
        assert "found nothing" in out and "since we last received a response" in out, out
    # The log has one summary line for the guessing, not one line per attempt.
    summaries = [line for line in srv.log.splitlines() if "blocked 127.0.0.1" in line]
    assert len(summaries) == 1, srv.log
