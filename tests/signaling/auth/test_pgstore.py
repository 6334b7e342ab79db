"""Subscribers in a real PostgreSQL (private instance, tests/services.py)."""

from __future__ import annotations

import asyncpg
import pytest

from signaling.auth.pgstore import MIGRATIONS, PgSubscribers
from signaling.auth.subscribers import Subscriber, SubscriberError
from tests.signaling.auth.sipauth import DOMAIN, Client, open_peer
from tests.signaling.inproc import running_server


async def test_round_trip_and_migrations_once(postgres_db: str) -> None:
    first, second = PgSubscribers(postgres_db), PgSubscribers(postgres_db)
    await first.start()
    await second.start()  # a second node: the migration is not applied twice
    try:
        assert await first.get("alice", "example.com") is None
        assert await first.put(Subscriber.create("alice", "example.com", "pw"))
        assert not await second.put(Subscriber.create("alice", "example.com", "pw2"))
        got = await first.get("alice", "Example.com")
        assert got == Subscriber.create("alice", "example.com", "pw2")
        await first.put(Subscriber.create("bob", "example.com", "x"))
        assert [s.identity for s in await second.list(0, 10)] == ["alice@example.com",
                                                                  "bob@example.com"]
        assert [s.identity for s in await second.list(1, 10)] == ["bob@example.com"]
        assert await first.count() == 2
        assert await first.remove("alice", "example.com")
        assert not await first.remove("alice", "example.com")
    finally:
        await first.close()
        await second.close()
    conn = await asyncpg.connect(postgres_db)
    try:
        versions = await conn.fetch("SELECT version FROM subscribers_schema_version")
        assert [r["version"] for r in versions] == list(range(1, len(MIGRATIONS) + 1))
        columns = {r["column_name"] for r in await conn.fetch(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_name = 'subscribers'")}
        assert not any("pass" in c for c in columns)  # hashes only
    finally:
        await conn.close()


async def test_unreachable_database_is_a_subscriber_error() -> None:
    store = PgSubscribers("postgresql://nobody@127.0.0.1:1/none")
    with pytest.raises(SubscriberError):
        await store.start()
    with pytest.raises(SubscriberError):
        await store.get("alice", "example.com")


async def test_server_authenticates_against_postgres(postgres_db: str) -> None:
    async with running_server(domain=[DOMAIN], auth="on", subscribers=postgres_db) as srv:
        await srv.subscribers.put(Subscriber.create("alice", DOMAIN, "wonderland"))
        assert srv.udp_address is not None
        alice = Client(await open_peer(), srv.udp_address[1], "alice")
        assert (await alice.register("wonderland"))[0].status == 200
        assert (await alice.register("wrong", call_id="w"))[0].status == 401
        # A row written by hand with its HA1 in capitals still authenticates: the store
        # hands digest.verify the lower-case hex it compares with.
        conn = await asyncpg.connect(postgres_db)
        try:
            await conn.execute("UPDATE subscribers SET ha1_md5 = upper(ha1_md5)")
        finally:
            await conn.close()
        assert (await alice.register("wonderland", call_id="u"))[0].status == 200
