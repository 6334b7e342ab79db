"""Where Credit-Control session state lives between requests.

``CCSessionStore`` is deliberately the three session methods of the registry interface
(``signaling.registry.base.Registry``), so the registry (memory or Redis) can be passed as the
store unchanged and a session survives a restart when Redis is used.  Values are opaque bytes
(``protocols.diameter.creditcontrol.encode_session``, msgpack via msgspec); ``ttl`` is the
session's Tcc, so a store forgets sessions whose client went silent even if this node died
before its own Tcc timer fired.

There is no in-memory store of its own here: the memory registry
(``signaling.registry.memory.MemoryRegistry``) is it, for ``signaling serve``, the tests and the
benchmark alike, so its bounded session table is the only copy of that code.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["CCSessionStore"]


@runtime_checkable
class CCSessionStore(Protocol):
    """Async key-value storage of encoded session state.

    Implementations must be bounded (raise any exception to refuse; the server answers 3004 and
    counts it) and must not return a value after its ``ttl`` has passed.
    """

    async def get_session(self, session_id: str) -> bytes | None:
        """The stored state, or None if unknown or expired."""
        ...

    async def put_session(self, session_id: str, data: bytes, ttl: float) -> None:
        """Store (replace) the state for ``ttl`` seconds."""
        ...

    async def delete_session(self, session_id: str) -> bool:
        """Forget the session; True if it existed."""
        ...
