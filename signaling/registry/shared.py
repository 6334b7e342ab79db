"""The ``shared`` engine: one registry for every worker of a multi-process server, without Redis.

``signaling serve --processes N`` with the embedded default (``--registry memory``) keeps one
``MemoryRegistry`` in the supervisor (``signaling.registry.owner``), served over a Unix socket;
each worker talks to it through this client.  Bindings are now kept in a replica in every worker
(``signaling.registry.replica``, which uses this client for Diameter sessions, nonce claims
and the rare dialog too large for its own table, ``signaling.registry.dialogmap``); the
supervisor's ``SHARING_ENV`` brings back this engine for everything, for
comparison.  So a registration made through one worker is found
through every other, and it survives a worker's death (kill -9): the binding lives in the
supervisor, which no traffic reaches and which runs none of the SIP code.

Why a registry owned by one process rather than shared memory: the in-memory engine's atomicity
(one REGISTER applied in one step, ``registry/memory.py``) is kept as is, with no cross-process
locks and no second implementation of §10.3 over a shared hash table; the price is a round trip
over a Unix socket per call (``benchmarks/bench_shared_registry.py`` measures it against the
in-process engine), and one core for all registry work.  Beyond what one core serves, use Redis.

The client pipelines: calls are framed into one buffer and written once per event loop
iteration (many REGISTERs' calls in one ``write``), replies are matched by id.  Every call is
bounded by ``CALL_TIMEOUT`` and raises ``RegistryUnavailable`` past it, or when the owner is
gone; the next call reconnects.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from typing import Any, ClassVar, cast

import msgspec

from signaling.registry.base import Binding, ContactChange, RegistryUnavailable
from signaling.registry.wire import HEADER, MAX_FRAME, METHODS, Reply, to_exception

__all__ = ["CALL_TIMEOUT", "MAX_PENDING", "SharedRegistry"]

#: Bound on one call, as for Redis on loopback (registry/redis.py): the owner answers in
#: microseconds unless it is gone or overloaded, and a REGISTER must get its 503 in time.
CALL_TIMEOUT = 0.5
#: Calls awaiting their reply at once.  Beyond it the owner is far behind; new calls get
#: ``RegistryUnavailable`` (503 + Retry-After) rather than an unbounded backlog.
MAX_PENDING = 10_000

_ENCODER = msgspec.msgpack.Encoder()
_REPLY = msgspec.msgpack.Decoder(Reply)
_RESULTS = {name: msgspec.msgpack.Decoder(result) for name, (_, result) in METHODS.items()}
_Pending = tuple["asyncio.Future[Any]", msgspec.msgpack.Decoder[Any], float, str]


class _Client(asyncio.Protocol):
    """One connection to the owner: frames out, replies matched to their futures."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.transport: asyncio.Transport | None = None
        #: id -> (future, result decoder, deadline, method), in the order sent: the deadlines
        #: ascend, so the sweep stops at the first call still in time.
        self.pending: dict[int, _Pending] = {}
        self._sweep: asyncio.TimerHandle | None = None
        self._buf = bytearray()
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.transport = None
        pending, self.pending = self.pending, {}
        for fut, _, _, _ in pending.values():
            if not fut.done():
                fut.set_exception(RegistryUnavailable("registry owner connection lost"))
        if self._sweep is not None:
            self._sweep.cancel()

    def add(self, call_id: int, entry: _Pending) -> None:
        self.pending[call_id] = entry
        if self._sweep is None:
            loop = asyncio.get_running_loop()
            self._sweep = loop.call_at(entry[2], self._expire)

    def _expire(self) -> None:
        """Fail the calls past their deadline (one timer per connection, not one per call)."""
        self._sweep = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        pending = self.pending
        for call_id, (fut, _, deadline, method) in list(pending.items()):
            if deadline > now:
                self._sweep = loop.call_at(deadline, self._expire)
                return
            del pending[call_id]
            if not fut.done():
                fut.set_exception(RegistryUnavailable(
                    f"registry owner: no answer to {method} in {self.timeout} s"))

    def send(self, frame: bytes) -> None:
        self._out.append(frame)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        out, self._out = self._out, []
        if self.transport is not None:
            self.transport.writelines(out)

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        start = 0
        end = len(buf)
        while end - start >= 4:
            (size,) = HEADER.unpack_from(buf, start)
            if size > MAX_FRAME:
                assert self.transport is not None
                self.transport.abort()  # corrupt stream: connection_lost fails every call
                return
            if end - start - 4 < size:
                break
            self._reply(bytes(buf[start + 4:start + 4 + size]))
            start += 4 + size
        del buf[:start]

    def _reply(self, frame: bytes) -> None:
        reply = _REPLY.decode(frame)
        entry = self.pending.pop(reply.id, None)
        if entry is None:  # its caller timed out and left
            return
        fut, decoder, _, _ = entry
        if fut.done():
            return
        if reply.error is not None:
            fut.set_exception(to_exception(reply.error))
            return
        fut.set_result(decoder.decode(reply.result))


class SharedRegistry:
    """A ``Registry`` whose state lives in the owner process at ``path`` (a Unix socket)."""

    #: Each call is a round trip to the owner, one process for every worker: REGISTERs stay
    #: queued for the registrar's worker tasks (answering them as read was never measured).
    registers_at_once: ClassVar[bool] = False

    def __init__(self, path: str, timeout: float = CALL_TIMEOUT) -> None:
        self.path = path
        self.timeout = timeout
        self._client: _Client | None = None
        self._connecting: asyncio.Lock | None = None
        self._ids = itertools.count(1)

    async def _connection(self) -> _Client:
        client = self._client
        if client is not None and not client.lost:
            return client
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._client is not None and not self._client.lost:
                return self._client
            loop = asyncio.get_running_loop()
            try:
                async with asyncio.timeout(self.timeout):
                    _, client = await loop.create_unix_connection(
                        lambda: _Client(self.timeout), self.path)
            except (OSError, TimeoutError) as exc:
                raise RegistryUnavailable(f"registry owner {self.path}: {exc}") from None
            self._client = client
            return client

    async def _call(self, method: str, *args: Any) -> Any:
        client = self._client
        if client is None or client.lost:
            client = await self._connection()
        if len(client.pending) >= MAX_PENDING:
            raise RegistryUnavailable("registry owner: too many calls pending")
        call_id = next(self._ids)
        body = _ENCODER.encode((call_id, method, args))
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        client.add(call_id, (fut, _RESULTS[method], loop.time() + self.timeout, method))
        client.send(HEADER.pack(len(body)) + body)
        return await fut

    # -- the Registry interface (registry/base.py documents each method) ---------------------

    async def register(self, aor: str, call_id: str, cseq: int,
                       changes: Sequence[ContactChange], now: float) -> list[Binding]:
        result: list[Binding] = await self._call("register", aor, call_id, cseq, changes, now)
        return result

    async def remove_all(self, aor: str, call_id: str, cseq: int, now: float) -> int:
        result: int = await self._call("remove_all", aor, call_id, cseq, now)
        return result

    async def lookup(self, aor: str, now: float) -> list[Binding]:
        result: list[Binding] = await self._call("lookup", aor, now)
        return result

    async def remove_binding(self, aor: str, key: str) -> bool:
        result: bool = await self._call("remove_binding", aor, key)
        return result

    async def remove_connection(self, connection_id: str) -> int:
        result: int = await self._call("remove_connection", connection_id)
        return result

    async def expire(self, now: float, limit: int) -> int:
        result: int = await self._call("expire", now, limit)
        return result

    async def list_aors(self, offset: int = 0, limit: int = 100, prefix: str = "") -> list[str]:
        result: list[str] = await self._call("list_aors", offset, limit, prefix)
        return result

    async def count_aors(self) -> int:
        result: int = await self._call("count_aors")
        return result

    async def count_bindings(self) -> int:
        result: int = await self._call("count_bindings")
        return result

    async def known_user(self, aor: str) -> bool:
        result: bool = await self._call("known_user", aor)
        return result

    async def put_dialog(self, dialog_id: str, data: bytes, ttl: float) -> None:
        await self._call("put_dialog", dialog_id, data, ttl)

    async def get_dialog(self, dialog_id: str) -> bytes | None:
        result: bytes | None = await self._call("get_dialog", dialog_id)
        return result

    async def delete_dialog(self, dialog_id: str) -> bool:
        result: bool = await self._call("delete_dialog", dialog_id)
        return result

    async def claim(self, key: str, ttl: float) -> bool:
        result: bool = await self._call("claim", key, ttl)
        return result

    async def put_session(self, session_id: str, data: bytes, ttl: float) -> None:
        await self._call("put_session", session_id, data, ttl)

    async def get_session(self, session_id: str) -> bytes | None:
        result: bytes | None = await self._call("get_session", session_id)
        return result

    async def delete_session(self, session_id: str) -> bool:
        result: bool = await self._call("delete_session", session_id)
        return result

    async def ping(self) -> None:
        await self._call("ping")

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None and client.transport is not None:
            client.transport.close()
