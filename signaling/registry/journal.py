"""Each worker's registry changes, in a ring of shared memory its siblings read when they need.

The ``replica`` engine (``signaling.registry.replica``) keeps the whole registry in every worker
of ``signaling serve --processes N``.  Each worker appends its changes (the records of
``signaling.registry.pending``) to a journal of its own: a file in the supervisor's run
directory, mapped with ``MAP_SHARED``, so an append is a copy into the page cache.  The other
workers map it read-only and take what is new in it when they need it (see the replica module
for when): no socket, no relay through the supervisor, no wake-up of anybody per change.

Why this rather than passing the changes through the supervisor (the design it replaces:
each worker wrote groups of changes to the supervisor's hub, which relayed them to every
other worker): there each REGISTER waited for its group's write (a suspension of its coroutine
and a timer per group), each group woke the supervisor, and each sibling woke for the relayed
groups.  Here the REGISTER's 200 leaves right after the copy, which also keeps it when its
worker is killed -9 the next instant (the page cache outlives the process), and a sibling
reads many changes in one copy when it needs them.  Measured (``benchmarks/bench_instructions
--kinds REGISTER --processes N``, every process, one REGISTER at a time): 375,352 -> 337,690
instructions per REGISTER with 2 workers, 480,499 -> 408,382 with 4 (one process: 261,114);
the supervisor's share 25,398 -> 0.  What is left grows with N: each sibling files each
record (``Pending.absorb``, in C since: a sibling's ~30,000 instructions per REGISTER ->
~10,000, most of it its own timers).  A record is framed and copied into the ring by one C
call (``write_record``, reference ``write_record_py``).

Layout: a 64-byte header (``MAGIC``, then the *head*: bytes ever appended, an 8-byte native
integer at offset 8, then the ring's size), then the ring.  Record ``n`` bytes appended at head
``h`` sit at ``h % ring``, wrapping at the end.  The writer copies the records, then stores the
new head: a reader that loads the head sees whole appends only.  (Both are single aligned
8-byte moves, ``struct`` ``Q`` in native mode: atomic, and on x86-64 stores become visible in
program order, loads are not reordered with loads.  A port to a weakly ordered CPU needs a
barrier here.)  A reader further behind than the ring's size has lost changes (``Lapped``):
with ``RING`` bytes, ~64,000 REGISTERs of one worker; the replica engine catches up far more
often (every few milliseconds under load, every second when idle).

One writer per journal: each worker process creates its own, named after its pid (a worker
restarted after a crash, or the next generation of a reload, writes a new one while its
predecessor's stays readable).

When a journal goes (``prune``, run by the supervisor every ``PRUNE_EVERY`` seconds): once its
writer has exited **and** every binding its records mention has expired.  The writer keeps in
the header the latest expiry (``expires_at``, wall clock as the registry's) of any binding it
journaled, the bindings a change replaced or removed included (rounded up by as much as
``UNTIL_SLACK``, so that it is not written at every REGISTER).  Why that rule and not one
about the readers: a journal is read by two kinds of reader, the live siblings (who catch up
every ``CATCH_UP``, at worst every second) and, after every worker died at once, the new
workers, which rebuild the registry from every journal left (``signaling.registry.hub``).
The second kind has nobody to copy from, so what they need is the record itself, for as long
as it can matter: a removed journal's upserts would be lost, and its removals undone (a
binding removed through it would come back from the journal that created it).  Past the
latest expiry, neither can happen: every binding its records created, replaced or removed
has expired on every replica, whichever journals are read.  So the rule needs no
bookkeeping of read positions and no re-journaling, and it covers the live readers too (what
they had not read yet has expired).  The cost: a dead worker's journal stays up to
``max_expires`` (7,200 s by default) after its last REGISTER, so a server reloaded daily
holds the journals of the last two hours' generations, not of every day; a reader checks a
dead journal (one load of its head) until then, and drops its mapping once the file is gone.
A journal with nothing written (no binding) goes as soon as its writer has exited.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path

from signaling.registry import runfiles
from signaling.registry.base import Binding
from signaling.registry.pending import ENCODER, RECORD

__all__ = ["MAGIC", "PREFIX", "PRUNE_EVERY", "RING", "UNTIL_SLACK", "JournalReader",
           "JournalWriter", "Lapped", "prune", "write_record_py", "writer_pid"]

MAGIC = b"SIGJRNL1"
#: File names in the run directory: ``PREFIX``, the writer's pid, ``-``, then
#: ``tempfile.mkstemp``'s random part (letters, digits, ``_``).
PREFIX = "journal-"
#: Seconds between two ``prune`` runs of the supervisor: a journal may stay this much longer
#: than the rule requires (nothing depends on it going sooner).
PRUNE_EVERY = 1.0
#: Bytes of the ring: at ~250 bytes per REGISTER's record, ~64,000 changes of one worker.
RING = 16 << 20
_HEADER = 64
#: The head: native order and alignment (one 8-byte move; ``<Q`` would copy byte by byte).
_HEAD = struct.Struct("Q")
_HEAD_AT = 8
_RING = struct.Struct("<Q")
_RING_AT = 16
#: Seconds a journal may be kept past the latest expiry of the bindings it mentions
#: (``JournalWriter._keep_until``): the header's expiry is written once in that many seconds
#: of REGISTERs (each expiring a little later than the last) rather than at each; a dead
#: worker's journal stays up to a second longer, as ``PRUNE_EVERY`` already lets it.
UNTIL_SLACK = 1.0
#: The latest ``expires_at`` of any binding the records mention, plus up to ``UNTIL_SLACK``
#: (see the docstring).
_UNTIL = struct.Struct("<d")
_UNTIL_AT = 24


class Lapped(Exception):
    """The writer has overwritten changes this reader had not read yet."""


class JournalWriter:
    """This worker's journal in ``directory``, created empty."""

    def __init__(self, directory: str, ring: int = RING) -> None:
        fd, path = tempfile.mkstemp(prefix=f"{PREFIX}{os.getpid()}-", dir=directory)
        try:
            os.ftruncate(fd, _HEADER + ring)  # sparse: pages cost memory once written
            self._map = mmap.mmap(fd, _HEADER + ring)
        finally:
            os.close(fd)
        self.path = path
        self.name = Path(path).name
        self.ring = ring
        #: Bytes appended so far (the head).
        self.head = 0
        #: What ``append_new`` encodes a record's body into: msgspec's ``encode`` allocates
        #: a buffer per call and shrinks it to the message (~900 instructions more per
        #: REGISTER, callgrind); ``encode_into`` reuses this one.
        self._body = bytearray(512)
        #: The latest expiry of the bindings the records mention, plus up to ``UNTIL_SLACK``
        #: (kept in the header).
        self.until = 0.0
        _RING.pack_into(self._map, _RING_AT, ring)
        self._map[:len(MAGIC)] = MAGIC  # last: a reader takes the file once this is there

    def append(self, data: bytes, until: float = 0.0) -> None:
        """Copy ``data`` (whole records) into the ring, then publish it (see the docstring);
        ``until``: the latest expiry of the bindings they mention."""
        size, ring, buf = len(data), self.ring, self._map
        if size > ring:
            raise ValueError("records larger than the journal")
        if until > self.until:
            self._keep_until(until)
        at = self.head % ring
        first = min(size, ring - at)
        buf[_HEADER + at:_HEADER + at + first] = data[:first]
        if first < size:
            buf[_HEADER:_HEADER + size - first] = data[first:]
        self.head += size
        _HEAD.pack_into(buf, _HEAD_AT, self.head)

    def append_record(self, aor: str, token: bytes, cseq: int, latest: float, body: bytes,
                      bindings: int, aors: int, until: float) -> None:
        """``append`` of one record (``signaling.registry.pending.RECORD``) framed here, from
        ``pending.fields`` and the counts, without building the record's bytes first."""
        if until > self.until:
            self._keep_until(until)
        self.head = _write_record(self._map, self.head, self.ring, aor, token, cseq, bindings,
                                  aors, latest, body)

    def append_new(self, aor: str, binding: Binding) -> None:
        """``append_record`` of an AOR's first binding (a new AOR's first REGISTER, the usual
        write): the bytes ``pending.record`` gives for ``Change(aor, [(binding, None)], [])``
        (its body encoded from a tuple: an ``array_like`` Change is the same msgpack array),
        without building the Change or going through ``pending.fields``: ~2,700 fewer
        instructions on the REGISTER (callgrind, ``ReplicaRegistry.register``)."""
        latest = binding.expires_at
        if latest > self.until:
            self._keep_until(latest)
        body = self._body
        ENCODER.encode_into((aor, [(binding, None)], []), body)
        # The token (``pending.fields``: key, newline, Call-ID) written from the two strings.
        self.head = _write_record(self._map, self.head, self.ring, aor,
                                  (binding.key, binding.call_id), binding.cseq, 1, 1, latest,
                                  body)

    def _keep_until(self, until: float) -> None:
        """The journal is to be kept until ``until`` at least: the header says ``UNTIL_SLACK``
        seconds later, so that the appends of the next second (REGISTERs of one
        ``Expires``, each expiring a little later than the last) leave it as it is.  Written
        at every REGISTER, it cost the worker taking it ~900 instructions (a ``pack_into``
        into the map; callgrind, ``ReplicaRegistry.register`` in process).  Read by
        ``prune`` once we have exited: no ordering needed."""
        self.until = until + UNTIL_SLACK
        _UNTIL.pack_into(self._map, _UNTIL_AT, self.until)

    def close(self) -> None:
        self._map.close()


def write_record_py(buf: mmap.mmap, head: int, ring: int, aor: str,
                    token: bytes | tuple[str, str], cseq: int, bindings: int, aors: int,
                    latest: float, body: bytes | bytearray) -> int:
    """Copy one record into the ring of the journal mapped as ``buf`` at ``head``, then store
    the new head (returned), as ``JournalWriter.append`` does; ``token`` as bytes, or as a
    binding's (key, Call-ID), written ``key\ncall_id``.  The reference of
    ``_pending_speedups.write_record``, which runs instead when built: on every REGISTER of
    the worker taking it, framing and copying here cost ~13,000 instructions (callgrind)."""
    if isinstance(token, tuple):
        key, call_id = token
        token = f"{key}\n{call_id}".encode()
    name = aor.encode()
    data = RECORD.pack(len(name), len(token), cseq, bindings, aors, latest, len(body)) \
        + name + token + body
    size = len(data)
    if size > ring:
        raise ValueError("records larger than the journal")
    at = head % ring
    first = min(size, ring - at)
    buf[_HEADER + at:_HEADER + at + first] = data[:first]
    if first < size:
        buf[_HEADER:_HEADER + size - first] = data[first:]
    head += size
    _HEAD.pack_into(buf, _HEAD_AT, head)
    return head


_write_record: Callable[[mmap.mmap, int, int, str, bytes | tuple[str, str], int, int, int,
                         float, bytes | bytearray], int]
try:
    from signaling.registry._pending_speedups import write_record as _write_record
except ImportError:  # built without a C compiler: the Python copy, same bytes
    _write_record = write_record_py


class JournalReader:
    """A sibling's journal, read from ``position`` on; None from ``open`` if it is not
    complete yet (created, magic not written) or not a journal."""

    def __init__(self, buf: mmap.mmap, name: str, ring: int, position: int) -> None:
        self._map = buf
        #: The writer's head as a one-item view (``head_word[0]``): what a catch-up compares
        #: with ``position`` for each sibling, at every REGISTER under valgrind's pace and
        #: every ``CATCH_UP`` under load.  An item of a view is ~700 instructions where a
        #: method running ``_HEAD.unpack_from`` was ~1,600 (callgrind, 3 readers in a loop).
        self.head_word = memoryview(buf)[_HEAD_AT:_HEAD_AT + _HEAD.size].cast("Q")  # _HEAD
        self.name = name
        self.ring = ring
        self.position = position

    @classmethod
    def open(cls, path: str, position: int = 0) -> JournalReader | None:
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size <= _HEADER:
                    return None
                buf = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ)
        except (OSError, ValueError):
            return None
        ring = _RING.unpack_from(buf, _RING_AT)[0]
        if buf[:len(MAGIC)] != MAGIC or ring + _HEADER != size:
            buf.close()
            return None
        return cls(buf, Path(path).name, ring, position)

    def head(self) -> int:
        return int(self.head_word[0])

    def read(self) -> bytes:
        """What was appended since the last read (whole records); ``Lapped`` if some of it
        was overwritten before it was read."""
        head, position, ring, buf = self.head(), self.position, self.ring, self._map
        if head == position:
            return b""
        if head - position > ring:
            raise Lapped(self.name)
        at = _HEADER + position % ring
        size = head - position
        first = min(size, _HEADER + ring - at)
        data = buf[at:at + first]
        if first < size:
            data += buf[_HEADER:_HEADER + size - first]
        if self.head() - position > ring:  # overwritten while we copied
            raise Lapped(self.name)
        self.position = head
        return data

    def close(self) -> None:
        self.head_word.release()
        with contextlib.suppress(BufferError):
            self._map.close()


def writer_pid(name: str) -> int | None:
    """The pid in a journal's file name (None if it is not one)."""
    return runfiles.writer_pid(name, PREFIX)


def prune(directory: str, live: set[int], now: float) -> list[str]:
    """Remove the journals in ``directory`` that are no longer needed (see the docstring):
    their writer is not in ``live`` (the pids of the workers not reaped yet) and ``now``
    (wall clock) is past the expiry of every binding they mention; an incomplete file (its
    writer died creating it) goes once its writer is gone.  Returns the names removed."""
    def needed(header: bytes) -> bool:
        return (header[:len(MAGIC)] == MAGIC
                and _UNTIL.unpack_from(header, _UNTIL_AT)[0] >= now)

    return runfiles.prune_files(directory, PREFIX, _HEADER, live, needed)
