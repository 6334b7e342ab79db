"""What a Diameter application plugs into the node with (RFC 6733 §2.4: applications by id).

The node (``signaling.diameter.node``) owns peers, connections, capabilities exchange, queues
and overload; an application owns only its requests.  It names the (Application-Id, command
codes) it serves, and answers one validated request at a time from a node worker.  A second
application (Gx, Rf, S6a...) is a new module implementing this protocol, registered with
``DiameterNode.register``; the node routes by ``(application id, command code)`` and answers
anything unrouted DIAMETER_COMMAND_UNSUPPORTED (3001, §7.1.3).
"""

from __future__ import annotations

from typing import Protocol

from protocols.diameter.codec import Message

__all__ = ["Application"]


class Application(Protocol):
    """A Diameter application served by the node."""

    #: The Application-Id (§2.4) of its requests; the node advertises it in CER/CEA.
    application_id: int
    #: Request command codes it answers.
    commands: frozenset[int]

    async def start(self) -> None:
        """Called once the node's event loop runs (timers, sweepers)."""
        ...

    async def close(self) -> None:
        """Called after the node stopped delivering requests."""
        ...

    async def handle(self, request: Message, peer: str) -> Message:
        """The answer to a request already validated against the dictionary (§7).

        ``peer`` is the Origin-Host of the peer it came from (for per-peer bounds).  Raise
        ``RemoteProtocolError`` to answer with its Result-Code; any other exception is
        answered DIAMETER_UNABLE_TO_COMPLY and logged.
        """
        ...
