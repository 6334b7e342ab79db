"""The wire to Redis under ``RedisRegistry``: commands in, replies (or typed errors) out.

Two links, one interface (``submit(args)`` returns an awaitable of the reply):

* ``Pipe``, for one Redis (``redis://``): our own connection, one socket, commands packed by
  hiredis (or handed over in RESP by the caller, ``send``: the registry writes its REGISTER
  and sweep from parts made once) and written once per event-loop tick (every REGISTER of that
  tick in one ``write``, which is the pipeline per batch of concurrent REGISTERs), replies
  parsed by ``hiredis.Reader`` and matched to their callers in order (RESP answers in the
  order asked, so no ids).  One connection suffices: Redis runs commands one at a time, and the
  socket lets the next tick's batch queue while Redis runs this one.  redis-py's pipeline cost
  ~20 µs per command in Python (command stack, response parsing, a task per batch, a timeout
  per call), more than the Lua script it carries; this costs a future and a few list
  operations.
* ``Batcher``, over redis-py, for Redis Cluster (slot routing, MOVED/ASK) and for TLS or
  redis-py's URL options: calls made within one tick share one redis-py pipeline.

Every call is bounded (``timeout``): a call not answered in time fails with
``RegistryUnavailable``.  On the pipe the replies come in order, so an overdue head means every
call behind it is stuck too: the connection is dropped and all of them fail at once (one timer
per connection, not one per call); the next call reconnects, so the registry recovers by itself
when Redis returns.  Calls waiting are bounded too (``MAX_PENDING``): past it a call is refused
at once, so a stalled Redis costs 503s, never a queue growing with the offered load.

A script called by SHA on a Redis whose cache lost it (restart, fail-over, SCRIPT FLUSH) is
answered NOSCRIPT; the link sends that call again as EVAL with the source (which caches it
again), so callers never see NOSCRIPT for the scripts the link was given.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from collections.abc import Awaitable, Sequence
from typing import Any, Protocol, cast
from urllib.parse import parse_qs, unquote, urlencode, urlsplit, urlunsplit

import hiredis
from redis.asyncio import Connection
from redis.exceptions import (
    BusyLoadingError,
    ClusterDownError,
    NoScriptError,
    OutOfMemoryError,
    RedisError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from signaling.registry.base import RegistryError, RegistryFull, RegistryUnavailable

__all__ = [
    "MAX_INFLIGHT_BATCHES",
    "MAX_PENDING",
    "MAX_PIPELINE",
    "Batcher",
    "HiredisConnection",
    "Link",
    "NoScriptError",
    "Pipe",
    "parse_url",
    "translate",
]

# Commands per redis-py pipeline round trip (Batcher).  64 already amortises a loopback round
# trip (~50 µs) to under 1 µs per call; smaller batches than "everything ready" let Redis
# execute one batch while Python packs the next (measured with benchmarks/bench_registry.py:
# 256-command batches serialised the two and were slower).
MAX_PIPELINE = 64

# redis-py pipelines in flight at once (each holds a connection).  Beyond that, calls wait in
# the batcher and join the next pipeline, which is what makes batches grow under load.
MAX_INFLIGHT_BATCHES = 8

# Calls waiting for their reply.  The server's worker pool bounds concurrency far below this;
# reaching it means Redis stopped answering, and failing fast (503) beats queueing.
MAX_PENDING = 20_000

# Reply errors that say Redis cannot serve now but will (loading its data set, a script
# running past its time limit, a replica without its master): 503 + Retry-After.
_TRANSIENT = (b"LOADING", b"BUSY", b"MASTERDOWN", b"TRYAGAIN", b"CLUSTERDOWN")


class Link(Protocol):
    """What ``RedisRegistry`` needs of a connection to Redis."""

    batches: int
    commands: int

    def submit(self, args: tuple[Any, ...]) -> Awaitable[Any]:
        """Queue one command now (it joins this tick's batch); await its reply."""
        ...

    async def close(self) -> None:
        ...


def translate(exc: BaseException) -> BaseException:
    """Map a redis-py failure to the registry's typed errors (what the registrar answers)."""
    if isinstance(exc, NoScriptError):
        return exc
    if isinstance(
        exc, RedisConnectionError | RedisTimeoutError | ClusterDownError | BusyLoadingError
        | TimeoutError | OSError,
    ):
        return RegistryUnavailable(f"redis: {type(exc).__name__}: {exc}")
    if isinstance(exc, OutOfMemoryError) or (
        isinstance(exc, ResponseError) and str(exc).startswith("OOM")
    ):
        # maxmemory reached: the deployment's bound on the registry, answered like RegistryFull.
        return RegistryFull(f"redis: {exc}", "memory")
    if isinstance(exc, RedisError):
        return RegistryError(f"redis: {type(exc).__name__}: {exc}")
    return exc


def _reply_error(error: hiredis.ReplyError) -> BaseException:
    """A Redis error reply read by the pipe, as the registry's typed errors."""
    text = str(error)
    code = text.partition(" ")[0].encode()
    if code == b"NOSCRIPT":
        return NoScriptError(text)
    if code == b"OOM":
        return RegistryFull(f"redis: {text}", "memory")
    if code in _TRANSIENT:
        return RegistryUnavailable(f"redis: {text}")
    return RegistryError(f"redis: {text}")


def parse_url(url: str) -> tuple[str, bool, str]:
    """``redis+cluster://h:p?prefix=x`` -> (``redis://h:p``, cluster, prefix)."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    cluster = parts.scheme in ("redis+cluster", "rediss+cluster") or query.pop(
        "cluster", ["0"]
    )[-1] in ("1", "true", "yes")
    prefix = query.pop("prefix", ["sig"])[-1]
    scheme = parts.scheme.replace("+cluster", "")
    if scheme not in ("redis", "rediss"):
        raise ValueError(f"not a Redis URL: {url!r}")
    plain = urlunsplit(
        (scheme, parts.netloc, parts.path, urlencode(query, doseq=True), parts.fragment)
    )
    return plain, cluster, prefix


class HiredisConnection(Connection):
    """redis-py's asyncio connection packs commands in Python (~100 µs for an EVALSHA with a
    dozen arguments); hiredis' C packer does the same in a few µs.  Our commands are always
    single-word names with str/bytes/int arguments, which is what ``pack_command`` accepts."""

    def pack_command(self, *args: Any) -> list[bytes]:
        return [hiredis.pack_command(args)]


#: A call waiting for its reply: its future, its deadline and the command as written (kept so
#: that an EVALSHA answered NOSCRIPT can be sent again as EVAL).
_Call = tuple["asyncio.Future[Any]", float, bytes]

#: How an EVALSHA starts on the wire, after its ``*<count>\r\n``: the name and the SHA's length.
_EVALSHA = b"$7\r\nEVALSHA\r\n$40\r\n"


class _Conn(asyncio.Protocol):
    """One TCP connection of a ``Pipe``; a connection the pipe has dropped is ignored."""

    def __init__(self, pipe: Pipe) -> None:
        self.pipe = pipe
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)
        self.pipe.connected(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.pipe.conn is self:
            self.pipe.drop(RegistryUnavailable(f"redis connection lost: {exc!r}"))

    def data_received(self, data: bytes) -> None:
        if self.pipe.conn is self:
            self.pipe.received(data)


class Pipe:
    """One pipelined connection to one Redis (see the module docstring)."""

    def __init__(self, url: str, timeout: float, scripts: Sequence[str] = ()) -> None:
        parts = urlsplit(url)
        if parts.scheme != "redis" or parts.query:
            raise ValueError(f"the pipe speaks plain redis:// without options: {url!r}")
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 6379
        self._hello = _hello(parts.username, parts.password, parts.path.strip("/"), scripts)
        self._timeout = timeout
        #: The sources of the scripts this pipe loads, by SHA: an EVALSHA answered NOSCRIPT
        #: (the cache flushed under a live connection) is sent again as EVAL by the pipe.
        self._sources = {hashlib.sha1(s.encode()).hexdigest().encode(): s.encode()
                         for s in scripts}
        self.conn: _Conn | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._reader = hiredis.Reader()
        #: Calls in the order sent (and, until connected, to be sent): future and deadline.
        self._calls: deque[_Call] = deque()
        self._out: list[bytes] = []
        self._scheduled = False
        self._sweep: asyncio.TimerHandle | None = None
        self._closed = False
        self.batches = 0
        self.commands = 0

    def submit(self, args: tuple[Any, ...]) -> asyncio.Future[Any]:
        return self.send(hiredis.pack_command(args))

    def send(self, wire: bytes) -> asyncio.Future[Any]:
        """Queue one command already in RESP (the registry packs its REGISTER itself, see
        ``RedisRegistry.register``); its future resolves to the reply."""
        if self._closed:
            raise RegistryUnavailable("registry closed")
        if len(self._calls) >= MAX_PENDING:
            raise RegistryUnavailable(f"{MAX_PENDING} Redis calls waiting")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._queue(loop, fut, loop.time() + self._timeout, wire)
        return fut

    def _queue(self, loop: asyncio.AbstractEventLoop, fut: asyncio.Future[Any], deadline: float,
               wire: bytes) -> None:
        self._calls.append((fut, deadline, wire))
        self._out.append(wire)
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        if self._sweep is None:
            self._sweep = loop.call_at(self._calls[0][1], self._expire)

    def _flush(self) -> None:
        self._scheduled = False
        if not self._out:
            return
        conn = self.conn
        if conn is None or conn.transport is None:
            if self._connecting is None and not self._closed:
                self._connecting = asyncio.get_running_loop().create_task(self._connect())
            return  # written once connected
        out, self._out = self._out, []
        self.batches += 1
        self.commands += len(out)
        conn.transport.write(b"".join(out))

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._timeout):
                await loop.create_connection(lambda: _Conn(self), self._host, self._port)
        except (OSError, TimeoutError) as exc:
            self._fail(RegistryUnavailable(f"redis {self._host}:{self._port}: {exc!r}"))
        finally:
            self._connecting = None

    def connected(self, conn: _Conn) -> None:
        self.conn = conn
        self._reader = hiredis.Reader()
        if self._hello:
            # AUTH / SELECT / SCRIPT LOAD go first, written ahead of the calls waiting for the
            # connection (and not counted in the batches and commands, which are the calls');
            # their replies are read and dropped like any call's.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self._timeout
            for command in self._hello:
                fut: asyncio.Future[Any] = loop.create_future()
                fut.add_done_callback(_consume)
                self._calls.appendleft((fut, deadline, command))
            assert conn.transport is not None
            conn.transport.write(b"".join(self._hello))
        self._flush()

    def received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        calls = self._calls
        try:
            while (reply := reader.gets()) is not False:
                fut, deadline, wire = calls.popleft()
                if fut.done():  # its caller was cancelled
                    continue
                if not isinstance(reply, hiredis.ReplyError):
                    fut.set_result(reply)
                elif (again := self._as_eval(reply, wire)) is not None:
                    # Same future, same deadline: its caller never sees the NOSCRIPT.
                    self._queue(asyncio.get_running_loop(), fut, deadline, again)
                else:
                    fut.set_exception(_reply_error(reply))
        except (hiredis.ProtocolError, IndexError):
            # Not RESP, or a reply nobody asked for: the stream is lost, and with it every call.
            self.drop(RegistryUnavailable("redis: protocol error"))

    def _as_eval(self, reply: hiredis.ReplyError, wire: bytes) -> bytes | None:
        """An EVALSHA of one of our scripts answered NOSCRIPT, as the EVAL to send instead (the
        same command with the source in place of the SHA; EVAL caches the script again)."""
        if not str(reply).startswith("NOSCRIPT"):
            return None
        count, _, rest = wire.partition(b"\r\n")
        if not rest.startswith(_EVALSHA):
            return None
        sha, tail = rest[len(_EVALSHA) : len(_EVALSHA) + 40], rest[len(_EVALSHA) + 42 :]
        source = self._sources.get(sha)
        if source is None:
            return None
        return b"%s\r\n$4\r\nEVAL\r\n$%d\r\n%s\r\n%s" % (count, len(source), source, tail)

    def _expire(self) -> None:
        """The head call is overdue: the connection is stuck (see the module docstring)."""
        self._sweep = None
        if not self._calls:
            return
        loop = asyncio.get_running_loop()
        deadline = self._calls[0][1]
        if deadline > loop.time():
            self._sweep = loop.call_at(deadline, self._expire)
            return
        self.drop(RegistryUnavailable(f"redis: no answer within {self._timeout}s"))

    def drop(self, error: BaseException) -> None:
        """Give up the connection and fail every call on it; the next call reconnects."""
        conn, self.conn = self.conn, None
        if conn is not None and conn.transport is not None:
            conn.transport.abort()
        self._fail(error)

    def _fail(self, error: BaseException) -> None:
        calls, self._calls = self._calls, deque()
        self._out.clear()
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for fut, _, _ in calls:
            if not fut.done():
                fut.set_exception(error)

    async def close(self) -> None:
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
        self.drop(RegistryUnavailable("registry closed"))


def _hello(username: str | None, password: str | None, db: str,
           scripts: Sequence[str] = ()) -> list[bytes]:
    """The commands a new connection sends first: AUTH (password, or ACL user), SELECT, and
    SCRIPT LOAD of the caller's Lua scripts.  A Redis that restarted (or failed over) has an
    empty script cache: without the load, every EVALSHA of the first batch after it would come
    back NOSCRIPT and be sent again as EVAL with the whole source, two round trips and a burst of
    kilobytes per REGISTER at the worst moment.  The EVAL fallback stays for a cache flushed
    under a live connection (SCRIPT FLUSH)."""
    commands: list[tuple[Any, ...]] = []
    if password is not None:
        auth = (unquote(username), unquote(password)) if username else (unquote(password),)
        commands.append(("AUTH", *auth))
    if db not in ("", "0"):
        commands.append(("SELECT", int(db)))
    commands += [("SCRIPT", "LOAD", source) for source in scripts]
    return [hiredis.pack_command(c) for c in commands]


def _overdue(fut: asyncio.Future[Any], timeout: float) -> None:
    """A ``Batcher`` call not answered within its bound: 503 + Retry-After for its caller."""
    if not fut.done():
        fut.set_exception(RegistryUnavailable(f"redis: no answer within {timeout}s"))


def _consume(fut: asyncio.Future[Any]) -> None:
    """A hello command's reply: retrieved so asyncio does not log it; a failed AUTH shows in
    the calls after it (NOAUTH), which fail with their own error."""
    if not fut.cancelled():
        fut.exception()


class Batcher:
    """Auto-pipelining over redis-py: calls made within one loop tick share one pipeline."""

    def __init__(self, client: Any, timeout: float, scripts: Sequence[str] = ()) -> None:
        self._client = client
        self._timeout = timeout
        #: Script sources by SHA: an EVALSHA answered NOSCRIPT is sent again as EVAL.
        self._sources = {hashlib.sha1(s.encode()).hexdigest(): s for s in scripts}
        self._pending: list[tuple[tuple[Any, ...], asyncio.Future[Any]]] = []
        self._scheduled = False
        self._inflight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.batches = 0
        self.commands = 0

    def submit(self, args: tuple[Any, ...]) -> Awaitable[Any]:
        if len(self._pending) >= MAX_PENDING:
            raise RegistryUnavailable(f"{MAX_PENDING} Redis calls waiting")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._pending.append((args, fut))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        # Each pipeline is bounded, but a call may also wait for one to leave: bound the
        # whole.  A timer, not ``asyncio.timeout``: that needs a current task, and a REGISTER
        # answered at once waits without one (``signaling.eager``).
        timer = loop.call_later(self._timeout, _overdue, fut, self._timeout)
        fut.add_done_callback(lambda _: timer.cancel())
        return fut

    def _flush(self) -> None:
        self._scheduled = False
        while self._pending and self._inflight < MAX_INFLIGHT_BATCHES:
            batch = self._pending[:MAX_PIPELINE]
            del self._pending[:MAX_PIPELINE]
            self._inflight += 1
            task = asyncio.create_task(self._run(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[tuple[tuple[Any, ...], asyncio.Future[Any]]]) -> None:
        try:
            pipe = self._client.pipeline(transaction=False)
            for args, _ in batch:
                pipe.execute_command(*args)
            async with asyncio.timeout(self._timeout):
                results = await pipe.execute(raise_on_error=False)
        except asyncio.CancelledError:
            self._fail(batch, RegistryUnavailable("registry closed"))
            raise
        except Exception as exc:  # every failure of the round trip fails its callers
            self._fail(batch, translate(exc))
        else:
            self.batches += 1
            self.commands += len(batch)
            for (args, fut), result in zip(batch, results, strict=True):
                if fut.done():
                    continue
                if isinstance(result, NoScriptError) and args[0] == "EVALSHA" \
                        and (source := self._sources.get(args[1])) is not None:
                    # A restarted or failed-over node's empty cache: EVAL caches it again.
                    self._pending.append((("EVAL", source, *args[2:]), fut))
                elif isinstance(result, BaseException):
                    fut.set_exception(translate(result))
                else:
                    fut.set_result(result)
        finally:
            self._inflight -= 1
            if self._pending and not self._scheduled:
                self._scheduled = True
                asyncio.get_running_loop().call_soon(self._flush)

    @staticmethod
    def _fail(
        batch: list[tuple[tuple[Any, ...], asyncio.Future[Any]]], error: BaseException
    ) -> None:
        for _, fut in batch:
            if not fut.done():
                fut.set_exception(error)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for _, fut in self._pending:
            if not fut.done():
                fut.set_exception(RegistryUnavailable("registry closed"))
        self._pending.clear()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._client.aclose()
