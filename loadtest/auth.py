"""The injector's answers to digest challenges (RFC 3261 §22.2 401, §22.3 407).

A server with authentication on challenges every REGISTER and every call; the injector's UAs
answer like phones do: the same request again as a new transaction (§8.1.3.5: same Call-ID,
To and From, CSeq one higher, a new branch) with an Authorization (401) or Proxy-Authorization
(407) computed with ``protocols.sip.digest`` from the user's password.  Passwords come from a
pattern (``{user}`` is replaced by the user part: ``pw-{user}``, or one password for all) or a
file of ``user password`` lines, which wins where it names the user.

A challenge is answered when the request carried no credentials, or when the new challenge
says ``stale=true`` (RFC 7616 §3.3: the password was right, the nonce old), at most
``MAX_ROUNDS`` times per request: a wrong password gets its 401 counted as the final answer,
never a loop.  Of several challenges (RFC 8760 §2.4, strongest first) the first with an
algorithm we can compute is answered.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from protocols.sip.digest import ALGORITHMS, DigestError, authorization, parse_challenge
from protocols.sip.message import Response

__all__ = ["CHALLENGES", "MAX_ROUNDS", "Passwords", "answer", "with_header"]

#: Status -> (the challenge's header, the answer's header).
CHALLENGES: dict[int, tuple[str, bytes]] = {
    401: ("WWW-Authenticate", b"Authorization"),
    407: ("Proxy-Authenticate", b"Proxy-Authorization"),
}
#: Challenges answered per request: the first, and one stale=true after it.
MAX_ROUNDS = 2
_SUPPORTED = {a.lower() for a in ALGORITHMS}


@dataclass(frozen=True, slots=True)
class Passwords:
    """Where a UA's password comes from (see the module docstring)."""

    pattern: str | None = None
    by_user: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, pattern: str | None, path: str | None) -> Passwords | None:
        """From the ``--password`` pattern and the ``--passwords`` file; None if neither."""
        if pattern is None and path is None:
            return None
        by_user: dict[str, str] = {}
        if path is not None:
            for number, line in enumerate(Path(path).read_text().splitlines(), 1):
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                user, _, password = line.strip().partition(" ")
                if not password.strip():
                    raise ValueError(f"{path} line {number}: expected 'user password'")
                by_user[user] = password.strip()
        return cls(pattern, by_user)

    def of(self, user: str) -> str | None:
        found = self.by_user.get(user)
        if found is not None:
            return found
        return None if self.pattern is None else self.pattern.replace("{user}", user)


def answer(response: Response, method: str, uri: str, user: str, password: str,
           had_credentials: bool, rounds: int) -> bytes | None:
    """The header line answering ``response``'s challenge, or None when it is not to be
    answered (see the module docstring)."""
    kind = CHALLENGES.get(response.status)
    if kind is None or rounds >= MAX_ROUNDS:
        return None
    challenge_header, answer_header = kind
    for value in response.headers(challenge_header):
        try:
            chal = parse_challenge(value)
        except DigestError:
            continue
        if chal.get("algorithm", "MD5").lower() not in _SUPPORTED or "nonce" not in chal \
                or "realm" not in chal:
            continue
        if had_credentials and chal.get("stale", "").lower() != "true":
            return None  # refused with credentials: a wrong password, not to be retried
        value = authorization(chal, method=method, uri=uri, username=user, password=password)
        return answer_header + b": " + value.encode()
    return None


def with_header(request: bytes, line: bytes) -> bytes:
    """``request`` with ``line`` added before its Content-Length (the injector's requests all
    end their headers with it)."""
    head, sep, rest = request.partition(b"\r\nContent-Length: ")
    if not sep:
        raise ValueError("no Content-Length in the request")
    return head + b"\r\n" + line + sep + rest
