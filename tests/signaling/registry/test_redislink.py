"""The wire under the Redis registry: URL parsing, and the pipe's own connection (order of
replies, errors, AUTH and SELECT, one write per tick).  Outages and timeouts through the
registry are in test_redis.py."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Iterator

import pytest

from harness.services import RedisServer
from signaling.registry import RegistryError, RegistryUnavailable, make_registry, redislink
from signaling.registry.base import ContactChange
from signaling.registry.redislink import NoScriptError, Pipe, parse_url

TIMEOUT = 10.0  # generous: these tests check answers, not speed


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    server = RedisServer(appendonly=False).start()
    try:
        yield server
    finally:
        server.close()


def test_parse_url() -> None:
    assert parse_url("redis://h:1/2") == ("redis://h:1/2", False, "sig")
    assert parse_url("redis+cluster://h:1?prefix=x") == ("redis://h:1", True, "x")
    assert parse_url("redis://h:1/0?cluster=1&socket_timeout=2") == (
        "redis://h:1/0?socket_timeout=2", True, "sig",
    )
    with pytest.raises(ValueError):
        parse_url("http://h:1")
    with pytest.raises(ValueError):
        make_registry("mysql://h")
    with pytest.raises(ValueError):
        Pipe("redis://h:1/0?socket_timeout=2", TIMEOUT)  # options are redis-py's


async def test_replies_in_order_one_write_per_tick(redis_url: str) -> None:
    pipe = Pipe(redis_url, TIMEOUT)
    key = f"t{uuid.uuid4().hex}"
    try:
        futures = [pipe.submit(("INCR", key)) for _ in range(500)]
        # A caller that leaves (cancelled) must not shift the replies of the others.
        futures[10].cancel()
        got = await asyncio.gather(*futures[11:])
        assert got == list(range(12, 501))
        assert (pipe.batches, pipe.commands) == (1, 500)  # one write for the whole tick
        await pipe.submit(("DEL", key))
    finally:
        await pipe.close()


async def test_reply_errors_are_typed(redis_url: str) -> None:
    pipe = Pipe(redis_url, TIMEOUT)
    try:
        missing = pipe.submit(("EVALSHA", "0" * 40, 0))
        wrong = pipe.submit(("INCR",))  # wrong number of arguments
        after = pipe.submit(("PING",))
        with pytest.raises(NoScriptError):
            await missing
        with pytest.raises(RegistryError):
            await wrong
        assert await after == b"PONG"  # an error reply is one reply: the stream stays aligned
    finally:
        await pipe.close()


async def test_auth_and_db_from_the_url(private_redis: RedisServer) -> None:
    private_redis.cli("CONFIG", "SET", "requirepass", "s3cret")
    url = f"redis://:s3cret@127.0.0.1:{private_redis.port}/3"
    reg = make_registry(url)
    try:
        change = ContactChange(contact="sip:a@h", expires=60)
        [b] = await reg.register("sip:a@example.com", "c", 1, [change], 1000.0)
        assert b.contact == "sip:a@h"
        assert await reg.count_aors() == 1
        # Written in database 3, not 0.
        assert private_redis.cli("-a", "s3cret", "-n", "3", "DBSIZE").strip() != "0"
        assert private_redis.cli("-a", "s3cret", "-n", "0", "DBSIZE").strip() == "0"
    finally:
        await reg.close()
    wrong = make_registry(f"redis://:nope@127.0.0.1:{private_redis.port}/0")
    try:
        with pytest.raises(RegistryError):  # refused (NOAUTH), never a hang
            await asyncio.wait_for(wrong.ping(), TIMEOUT)
    finally:
        await wrong.close()


async def test_scripts_loaded_by_each_new_connection(private_redis: RedisServer) -> None:
    """A restarted Redis has no scripts: the pipe loads them as it connects, so the first
    EVALSHA on the connection is answered, not NOSCRIPT."""
    script = "return ARGV[1]"
    sha = hashlib.sha1(script.encode()).hexdigest()
    pipe = Pipe(private_redis.url, TIMEOUT, [script])
    try:
        assert await pipe.submit(("EVALSHA", sha, 0, "a")) == b"a"
        assert pipe.batches == 1  # with the load, in one write
        private_redis.cli("SCRIPT", "FLUSH")
        pipe.drop(RegistryUnavailable("reconnect"))  # as after a restart: a new connection
        assert await pipe.submit(("EVALSHA", sha, 0, "b")) == b"b"
    finally:
        await pipe.close()


async def test_noscript_sent_again_as_eval(private_redis: RedisServer) -> None:
    """A cache flushed under a live connection: the pipe sends an EVALSHA of its own scripts
    answered NOSCRIPT again as EVAL (the caller sees its reply, in order with the calls around
    it); a SHA it does not know stays NoScriptError."""
    script = "return ARGV[1]"
    sha = hashlib.sha1(script.encode()).hexdigest()
    pipe = Pipe(private_redis.url, TIMEOUT, [script])
    try:
        assert await pipe.submit(("EVALSHA", sha, 0, "a")) == b"a"
        private_redis.cli("SCRIPT", "FLUSH")
        again = pipe.submit(("EVALSHA", sha, 0, "b\r\n$1"))
        after = pipe.submit(("PING",))
        unknown = pipe.submit(("EVALSHA", "0" * 40, 0))
        assert await again == b"b\r\n$1"
        assert await after == b"PONG"
        with pytest.raises(NoScriptError):
            await unknown
        # EVAL cached the script again: the next EVALSHA is answered the first time.
        commands = pipe.commands
        assert await pipe.submit(("EVALSHA", sha, 0, "c")) == b"c"
        assert pipe.commands == commands + 1
    finally:
        await pipe.close()


async def test_stalled_redis_bounds_the_calls_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Redis that accepts and never answers: calls wait at most MAX_PENDING at a time (the
    next is refused at once, a 503 for its REGISTER, instead of a queue growing with the
    offered load), all of them fail together once the head is overdue, and the pipe takes a
    new connection for the calls after."""
    monkeypatch.setattr(redislink, "MAX_PENDING", 5)
    accepted: list[asyncio.StreamWriter] = []

    async def stall(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # read nothing, answer nothing

    server = await asyncio.start_server(stall, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pipe = Pipe(f"redis://127.0.0.1:{port}/0", 0.2)
    try:
        waiting = [pipe.submit(("PING",)) for _ in range(5)]
        with pytest.raises(RegistryUnavailable, match="5 Redis calls waiting"):
            pipe.submit(("PING",))
        results = await asyncio.gather(*waiting, return_exceptions=True)
        assert all(isinstance(r, RegistryUnavailable) for r in results), results
        assert "no answer within" in str(results[0])
        # The stuck connection was dropped with its calls: room again, on a new connection.
        again = pipe.submit(("PING",))
        with pytest.raises(RegistryUnavailable):
            await again
        assert len(accepted) == 2
    finally:
        await pipe.close()
        server.close()
        for writer in accepted:
            writer.close()
        await server.wait_closed()


async def test_nothing_listening_fails_fast() -> None:
    from harness.serverproc import free_tcp_port

    pipe = Pipe(f"redis://127.0.0.1:{free_tcp_port()}/0", TIMEOUT)
    try:
        with pytest.raises(RegistryUnavailable):
            await asyncio.wait_for(pipe.submit(("PING",)), TIMEOUT)
    finally:
        await pipe.close()
    with pytest.raises(RegistryUnavailable):
        pipe.submit(("PING",))  # closed
