"""HTTP Digest authentication for SIP (RFC 3261 §22.4, RFC 7616 algorithms, RFC 8760).

Sans-I/O: strings and ``now`` in, header values and verdicts out.  The server side keeps only
HA1 = H(username:realm:password) per algorithm (``ha1``), so passwords are never needed.

Nonces are stateless (``NonceMinter``): the issue time and a random part, authenticated with an
HMAC under a server secret, so any process or node holding the secret can check a nonce it did
not mint, and its age gives expiry (answered with ``stale=true``, RFC 7616 §3.3).  Replays are
refused by the nonce count (``NonceCounts``): each (nonce, nc) is accepted once and nc must grow,
in a bounded table; a nonce whose record was evicted is treated as stale, so eviction can make a
client fetch a fresh nonce but never lets a replay through.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import struct
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

__all__ = [
    "ALGORITHMS",
    "SALT_WINDOW",
    "Credentials",
    "DigestError",
    "NonceCounts",
    "NonceMinter",
    "NonceState",
    "authorization",
    "challenge",
    "expected_response",
    "ha1",
    "hash_hex",
    "parse_challenge",
    "parse_credentials",
    "verify",
]

_HASHES: dict[str, Callable[[bytes], str]] = {
    "SHA-512-256": lambda b: hashlib.new("sha512_256", b).hexdigest(),
    "SHA-256": lambda b: hashlib.sha256(b).hexdigest(),
    "MD5": lambda b: hashlib.md5(b, usedforsecurity=False).hexdigest(),
}
#: Supported algorithms, strongest first: the order challenges are offered in (RFC 8760 §2.4).
ALGORITHMS: tuple[str, ...] = tuple(_HASHES)


class DigestError(ValueError):
    """An Authorization value that cannot be used (malformed, unknown algorithm)."""


def hash_hex(algorithm: str, text: str) -> str:
    """H(text) in lower-case hex for ``algorithm`` (RFC 7616 §3.4.1)."""
    try:
        fn = _HASHES[_canonical(algorithm)]
    except KeyError:
        raise DigestError(f"unsupported algorithm {algorithm!r}") from None
    return fn(text.encode("utf-8"))


def ha1(algorithm: str, username: str, realm: str, password: str) -> str:
    """HA1 = H(username ":" realm ":" password) (RFC 7616 §3.4.2): all a server stores."""
    return hash_hex(algorithm, f"{username}:{realm}:{password}")


def _canonical(algorithm: str) -> str:
    for name in _HASHES:
        if name.lower() == algorithm.lower():
            return name
    raise KeyError(algorithm)


# -- header syntax (RFC 7616 §3.3/§3.4, RFC 3261 §25.1 auth-param) ----------------------------

#: One auth-param: a token name, "=", a quoted-string (with \\-escapes) or a token, then a comma
#: or the end.  A regular expression instead of a character loop: ten times faster, and this
#: runs for every authenticated request.
#: The quoted-string is the unrolled loop ``[^"\\]*(?:\\.[^"\\]*)*``: an alternation per character
#: costs four times as much.
_PARAM = re.compile(
    r'[\s,]*([^\s=,"]+)\s*=\s*(?:"([^"\\]*(?:\\.[^"\\]*)*)"|([^\s,"]*))\s*(?:,|$)', re.S)
_ESCAPE = re.compile(r"\\(.)", re.S)


def _params(text: str) -> dict[str, str]:
    """``name=value`` pairs, values quoted (with \\-escapes) or tokens, comma separated."""
    out: dict[str, str] = {}
    pos, end = 0, len(text.rstrip(" \t\r\n,"))
    while pos < end:
        m = _PARAM.match(text, pos)
        if m is None:
            raise DigestError("malformed auth-param")
        name, quoted, token = m.groups()
        name = name.lower()
        if name in out:
            raise DigestError(f"repeated parameter {name}")  # RFC 7616 §3.4: at most once
        if quoted is None:
            out[name] = token
        else:
            out[name] = _ESCAPE.sub(r"\1", quoted) if "\\" in quoted else quoted
        pos = m.end()
    return out


def _scheme_params(value: str) -> dict[str, str]:
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        raise DigestError(f"unsupported scheme {scheme!r}")
    return _params(rest)


@dataclass(frozen=True, slots=True)
class Credentials:
    """A parsed Authorization / Proxy-Authorization value (RFC 3261 §25.1 dig-resp)."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    qop: str | None = None
    nc: int | None = None
    cnonce: str | None = None
    opaque: str | None = None


def parse_credentials(value: str) -> Credentials:
    """Parse one Authorization value; ``DigestError`` when unusable."""
    p = _scheme_params(value)
    missing = [k for k in ("username", "realm", "nonce", "uri", "response") if k not in p]
    if missing:
        raise DigestError(f"missing {', '.join(missing)}")
    try:
        algorithm = _canonical(p.get("algorithm", "MD5"))
    except KeyError:
        raise DigestError(f"unsupported algorithm {p['algorithm']!r}") from None
    qop = p.get("qop")
    nc: int | None = None
    if qop is not None:
        qop = qop.lower()
        if qop not in ("auth", "auth-int"):
            raise DigestError(f"unsupported qop {qop!r}")
        raw_nc = p.get("nc", "")
        if len(raw_nc) != 8 or not all(c in "0123456789abcdefABCDEF" for c in raw_nc):
            raise DigestError("qop needs nc as 8 hex digits")  # RFC 7616 §3.4
        if not p.get("cnonce"):
            raise DigestError("qop needs cnonce")
        nc = int(raw_nc, 16)
    return Credentials(username=p["username"], realm=p["realm"], nonce=p["nonce"],
                       uri=p["uri"], response=p["response"].lower(), algorithm=algorithm,
                       qop=qop, nc=nc, cnonce=p.get("cnonce"), opaque=p.get("opaque"))


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def challenge(realm: str, nonce: str, algorithm: str, *, stale: bool = False,
              opaque: str | None = None, qop: str = "auth") -> str:
    """A WWW-Authenticate / Proxy-Authenticate value (RFC 3261 §22.4, RFC 8760 §2.2)."""
    parts = [f"Digest realm={_quote(realm)}", f"nonce={_quote(nonce)}"]
    if opaque is not None:
        parts.append(f"opaque={_quote(opaque)}")
    parts.append(f"algorithm={_canonical(algorithm)}")
    parts.append(f"qop={_quote(qop)}")
    if stale:
        parts.append("stale=true")
    return ", ".join(parts)


def parse_challenge(value: str) -> dict[str, str]:
    """A challenge's parameters (a client's view; used by tests and benchmarks)."""
    return _scheme_params(value)


# -- responses --------------------------------------------------------------------------------

def expected_response(creds: Credentials, ha1_hex: str, method: str, body: bytes = b"") -> str:
    """request-digest of RFC 7616 §3.4.1 (RFC 2617 §3.2.2.1 without qop)."""
    alg = creds.algorithm
    if creds.qop == "auth-int":
        ha2 = hash_hex(alg, f"{method}:{creds.uri}:"
                            f"{_HASHES[alg](body)}")
    else:
        ha2 = hash_hex(alg, f"{method}:{creds.uri}")
    if creds.qop is None:
        return hash_hex(alg, f"{ha1_hex}:{creds.nonce}:{ha2}")
    return hash_hex(alg, f"{ha1_hex}:{creds.nonce}:{creds.nc:08x}:{creds.cnonce}:"
                         f"{creds.qop}:{ha2}")


def verify(creds: Credentials, ha1_hex: str, method: str, body: bytes = b"") -> bool:
    """The response matches ``ha1_hex``; compared in constant time."""
    want = expected_response(creds, ha1_hex.lower(), method, body)
    return hmac.compare_digest(want.encode(), creds.response.encode())


def authorization(chal: dict[str, str], *, method: str, uri: str, username: str,
                  password: str, nc: int = 1, cnonce: str | None = None,
                  body: bytes = b"") -> str:
    """A client's Authorization value answering ``chal`` (tests and benchmarks)."""
    alg = _canonical(chal.get("algorithm", "MD5"))
    qops = [q.strip() for q in chal.get("qop", "").split(",") if q.strip()]
    qop = "auth" if "auth" in qops else ("auth-int" if "auth-int" in qops else None)
    cnonce = cnonce or os.urandom(8).hex()
    creds = Credentials(username=username, realm=chal["realm"], nonce=chal["nonce"], uri=uri,
                        response="", algorithm=alg, qop=qop, nc=nc if qop else None,
                        cnonce=cnonce if qop else None, opaque=chal.get("opaque"))
    resp = expected_response(creds, ha1(alg, username, chal["realm"], password), method, body)
    parts = [f"Digest username={_quote(username)}", f"realm={_quote(chal['realm'])}",
             f"nonce={_quote(chal['nonce'])}", f"uri={_quote(uri)}",
             f"response={_quote(resp)}", f"algorithm={alg}"]
    if qop:
        parts += [f"qop={qop}", f"nc={nc:08x}", f"cnonce={_quote(cnonce)}"]
    if "opaque" in chal:
        parts.append(f"opaque={_quote(chal['opaque'])}")
    return ", ".join(parts)


# -- nonces -----------------------------------------------------------------------------------

class NonceState(Enum):
    VALID = "valid"
    STALE = "stale"      # ours, but too old (or its count record is gone): stale=true
    INVALID = "invalid"  # not ours at all (forged, altered, other secret)


_TAG_BYTES = 16
#: Seconds during which a salted nonce stays the same (see ``NonceMinter.make``): longer than a
#: request's retransmissions usually span, short beside a nonce's lifetime.
SALT_WINDOW = 32
_NONCE_BYTES = 8 + 8 + _TAG_BYTES


class NonceMinter:
    """Stateless nonces: base64url(issued-at ms ‖ 8 random bytes ‖ HMAC-SHA256 tag).

    The realm takes part in the tag so a nonce is good only for the realm it was issued for.
    """

    def __init__(self, secret: bytes, lifetime: float) -> None:
        if len(secret) < 16:
            raise ValueError("nonce secret must be at least 16 bytes")
        self._secret = secret
        self.lifetime = lifetime

    def _tag(self, head: bytes, realm: str) -> bytes:
        return hmac.new(self._secret, head + realm.encode(), hashlib.sha256).digest()[:_TAG_BYTES]

    def make(self, realm: str, now: float, salt: bytes | None = None) -> str:
        """A fresh nonce; with ``salt`` (a request's identity) the same one for the same salt
        within a ``SALT_WINDOW``, so a stateless challenge to a retransmitted request is the
        same bytes as the first (a transaction would have repeated its answer, §17.2.2)."""
        if salt is None:
            head = struct.pack(">Q", int(now * 1000)) + os.urandom(8)
        else:
            window = struct.pack(">Q", int(now // SALT_WINDOW * SALT_WINDOW) * 1000)
            head = window + hmac.new(self._secret, b"salt:" + window + salt,
                                     hashlib.sha256).digest()[:8]
        return base64.urlsafe_b64encode(head + self._tag(head, realm)).decode().rstrip("=")

    @staticmethod
    def issued_at(nonce: str) -> float | None:
        raw = _decode(nonce)
        return None if raw is None else struct.unpack(">Q", raw[:8])[0] / 1000.0

    def check(self, nonce: str, realm: str, now: float) -> NonceState:
        raw = _decode(nonce)
        if raw is None or not hmac.compare_digest(self._tag(raw[:16], realm), raw[16:]):
            return NonceState.INVALID
        issued = struct.unpack(">Q", raw[:8])[0] / 1000.0
        if not issued - 5.0 <= now <= issued + self.lifetime:  # small skew between nodes
            return NonceState.STALE
        return NonceState.VALID


def _decode(nonce: str) -> bytes | None:
    if len(nonce) != 43:  # 32 bytes in unpadded base64url
        return None
    try:
        raw = base64.urlsafe_b64decode(nonce + "=")
    except (ValueError, TypeError):
        return None
    return raw if len(raw) == _NONCE_BYTES else None


class NonceCounts:
    """The highest nonce count used per nonce (RFC 7616 §3.4 replay protection), bounded.

    ``use`` accepts a count only if it is higher than every count seen for that nonce.  A
    nonce without a record is accepted only if it was issued after the newest nonce whose
    record was evicted (``floor``): older ones answer STALE so the client gets a new nonce.
    A request without qop has no count; its nonce is then good once (``nc`` None).
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.floor = 0.0
        self._seen: OrderedDict[str, int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def use(self, nonce: str, nc: int | None, issued_at: float) -> NonceState:
        count = 0 if nc is None else nc
        last = self._seen.get(nonce)
        if last is None:
            if issued_at <= self.floor:
                return NonceState.STALE
        elif nc is None or count <= last:
            return NonceState.STALE  # a replay, or a one-time nonce used again
        self._seen[nonce] = count
        self._seen.move_to_end(nonce)
        while len(self._seen) > self.capacity:
            old, _ = self._seen.popitem(last=False)
            at = NonceMinter.issued_at(old)
            if at is not None:
                self.floor = max(self.floor, at)
        return NonceState.VALID
