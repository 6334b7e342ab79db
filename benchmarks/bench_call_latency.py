"""Call set-up latency through the proxy (INVITE sent to 200 received) at half its capacity.

Complete calls (INVITE, 100, 180, 200, ACK, BYE, 200) from the template-based UA pair of
bench_dialogs_memory (core 0) through the server (core 1), at ``--rate`` calls/s (default
1,250: half of the ~2,500 calls/s one core sustains, from bench_calls' ~400 us of server CPU
per complete call).  Two views:

* caller side: INVITE sent to 200 received, per call, in an HDR histogram (hdrhistogram);
  includes both loopback hops and the callee's answer time, which is immediate;
* server side: the proxy's own ``call_setup_seconds`` histogram (INVITE received to 2xx
  relayed), read from the admin API's /metrics; quantiles interpolated within its buckets,
  so they are only as fine as the bucket bounds.

    python -m benchmarks.bench_call_latency [--rate 1250] [--duration 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import urllib.request

from hdrh.histogram import HdrHistogram

from benchmarks.bench_dialogs_memory import CLIENT_CPU, CallGenerator, ServerUnderTest

__all__ = ["bucket_quantile", "main"]

#: Calls before measuring: imports, caches and the first dict resizes are not the steady state.
WARMUP_CALLS = 2000
_BUCKET = re.compile(r'^signaling_call_setup_seconds_bucket\{le="([^"]+)"\} (\S+)$', re.M)


def bucket_quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """Quantile from cumulative Prometheus buckets (upper bound, count), linear within one."""
    total = buckets[-1][1]
    if total == 0:
        return float("nan")
    rank = q * total
    lower, below = 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if upper == float("inf"):
                return lower
            share = (rank - below) / (count - below) if count > below else 1.0
            return lower + (upper - lower) * share
        lower, below = upper, count
    return lower


def _server_buckets(admin_port: int) -> list[tuple[float, float]]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5).read()
    return [(float(le), float(n)) for le, n in _BUCKET.findall(text.decode())]


async def _measure(rate: float, duration: float) -> None:
    server = ServerUnderTest("--log-level", "warning", admin=True).start()
    hist = HdrHistogram(1, 60_000_000, 3)  # microseconds, 1 us .. 60 s, 3 digits
    gen = CallGenerator(server.port, ring=True, hangup=True)
    try:
        await gen.open()
        await gen.register()
        await gen.run(WARMUP_CALLS, rate)
        assert server.admin_port is not None
        before = _server_buckets(server.admin_port)
        gen.on_answer = lambda seconds: hist.record_value(max(1, int(seconds * 1e6)))
        calls = int(rate * duration)
        answered0, lost0 = gen.answered, gen.lost
        took = await gen.run(calls, rate)
        await asyncio.sleep(0.5)
        after = _server_buckets(server.admin_port)
    finally:
        gen.close()
        server.stop()
    answered = gen.answered - answered0
    print(f"{answered} calls answered ({gen.lost - lost0} lost) at {answered / took:.0f} calls/s "
          f"offered {rate:g}/s for {took:.1f} s; server on core 1, UAs on core 0")
    print(f"caller side, INVITE sent -> 200 received: P50 {hist.get_value_at_percentile(50)} us"
          f"  P90 {hist.get_value_at_percentile(90)} us  P99 "
          f"{hist.get_value_at_percentile(99)} us  P99.9 {hist.get_value_at_percentile(99.9)} us"
          f"  max {hist.get_max_value()} us")
    delta = [(ub, n - before[i][1]) for i, (ub, n) in enumerate(after)]
    p50, p99 = (bucket_quantile(delta, q) * 1e6 for q in (0.5, 0.99))
    print(f"server side, call_setup_seconds (INVITE in -> 2xx relayed), {delta[-1][1]:.0f} "
          f"calls: P50 ~{p50:.0f} us  P99 ~{p99:.0f} us (bucket-interpolated)", flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=1250.0)
    ap.add_argument("--duration", type=float, default=10.0)
    args = ap.parse_args(argv)
    os.sched_setaffinity(0, {CLIENT_CPU})
    asyncio.run(_measure(args.rate, args.duration))


if __name__ == "__main__":
    main()
