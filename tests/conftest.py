"""Session-wide fixtures: private Redis, Redis Cluster and PostgreSQL (see harness/services.py).

Use them by name in any test:

* ``redis_url``          ``redis://127.0.0.1:PORT/0`` of a shared private redis-server
* ``redis_cluster_url``  ``redis+cluster://127.0.0.1:PORT`` of a shared 3-master Redis Cluster
* ``postgres_dsn``       DSN of the shared private PostgreSQL's ``postgres`` database
* ``postgres_db``        DSN of a fresh, empty database created for one test and dropped after

Each is started on first use only, once per session, unless the matching
``SIGNALING_TEST_*`` environment variable names an existing instance.  Tests that must kill or
restart a server construct their own ``RedisServer`` / ``PostgresServer`` from harness.services.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from harness.services import PostgresServer, RedisCluster, RedisServer

# Every message the proxy forwards by editing its received bytes is checked against the
# serializer (signaling/forwarding.py), here and in the server processes tests start.
os.environ["SIGNALING_TEST_CHECK_EDITS"] = "1"


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = os.environ.get("SIGNALING_TEST_REDIS_URL")
    if url:
        yield url
        return
    server = RedisServer(appendonly=False).start()
    try:
        yield server.url
    finally:
        server.close()


@pytest.fixture(scope="session")
def redis_cluster_url() -> Iterator[str]:
    url = os.environ.get("SIGNALING_TEST_REDIS_CLUSTER_URL")
    if url:
        yield url
        return
    cluster = RedisCluster().start()
    try:
        yield cluster.url
    finally:
        cluster.close()


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    dsn = os.environ.get("SIGNALING_TEST_DATABASE_URL")
    if dsn:
        yield dsn
        return
    # fsync off: test data is disposable; the records benchmark starts its own with fsync on.
    server = PostgresServer(fsync=False).start()
    try:
        yield server.dsn
    finally:
        server.close()


@pytest.fixture
async def postgres_db(postgres_dsn: str) -> AsyncIterator[str]:
    """A fresh database for one test, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(postgres_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base, _, _ = postgres_dsn.rpartition("/")
    yield f"{base}/{name}"
    admin = await asyncpg.connect(postgres_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
