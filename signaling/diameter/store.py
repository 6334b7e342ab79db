"""Where Credit-Control session state lives between requests.

``CCSessionStore`` is deliberately the three session methods of the registry interface
(``signaling.registry.base.Registry``), so the registry (memory or Redis) can be passed as the
store unchanged and a session survives a restart when Redis is used.  Values are opaque bytes
(``protocols.diameter.creditcontrol.encode_session``, msgpack via msgspec); ``ttl`` is the
session's Tcc, so a store forgets sessions whose client went silent even if this node died
before its own Tcc timer fired.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from protocols.deadlines import DeadlineHeap

__all__ = ["MAX_MEMORY_SESSIONS", "CCSessionStore", "InMemoryCCSessionStore", "StoreFull"]

# Sessions the in-memory store holds.  A session is ~200 bytes of state plus dict overhead;
# 1,000,000 is a few hundred MB at most and far above what one node's peers keep open.
MAX_MEMORY_SESSIONS = 1_000_000


class StoreFull(Exception):
    """The store is at its bound; the request is answered DIAMETER_TOO_BUSY (3004)."""


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


class InMemoryCCSessionStore:
    """A dict whose entries expire through a ``DeadlineHeap``, for the embedded default and tests.

    It reads no clock: ``now`` comes from the callable given at construction (the server passes
    its event loop's ``time``), so expiry is checked against the same monotonic time as Tcc.
    """

    def __init__(self, clock: Callable[[], float] | None = None,
                 max_sessions: int = MAX_MEMORY_SESSIONS) -> None:
        self._data: dict[str, tuple[bytes, float]] = {}
        self._expiry: DeadlineHeap[str] = DeadlineHeap()
        self._clock = clock
        self.max_sessions = max_sessions

    def _now(self) -> float:
        if self._clock is not None:
            return self._clock()
        return asyncio.get_running_loop().time()

    async def get_session(self, session_id: str) -> bytes | None:
        item = self._data.get(session_id)
        if item is None:
            return None
        if item[1] <= self._now():  # expired, not swept yet
            del self._data[session_id]
            self._expiry.cancel(session_id)
            return None
        return item[0]

    async def put_session(self, session_id: str, data: bytes, ttl: float) -> None:
        now = self._now()
        self._sweep(now)
        if session_id not in self._data and len(self._data) >= self.max_sessions:
            raise StoreFull(f"{self.max_sessions} sessions stored")
        expires = now + ttl
        self._data[session_id] = (data, expires)
        self._expiry.push(session_id, expires)

    async def delete_session(self, session_id: str) -> bool:
        self._expiry.cancel(session_id)
        return self._data.pop(session_id, None) is not None

    def __len__(self) -> int:
        return len(self._data)

    def _sweep(self, now: float) -> None:
        for sid in self._expiry.pop_due(now):
            del self._data[sid]
