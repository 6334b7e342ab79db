"""The owner side of the ``shared`` engine: one ``Registry`` served to workers over a Unix socket.

The supervisor of ``signaling serve --processes N`` runs it over a ``MemoryRegistry`` (see
``signaling.registry.shared`` for why).  Each request is answered as its frame is read, in
order; the in-memory engine never suspends inside a call, so a REGISTER is still applied in one
step however many workers send at once, and the replies of a batch of requests go out in one
write.  Only the methods of ``wire.METHODS`` run, with arguments validated against their types;
a malformed frame closes that connection (the worker's calls fail over to 503 and it
reconnects) and is counted, never crashes the owner.  The socket lives in a directory only the
server's user may enter.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import msgspec

from signaling.registry.base import Registry, RegistryError
from signaling.registry.wire import HEADER, MAX_FRAME, METHODS, Request, error_fields

__all__ = ["RegistryOwner"]

log = logging.getLogger(__name__)

_ENCODER = msgspec.msgpack.Encoder()
_REQUEST = msgspec.msgpack.Decoder(Request)
_ARGS = {name: msgspec.msgpack.Decoder(args) for name, (args, _) in METHODS.items()}


class _Conn(asyncio.Protocol):
    def __init__(self, owner: RegistryOwner) -> None:
        self.owner = owner
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)
        self.owner.conns.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.owner.conns.discard(self)

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        start, end = 0, len(buf)
        out: list[bytes] = []
        while end - start >= 4:
            (size,) = HEADER.unpack_from(buf, start)
            if size > MAX_FRAME:
                self._reject("oversized frame")
                return
            if end - start - 4 < size:
                break
            reply = self._answer(bytes(buf[start + 4:start + 4 + size]))
            if reply is None:
                return
            out.append(HEADER.pack(len(reply)))
            out.append(reply)
            start += 4 + size
        del buf[:start]
        if out and self.transport is not None:
            self.transport.writelines(out)  # one write for the whole batch

    def _reject(self, why: str) -> None:
        self.owner.malformed += 1
        log.warning("registry owner: closing a worker connection: %s", why)
        if self.transport is not None:
            self.transport.abort()

    def _answer(self, frame: bytes) -> bytes | None:
        try:
            req = _REQUEST.decode(frame)
            args: tuple[Any, ...] = _ARGS[req.method].decode(req.args)
        except (msgspec.DecodeError, KeyError) as exc:
            self._reject(f"bad request: {exc}")
            return None
        self.owner.calls += 1
        coro = getattr(self.owner.registry, req.method)(*args)
        try:
            # Run to completion right here: the owned engine never suspends (see
            # RegistryOwner), which saves a task switch per batch and keeps each call atomic.
            coro.send(None)
        except StopIteration as done:
            return _ENCODER.encode((req.id, None, done.value))
        except Exception as exc:
            if not isinstance(exc, (ValueError, RegistryError)):
                log.exception("registry owner: %s failed", req.method)
            return _ENCODER.encode((req.id, error_fields(exc), None))
        coro.close()
        log.error("registry owner: %s suspended; the owned registry must not", req.method)
        return _ENCODER.encode((req.id, ["unavailable", "owner cannot wait"], None))


class RegistryOwner:
    """Serves ``registry`` on the Unix socket ``path`` until ``close()``.

    ``registry`` must answer without suspending (``MemoryRegistry`` never awaits): each
    request is run to completion as its frame is read, so one batch of requests costs one
    read and one write, and no call can interleave with another.
    """

    def __init__(self, registry: Registry, path: str) -> None:
        self.registry = registry
        self.path = path
        self.conns: set[_Conn] = set()
        self.calls = 0
        self.malformed = 0
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(lambda: _Conn(self), self.path)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for conn in list(self.conns):
                if conn.transport is not None:
                    conn.transport.close()
            await self._server.wait_closed()
            self._server = None
        await self.registry.close()
