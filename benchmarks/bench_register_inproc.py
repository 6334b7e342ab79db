"""Instructions per REGISTER through an in-process server, by the difference of two counts.

``bench_instructions`` counts a server process driven by SIPp; on a machine at load 8-13 its
REGISTER figures moved by up to 35 % between runs of the same code (SIPp's retransmissions
once valgrind's server answers late, a time-driven sweep and idle share subtracted).  This one
leaves out what time drives: the server (``Server``, the registry in memory or in a private
redis-server) and a client that sends one REGISTER, new user, and awaits its 200 before the
next, run in one process under ``valgrind --tool=callgrind`` for ``--small`` and ``--large``
REGISTERs, with the binding sweeper off; the difference of the two totals over the difference of
the counts is one REGISTER, the client's share included (the same for any two versions of the
server), start-up and shutdown cancelled.

    python -m benchmarks.bench_register_inproc [--registry memory|redis] [--small 100]
                                               [--large 600]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["main"]

ROOT = Path(__file__).resolve().parent.parent


def _register(i: int, port: int) -> bytes:
    return ("REGISTER sip:example.com SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-{i}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:u{i}@example.com>;tag=f{i}\r\nTo: <sip:u{i}@example.com>\r\n"
            f"Call-ID: c{i}@bench\r\nCSeq: 1 REGISTER\r\n"
            f"Contact: <sip:u{i}@127.0.0.1:{port}>\r\nExpires: 3600\r\n"
            "Content-Length: 0\r\n\r\n").encode()


async def _drive(count: int, registry: str) -> int:
    """The measured process: a server and ``count`` REGISTERs, one at a time; the 200s."""
    import signaling.server as srv
    from signaling.config import load_config

    srv.SWEEP_INTERVAL = 1e9  # time-driven: left out (see the module docstring)
    cfg = load_config({"sip_udp": "127.0.0.1:0", "sip_ws": "off", "admin": "off",
                       "diameter": "off", "domain": ["example.com"], "auth": "off",
                       "pike_rate": "0", "log_level": "warning", "registry": registry},
                      env={})
    server = srv.Server(cfg)
    await server.start()
    assert server.udp_address is not None
    target = ("127.0.0.1", server.udp_address[1])
    loop = asyncio.get_running_loop()
    answers: asyncio.Queue[bytes] = asyncio.Queue()

    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            answers.put_nowait(data)

    transport, _ = await loop.create_datagram_endpoint(Client, local_addr=("127.0.0.1", 0))
    me = transport.get_extra_info("sockname")[1]
    ok = 0
    for i in range(count):
        transport.sendto(_register(i, me), target)
        ok += (await asyncio.wait_for(answers.get(), 60.0)).startswith(b"SIP/2.0 200")
    transport.close()
    await server.stop()
    return ok


def _count(count: int, registry: str) -> tuple[int, int]:
    """(instructions, 200s) of one process under callgrind driving ``count`` REGISTERs."""
    with tempfile.TemporaryDirectory(prefix="bench-inproc-") as tmp:
        out = Path(tmp) / "cg.out"
        proc = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable,
             "-m", "benchmarks.bench_register_inproc", "--drive", str(count), "--url", registry],
            cwd=ROOT, capture_output=True, text=True, check=True)
        collected = re.search(r"Collected : (\d+)", proc.stderr)
        answered = re.search(r"^answered (\d+)$", proc.stdout, re.M)
        if collected is None or answered is None:
            raise RuntimeError(f"no count in the run's output: {proc.stderr[-2000:]}")
        return int(collected.group(1)), int(answered.group(1))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--registry", choices=["memory", "redis"], default="redis")
    ap.add_argument("--small", type=int, default=100)
    ap.add_argument("--large", type=int, default=600)
    ap.add_argument("--drive", type=int, help=argparse.SUPPRESS)  # the measured process
    ap.add_argument("--url", default="memory", help=argparse.SUPPRESS)  # and its registry
    args = ap.parse_args(argv)
    if args.drive is not None:
        import uvloop

        uvloop.install()
        print(f"answered {asyncio.run(_drive(args.drive, args.url))}", flush=True)
        return
    from benchmarks.bench_register_redis import RedisForBench

    redis = RedisForBench().start() if args.registry == "redis" else None
    try:
        counts = []
        for n in (args.small, args.large):
            if redis is not None:
                redis.reset()  # the same users again: new bindings, not refreshes
            url = f"redis://127.0.0.1:{redis.port}/0" if redis is not None else "memory"
            instructions, answered = _count(n, url)
            if answered != n:
                sys.exit(f"{answered} of {n} REGISTERs answered 200")
            counts.append(instructions)
            print(f"  {n:>5} REGISTERs: {instructions:,} instructions", flush=True)
    finally:
        if redis is not None:
            redis.stop()
    per = (counts[1] - counts[0]) // (args.large - args.small)
    print(f"REGISTER into {args.registry}, in-process server and client (callgrind): "
          f"{per:,} instructions per REGISTER")


if __name__ == "__main__":
    main()
