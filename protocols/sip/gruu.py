"""GRUUs (RFC 5627) made without state: every GRUU carries what routing it needs.

- public GRUU (§3.1, §5): the AOR with ``gr`` set to the instance ID, the construction RFC
  5627's own examples use (``sip:alice@example.com;gr=urn:uuid:f81d...``).  It is stable across
  registrations and reboots (the instance ID is, §4.1 of RFC 5626) and reveals the instance
  ID, which §16.1 accepts for public GRUUs.  Routing one: the bindings of the AOR whose
  ``+sip.instance`` is that URN.
- temporary GRUU (§3.2, §5): ``sip:tgruu.<token>@<domain>;gr`` where the token is the AOR,
  the instance URN and a digest of the registration's Call-ID, encrypted and authenticated with
  a key of the server's: it hides the AOR (§3.2: a temp-gruu must not reveal it) and cannot
  be forged.  Each REGISTER issues a fresh one (random nonce); all stay valid while the
  instance stays registered under the same Call-ID (§6: a REGISTER with another Call-ID
  invalidates the earlier ones), which routing checks against the binding.

Cipher: HMAC-SHA256 as a PRF in counter mode over (nonce, block) for the key stream, and
HMAC-SHA256 over (nonce, ciphertext) truncated to 96 bits as the tag: encrypt-then-MAC with
two keys derived from the secret, nothing beyond the standard library.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from typing import NamedTuple

from protocols.sip.message import SipURI
from protocols.sip.uri import unescape

__all__ = ["TEMP_PREFIX", "GruuCodec", "GruuTarget", "escape_gr", "pub_gruu"]

#: User part prefix of a temp-gruu; no AOR of ours is expected to start with it.
TEMP_PREFIX = "tgruu."
_NONCE = 8
_TAG = 12
_CALL_DIGEST = 8
#: Characters a ``gr`` value may carry unescaped (RFC 3261 §25.1 paramchar, minus ``%``).
_PARAMCHAR = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                       "-_.!~*'()[]/:&+$")


class GruuTarget(NamedTuple):
    """Who a GRUU routes to: the AOR, the instance URN, and for a temp-gruu the digest of the
    Call-ID it was issued under (None for a pub-gruu)."""

    aor: str
    instance: str
    call_digest: bytes | None = None


def escape_gr(urn: str) -> str:
    """The URN as a ``gr`` parameter value (§25.1 escaping of what paramchar does not allow)."""
    return "".join(c if c in _PARAMCHAR else "".join(f"%{b:02X}" for b in c.encode())
                   for c in urn)


def pub_gruu(aor: str, urn: str) -> str:
    """§5: the public GRUU of ``urn`` registered to ``aor`` (``aor`` as ``aor_of`` gives it)."""
    return f"{aor};gr={escape_gr(urn)}"


def call_digest(call_id: str) -> bytes:
    return hashlib.sha256(call_id.encode("utf-8", "surrogateescape")).digest()[:_CALL_DIGEST]


class GruuCodec:
    """Makes temp-gruus and reads any GRUU back (see the module docstring)."""

    def __init__(self, secret: bytes) -> None:
        self._enc = hmac.new(secret, b"temp-gruu encryption", hashlib.sha256).digest()
        self._mac = hmac.new(secret, b"temp-gruu authentication", hashlib.sha256).digest()

    def temp_gruu(self, aor: str, urn: str, call_id: str, domain: str) -> str:
        plain = call_digest(call_id) + f"{aor}\n{urn}".encode("utf-8", "surrogateescape")
        nonce = os.urandom(_NONCE)
        sealed = nonce + _xor(plain, self._stream(nonce, len(plain)))
        token = sealed + hmac.new(self._mac, sealed, hashlib.sha256).digest()[:_TAG]
        text = base64.b32encode(token).decode("ascii").rstrip("=").lower()
        return f"sip:{TEMP_PREFIX}{text}@{domain};gr"

    def target(self, uri: SipURI, aor: str) -> GruuTarget | None:
        """Where a Request-URI with a ``gr`` parameter goes; None when it is not a GRUU of ours
        (no ``gr``, or a temp-gruu token that does not open)."""
        if not uri.params or "gr" not in uri.params:
            return None
        gr = uri.params["gr"]
        if gr:  # public: the AOR of the URI itself
            return GruuTarget(aor, unescape(gr))
        user = uri.user or ""
        if not user.startswith(TEMP_PREFIX):
            return None
        return self._open(user[len(TEMP_PREFIX):])

    def _open(self, text: str) -> GruuTarget | None:
        try:
            token = base64.b32decode(text.upper() + "=" * (-len(text) % 8))
        except ValueError:
            return None
        if len(token) < _NONCE + _CALL_DIGEST + _TAG:
            return None
        sealed, tag = token[:-_TAG], token[-_TAG:]
        if not hmac.compare_digest(hmac.new(self._mac, sealed, hashlib.sha256).digest()[:_TAG],
                                   tag):
            return None
        nonce, cipher = sealed[:_NONCE], sealed[_NONCE:]
        plain = _xor(cipher, self._stream(nonce, len(cipher)))
        aor, sep, urn = plain[_CALL_DIGEST:].decode("utf-8", "surrogateescape").partition("\n")
        return GruuTarget(aor, urn, plain[:_CALL_DIGEST]) if sep else None

    def _stream(self, nonce: bytes, length: int) -> bytes:
        blocks = [hmac.new(self._enc, nonce + i.to_bytes(4, "big"), hashlib.sha256).digest()
                  for i in range((length + 31) // 32)]
        return b"".join(blocks)[:length]


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")
