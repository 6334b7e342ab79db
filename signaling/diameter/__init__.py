"""Diameter over TCP (RFC 6733) with a Credit-Control server (RFC 4006 / RFC 8506).

``DiameterNode`` (node.py) is the Diameter node: peers, connections, capabilities exchange,
watchdogs, queueing and overload, routing requests by (Application-Id, command code) to the
``Application`` objects registered with it (application.py).  ``CreditControlApplication``
(creditcontrol.py) is one such application; ``DiameterServer(config, metrics, store)`` is the
node with it, the entry point ``signaling serve`` wires in: ``await start()``,
``await close(timeout)``, and the read-only views ``peers()``, ``sessions()`` and
``session_count()`` for the admin API.  Credit-Control session state lives behind
``CCSessionStore``, which the registry (memory or Redis) implements.
"""

from signaling.diameter.application import Application
from signaling.diameter.config import DiameterConfig
from signaling.diameter.creditcontrol import CreditControlApplication
from signaling.diameter.node import DiameterNode
from signaling.diameter.server import DiameterServer, PeerInfo, SessionInfo
from signaling.diameter.store import CCSessionStore

__all__ = [
    "Application",
    "CCSessionStore",
    "CreditControlApplication",
    "DiameterConfig",
    "DiameterNode",
    "DiameterServer",
    "PeerInfo",
    "SessionInfo",
]
