"""Idle SIP-over-TLS connections held by the server, each with a registration (issue 15).

``--connections`` (default 10,000) clients open a TLS connection to ``--sip-tls`` (TLS 1.3,
a P-256 certificate made with ``openssl`` for the run, verified by the clients), each
registers its own user over it (``tls<N>@127.0.0.1``, Contact ``transport=tls``), gets its 200,
and then stays idle.  The script prints the server's resident memory before and with every
connection open, the memory per connection, the server CPU time per connection set up
(handshake + REGISTER), and how many of the registrations a query REGISTER over UDP finds.

The clients run in this process (asyncio, stdlib ssl), pinned to core 0; the server is pinned
to core 1.  Both get RLIMIT_NOFILE raised (``bench_ws_idle``).  Target (issue 15): <= 30 kB
per idle TLS connection.

    python -m benchmarks.bench_tls_idle [--connections 10000] [--hold 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import socket
import ssl
import tempfile
import time
from pathlib import Path

from benchmarks.bench_register import LOAD_CPU, SERVER_CPU, ServerUnderTest
from benchmarks.bench_ws_idle import CONNECT_CONCURRENCY, FD_MARGIN, SETUP_TIMEOUT, _raise_nofile
from harness.serverproc import free_tcp_port
from tests.tlscerts import make_pki

__all__ = ["main"]

#: Query REGISTERs in flight at once when checking the registrations over UDP.
QUERY_WINDOW = 200


def _register(n: int, local_port: int) -> bytes:
    return (f"REGISTER sip:127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/TLS 127.0.0.1:{local_port};branch=z9hG4bK-r{n}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:tls{n}@127.0.0.1>;tag=r{n}\r\n"
            f"To: <sip:tls{n}@127.0.0.1>\r\nCall-ID: r-{n}\r\nCSeq: 1 REGISTER\r\n"
            f"Contact: <sip:tls{n}@127.0.0.1:{local_port};transport=tls>\r\n"
            f"Expires: 3600\r\nContent-Length: 0\r\n\r\n").encode()


async def _open(n: int, port: int, ctx: ssl.SSLContext, gate: asyncio.Semaphore,
                writers: list[asyncio.StreamWriter]) -> bool:
    async with gate:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(
            "127.0.0.1", port, ssl=ctx, server_hostname="sip.example.com"), SETUP_TIMEOUT)
        writers.append(writer)
        writer.write(_register(n, writer.get_extra_info("sockname")[1]))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), SETUP_TIMEOUT)
        return head.startswith(b"SIP/2.0 200 ")


def count_registered(udp_port: int, users: int) -> int:
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
                          f"Max-Forwards: 70\r\nFrom: <sip:tls{n}@127.0.0.1>;tag=q{n}\r\n"
                          f"To: <sip:tls{n}@127.0.0.1>\r\nCall-ID: q-{n}\r\n"
                          f"CSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n").encode(),
                         ("127.0.0.1", udp_port))
            for _ in batch:
                if b";transport=tls>" in s.recv(65_535):
                    found += 1
    return found


async def _run(connections: int, hold: float, pki_dir: Path) -> None:
    pki = make_pki(pki_dir)
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    tls_port = free_tcp_port()
    server = ServerUnderTest("ours", [
        "--sip-tls", f"127.0.0.1:{tls_port}", "--tls-cert", str(pki.cert("server")),
        "--tls-key", str(pki.key("server")), "--tcp-max-per-source", str(connections + 10),
        "--tcp-max-connections", str(connections + 10), "--log-level", "warning"])
    server.start(preexec_fn=_raise_nofile)
    writers: list[asyncio.StreamWriter] = []
    try:
        time.sleep(0.5)
        rss0, cpu0, t0 = server.rss_kib(), server.cpu(), time.monotonic()
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
        results = await asyncio.gather(
            *(_open(n, tls_port, ctx, gate, writers) for n in range(connections)),
            return_exceptions=True)
        setup, cpu1 = time.monotonic() - t0, server.cpu()
        ok = sum(1 for r in results if r is True)
        errors = [r for r in results if r is not True][:3]
        print(f"TLS connections opened and registered (200): {ok} of {connections} in "
              f"{setup:.1f} s ({ok / setup:.0f}/s); server CPU "
              f"{1e6 * (cpu1 - cpu0) / max(ok, 1):.0f} us per handshake + REGISTER"
              + (f"; first errors: {errors}" if errors else ""), flush=True)
        await asyncio.sleep(hold)
        rss1 = server.rss_kib()
        alive = sum(1 for w in writers if not w.is_closing())
        found = await asyncio.get_running_loop().run_in_executor(
            None, count_registered, server.port, connections)
        print(f"after holding {hold:g} s: {alive} connections open, {found} of {connections} "
              f"registrations found by query REGISTER", flush=True)
        print(f"server VmRSS: {rss0} kB before, {rss1} kB with {alive} connections: "
              f"{(rss1 - rss0) / max(alive, 1):.1f} kB per registered TLS connection",
              flush=True)
    finally:
        for w in writers:
            w.close()
        server.stop()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--connections", type=int, default=10_000)
    ap.add_argument("--hold", type=float, default=5.0)
    args = ap.parse_args(argv)
    _raise_nofile()
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if args.connections + FD_MARGIN > limit:
        raise SystemExit(f"RLIMIT_NOFILE is {limit}: too low for {args.connections} connections")
    os.sched_setaffinity(0, {LOAD_CPU})
    print(f"{args.connections} idle SIP-over-TLS clients; server on core {SERVER_CPU}, "
          f"clients on core {LOAD_CPU}; load average before: {os.getloadavg()[0]:.2f}",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-tls-") as tmp:
        asyncio.run(_run(args.connections, args.hold, Path(tmp)))


if __name__ == "__main__":
    main()
