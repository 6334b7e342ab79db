"""HTTP Digest authentication for SIP (RFC 3261 §22.4, RFC 7616 algorithms, RFC 8760).

Sans-I/O: strings and ``now`` in, header values and verdicts out.  The server side keeps only
HA1 = H(username:realm:password) per algorithm (``ha1``), so passwords are never needed.

Nonces are stateless (``NonceMinter``): the issue time (to a ``TICK``) authenticated with an
HMAC under a server secret, then a unique part, so any process or node holding the secret can
check a nonce it did not mint, and its age gives expiry (answered with ``stale=true``, RFC 7616
§3.3).  Replays are
refused by the nonce count (``NonceCounts``): each (nonce, nc) is accepted once and nc must grow,
in a bounded table; a nonce whose record was evicted is treated as stale, so eviction can make a
client fetch a fresh nonce but never lets a replay through.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import importlib
import itertools
import os
import re
import struct
from collections import OrderedDict
from collections.abc import Callable
from enum import Enum

import msgspec

__all__ = [
    "ALGORITHMS",
    "TICK",
    "ChallengeHead",
    "Credentials",
    "DigestError",
    "NonceCounts",
    "NonceMinter",
    "NonceState",
    "authorization",
    "challenge",
    "challenge_answer",
    "challenge_head",
    "expected_response",
    "ha1",
    "hash_hex",
    "parse_challenge",
    "parse_credentials",
    "verify",
]

try:
    # CPython's own MD5: for the short strings of digest (~60 bytes) it costs ~2k
    # instructions where OpenSSL's, through hashlib.md5, costs ~4.7k (callgrind; setting up
    # an EVP context per hash), and verify hashes twice per authenticated request.  MD5 here
    # is the protocol's (RFC 7616), not a security choice of ours.
    _md5: Callable[[bytes], hashlib._Hash] = importlib.import_module("_md5").md5
except ImportError:  # a Python built without it
    _md5 = functools.partial(hashlib.md5, usedforsecurity=False)

#: Each algorithm's hash object constructor: ``_HASHES[alg](data).hexdigest()`` is H(data) in
#: lower-case hex, one C call and no Python frame between.
_HASHES: dict[str, Callable[[bytes], hashlib._Hash]] = {
    "SHA-512-256": functools.partial(hashlib.new, "sha512_256"),
    "SHA-256": hashlib.sha256,
    "MD5": _md5,
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
    return fn(text.encode("utf-8")).hexdigest()


def ha1(algorithm: str, username: str, realm: str, password: str) -> str:
    """HA1 = H(username ":" realm ":" password) (RFC 7616 §3.4.2): all a server stores."""
    return hash_hex(algorithm, f"{username}:{realm}:{password}")


_CANONICAL = {name.lower(): name for name in _HASHES}


def _canonical(algorithm: str) -> str:
    """The algorithm's name as spelled in ``ALGORITHMS`` (names are case-insensitive,
    RFC 7616 §3.3); KeyError if unsupported."""
    return _CANONICAL[algorithm.lower()]


# -- header syntax (RFC 7616 §3.3/§3.4, RFC 3261 §25.1 auth-param) ----------------------------

#: One auth-param: a token name, "=", a quoted-string (with \\-escapes) or a token, then a comma
#: or the end.  A regular expression instead of a character loop: ten times faster, and this
#: runs for every authenticated request.
#: The quoted-string is the unrolled loop ``[^"\\]*(?:\\.[^"\\]*)*``: an alternation per character
#: costs four times as much.
_PARAM = re.compile(
    r'[\s,]*([^\s=,"]+)\s*=\s*(?:"([^"\\]*(?:\\.[^"\\]*)*)"|([^\s,"]*))\s*(?:,|$)', re.S)
_ESCAPE = re.compile(r"\\(.)", re.S)
_HEX8 = re.compile(r"[0-9a-fA-F]{8}")

#: What ``challenge_head`` finds in a REGISTER for its stateless 401: the realm (the To host,
#: lower case), Call-ID, From tag and top Via branch (for the To tag and the nonce's salt),
#: the answer's head from its Via up to the To tag's value, and its Call-ID and CSeq lines.
ChallengeHead = tuple[str, str, str | None, str, bytes, bytes]

_fast_params: Callable[[str], dict[str, str] | None] | None
#: ``Credentials`` from a whole value (``_fast_credentials(value, Credentials)``), or None
#: (``_digest_speedups.c``).
_fast_credentials: Callable[[str, type[Credentials]], Credentials | None] | None
#: ``challenge_head(data, source host, source port)``: see ``_digest_speedups.c``; None when
#: built without a C compiler (every REGISTER then goes the full way, with the same answers).
challenge_head: Callable[[bytes, str, int], ChallengeHead | None] | None
#: ``challenge_answer(data, source host, source port, ready)``: the whole stateless 401 that
#: ``challenge_head``'s pieces make (see ``_challenge.c``), the realm (a str) when ``ready``
#: (realm -> the answer's fixed parts) lacks it, or None; None when built without C.
challenge_answer: Callable[[bytes, str, int, dict[str, tuple[bytes, ...]]],
                           bytes | str | None] | None
try:
    from protocols.sip._digest_speedups import challenge_answer, challenge_head
    from protocols.sip._digest_speedups import credentials as _fast_credentials
    from protocols.sip._digest_speedups import params as _fast_params
except ImportError:  # built without a C compiler: the Python loop alone, same results
    _fast_params = None
    _fast_credentials = None
    challenge_head = None
    challenge_answer = None


def _params(text: str) -> dict[str, str]:
    """``name=value`` pairs, values quoted (with \\-escapes) or tokens, comma separated.

    The C fast path (``_digest_speedups.c``) parses the common shape in one pass (~72k
    instructions of this loop per Authorization value, callgrind); for anything else it
    answers None and this loop judges, errors included."""
    if _fast_params is not None:
        fast = _fast_params(text)
        if fast is not None:
            return fast
    return _params_slow(text)


def _params_slow(text: str) -> dict[str, str]:
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


class Credentials(msgspec.Struct, frozen=True):
    """A parsed Authorization / Proxy-Authorization value (RFC 3261 §25.1 dig-resp).

    A msgspec Struct: built in C, a third of what a slotted dataclass's ``__init__`` costs
    (callgrind: ~570 instructions against ~1,870 for ten fields), once per request.
    """

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
    """Parse one Authorization value; ``DigestError`` when unusable.

    The C fast path checks and returns the fields of the common shape in one pass (~32k
    instructions of this code and the dict of ``_params`` per authenticated request,
    callgrind); for anything else it answers None and the code below judges, errors
    included."""
    if _fast_credentials is not None:
        creds = _fast_credentials(value, Credentials)
        if creds is not None:
            return creds
    p = _scheme_params(value)
    try:
        username, realm, nonce, uri, response = (p["username"], p["realm"], p["nonce"], p["uri"],
                                                 p["response"])
    except KeyError:
        missing = [k for k in ("username", "realm", "nonce", "uri", "response") if k not in p]
        raise DigestError(f"missing {', '.join(missing)}") from None
    raw_algorithm = p.get("algorithm")
    if raw_algorithm is None:
        algorithm = "MD5"  # RFC 7616 §3.3: the default
    else:
        algorithm = _CANONICAL.get(raw_algorithm.lower(), "")
        if not algorithm:
            raise DigestError(f"unsupported algorithm {raw_algorithm!r}")
    qop = p.get("qop")
    nc: int | None = None
    if qop is not None:
        qop = qop.lower()
        if qop not in ("auth", "auth-int"):
            raise DigestError(f"unsupported qop {qop!r}")
        raw_nc = p.get("nc", "")
        if len(raw_nc) != 8 or not _HEX8.fullmatch(raw_nc):
            raise DigestError("qop needs nc as 8 hex digits")  # RFC 7616 §3.4
        if not p.get("cnonce"):
            raise DigestError("qop needs cnonce")
        nc = int(raw_nc, 16)
    # Positional: keywords cost twice as much to bind (callgrind), once per request.
    return Credentials(username, realm, nonce, uri, response.lower(), algorithm, qop, nc,
                       p.get("cnonce"), p.get("opaque"))


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
    """request-digest of RFC 7616 §3.4.1 (RFC 2617 §3.2.2.1 without qop); ``ha1_hex`` in
    lower-case hex, as ``ha1`` makes it and the stores keep it."""
    h = _HASHES[creds.algorithm]  # canonical already (parse_credentials)
    qop = creds.qop
    if qop == "auth-int":
        body_hash = h(body).hexdigest()
        ha2 = h(f"{method}:{creds.uri}:{body_hash}".encode()).hexdigest()
    else:
        ha2 = _ha2(creds.algorithm, method, creds.uri)
    if qop is None:
        return h(f"{ha1_hex}:{creds.nonce}:{ha2}".encode()).hexdigest()
    nc = creds.nc or 0
    # Formatting the count costs more than the rest of the string (~2.2k instructions,
    # callgrind); a client's count within one nonce is nearly always small.
    nc_hex = _NC_HEX[nc] if nc < len(_NC_HEX) else f"{nc:08x}"
    return h(f"{ha1_hex}:{creds.nonce}:{nc_hex}:{creds.cnonce}:{qop}:{ha2}".encode()).hexdigest()


#: nc-value (RFC 7616 §3.4: 8LHEX) of the first counts.
_NC_HEX = tuple(f"{n:08x}" for n in range(256))


@functools.lru_cache(maxsize=256)
def _ha2(algorithm: str, method: str, uri: str) -> str:
    """HA2 = H(method ":" digest-uri) without auth-int (RFC 7616 §3.4.3): the same for every
    REGISTER of a domain's phones (their Request-URI is the domain), so one hash of the two
    per authenticated request is saved.  Bounded: other URIs are hashed as before."""
    return _HASHES[algorithm](f"{method}:{uri}".encode()).hexdigest()


def verify(creds: Credentials, ha1_hex: str, method: str, body: bytes = b"") -> bool:
    """The response matches ``ha1_hex`` (lower-case hex, as the stores keep it); compared in
    constant time."""
    response = creds.response
    # compare_digest takes ASCII str; a response that is not ASCII matches no digest.
    return response.isascii() and hmac.compare_digest(
        expected_response(creds, ha1_hex, method, body), response)


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


#: The members read once: in Python 3.11 a member looked up on its class goes through
#: ``EnumType.__getattr__`` (~170 ns, ten times a global), a few times per authenticated request.
_VALID = NonceState.VALID
_STALE = NonceState.STALE
_INVALID = NonceState.INVALID


#: Seconds of one tick: every nonce minted in a tick carries the same authenticated head (the
#: tick's start and its tag), so the MAC is computed once per tick and realm, not per
#: challenge, and checked once per tick and realm too.  A nonce's issue time is thus known to
#: a tick: it expires between ``lifetime - TICK`` and ``lifetime`` after it was given, and when
#: ``NonceCounts`` must evict a live record, every unused nonce of that record's tick turns
#: stale with it; a table that holds a few ticks of challenges never evicts from the current
#: one.  A salted nonce (``NonceMinter.make``) is the same for the same salt within a tick.
TICK = 4
_TAG_BYTES = 16
_HEAD_CHARS = 32   # base64url of 8 bytes of issue time and the 16-byte tag, without padding
_UNIQUE_CHARS = 16  # 8 bytes in hex
_NONCE_CHARS = _HEAD_CHARS + _UNIQUE_CHARS
_MASK64 = (1 << 64) - 1
#: Verified heads kept (``NonceMinter._known``): a few per realm and tick within a lifetime.
_KNOWN_LIMIT = 4096


class NonceMinter:
    """Stateless nonces: base64url(tick start in ms ‖ tag) ‖ hex(8 unique bytes).

    tag = HMAC-SHA256(secret, tick start ‖ realm)[:16]: any process or node holding the secret
    checks a nonce it did not mint, and the realm takes part so a nonce is good only for the
    realm it was given for.  The unique part is not authenticated and need not be: it only
    makes each challenge's nonce different, so that nonce counts (``NonceCounts``) are per
    client; a client cannot change it in a request without invalidating its own response, which
    covers the whole nonce (RFC 7616 §3.4.1).
    """

    def __init__(self, secret: bytes, lifetime: float) -> None:
        if len(secret) < 16:
            raise ValueError("nonce secret must be at least 16 bytes")
        self._secret = secret
        self.lifetime = lifetime
        #: realm -> (head, tick start in ms) of the current tick: the minting side's cache.
        self._heads: dict[str, tuple[str, int]] = {}
        #: head -> (realm, issued at): heads whose tag was checked, the checking side's cache.
        self._known: dict[str, tuple[str, float]] = {}
        # Unique parts of unsalted nonces: a counter from a random start, so two processes
        # (or a restarted one) do not walk the same sequence.
        self._unique = itertools.count(int.from_bytes(os.urandom(8), "big") >> 1)

    def _tag(self, stamp: bytes, realm: str) -> bytes:
        return hmac.new(self._secret, stamp + realm.encode(), hashlib.sha256).digest()[:_TAG_BYTES]

    def head(self, realm: str, now: float) -> str:
        """The authenticated head every nonce for ``realm`` minted at ``now`` starts with (its
        tick's): ``make`` appends the unique part to it."""
        tick_ms = int(now // TICK) * TICK * 1000
        current = self._heads.get(realm)
        if current is not None and current[1] == tick_ms:
            return current[0]
        stamp = struct.pack(">Q", tick_ms)
        head = base64.urlsafe_b64encode(stamp + self._tag(stamp, realm)).decode()
        if len(self._heads) >= _KNOWN_LIMIT:
            self._heads.clear()  # realms are served domains, few: never in practice
        self._heads[realm] = (head, tick_ms)
        return head

    def make(self, realm: str, now: float, salt: str | bytes | None = None) -> str:
        """A fresh nonce; with ``salt`` (a request's identity) the same one for the same salt
        within a tick, so a stateless challenge to a retransmitted request is the same bytes as
        the first (a transaction would have repeated its answer, §17.2.2).  A salted nonce's
        unique part is Python's hash of the salt: per process, which is enough, since a
        retransmission reaches the process the request reached."""
        unique = next(self._unique) if salt is None else hash(salt)
        return self.head(realm, now) + format(unique & _MASK64, "016x")

    @staticmethod
    def issued_at(nonce: str) -> float | None:
        """When ``nonce`` was issued (its tick's start), unchecked; None if not a nonce."""
        raw = _decode(nonce[:_HEAD_CHARS]) if len(nonce) == _NONCE_CHARS else None
        return None if raw is None else struct.unpack(">Q", raw[:8])[0] / 1000.0

    def judge(self, nonce: str, realm: str, now: float) -> tuple[NonceState, float]:
        """The nonce's state for ``realm`` at ``now``, and when it was issued (0 if INVALID)."""
        if len(nonce) != _NONCE_CHARS:
            return _INVALID, 0.0
        head = nonce[:_HEAD_CHARS]
        known = self._known.get(head)
        if known is None:
            known = self._learn(head, realm, now)
            if known is None:
                return _INVALID, 0.0
        head_realm, issued = known
        if head_realm != realm:
            return _INVALID, 0.0
        if not issued - 5.0 <= now <= issued + self.lifetime:  # small skew between nodes
            return _STALE, issued
        return _VALID, issued

    def check(self, nonce: str, realm: str, now: float) -> NonceState:
        return self.judge(nonce, realm, now)[0]

    def _learn(self, head: str, realm: str, now: float) -> tuple[str, float] | None:
        """Check a head's tag for ``realm``, and remember it while it is within its lifetime
        (a head is good for one realm only: the realm is under its tag)."""
        raw = _decode(head)
        if raw is None:
            return None
        stamp, tag = raw[:8], raw[8:]
        if not hmac.compare_digest(self._tag(stamp, realm), tag):
            return None
        issued = struct.unpack(">Q", stamp)[0] / 1000.0
        if issued + self.lifetime >= now:  # an expired head is not worth keeping
            if len(self._known) >= _KNOWN_LIMIT:
                self._forget(now)
            self._known[head] = (realm, issued)
        return realm, issued

    def _forget(self, now: float) -> None:
        """Drop expired heads; if none is, all (they are learnt again at one MAC each)."""
        horizon = now - self.lifetime
        old = [h for h, (_, issued) in self._known.items() if issued < horizon]
        for h in old or list(self._known):
            del self._known[h]


def _decode(head: str) -> bytes | None:
    if len(head) != _HEAD_CHARS:
        return None
    try:
        raw = base64.urlsafe_b64decode(head)
    except (ValueError, TypeError):
        return None
    return raw if len(raw) == 8 + _TAG_BYTES else None


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
        #: nonce -> (highest count, issued at): the issue time is kept for ``floor``.
        self._seen: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def use(self, nonce: str, nc: int | None, issued_at: float) -> NonceState:
        count = 0 if nc is None else nc
        seen = self._seen
        last = seen.get(nonce)
        if last is None:
            if issued_at <= self.floor:
                return _STALE
        elif nc is None or count <= last[0]:
            return _STALE  # a replay, or a one-time nonce used again
        else:
            seen.move_to_end(nonce)
        seen[nonce] = (count, issued_at)
        while len(seen) > self.capacity:
            _, (_, at) = seen.popitem(last=False)
            if at > self.floor:
                self.floor = at
        return _VALID
