"""The shared registry's cost per REGISTER against the in-process engine (issue 16).

A worker of ``signaling serve --processes N`` (with the embedded default) calls the supervisor's
``MemoryRegistry`` over a Unix socket (``signaling.registry.shared``).  This measures one
REGISTER's registry call both ways, in CPU time:

* ``memory``: ``MemoryRegistry.register`` in the calling process (``--processes 1``);
* ``shared``: the same call through ``SharedRegistry`` to a ``RegistryOwner`` in another process
  (a real one: ``python -m benchmarks.bench_shared_registry --owner PATH``), with ``WINDOW``
  calls in flight as a busy worker has; CPU of the caller and of the owner are given apart.

Each REGISTER is a new AOR with one contact, as in ``bench_register``.  Put the figures beside
the server's whole CPU per REGISTER (``bench_register``: ~60 µs on one core here) to see the
share the hand-off adds.  The machine is shared: run it twice, trust the order of magnitude.

    python -m benchmarks.bench_shared_registry [--count 50000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import uvloop

from signaling.registry.base import ContactChange, Registry
from signaling.registry.memory import MemoryRegistry
from signaling.registry.owner import RegistryOwner
from signaling.registry.shared import SharedRegistry

__all__ = ["main"]

#: REGISTERs in flight at once in the shared case: a worker at full load has its queue's worth.
WINDOW = 64
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _cpu_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _load(registry: Registry, count: int, window: int) -> float:
    now = time.time()
    sem = asyncio.Semaphore(window)

    async def one(i: int) -> None:
        async with sem:
            await registry.register(f"sip:u{i}@bench", f"c{i}", 1,
                                    [ContactChange(f"sip:u{i}@10.0.0.1:5060", 600)], now)

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(count)))
    return time.perf_counter() - start


async def _owner(path: str) -> None:
    owner = RegistryOwner(MemoryRegistry(), path)
    await owner.start()
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await owner.close()


def _measure_memory(count: int) -> tuple[float, float]:
    cpu0 = _self_cpu()
    wall = uvloop.run(_load(MemoryRegistry(), count, 1))
    return wall, _self_cpu() - cpu0


def _measure_shared(count: int) -> tuple[float, float, float]:
    path = str(Path(tempfile.mkdtemp(prefix="bench-owner-")) / "registry.sock")
    owner = subprocess.Popen([sys.executable, "-m", "benchmarks.bench_shared_registry",
                              "--owner", path], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert owner.stdout is not None and owner.stdout.readline().strip() == b"ready"
        owner_cpu0 = _cpu_of(owner.pid)
        cpu0 = _self_cpu()

        async def run() -> float:
            reg = SharedRegistry(path, timeout=30.0)
            try:
                return await _load(reg, count, WINDOW)
            finally:
                await reg.close()

        wall = uvloop.run(run())
        return wall, _self_cpu() - cpu0, _cpu_of(owner.pid) - owner_cpu0
    finally:
        owner.communicate(b"", timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=50_000)
    parser.add_argument("--owner", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.owner:
        uvloop.run(_owner(args.owner))
        return
    n = args.count
    wall, cpu = _measure_memory(n)
    print(f"{n} REGISTERs (one new AOR each); CPU per REGISTER's registry call, µs "
          "(machine shared: figures are noisy)")
    print(f"  memory, in process : {cpu / n * 1e6:7.1f} caller               "
          f"({n / wall:9.0f}/s)")
    wall, cpu, owner_cpu = _measure_shared(n)
    print(f"  shared, owner proc : {cpu / n * 1e6:7.1f} caller + {owner_cpu / n * 1e6:5.1f} "
          f"owner ({n / wall:9.0f}/s, {WINDOW} in flight)")


if __name__ == "__main__":
    main()
