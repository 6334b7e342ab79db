"""Diameter over TCP (RFC 6733) with a Credit-Control server (RFC 4006 / RFC 8506).

``DiameterServer(config, metrics, store)`` is the entry point ``signaling serve`` wires in:
``await start()``, ``await close(timeout)``, and the read-only views ``peers()``,
``sessions()`` and ``session_count()`` for the admin API.  Credit-Control session state lives
behind ``CCSessionStore`` (``InMemoryCCSessionStore`` here; the registry implements it too).
"""

from signaling.diameter.config import DiameterConfig
from signaling.diameter.server import DiameterServer, PeerInfo, SessionInfo
from signaling.diameter.store import CCSessionStore, InMemoryCCSessionStore

__all__ = [
    "CCSessionStore",
    "DiameterConfig",
    "DiameterServer",
    "InMemoryCCSessionStore",
    "PeerInfo",
    "SessionInfo",
]
