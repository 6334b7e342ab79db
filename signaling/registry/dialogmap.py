"""Each worker's confirmed dialogs in a hash table of shared memory, read by the others on a miss.

``signaling serve --processes N`` with the embedded registry (the ``replica`` engine).  The
proxy writes a dialog to the shared registry when it is confirmed and deletes it when it ends
(``signaling.dialogshare``), so that the worker that next gets one of its in-dialog requests
can route it when the worker holding it cannot: a slot's new worker after a kill -9 or a reload
(the request comes to the slot's Record-Route port), or a request that came to the wrong port.
Here each worker writes into a table of its own, a file in the supervisor's run directory
mapped ``MAP_SHARED`` like the registry's journals (``signaling.registry.journal``); the others
map it too and look a dialog up in it only when they miss one.

Why this rather than the supervisor's registry over its socket (the design it replaces,
``signaling.registry.owner``): there every call paid two round trips to the supervisor (the
write at the 200, the delete at the BYE), each a task, a future and a reply in the worker and a
read, a decode and a write in the supervisor, which shares the workers' cores outside their CPU
quotas.  Measured (``benchmarks/bench_instructions --kinds CALL --processes 2``, one call at a
time, every process; benchmarks/README.md): the supervisor spent 55,746 instructions per call
and the worker taking it ~135,000 more than one process.  Here a write is a copy into the page
cache, nobody is woken for it, and it outlives a kill -9 of its writer the next instant; only a
miss reads the others' tables.  A journal (a ring, as for bindings) would not do: a dialog lives
for hours and would be overwritten in the ring long before it ends, so readers would have to
keep every sibling's dialogs in step, a cost per call and per sibling; a table is looked up
where it lies.

Layout: a 64-byte header (``MAGIC``; at 8 the index's size, at 16 the data slots', at 24 the
latest expiry written, ``until``, at 32 the dialogs held), the index (8-byte entries), then the
data slots (``DATA_SLOT`` bytes each).  An index entry is one 8-byte word: the key's CRC-32 in
the high half, in the low half 0 (never used), ``TOMB`` (deleted) or the data slot's number + 1.
A key's entry is at most ``MAX_PROBE`` entries after its home (the CRC modulo the index's size:
linear probing); a reader stops at the first never-used entry.  A data slot holds a sequence
number, the expiry and the time written (wall clock), the key and the dialog's bytes.

One writer per table (its worker; a table is named after its pid).  The writer fills a data slot
and publishes it by storing its index entry, deletes by storing ``TOMB`` there: each a single
aligned 8-byte store, so a reader sees an entry whole or not at all.  A data slot is reused once
freed; the writer makes its sequence number odd while it writes the slot and even after, and a
reader keeps what it copied only if it read the same even number before and after, and the key
it looked for (a seqlock: on x86-64 stores are seen in program order and loads are not reordered
with loads, as the journal module says; a port to a weakly ordered CPU needs barriers).

A dialog read from the table of a worker that has exited is *taken*: copied into the reader's
own table, and its entry there set to ``TOMB``, so that it ends where it continues and a second
crash finds it in one place (two readers taking it at once both hold it: harmless, each ends
it).  A live writer's table is only read (a reload's old worker finishing its calls, or a
request that reached another slot): that writer still ends the dialog itself.

A dialog too large for a data slot, rare (``DATA_SLOT``), is given to the supervisor's registry
instead and the table holds a marker (``OWNER``) saying so: a miss finds the marker and asks
there, as every miss did before.

When a table goes (``prune``, by the supervisor): once its writer has exited and it holds no
dialog, or every dialog written there has expired (the TTL is the maximum call duration).
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
import tempfile
import time
import zlib
from pathlib import Path
from typing import NamedTuple

from signaling.registry import runfiles

__all__ = ["DATA_SLOT", "MAGIC", "MAX_PROBE", "PREFIX", "SCAN_EVERY", "DialogMap", "DialogMapView",
           "DialogMaps", "Found", "prune", "writer_pid"]

MAGIC = b"SIGDLGM1"
#: File names in the run directory: ``PREFIX``, the writer's pid, ``-``, ``mkstemp``'s part.
PREFIX = "dialogs-"
#: Bytes per data slot: its 32-byte header, the key (Call-ID and tag) and the dialog's snapshot
#: (``ProxyDialog.snapshot``: From, To, both Contacts and peers; 261 bytes for a SIPp call, 449
#: for a browser's over WSS with display names and GRUU-style contacts).  Larger ones go to the
#: supervisor (see the module docstring).  The file is sparse: a slot costs memory once
#: written, and freed slots are reused first.
DATA_SLOT = 2048
#: Index entries looked at from a key's home.  The index has twice as many entries as data
#: slots, so at most half are in use: a run of 32 used entries is far beyond what linear
#: probing makes at that load, and bounds what a miss costs (a request for a dialog nobody
#: holds reads at most this many entries per table).
MAX_PROBE = 32
#: Low half of an index entry: deleted (or taken).  Never used: 0.
TOMB = 0xFFFF_FFFF
#: Flag of a data slot whose dialog the supervisor's registry holds (too large for the slot).
OWNER = 1
#: Times a reader copies a data slot the writer is changing before it gives up on it.
RETRIES = 100
#: Seconds between two reads of the directory by a worker that misses a dialog.
SCAN_EVERY = 0.010

_HEADER = 64
_U64 = struct.Struct("Q")  # native: one aligned 8-byte move (see the docstring)
_F64 = struct.Struct("d")
_INDEX_AT, _SLOTS_AT, _UNTIL_AT, _LIVE_AT = 8, 16, 24, 32
#: A data slot after its sequence number: expiry, time written, data and key length, flags.
_ENTRY = struct.Struct("=ddIHH")
_KEY_AT = 8 + _ENTRY.size
_LOW = 0xFFFF_FFFF


class Found(NamedTuple):
    data: bytes
    expires_at: float
    written_at: float
    owner: bool
    position: int


def _size(capacity: int) -> int:
    """Index entries for ``capacity`` data slots: a power of two, at least twice as many."""
    return 1 << max(4, (2 * capacity - 1).bit_length())


class _Table:
    """A table's mapping and the lookups readers and the writer share."""

    def __init__(self, buf: mmap.mmap, name: str) -> None:
        self._map = buf
        self.name = name
        index = _U64.unpack_from(buf, _INDEX_AT)[0]
        self.slots = _U64.unpack_from(buf, _SLOTS_AT)[0]
        self._mask = index - 1
        self._index = memoryview(buf)[_HEADER:_HEADER + 8 * index].cast("Q")
        self._data_at = _HEADER + 8 * index

    def find(self, key: bytes, crc: int, now: float) -> Found | None:
        """``key``'s live entry, if it is here and has not expired."""
        index, mask = self._index, self._mask
        home = crc & mask
        for i in range(MAX_PROBE):
            entry = index[(home + i) & mask]
            ref = entry & _LOW
            if ref == 0:
                return None  # never used: the key was never placed further on
            if ref == TOMB or entry >> 32 != crc or ref > self.slots:
                continue
            found = self._read(ref - 1, key, (home + i) & mask)
            if found is not None:
                return found if found.expires_at > now else None
        return None

    def _read(self, slot: int, key: bytes, position: int) -> Found | None:
        buf = self._map
        at = self._data_at + slot * DATA_SLOT
        for _ in range(RETRIES):
            seq = _U64.unpack_from(buf, at)[0]
            if seq & 1:
                continue  # the writer is changing it
            expires, written, size, klen, flags = _ENTRY.unpack_from(buf, at + 8)
            if klen != len(key) or _KEY_AT + klen + size > DATA_SLOT:
                stored = None
            else:
                stored = buf[at + _KEY_AT:at + _KEY_AT + klen + size]
            if _U64.unpack_from(buf, at)[0] != seq:
                continue
            if stored is None or stored[:klen] != key:
                return None  # reused for another dialog meanwhile
            return Found(stored[klen:], expires, written, bool(flags & OWNER), position)
        return None

    def close(self) -> None:
        self._index.release()
        with contextlib.suppress(BufferError):
            self._map.close()


class DialogMap(_Table):
    """This worker's table in ``directory``, created empty, for ``capacity`` dialogs."""

    def __init__(self, directory: str, capacity: int) -> None:
        index = _size(capacity)
        fd, path = tempfile.mkstemp(prefix=f"{PREFIX}{os.getpid()}-", dir=directory)
        try:
            os.ftruncate(fd, _HEADER + 8 * index + capacity * DATA_SLOT)  # sparse
            buf = mmap.mmap(fd, _HEADER + 8 * index + capacity * DATA_SLOT)
        finally:
            os.close(fd)
        _U64.pack_into(buf, _INDEX_AT, index)
        _U64.pack_into(buf, _SLOTS_AT, capacity)
        super().__init__(buf, Path(path).name)
        self.path = path
        #: key -> (index position, data slot, expiry, held by the supervisor), oldest first:
        #: every dialog has the same TTL, so the first are the first to expire.
        self.held: dict[str, tuple[int, int, float, bool]] = {}
        #: Data slots never used yet start at ``_fresh``; freed ones are reused first (LIFO:
        #: the pages already written).
        self._fresh = 0
        self._free: list[int] = []
        self.until = 0.0
        buf[:len(MAGIC)] = MAGIC  # last: a reader takes the file once this is there

    def put(self, key: str, data: bytes, expires_at: float, owner: bool = False) -> bool:
        """Store ``data`` under ``key`` until ``expires_at`` (wall clock); False if it does not
        fit a data slot, or no slot or index entry is free."""
        raw = key.encode()
        if _KEY_AT + len(raw) + len(data) > DATA_SLOT:
            return False
        held = self.held.pop(key, None)
        if held is not None:
            position, slot = held[0], held[1]
        else:
            free = self._allocate()
            if free is None:
                return False
            place = self._place(zlib.crc32(raw))
            if place is None:
                self._free.append(free)
                return False
            position, slot = place, free
        buf = self._map
        at = self._data_at + slot * DATA_SLOT
        seq = _U64.unpack_from(buf, at)[0]
        _U64.pack_into(buf, at, seq + 1)  # odd: being written (see the docstring)
        _ENTRY.pack_into(buf, at + 8, expires_at, time.time(), len(data), len(raw),
                         OWNER if owner else 0)
        buf[at + _KEY_AT:at + _KEY_AT + len(raw) + len(data)] = raw + data
        _U64.pack_into(buf, at, seq + 2)
        if held is None:
            self._index[position] = zlib.crc32(raw) << 32 | (slot + 1)  # published
        self.held[key] = (position, slot, expires_at, owner)
        if expires_at > self.until:
            self.until = expires_at
            _F64.pack_into(buf, _UNTIL_AT, expires_at)
        _U64.pack_into(buf, _LIVE_AT, len(self.held))
        return True

    def delete(self, key: str) -> bool | None:
        """Remove ``key``: None if it was not held, else whether the supervisor holds its
        data (the caller deletes it there)."""
        held = self.held.pop(key, None)
        if held is None:
            return None
        position, slot, _, owner = held
        self._index[position] = self._index[position] >> 32 << 32 | TOMB
        self._free.append(slot)
        _U64.pack_into(self._map, _LIVE_AT, len(self.held))
        return owner

    def expire(self, now: float) -> list[str]:
        """Delete what expired (a dialog nobody ended: its worker's BYE never came); the keys
        whose data the supervisor holds are returned for deletion there."""
        gone = []
        for key, (_, _, expires, _) in self.held.items():
            if expires > now:
                break
            gone.append(key)
        return [key for key in gone if self.delete(key)]

    def _allocate(self) -> int | None:
        if self._free:
            return self._free.pop()
        if self._fresh < self.slots:
            self._fresh += 1
            return self._fresh - 1
        return None

    def _place(self, crc: int) -> int | None:
        index, mask = self._index, self._mask
        home = crc & mask
        for i in range(MAX_PROBE):
            position: int = (home + i) & mask
            ref = index[position] & _LOW
            if ref == 0 or ref == TOMB:
                return position
        return None


class DialogMapView(_Table):
    """Another worker's table, mapped read-write only to take dialogs from it once its writer
    has exited (see the module docstring)."""

    @classmethod
    def open(cls, path: str) -> DialogMapView | None:
        """None if it is not complete yet (magic not written) or not a table."""
        try:
            with open(path, "r+b") as f:
                size = os.fstat(f.fileno()).st_size
                if size <= _HEADER:
                    return None
                buf = mmap.mmap(f.fileno(), size)
        except (OSError, ValueError):
            return None
        index = _U64.unpack_from(buf, _INDEX_AT)[0]
        slots = _U64.unpack_from(buf, _SLOTS_AT)[0]
        if buf[:len(MAGIC)] != MAGIC or index != _size(slots) \
                or _HEADER + 8 * index + slots * DATA_SLOT != size:
            buf.close()
            return None
        return cls(buf, Path(path).name)

    def writer_gone(self) -> bool:
        pid = writer_pid(self.name)
        if pid is None:
            return True
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # another user's process under a reused pid: not our worker
            return True
        return False

    def take(self, position: int) -> None:
        """Mark the entry at ``position`` taken (its writer has exited)."""
        self._index[position] = self._index[position] >> 32 << 32 | TOMB


class DialogMaps:
    """This worker's table and every other one in ``directory`` (see the module docstring)."""

    def __init__(self, directory: str, capacity: int) -> None:
        self.directory = directory
        self.capacity = capacity
        self.own: DialogMap | None = None
        self._views: dict[str, DialogMapView] = {}
        self._scanned = -1.0
        #: Dialogs taken from the table of a worker that exited.
        self.taken = 0

    def open(self) -> DialogMap:
        if self.own is None:
            self.own = DialogMap(self.directory, self.capacity)
        return self.own

    def get(self, key: str) -> Found | None:
        """``key``'s dialog from this worker's table or, the latest written, another's; one
        from a table whose writer has exited is taken here (see the module docstring)."""
        raw = key.encode()
        crc = zlib.crc32(raw)
        now = time.time()
        own = self.open()
        found = own.find(raw, crc, now)
        if found is not None:
            return found
        best: tuple[Found, DialogMapView] | None = None
        for view in self._others():
            f = view.find(raw, crc, now)
            if f is not None and (best is None or f.written_at > best[0].written_at):
                best = (f, view)
        if best is None:
            return None
        found, view = best
        if view.writer_gone() and own.put(key, found.data, found.expires_at, found.owner):
            view.take(found.position)
            self.taken += 1
        return found

    def _others(self) -> list[DialogMapView]:
        """The other tables, the directory read again at most every ``SCAN_EVERY`` seconds:
        a table is created when its worker starts, long before any dialog in it can be
        asked for (a call takes several round trips to set up)."""
        now = time.monotonic()
        if now - self._scanned >= SCAN_EVERY:
            self._scanned = now
            self._scan()
        return list(self._views.values())

    def _scan(self) -> None:
        own = self.own.name if self.own is not None else ""
        try:
            names = {n for n in os.listdir(self.directory) if n.startswith(PREFIX)} - {own}
        except OSError:
            return
        for name in self._views.keys() - names:
            self._views.pop(name).close()  # pruned by the supervisor
        for name in names - self._views.keys():
            view = DialogMapView.open(str(Path(self.directory) / name))
            if view is not None:  # else still being created: taken at a later scan
                self._views[name] = view

    def close(self) -> None:
        for view in self._views.values():
            view.close()
        self._views = {}
        if self.own is not None:
            # Its file stays: what it holds is what a successor of this worker takes over.
            self.own.close()
            self.own = None


def writer_pid(name: str) -> int | None:
    """The pid in a table's file name (None if it is not one)."""
    return runfiles.writer_pid(name, PREFIX)


def prune(directory: str, live: set[int], now: float) -> list[str]:
    """Remove the tables no longer needed (see the docstring): their writer is not in ``live``
    (the workers not reaped yet) and they hold no dialog or ``now`` (wall clock) is past the
    expiry of every dialog written there; an incomplete file goes once its writer is gone."""
    def needed(header: bytes) -> bool:
        return (header[:len(MAGIC)] == MAGIC
                and _U64.unpack_from(header, _LIVE_AT)[0] > 0
                and _F64.unpack_from(header, _UNTIL_AT)[0] >= now)

    return runfiles.prune_files(directory, PREFIX, _HEADER, live, needed)
