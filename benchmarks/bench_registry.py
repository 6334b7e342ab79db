"""Registry ``register()`` calls per second: Redis (auto-pipelined), Redis Cluster, memory.

    python -m benchmarks.bench_registry [--engine redis|cluster|memory] [--seconds S]
                                        [--concurrency C] [--users U]

This measures the registry layer alone (one atomic Lua ``register`` per call, as the registrar
makes for each REGISTER); the REGISTER-per-second figure through the whole server with SIPp is
the server benchmark's.  A private redis-server (AOF on, ``appendfsync everysec``) is started and
pinned to core 1 with ``taskset``; this process is pinned to core 0.  ``--concurrency`` tasks
(the server's worker pool) each register users round-robin from ``--users`` AORs with rising
CSeq, one contact each, 3600 s.  Latency per call goes into an HDR histogram.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import time

from hdrh.histogram import HdrHistogram

from signaling.registry import ContactChange, Registry, make_registry
from signaling.registry.redis import RedisRegistry

__all__ = ["main"]

DEFAULT_SECONDS = 5.0
WARMUP_SECONDS = 1.0
DEFAULT_CONCURRENCY = 256
DEFAULT_USERS = 100_000


async def _worker(reg: Registry, wid: int, conc: int, users: int, stop: list[bool],
                  hist: HdrHistogram, counts: list[int]) -> None:
    i = wid
    cseq = 0
    while not stop[0]:
        cseq += 1
        user = i % users
        change = ContactChange(contact=f"<sip:user{user}@198.51.100.7:5060>", expires=3600,
                               source="198.51.100.7:5060")
        t0 = time.perf_counter()
        await reg.register(f"sip:user{user}@example.com", f"cid-{user}", cseq, [change],
                           time.time())
        hist.record_value(int((time.perf_counter() - t0) * 1e6))
        counts[0] += 1
        i += conc
        if counts[0] % 64 == 0:
            # The memory engine never suspends: let the other workers and the timer run.
            await asyncio.sleep(0)


async def _run(url: str, seconds: float, conc: int, users: int) -> None:
    reg = make_registry(url)
    hist = HdrHistogram(1, 10_000_000, 3)
    counts = [0]
    stop = [False]
    tasks = [asyncio.create_task(_worker(reg, w, conc, users, stop, hist, counts))
             for w in range(conc)]
    await asyncio.sleep(WARMUP_SECONDS)
    hist.reset()
    counts[0] = 0
    stats0 = reg.pipeline_stats if isinstance(reg, RedisRegistry) else (0, 0)
    t0, cpu0 = time.perf_counter(), time.process_time()
    await asyncio.sleep(seconds)
    done, elapsed = counts[0], time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    stats1 = reg.pipeline_stats if isinstance(reg, RedisRegistry) else (0, 0)
    stop[0] = True
    await asyncio.gather(*tasks, return_exceptions=True)
    aors = await reg.count_aors()
    await reg.close()
    print(f"engine: {url.split('?')[0]}, concurrency {conc}, users {users}")
    print(f"register() calls per second: {done / elapsed:,.0f}")
    print(f"client CPU per call: {cpu / max(done, 1) * 1e6:.0f} us "
          f"(CPU busy {cpu / elapsed:.0%} of the run)")
    print(f"latency us: p50 {hist.get_value_at_percentile(50)}, "
          f"p99 {hist.get_value_at_percentile(99)}, max {hist.get_max_value()}")
    if stats1[0] > stats0[0]:
        print(f"commands per pipeline: {(stats1[1] - stats0[1]) / (stats1[0] - stats0[0]):.1f}")
    print(f"AORs stored: {aors}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=["redis", "cluster", "memory"], default="redis")
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS)
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    parser.add_argument("--users", type=int, default=DEFAULT_USERS)
    args = parser.parse_args(argv)
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {0})
    from harness.services import RedisCluster, RedisServer

    service: RedisServer | RedisCluster | None = None
    if args.engine == "redis":
        service = RedisServer(appendonly=True).start()
        assert service.proc is not None
        subprocess.run(["taskset", "-p", "-c", "1", str(service.proc.pid)],
                       check=False, capture_output=True)
        url = service.url
    elif args.engine == "cluster":
        service = RedisCluster().start()
        for node in service.nodes:
            assert node.proc is not None
            subprocess.run(["taskset", "-p", "-c", "1", str(node.proc.pid)],
                           check=False, capture_output=True)
        url = service.url
    else:
        url = "memory"
    try:
        import uvloop

        uvloop.run(_run(url, args.seconds, args.concurrency, args.users))
    finally:
        if service is not None:
            service.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
