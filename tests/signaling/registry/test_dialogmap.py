"""signaling/registry/dialogmap.py: each worker's dialogs in a table of shared memory.

Real files in a temporary run directory, mapped as the workers map them; a worker that has
exited is a real child process that wrote its table and exited."""

from __future__ import annotations

import multiprocessing
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signaling.registry.dialogmap import (
    _KEY_AT,
    DATA_SLOT,
    MAX_PROBE,
    PREFIX,
    DialogMap,
    DialogMaps,
    DialogMapView,
    prune,
    writer_pid,
)


@pytest.fixture
def run_dir() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="sig-dialogmap-") as tmp:
        yield tmp


def _write_and_exit(run_dir: str, entries: list[tuple[str, bytes, float]]) -> None:
    table = DialogMap(run_dir, 16)
    for key, data, expires in entries:
        assert table.put(key, data, expires)


def exited_writer(run_dir: str, *entries: tuple[str, bytes, float]) -> str:
    """The table a worker wrote before it exited (a child process), by name."""
    before = set(os.listdir(run_dir))
    child = multiprocessing.get_context("fork").Process(target=_write_and_exit,
                                                         args=(run_dir, list(entries)))
    child.start()
    child.join()
    assert child.exitcode == 0
    (name,) = set(os.listdir(run_dir)) - before
    return name


def later(seconds: float = 600.0) -> float:
    return time.time() + seconds


def test_a_dialog_written_by_one_worker_is_read_by_another(run_dir: str) -> None:
    writer, reader = DialogMaps(run_dir, 8), DialogMaps(run_dir, 8)
    writer.open()
    assert reader.get("call-1;a") is None
    assert writer.open().put("call-1;a", b"snapshot", later())
    found = reader.get("call-1;a")
    assert found is not None and found.data == b"snapshot" and not found.owner
    # The writer is alive: the dialog is read, not taken (it ends it itself).
    assert reader.taken == 0 and reader.open().held == {}
    assert writer.open().delete("call-1;a") is False
    assert reader.get("call-1;a") is None
    assert writer.open().delete("call-1;a") is None


def test_a_dialog_of_a_worker_that_exited_is_taken_over(run_dir: str) -> None:
    """Its successor holds it from then on: a third worker finds it there, not in the dead
    table, and once the successor ends it, nobody finds it."""
    dead = exited_writer(run_dir, ("call-2;a", b"two", later()), ("call-3;a", b"three", later()))
    successor, third = DialogMaps(run_dir, 8), DialogMaps(run_dir, 8)
    found = successor.get("call-2;a")
    assert found is not None and found.data == b"two"
    assert successor.taken == 1 and "call-2;a" in successor.open().held
    view = DialogMapView.open(str(Path(run_dir) / dead))
    assert view is not None and view.writer_gone()
    assert view.find(b"call-2;a", _crc(b"call-2;a"), time.time()) is None  # taken
    assert view.find(b"call-3;a", _crc(b"call-3;a"), time.time()) is not None  # untouched
    view.close()
    again = third.get("call-2;a")
    assert again is not None and again.data == b"two" and third.taken == 0
    assert successor.open().delete("call-2;a") is False
    assert third.get("call-2;a") is None


def test_the_latest_write_wins_across_tables(run_dir: str) -> None:
    exited_writer(run_dir, ("call-4;a", b"old", later()))
    time.sleep(0.01)
    newer = DialogMaps(run_dir, 8)
    assert newer.open().put("call-4;a", b"new", later())
    found = DialogMaps(run_dir, 8).get("call-4;a")
    assert found is not None and found.data == b"new"


def test_an_expired_dialog_is_not_found_and_is_swept(run_dir: str) -> None:
    maps, other = DialogMaps(run_dir, 8), DialogMaps(run_dir, 8)
    table = maps.open()
    assert table.put("gone;a", b"x", time.time() - 1)
    assert table.put("owned;a", b"", time.time() - 1, owner=True)
    assert table.put("kept;a", b"y", later())
    assert other.get("gone;a") is None and maps.get("gone;a") is None
    # Swept: the key whose data the supervisor holds is returned, to be deleted there.
    assert table.expire(time.time()) == ["owned;a"]
    assert set(table.held) == {"kept;a"}


def test_a_freed_slot_is_reused_and_the_old_key_no_longer_reads(run_dir: str) -> None:
    maps, other = DialogMaps(run_dir, 1), DialogMaps(run_dir, 8)
    table = maps.open()
    assert table.put("first;a", b"1", later())
    assert not table.put("second;a", b"2", later())  # one data slot: full
    assert table.delete("first;a") is False
    assert table.put("second;a", b"2", later())
    assert other.get("first;a") is None
    found = other.get("second;a")
    assert found is not None and found.data == b"2"


def test_a_dialog_too_large_for_a_slot_is_refused(run_dir: str) -> None:
    table = DialogMaps(run_dir, 8).open()
    key = "big;a"
    assert not table.put(key, b"x" * (DATA_SLOT - _KEY_AT - len(key) + 1), later())
    assert table.put(key, b"x" * (DATA_SLOT - _KEY_AT - len(key)), later())


def test_rewriting_a_dialog_replaces_it_in_place(run_dir: str) -> None:
    maps, other = DialogMaps(run_dir, 8), DialogMaps(run_dir, 8)
    table = maps.open()
    assert table.put("d;a", b"v1", later())
    assert table.put("d;a", b"", later(), owner=True)
    found = other.get("d;a")
    assert found is not None and found.owner and found.data == b""
    assert len(table.held) == 1


def test_a_slot_being_written_is_not_read(run_dir: str) -> None:
    """A reader that finds the slot's sequence number odd (its writer mid-write, or killed
    there) does not take what it holds."""
    maps, other = DialogMaps(run_dir, 8), DialogMaps(run_dir, 8)
    table = maps.open()
    assert table.put("torn;a", b"data", later())
    _, slot, _, _ = table.held["torn;a"]
    at = table._data_at + slot * DATA_SLOT
    seq = int.from_bytes(table._map[at:at + 8], "little")
    table._map[at:at + 8] = (seq + 1).to_bytes(8, "little")
    assert other.get("torn;a") is None
    table._map[at:at + 8] = (seq + 2).to_bytes(8, "little")
    assert other.get("torn;a") is not None


def test_a_miss_reads_at_most_max_probe_entries(run_dir: str) -> None:
    """Keys placed in every reachable entry of a home: the writer refuses one more, and a
    reader of a key that is not there stops after ``MAX_PROBE`` entries."""
    table = DialogMap(run_dir, 64)
    home = table._mask & _crc(b"k0")
    keys = [k for k in (f"k{i}" for i in range(200_000))
            if _crc(k.encode()) & table._mask == home][:MAX_PROBE + 1]
    for key in keys[:MAX_PROBE]:
        assert table.put(key, b"v", later())
    assert not table.put(keys[MAX_PROBE], b"v", later())
    assert table.find(keys[MAX_PROBE].encode(), _crc(keys[MAX_PROBE].encode()),
                      time.time()) is None
    assert table.find(keys[-2].encode(), _crc(keys[-2].encode()), time.time()) is not None


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["put", "delete", "get"]), st.integers(0, 11),
                          st.binary(max_size=40)), max_size=80))
def test_a_reader_sees_what_the_writer_holds(ops: list[tuple[str, int, bytes]]) -> None:
    """Any sequence of puts and deletes on a small table (slots reused, entries deleted and
    placed again): another worker reads exactly what the writer holds."""
    with tempfile.TemporaryDirectory(prefix="sig-dialogmap-") as run_dir:
        writer, reader = DialogMaps(run_dir, 6), DialogMaps(run_dir, 6)
        table = writer.open()
        model: dict[str, bytes] = {}
        for op, n, data in ops:
            key = f"call-{n};tag"
            if op == "put":
                if table.put(key, data, later()):
                    model[key] = data
                else:
                    assert key not in model and len(model) == 6
            elif op == "delete":
                assert (table.delete(key) is None) == (key not in model)
                model.pop(key, None)
            found = reader.get(key)
            assert (found.data if found else None) == model.get(key)
        reader.close()
        writer.close()


def test_prune_keeps_what_a_successor_may_still_take(run_dir: str) -> None:
    holding = exited_writer(run_dir, ("held;a", b"x", later()))
    expired = exited_writer(run_dir, ("old;a", b"x", time.time() - 1))
    empty = exited_writer(run_dir)
    live = DialogMaps(run_dir, 8).open()
    (Path(run_dir) / "journal-1-x").write_bytes(b"")  # not a table: not ours to remove
    removed = prune(run_dir, {os.getpid()}, time.time())
    assert sorted(removed) == sorted([expired, empty])
    assert set(os.listdir(run_dir)) == {holding, live.name, "journal-1-x"}
    # Its dialog taken over and ended elsewhere, the table still says it holds one: it goes
    # with its last expiry (taking it does not write the writer's count).
    assert prune(run_dir, {os.getpid()}, later(1200)) == [holding]


def test_a_table_still_being_created_is_not_read(run_dir: str) -> None:
    path = Path(run_dir) / f"{PREFIX}1-partial"
    path.write_bytes(b"\0" * 4096)
    assert DialogMapView.open(str(path)) is None
    assert DialogMaps(run_dir, 8).get("any;a") is None
    assert writer_pid(path.name) == 1 and writer_pid("journal-1-x") is None


def _crc(raw: bytes) -> int:
    import zlib

    return zlib.crc32(raw)
