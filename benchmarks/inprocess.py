"""The measured loop of an in-process benchmark (``bench_auth_legs``, ``bench_call_legs``): the
server and its client run in this process, under callgrind, whose counters are zeroed before the
loop and dumped after it (``callgrind_control`` on this process); or, with ``--profile``, under
cProfile instead."""

from __future__ import annotations

import cProfile
import os
import pstats
import subprocess
import time

__all__ = ["control", "print_profile", "start"]


def control(flag: str) -> None:
    """``callgrind_control flag`` on this process, which keeps running meanwhile (callgrind
    takes the command while the process executes)."""
    proc = subprocess.Popen(["callgrind_control", flag, str(os.getpid())],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None:
        time.sleep(0.01)


def start(profile: bool) -> cProfile.Profile | None:
    """The loop's counting begins: a cProfile enabled (returned) with ``profile``, else
    callgrind's counters zeroed (None)."""
    if not profile:
        control("-z")
        return None
    prof = cProfile.Profile()
    prof.enable()
    return prof


def print_profile(prof: cProfile.Profile, second: str, rows: int) -> None:
    """The loop's Python functions by call count, then by ``second`` (a pstats sort key)."""
    prof.disable()
    stats = pstats.Stats(prof)
    stats.sort_stats("ncalls").print_stats(60)
    stats.sort_stats(second).print_stats(rows)
