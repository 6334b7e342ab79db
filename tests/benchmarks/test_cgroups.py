"""The benchmarks' CPU quota: a real cgroup (the tests run as root, as the benchmarks do), the
processes moved into it and out again, and what /proc says about a process tree."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.cgroups import CpuQuota, process_tree, run_delay

CHILD = ("import subprocess, sys; "
         "subprocess.run([sys.executable, '-c', 'import time; time.sleep(60)'])")


@pytest.fixture
def tree() -> Iterator[subprocess.Popen[bytes]]:
    """A process with a child of its own, killed at the end."""
    proc = subprocess.Popen([sys.executable, "-c", CHILD])
    deadline = time.monotonic() + 30
    while len(process_tree(proc.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    yield proc
    for pid in reversed(process_tree(proc.pid)):
        subprocess.run(["kill", "-9", str(pid)], check=False)
    proc.wait()


def test_process_tree_holds_the_process_and_its_descendants(tree: subprocess.Popen[bytes]) -> None:
    pids = process_tree(tree.pid)
    assert pids[0] == tree.pid
    assert len(pids) == 2
    child = pids[1]
    stat = Path(f"/proc/{child}/stat").read_text()
    assert int(stat[stat.rindex(")") + 2:].split()[1]) == tree.pid


def test_a_tree_moved_in_is_listed_by_the_group_and_moved_out_when_it_closes(
        tree: subprocess.Popen[bytes]) -> None:
    quota = CpuQuota(0.5, name="test-cgroups")
    try:
        assert quota.path.is_dir()
        assert "5000 us per 10000 us" in quota.describe
        quota.add_tree(tree.pid)
        members = {int(p) for p in (quota.path / "cgroup.procs").read_text().split()}
        assert members == set(process_tree(tree.pid))
        assert quota.throttled_periods() >= 0  # a sleeping tree is never held
        assert quota.throttled_seconds() >= 0.0
    finally:
        quota.close()
    assert not quota.path.exists()  # closed with members: they went back to the root first
    assert all(Path(f"/proc/{p}").exists() for p in process_tree(tree.pid))


def test_the_least_quota_is_the_kernels_least() -> None:
    quota = CpuQuota(0.01, name="test-cgroups-least")
    try:
        assert quota.describe.startswith("1000 us per 10000 us")
    finally:
        quota.close()
    unlimited = CpuQuota(None, name="test-cgroups-none")
    try:
        assert unlimited.describe.startswith("no quota")
    finally:
        unlimited.close()


def test_a_busy_process_held_by_a_quota_is_throttled() -> None:
    """A busy loop under a tenth of a core is held in most periods: the counters the benches
    read (periods, seconds, and the process's own run delay) all say so."""
    quota = CpuQuota(0.1, name="test-cgroups-busy")
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        quota.enter(proc.pid)
        deadline = time.monotonic() + 60
        while quota.throttled_periods() < 20 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert quota.throttled_periods() >= 20
        assert quota.throttled_seconds() > 0.0
        assert run_delay(proc.pid) > 0.0
    finally:
        proc.kill()
        proc.wait()
        quota.close()
