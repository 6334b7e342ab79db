"""The file subscriber store: HA1 only, reload on change, atomic writes, bad lines skipped."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path

import pytest

from protocols.sip.digest import ha1
from signaling.auth import subscribers as subs_module
from signaling.auth.pgstore import PgSubscribers
from signaling.auth.subscribers import (
    FileSubscribers,
    Subscriber,
    SubscriberError,
    make_store,
    split_identity,
)


def test_create_keeps_only_hashes() -> None:
    sub = Subscriber.create("alice", "example.com", "wonderland")
    assert sub.ha1 == {alg: ha1(alg, "alice", "example.com", "wonderland")
                       for alg in ("SHA-512-256", "SHA-256", "MD5")}
    assert "wonderland" not in json.dumps(sub.to_json()) and "wonderland" not in repr(sub)
    with pytest.raises(SubscriberError):
        Subscriber.create("alice", "example.com", "")


@pytest.mark.parametrize("text,expected", [
    ("alice@example.com", ("alice", "example.com")),
    ("sip:alice@Example.COM", ("alice", "example.com")),
    ("1000@127.0.0.1", ("1000", "127.0.0.1")),
    ("bob@[::1]", ("bob", "[::1]")),
])
def test_identities(text: str, expected: tuple[str, str]) -> None:
    assert split_identity(text) == expected


@pytest.mark.parametrize("bad", ["alice", "@example.com", "alice@", "a b@c", "a@b:5060",
                                 "a:b@c", "<sip:a@b>"])
def test_bad_identities(bad: str) -> None:
    with pytest.raises(SubscriberError):
        split_identity(bad)


async def test_file_store_round_trip_and_reload_on_change(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(subs_module, "RELOAD_CHECK", 0.0)
    path = tmp_path / "subs.jsonl"
    server_view = FileSubscribers(str(path))
    await server_view.start()
    assert await server_view.get("alice", "example.com") is None  # no file: empty store
    cli_view = FileSubscribers(str(path))
    assert await cli_view.put(Subscriber.create("alice", "example.com", "pw"))
    assert not await cli_view.put(Subscriber.create("alice", "example.com", "pw2"))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    await asyncio.sleep(0)
    got = await server_view.get("alice", "EXAMPLE.com")  # another process's write is seen
    assert got is not None and got.ha1["MD5"] == ha1("MD5", "alice", "example.com", "pw2")
    await cli_view.put(Subscriber.create("bob", "example.com", "pw"))
    assert [s.identity for s in await server_view.list(0, 10)] == ["alice@example.com",
                                                                   "bob@example.com"]
    assert await server_view.count() == 2
    assert await cli_view.remove("alice", "example.com")
    assert not await cli_view.remove("alice", "example.com")
    assert await server_view.get("alice", "example.com") is None
    assert not list(tmp_path.glob(".subscribers-*"))  # no temporary file left behind


async def test_bad_lines_are_skipped_and_logged(tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "subs.jsonl"
    good = json.dumps(Subscriber.create("alice", "example.com", "pw").to_json())
    path.write_text(f"# comment\n{{not json\n{good}\n{{\"user\": 1}}\n")
    store = FileSubscribers(str(path))
    await store.start()
    assert await store.count() == 1
    assert sum("ignored" in r.getMessage() for r in caplog.records) == 2


def test_make_store_picks_by_spec() -> None:
    assert isinstance(make_store("x.jsonl"), FileSubscribers)
    assert isinstance(make_store("postgresql://u@h/db"), PgSubscribers)
