"""The spool file: bounded appends, rename-then-replay, torn lines."""

from __future__ import annotations

from pathlib import Path

from signaling.records.model import CallRecord, RegistrationEvent
from signaling.records.spool import Spool


def cdr(i: int) -> CallRecord:
    return CallRecord(call_id=f"c{i}", from_tag="f", caller="a", callee="b", start=i, status=200)


def test_append_replay_cycle(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s" / "records.spool")
    assert not spool.has_pending() and spool.begin_replay() is None
    reg = RegistrationEvent(at=1, aor="a", contact="c", event="registered")
    assert spool.append([cdr(1), cdr(2), reg]) == 3
    path = spool.begin_replay()
    assert path is not None and path.name == "records.spool.replay"
    assert spool.append([cdr(3)]) == 1  # goes to a fresh spool file, not the one being read
    chunks = list(spool.read(path, 2))
    assert chunks == [([cdr(1), cdr(2)], 0), ([reg], 0)]
    spool.finish_replay(path)
    assert spool.has_pending()
    path = spool.begin_replay()
    assert path is not None
    assert list(spool.read(path, 10)) == [([cdr(3)], 0)]
    spool.finish_replay(path)
    assert spool.size == 0 and not path.exists()
    spool.close()


def test_leftover_replay_file_first_and_survives_restart(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "records.spool")
    spool.append([cdr(1)])
    assert spool.begin_replay() is not None
    spool.append([cdr(2)])
    spool.close()
    again = Spool(tmp_path / "records.spool")  # a restarted process
    assert again.size > 0
    first = again.begin_replay()
    assert first is not None
    assert list(again.read(first, 10)) == [([cdr(1)], 0)]
    again.finish_replay(first)
    second = again.begin_replay()
    assert second is not None
    assert list(again.read(second, 10)) == [([cdr(2)], 0)]
    again.close()


def test_bounded(tmp_path: Path) -> None:
    one = len(b"\n") + len(__import__("msgspec").json.encode(cdr(1)))
    spool = Spool(tmp_path / "records.spool", max_bytes=one * 2 + 1)
    assert spool.append([cdr(1), cdr(2), cdr(3)]) == 2
    assert spool.append([cdr(4)]) == 0
    spool.close()


def test_torn_line_counted(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "records.spool")
    spool.append([cdr(1)])
    spool.close()
    with open(tmp_path / "records.spool", "ab") as f:
        f.write(b'{"type":"cdr","call_id":"c9","fr')  # a write cut short
    spool = Spool(tmp_path / "records.spool")
    path = spool.begin_replay()
    assert path is not None
    assert list(spool.read(path, 10)) == [([cdr(1)], 1)]
    spool.close()
