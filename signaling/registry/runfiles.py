"""Files of the supervisor's run directory that a worker writes and others read (the
registry's journals, ``journal.py``, and the dialog tables, ``dialogmap.py``): named
``<prefix><writer pid>-...``, each with a fixed-size header that says whether it is still
needed once its writer has exited.  The supervisor prunes both kinds the same way."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

__all__ = ["prune_files", "writer_pid"]


def writer_pid(name: str, prefix: str) -> int | None:
    """The pid in a file name of that kind (None if it is not one)."""
    pid, sep, _ = name[len(prefix):].partition("-")
    return int(pid) if name.startswith(prefix) and sep and pid.isdigit() else None


def prune_files(directory: str, prefix: str, header_size: int, live: set[int],
                needed: Callable[[bytes], bool]) -> list[str]:
    """Remove the files of that kind whose writer is not in ``live`` (the pids of the workers
    not reaped yet) and whose whole header ``needed`` does not keep; a file with a short
    header (its writer died creating it) goes too.  Returns the names removed."""
    removed = []
    for name in os.listdir(directory):
        pid = writer_pid(name, prefix)
        if pid is None or pid in live:
            continue
        path = Path(directory) / name
        try:
            with open(path, "rb") as f:
                header = f.read(header_size)
        except OSError:
            continue
        if len(header) == header_size and needed(header):
            continue
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(name)
    return removed
