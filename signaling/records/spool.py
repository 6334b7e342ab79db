"""The local spool: records that could not reach Postgres, appended to a file, replayed later.

One JSON document per line (msgspec, tagged ``cdr`` / ``reg``).  Appends go to ``<path>``; a
replay first renames it to ``<path>.replay`` so new appends never mix with the lines being read,
and deletes that file only after every line reached Postgres.  A crash mid-replay replays the
file again, which is harmless: the tables' unique keys drop the rows already written.

Each append is flushed to the OS, so a killed process loses nothing that was spooled; a torn last
line (power loss mid-write) is skipped and counted when read.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

import msgspec

from signaling.records.model import CallRecord, Record, RegistrationEvent

__all__ = ["MAX_SPOOL_BYTES", "Spool"]

# Disk the spool may use.  A record is ~300-500 bytes, so 1 GiB holds 2-3 million records: hours
# of a Postgres outage at a busy node's call rate, while never filling a server's disk.
MAX_SPOOL_BYTES = 1 << 30


class Spool:
    """Append-only record file with a rename-then-replay cycle (see the module docstring)."""

    def __init__(self, path: str | os.PathLike[str], max_bytes: int = MAX_SPOOL_BYTES) -> None:
        self.path = Path(path)
        self.replay_path = self.path.with_name(self.path.name + ".replay")
        self.max_bytes = max_bytes
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[bytes] | None = None
        self._encoder = msgspec.json.Encoder()
        self._decoder = msgspec.json.Decoder(CallRecord | RegistrationEvent)
        self._size = _size(self.path) + _size(self.replay_path)

    @property
    def size(self) -> int:
        """Bytes waiting for replay (both files)."""
        return self._size

    def has_pending(self) -> bool:
        return self._size > 0

    def append(self, records: Sequence[Record]) -> int:
        """Append as many records as fit under ``max_bytes``; returns how many were written."""
        buf = bytearray()
        written = 0
        for record in records:
            line = self._encoder.encode(record) + b"\n"
            if self._size + len(buf) + len(line) > self.max_bytes:
                break
            buf += line
            written += 1
        if buf:
            if self._file is None:
                self._file = open(self.path, "ab")  # noqa: SIM115 - kept open for appends
            self._file.write(buf)
            self._file.flush()
            self._size += len(buf)
        return written

    def begin_replay(self) -> Path | None:
        """The file to replay now: a leftover ``.replay`` first, else the rotated spool."""
        if self.replay_path.exists():
            return self.replay_path
        if _size(self.path) == 0:
            return None
        if self._file is not None:
            self._file.close()
            self._file = None
        os.replace(self.path, self.replay_path)
        return self.replay_path

    def read(self, path: Path, chunk: int) -> Iterator[tuple[list[Record], int]]:
        """Yield (records, corrupt lines) in chunks of at most ``chunk`` records."""
        records: list[Record] = []
        corrupt = 0
        with open(path, "rb") as f:
            for line in f:
                try:
                    records.append(self._decoder.decode(line))
                except msgspec.DecodeError:
                    corrupt += 1
                if len(records) >= chunk:
                    yield records, corrupt
                    records, corrupt = [], 0
        if records or corrupt:
            yield records, corrupt

    def finish_replay(self, path: Path) -> None:
        """Every line of ``path`` reached Postgres: delete it."""
        size = _size(path)
        path.unlink(missing_ok=True)
        self._size = max(0, self._size - size)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
