"""Flow tokens of an edge proxy (RFC 5626 §5.2, §5.3.1): the flow a REGISTER came over,
written into the user part of the Path value the edge adds, so that a request the registrar's
side later sends with that value as its Route goes back over the same flow.

The token carries the flow itself (transport, address, the connection's id and the node that
holds it), so the edge keeps no table of them, and an HMAC-SHA256 tag (96 bits) over it with a
key of the server's, so that no one can make up a token that reaches a flow they did not
register over (§5.2: "the proxy MUST be able to determine ... that the flow token was not
modified").  The flow is not secret: the registrar and the proxies on the path see the
addresses anyway.  Text: ``ft.`` and lower-case base32 without padding, characters a SIP user
part takes unescaped (§25.1).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import NamedTuple

__all__ = ["TOKEN_PREFIX", "Flow", "FlowTokens"]

#: User part prefix of a flow token; no Route of ours carries a user part otherwise.
TOKEN_PREFIX = "ft."
_TAG = 12
#: Longest token text read: a flow is a few dozen octets; anything far longer is not ours.
_MAX_TEXT = 400


class Flow(NamedTuple):
    """The flow a token names: a transport's name, the peer's address, the connection's id
    (None for UDP) and the node holding it."""

    transport: str
    host: str
    port: int
    conn_id: str | None
    node: str


class FlowTokens:
    """Makes flow tokens and reads them back (see the module docstring)."""

    def __init__(self, secret: bytes) -> None:
        self._mac = hmac.new(secret, b"flow token authentication", hashlib.sha256).digest()

    def make(self, flow: Flow) -> str:
        plain = "\n".join((flow.transport, flow.host, str(flow.port), flow.conn_id or "",
                           flow.node)).encode("utf-8", "surrogateescape")
        token = self._tag(plain) + plain
        return TOKEN_PREFIX + base64.b32encode(token).decode("ascii").rstrip("=").lower()

    def read(self, user: str | None) -> Flow | None:
        """The flow of a Route's user part; None when it is not a token of this key."""
        if not user or not user.startswith(TOKEN_PREFIX) or len(user) > _MAX_TEXT:
            return None
        text = user[len(TOKEN_PREFIX):]
        try:
            token = base64.b32decode(text.upper() + "=" * (-len(text) % 8))
        except ValueError:
            return None
        tag, plain = token[:_TAG], token[_TAG:]
        if len(tag) < _TAG or not hmac.compare_digest(self._tag(plain), tag):
            return None
        fields = plain.decode("utf-8", "surrogateescape").split("\n")
        if len(fields) != 5 or not fields[2].isdigit():
            return None
        transport, host, port, conn_id, node = fields
        return Flow(transport, host, int(port), conn_id or None, node)

    def _tag(self, plain: bytes) -> bytes:
        return hmac.new(self._mac, plain, hashlib.sha256).digest()[:_TAG]
