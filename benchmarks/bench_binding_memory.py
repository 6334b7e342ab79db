"""Memory per stored binding, memory engine (tracemalloc, RSS, charge) and Redis (used_memory).

    python -m benchmarks.bench_binding_memory [--aors N] [--no-redis]

Fills the registry the way the registrar does (one ``register`` per REGISTER, contacts shaped
as a parsed REGISTER gives them, each AOR refreshed once so the expiry heap holds its stale
entries) for several shapes: one small contact per AOR (a phone), ten typical contacts, ten of
the largest contact the registrar accepts by default (``max_contact_length`` 512), and the
issue-20 attack (32 contacts of ~1,800 bytes, now refused at the registrar).  Per shape it
prints bytes per binding as tracemalloc counts them, as the process RSS grew, and as the memory
budget charges them (``binding_cost``; never below tracemalloc, tests/signaling/registry
/test_memory.py holds that), then how many bindings the default 1 GiB budget holds.  The Redis
engine's figure is ``INFO memory`` ``used_memory`` growth of a private redis-server.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import resource
import subprocess
import sys
import time
import tracemalloc

from signaling.registry import ContactChange, Registry
from signaling.registry.memory import MAX_BINDING_BYTES, MemoryRegistry

__all__ = ["main"]

#: (label, bindings per AOR, contact URI length)
SHAPES = [
    ("1 phone contact (60 B) per AOR", 1, 60),
    ("10 contacts of 60 B per AOR", 10, 60),
    ("10 contacts of 512 B per AOR (largest accepted)", 10, 512),
    ("32 contacts of 1,800 B (issue 20's attack; now 400/503)", 32, 1800),
]


def _changes(a: int, per_aor: int, length: int) -> list[ContactChange]:
    out = []
    for i in range(per_aor):
        uri = f"sip:u{a}-{i}@198.51.100.{i % 250}:5060;transport=udp;x="
        uri += "a" * max(0, length - len(uri))
        # The registrar's key is the §19.1.4 form: a string of its own, as long as the URI.
        out.append(ContactChange(contact=uri, expires=3600, source=f"198.51.100.{i}:5060",
                                 key="k" + uri[1:]))
    return out


async def _fill(reg: Registry, aors: int, per_aor: int, length: int) -> None:
    now = time.time()
    for cseq in (1, 2):
        for a in range(aors):
            await reg.register(f"sip:user{a}@example.com", f"{a:08x}-5f1c2a9e@192.0.2.1", cseq,
                               _changes(a, per_aor, length), now)


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize()


async def _memory(aors: int, per_aor: int, length: int) -> tuple[float, float, float]:
    # RSS first, without tracemalloc (whose per-allocation records would inflate it).
    reg = MemoryRegistry(max_bindings_per_aor=per_aor)
    gc.collect()
    rss0 = _rss()
    await _fill(reg, aors, per_aor, length)
    gc.collect()
    rss = _rss() - rss0
    charged = reg.charged_bytes()
    del reg
    gc.collect()
    reg = MemoryRegistry(max_bindings_per_aor=per_aor)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    await _fill(reg, aors, per_aor, length)
    gc.collect()
    traced = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    n = await reg.count_bindings()
    return traced / n, rss / n, charged / n


async def _redis(url: str, aors: int, per_aor: int, length: int) -> float:
    from redis.asyncio import Redis

    from signaling.registry.redis import RedisRegistry

    client = Redis.from_url(url)
    await client.flushall()
    used0 = int((await client.info("memory"))["used_memory"])
    reg = RedisRegistry.from_url(url, max_bindings_per_aor=per_aor)
    await _fill(reg, aors, per_aor, length)
    n = await reg.count_bindings()
    used = int((await client.info("memory"))["used_memory"]) - used0
    await reg.close()
    await client.aclose()
    return used / n


async def _shape(index: int, aors: int, redis_url: str | None) -> None:
    """One shape, in a fresh process so its RSS growth is its own."""
    label, per_aor, length = SHAPES[index]
    n_aors = max(1, aors * 10 // (per_aor * max(1, length // 60)))
    traced, rss, charged = await _memory(n_aors, per_aor, length)
    line = (f"{label:58} {traced:7.0f} {rss:7.0f} {charged:8.0f} "
            f"{MAX_BINDING_BYTES / charged:10,.0f}")
    if redis_url:
        line += f"  {await _redis(redis_url, n_aors, per_aor, length):7.0f}"
    print(line, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aors", type=int, default=10_000,
                        help="AORs for the smallest shape (fewer for larger ones)")
    parser.add_argument("--no-redis", action="store_true")
    parser.add_argument("--shape", type=int, help=argparse.SUPPRESS)  # the child's part
    parser.add_argument("--redis-url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.shape is not None:
        asyncio.run(_shape(args.shape, args.aors, args.redis_url))
        return 0
    service = None
    if not args.no_redis:
        from harness.services import RedisServer

        service = RedisServer().start()
    try:
        print(f"{args.aors} AORs of the first shape (fewer of larger ones); bytes per binding")
        print(f"{'shape':58} {'traced':>7} {'RSS':>7} {'charged':>8} {'in 1 GiB':>10}"
              + ("  redis used_memory" if service is not None else ""))
        for index in range(len(SHAPES)):
            cmd = [sys.executable, "-W", "ignore", "-m", "benchmarks.bench_binding_memory",
                   "--shape", str(index), "--aors", str(args.aors)]
            if service is not None:
                cmd += ["--redis-url", service.url]
            subprocess.run(cmd, check=True)
        print("before this change, issue 20 measured 6.3 kB per binding of the attack shape "
              "through the whole server, with no bound on the total")
    finally:
        if service is not None:
            service.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
