"""Per-worker change journals in shared memory (``signaling.registry.journal``)."""

from __future__ import annotations

import contextlib
import os
import signal
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from signaling.registry.base import Binding
from signaling.registry.journal import (
    PREFIX,
    UNTIL_SLACK,
    JournalReader,
    JournalWriter,
    Lapped,
    prune,
    writer_pid,
)
from signaling.registry.pending import Change, record

#: Seconds a child process may take to start and append (a busy CI box starts Python slowly).
BOUND = 60.0


def test_appends_are_read_whole_and_in_order_across_the_end_of_the_ring(
        tmp_path: Path) -> None:
    writer = JournalWriter(str(tmp_path), ring=100)
    reader = JournalReader.open(writer.path)
    assert reader is not None and reader.read() == b""
    got = b""
    for n in range(30):  # 30 x 7 bytes: twice around the ring, one append split at its end
        record = f"rec{n:03d}/".encode()
        writer.append(record)
        if n % 3 == 2:
            got += reader.read()
    assert got == b"".join(f"rec{n:03d}/".encode() for n in range(30))
    assert reader.read() == b""
    reader.close()
    writer.close()


def test_a_new_aors_binding_is_journaled_as_the_record_of_its_change(tmp_path: Path) -> None:
    """``append_new`` (the first REGISTER's fast path) writes the bytes ``record`` gives for
    the Change, and keeps the header's latest expiry, across the end of the ring too."""
    writer = JournalWriter(str(tmp_path), ring=700)
    reader = JournalReader.open(writer.path)
    assert reader is not None
    got = expected = b""
    for n in range(6):  # ~300 bytes each: twice around the ring
        b = Binding(aor=f"sip:u{n}@x", contact=f"sip:u{n}@192.0.2.1:5060;ob", q=0.5,
                    expires_at=1_000.0 + n * UNTIL_SLACK / 8, call_id=f"c{n}@h", cseq=7 + n,
                    source="192.0.2.1:5", key=f"<urn:uuid:{n}>", instance=f"<urn:uuid:{n}>",
                    reg_id=1, path=("<sip:p@x;lr>",))
        writer.append_new(b.aor, b)
        expected += record(Change(b.aor, [(b, None)], []), 1, 1)
        got += reader.read()
    # 1,000 s plus the slack covers the five later expiries: the header is written once
    assert got == expected and writer.until == 1_000.0 + UNTIL_SLACK
    reader.close()
    writer.close()


def test_records_of_new_aors_of_any_size_in_turn_are_each_their_own(tmp_path: Path) -> None:
    """``append_new`` encodes each body into one buffer it reuses: a short record after a
    long one (and a long after a short) is written whole and nothing of the one before."""
    writer = JournalWriter(str(tmp_path), ring=16_384)
    reader = JournalReader.open(writer.path)
    assert reader is not None
    for n, hops in enumerate((0, 40, 0, 3, 80, 0)):  # path: 0 to ~2,000 bytes
        b = Binding(aor=f"sip:u{n}@x", contact=f"sip:u{n}@192.0.2.1", q=1.0,
                    expires_at=2_000.0, call_id=f"c{n}", cseq=1, key=f"sip:u{n}@192.0.2.1",
                    path=tuple(f"<sip:proxy{i}.example.com;lr>" for i in range(hops)))
        writer.append_new(b.aor, b)
        assert reader.read() == record(Change(b.aor, [(b, None)], []), 1, 1)
    reader.close()
    writer.close()


def test_the_header_expiry_is_written_again_only_past_its_slack(tmp_path: Path) -> None:
    """Each append may extend the journal's life (``prune`` reads the header): it covers
    every expiry appended so far, and moves only when an append's passes it, then to that
    expiry plus ``UNTIL_SLACK``, never back."""
    writer = JournalWriter(str(tmp_path), ring=4096)

    def kept_until() -> float:
        with open(writer.path, "rb") as f:  # the header, as prune reads it
            header = f.read(64)
        return float(struct.unpack_from("<d", header, 24)[0])

    slack = UNTIL_SLACK
    for until, expected in ((1_000.0, 1_000.0 + slack),
                            (1_000.0 + slack / 2, 1_000.0 + slack),  # covered: not written
                            (1_000.0 + slack, 1_000.0 + slack),
                            (900.0, 1_000.0 + slack),  # an earlier expiry: never back
                            (1_001.0 + slack, 1_001.0 + 2 * slack),  # past it: moved
                            (5_000.0, 5_000.0 + slack)):
        writer.append(b"rec", until=until)
        assert kept_until() == writer.until == expected
    writer.close()


def test_a_reader_a_whole_ring_behind_is_told_it_lost_changes(tmp_path: Path) -> None:
    writer = JournalWriter(str(tmp_path), ring=64)
    reader = JournalReader.open(writer.path)
    assert reader is not None
    for _ in range(10):
        writer.append(b"x" * 10)
    with pytest.raises(Lapped):
        reader.read()
    with pytest.raises(ValueError):
        writer.append(b"y" * 65)  # larger than the ring: refused, not wrapped over itself
    reader.close()
    writer.close()


def test_a_file_not_complete_yet_is_not_taken(tmp_path: Path) -> None:
    fd, path = tempfile.mkstemp(prefix=PREFIX, dir=tmp_path)  # as the writer creates it
    os.close(fd)
    assert JournalReader.open(path) is None
    Path(path).write_bytes(b"\0" * 4096)  # sized, magic not written yet
    assert JournalReader.open(path) is None
    assert JournalReader.open(str(tmp_path / "gone")) is None


@contextlib.contextmanager
def _writer_child(tmp_path: Path, until: float) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A real process that appends one record (b"acknowledged", expiring at ``until``) to a
    new journal in ``tmp_path`` and then waits to be killed: it and the journal's path."""
    code = ("import sys, time\n"
            "from signaling.registry.journal import JournalWriter\n"
            "w = JournalWriter(sys.argv[1])\n"
            f"w.append(b'acknowledged', until={until!r})\n"
            "print(w.path, flush=True)\n"
            "time.sleep(3600)\n")
    child = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)],
                             stdout=subprocess.PIPE, cwd=Path(__file__).parents[3])
    try:
        assert child.stdout is not None
        path = child.stdout.readline().decode().strip()
        assert path, "the child did not append"
        yield child, path
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def _kill9(child: subprocess.Popen[bytes]) -> None:
    child.send_signal(signal.SIGKILL)
    assert child.wait(BOUND) == -signal.SIGKILL


def test_what_a_killed_process_appended_stays_readable(tmp_path: Path) -> None:
    """kill -9 right after an append loses nothing: the journal is the page cache's."""
    with _writer_child(tmp_path, 0.0) as (child, path):
        _kill9(child)
    reader = JournalReader.open(path)
    assert reader is not None
    assert reader.read() == b"acknowledged"
    reader.close()


def test_a_journal_goes_once_its_writer_exited_and_what_it_mentions_expired(
        tmp_path: Path) -> None:
    """``prune`` is given the pids of the workers not reaped yet: here this process's pid
    stands for a live writer, an empty set for one that exited."""
    me = os.getpid()
    used = JournalWriter(str(tmp_path), ring=4096)
    used.append(b"rec1", until=1_000.0)
    used.append(b"rec2", until=500.0)  # an earlier expiry does not shorten the journal's life
    empty = JournalWriter(str(tmp_path), ring=4096)
    (tmp_path / f"{PREFIX}{me}-dying").write_bytes(b"")  # its writer died creating it
    (tmp_path / "replica.sock").write_bytes(b"")  # not a journal: never touched
    assert writer_pid(used.name) == me and writer_pid("replica.sock") is None
    assert prune(str(tmp_path), {me}, 2_000.0) == []  # the writer is alive: all kept
    assert sorted(prune(str(tmp_path), set(), 999.0)) == sorted([empty.name,
                                                                f"{PREFIX}{me}-dying"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([used.name, "replica.sock"])
    assert prune(str(tmp_path), set(), 1_000.5) == []  # kept up to UNTIL_SLACK longer
    assert prune(str(tmp_path), set(), 1_000.5 + UNTIL_SLACK) == [used.name]
    assert [p.name for p in tmp_path.iterdir()] == ["replica.sock"]
    used.close()
    empty.close()


def test_the_journal_of_a_writer_killed_9_is_pruned_by_its_own_header(tmp_path: Path) -> None:
    """The expiry is in the file (shared memory), not in the process that wrote it."""
    with _writer_child(tmp_path, 1234.5) as (child, path):
        name = Path(path).name
        assert writer_pid(name) == child.pid
        assert prune(str(tmp_path), {child.pid}, 9999.0) == []  # its writer is alive
        _kill9(child)
    assert prune(str(tmp_path), set(), 1234.0 + UNTIL_SLACK) == []
    assert prune(str(tmp_path), set(), 1235.0 + UNTIL_SLACK) == [name]
    assert list(tmp_path.iterdir()) == []
