"""Idle SIP-over-TLS connections held by the server, each with a registration (issue 15).

``--connections`` (default 10,000) clients open a TLS connection to ``--sip-tls`` (TLS 1.3,
a P-256 certificate made with ``openssl`` for the run, verified by the clients), each
registers its own user over it (``tls<N>@127.0.0.1``, Contact ``transport=tls``), gets its 200,
and then stays idle.  The script prints the server's resident memory before and with every
connection open, the memory per connection, the server CPU time per connection set up
(handshake + REGISTER), and how many of the registrations a query REGISTER over UDP finds.

The clients run in this process (asyncio, stdlib ssl), pinned to core 0; the server is pinned
to core 1.  Both get RLIMIT_NOFILE raised (``benchmarks.idle``).  Target (issue 15): <= 30 kB
per idle TLS connection.

    python -m benchmarks.bench_tls_idle [--connections 10000] [--hold 5]
"""

from __future__ import annotations

import asyncio
import ssl
import tempfile
from pathlib import Path

from benchmarks.bench_register import ServerUnderTest
from benchmarks.idle import SETUP_TIMEOUT, count_registered, measure, parse_and_pin, raise_nofile
from harness.serverproc import free_tcp_port
from tests.tlscerts import make_pki

__all__ = ["main"]

def _register(n: int, local_port: int) -> bytes:
    return (f"REGISTER sip:127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/TLS 127.0.0.1:{local_port};branch=z9hG4bK-r{n}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:tls{n}@127.0.0.1>;tag=r{n}\r\n"
            f"To: <sip:tls{n}@127.0.0.1>\r\nCall-ID: r-{n}\r\nCSeq: 1 REGISTER\r\n"
            f"Contact: <sip:tls{n}@127.0.0.1:{local_port};transport=tls>\r\n"
            f"Expires: 3600\r\nContent-Length: 0\r\n\r\n").encode()


async def _open(n: int, port: int, ctx: ssl.SSLContext,
                writers: list[asyncio.StreamWriter]) -> bool:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(
        "127.0.0.1", port, ssl=ctx, server_hostname="sip.example.com"), SETUP_TIMEOUT)
    writers.append(writer)
    writer.write(_register(n, writer.get_extra_info("sockname")[1]))
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), SETUP_TIMEOUT)
    return head.startswith(b"SIP/2.0 200 ")


async def _run(connections: int, hold: float, pki_dir: Path) -> None:
    pki = make_pki(pki_dir)
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    tls_port = free_tcp_port()
    server = ServerUnderTest("ours", [
        "--sip-tls", f"127.0.0.1:{tls_port}", "--tls-cert", str(pki.cert("server")),
        "--tls-key", str(pki.key("server")), "--tcp-max-per-source", str(connections + 10),
        "--tcp-max-connections", str(connections + 10), "--log-level", "warning"])
    server.start(preexec_fn=raise_nofile)
    writers: list[asyncio.StreamWriter] = []

    async def registered() -> int:
        return await asyncio.get_running_loop().run_in_executor(
            None, count_registered, server.port, connections, "tls",
            lambda n: b";transport=tls>")

    try:
        await measure(server, "TLS", hold, connections,
                      [_open(n, tls_port, ctx, writers) for n in range(connections)],
                      lambda: sum(1 for w in writers if not w.is_closing()), registered,
                      lambda: "")
    finally:
        for w in writers:
            w.close()
        server.stop()


def main(argv: list[str] | None = None) -> None:
    args = parse_and_pin(argv, __doc__, "SIP-over-TLS clients")
    with tempfile.TemporaryDirectory(prefix="bench-tls-") as tmp:
        asyncio.run(_run(args.connections, args.hold, Path(tmp)))


if __name__ == "__main__":
    main()
