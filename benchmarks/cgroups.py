"""CPU quotas for the benchmarks: a cgroup holding a server to a share of one core, and what the
kernel says about the processes in it.

A server under test is held to a share of a core so that one core of load really offers several
times its capacity (issue 13) and so that N workers each get the same share (issue 16).  One
class for every benchmark: bench_overload, bench_recovery, bench_multiproc and the others each
had their own copy, with small differences (which one moved its members out before removing
the group, which one read which throttling counter).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")
#: A short period (10 ms): a quota of a tenth of a core stalls the group at most 9 ms at a
#: time, well under T1 (500 ms), instead of 90 ms with the kernel's default 100 ms period.
PERIOD_US = 10_000
#: The least quota the kernel takes (cgroup v2 ``cpu.max`` and v1 ``cfs_quota_us``).
MIN_QUOTA_US = 1_000


class CpuQuota:
    """A fresh cgroup limited to ``share`` of one CPU (v2 ``cpu.max``, else the v1 CFS quota), or
    unlimited with ``share=None`` (the load generators' group).

    Its weight is the highest the kernel takes: by default a cgroup competes with the machine's
    other tasks as *one* task (v1 ``cpu.shares`` 1024, v2 ``cpu.weight`` 100), so on a machine
    that other work loads the server got a slice of its core, not its quota, and a step
    measured the neighbours.  With the top weight the quota is what holds the server back (and
    the generators get their core); the quota still caps what the server takes from the others.
    """

    def __init__(self, share: float | None, name: str = "server",
                 period_us: int = PERIOD_US) -> None:
        quota = max(MIN_QUOTA_US, int(share * period_us)) if share is not None else -1
        group = f"bench-{name}-{os.getpid()}"
        controllers = CGROUP / "cgroup.controllers"
        if controllers.exists() and "cpu" in controllers.read_text().split():
            self.root = CGROUP
            self.path = CGROUP / group
            self.path.mkdir()
            (self.path / "cpu.max").write_text(f"{quota if quota > 0 else 'max'} {period_us}\n")
            (self.path / "cpu.weight").write_text("10000\n")
        else:
            self.root = CGROUP / "cpu"
            self.path = self.root / group
            self.path.mkdir()
            (self.path / "cpu.cfs_period_us").write_text(f"{period_us}\n")
            (self.path / "cpu.cfs_quota_us").write_text(f"{quota}\n")
            (self.path / "cpu.shares").write_text("262144\n")
        self.share = share
        self.describe = (f"{quota} us per {period_us} us" if quota > 0 else "no quota") + \
            f", top weight ({self.path})"

    def enter(self, pid: int = 0) -> None:
        """Move ``pid`` (default: the calling process, e.g. a child before its exec) in."""
        (self.path / "cgroup.procs").write_text(f"{pid or os.getpid()}\n")

    def add_tree(self, pid: int) -> None:
        """Move ``pid`` and every process under it in (a server's workers, SIPp's children)."""
        for p in process_tree(pid):
            with contextlib.suppress(OSError):  # a process that just exited
                self.enter(p)

    def throttled_periods(self) -> int:
        """Periods in which the group used its whole quota (``cpu.stat`` ``nr_throttled``)."""
        return self._stat().get("nr_throttled", 0)

    def throttled_seconds(self) -> float:
        """Wall time the group was held by its quota (v1 ``throttled_time`` ns, v2 µs)."""
        stat = self._stat()
        if "throttled_usec" in stat:
            return stat["throttled_usec"] / 1e6
        return stat.get("throttled_time", 0) / 1e9

    def _stat(self) -> dict[str, int]:
        out: dict[str, int] = {}
        with contextlib.suppress(OSError):
            for line in (self.path / "cpu.stat").read_text().splitlines():
                name, _, value = line.partition(" ")
                with contextlib.suppress(ValueError):
                    out[name] = int(value)
        return out

    def close(self) -> None:
        """Move what is still in the group back to the root, then remove the group (the kernel
        refuses to remove a group with members)."""
        with contextlib.suppress(OSError):
            for p in (self.path / "cgroup.procs").read_text().split():
                with contextlib.suppress(OSError):
                    (self.root / "cgroup.procs").write_text(p)
            self.path.rmdir()


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants, from each process's parent in ``/proc/P/stat``."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError):
                text = (entry / "stat").read_text()
                parent = int(text[text.rindex(")") + 2:].split()[1])
                children.setdefault(parent, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def run_delay(pid: int) -> float:
    """Seconds ``pid``'s threads spent runnable but not running (schedstat's second field),
    added up: held by a quota, or waiting for a CPU the machine's other work had."""
    total = 0
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError, IndexError):
                total += int((task / "schedstat").read_text().split()[1])
    return total / 1e9
