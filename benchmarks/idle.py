"""What the idle-connection benchmarks (``bench_ws_idle``, ``bench_tls_idle``) share: the file
descriptor limit, the command line and core pinning, the measurement around opening every
connection (server memory and CPU before, during and after), and the check that every
registration is there (query REGISTERs over UDP).  Each benchmark brings its own client and
the server's flags."""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

from benchmarks.bench_register import LOAD_CPU, SERVER_CPU, ServerUnderTest

__all__ = ["CONNECT_CONCURRENCY", "FD_MARGIN", "NOFILE", "SETUP_TIMEOUT", "count_registered",
           "measure", "parse_and_pin", "raise_nofile"]

#: File descriptors wanted for each side: one per connection plus the interpreter's own, with
#: room.  Raised up to the hard limit when the hard limit cannot be raised (a container without
#: CAP_SYS_RESOURCE); ``parse_and_pin`` refuses a connection count that would not fit.
NOFILE = 65_536
#: Descriptors each side needs beyond its connections (interpreter, sockets, log, pipes).
FD_MARGIN = 256
#: Connections being opened at once: a bounded ramp keeps the listen backlog from overflowing
#: (SYNs dropped and retried after 1 s would only slow the ramp).
CONNECT_CONCURRENCY = 200
#: Seconds one handshake + REGISTER may take before the benchmark calls it failed.
SETUP_TIMEOUT = 30.0
#: Query REGISTERs in flight at once when checking the registrations over UDP.
QUERY_WINDOW = 200


def raise_nofile() -> None:
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))
    except (ValueError, OSError):
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def parse_and_pin(argv: Sequence[str] | None, doc: str | None,
                  clients: str, switches: Sequence[tuple[str, str]] = ()) -> argparse.Namespace:
    """``--connections``, ``--hold`` and the on/off ``switches`` (name, help); this process
    (the clients) pinned to the load core, RLIMIT_NOFILE raised and checked; prints what runs
    where and the load average."""
    ap = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    ap.add_argument("--connections", type=int, default=10_000)
    ap.add_argument("--hold", type=float, default=5.0)
    for name, text in switches:
        ap.add_argument(name, action="store_true", help=text)
    args = ap.parse_args(argv)
    raise_nofile()
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if args.connections + FD_MARGIN > limit:
        raise SystemExit(f"RLIMIT_NOFILE is {limit}: too low for {args.connections} connections")
    os.sched_setaffinity(0, {LOAD_CPU})
    print(f"{args.connections} idle {clients}; server on core {SERVER_CPU}, clients on core "
          f"{LOAD_CPU}; load average before: {os.getloadavg()[0]:.2f}", flush=True)
    return args


async def measure(server: ServerUnderTest, what: str, hold: float, connections: int,
                  opens: Sequence[Coroutine[Any, Any, bool]], alive: Callable[[], int],
                  registered: Callable[[], Awaitable[int]], extra: Callable[[], str]) -> None:
    """Open every connection (``opens``: True for a 200 to its REGISTER), hold them, and print
    the setup rate and server CPU per connection, the connections still open and the
    registrations found after ``hold`` seconds, and the server's memory per connection."""
    time.sleep(0.5)
    rss0, cpu0, t0 = server.rss_kib(), server.cpu(), time.monotonic()
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def bounded(opening: Coroutine[Any, Any, bool]) -> bool:
        async with gate:
            return await opening

    results = await asyncio.gather(*map(bounded, opens), return_exceptions=True)
    setup, cpu1 = time.monotonic() - t0, server.cpu()
    ok = sum(1 for r in results if r is True)
    errors = [r for r in results if r is not True][:3]
    print(f"{what} connections opened and registered (200): {ok} of {connections} in "
          f"{setup:.1f} s ({ok / setup:.0f}/s); server CPU "
          f"{1e6 * (cpu1 - cpu0) / max(ok, 1):.0f} us per connection + REGISTER"
          + (f"; first errors: {errors}" if errors else ""), flush=True)
    await asyncio.sleep(hold)
    rss1, still = server.rss_kib(), alive()
    found = await registered()
    print(f"after holding {hold:g} s: {still} connections open, {found} of {connections} "
          f"registrations found by query REGISTER{extra()}", flush=True)
    print(f"server VmRSS: {rss0} kB before, {rss1} kB with {still} connections: "
          f"{(rss1 - rss0) / max(still, 1):.1f} kB per registered {what} connection",
          flush=True)


def count_registered(udp_port: int, users: int, user: str,
                     expected: Callable[[int], bytes]) -> int:
    """Query REGISTERs (no Contact, RFC 3261 §10.2.3) for ``<user>0`` .. ``<user><users-1>``:
    how many answers name the binding ``expected(n)`` (answers may come in any order: each
    is matched by its Call-ID ``q-<n>``)."""
    found = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        s.bind(("127.0.0.1", 0))
        s.settimeout(5.0)
        local = s.getsockname()[1]
        for first in range(0, users, QUERY_WINDOW):
            batch = range(first, min(first + QUERY_WINDOW, users))
            for n in batch:
                s.sendto((f"REGISTER sip:127.0.0.1 SIP/2.0\r\n"
                          f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK-q{n}\r\n"
                          f"Max-Forwards: 70\r\nFrom: <sip:{user}{n}@127.0.0.1>;tag=q{n}\r\n"
                          f"To: <sip:{user}{n}@127.0.0.1>\r\nCall-ID: q-{n}\r\n"
                          f"CSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n").encode(),
                         ("127.0.0.1", udp_port))
            for _ in batch:
                answer = s.recv(65_535)
                n = int(answer.split(b"Call-ID: q-", 1)[1].split(b"\r\n", 1)[0])
                if expected(n) in answer:
                    found += 1
    return found
