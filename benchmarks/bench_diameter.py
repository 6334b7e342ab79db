"""Credit-Control throughput of the Diameter server: CCR/CCA answered per second on one core.

    python -m benchmarks.bench_diameter [--seconds S] [--in-flight N] [--connections C]

The server (``DiameterServer`` on uvloop, with the memory registry as its session store, as
``signaling serve`` runs it) runs in its own process pinned to core 0 with ``taskset``; the
load client runs in another process pinned to core 1.
The client keeps ``--in-flight`` Credit-Control sessions open at once over ``--connections``
TCP connections, each session CCR-Initial, ``--updates`` CCR-Updates, then CCR-Termination,
every request sent as soon as the previous answer of its session arrived (RFC 4006 requires a
session's requests in order), a new session replacing each finished one.  Requests are encoded
before the clock starts; answers are matched by hop-by-hop id.  Latency is the client's send to
answer time, recorded in an HDR histogram.  Target (issue 6): >= 15,000 answers/s per core.

It prints the answers/s the client saw, the server's CPU time over the same window (from
/proc: on a shared machine core 0 is not always ours alone, and answers per server
CPU-second is then the figure for "one core"), the client's CPU share (to show the client was
not the limit), P50/P99/P99.9 latency and the Result-Codes received.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import shutil
import socket
import struct
import subprocess
import sys
import time

from hdrh.histogram import HdrHistogram

from protocols.diameter.capabilities import Capabilities, build_cer
from protocols.diameter.codec import Message
from protocols.diameter.constants import FLAG_P, FLAG_R, AvpCode
from protocols.diameter.dictionary import base_dictionary

__all__ = ["main"]

# Defaults: enough sessions in flight that the server never idles waiting for the client,
# short enough to run on a shared 2-core machine in well under a minute.
DEFAULT_SECONDS = 10.0
WARMUP_SECONDS = 2.0
DEFAULT_IN_FLIGHT = 400
DEFAULT_CONNECTIONS = 4
DEFAULT_UPDATES = 3
# Bench ports come from the Diameter range assigned to these tests and tools.
DEFAULT_PORT = 38699
TARGET = 15_000

_HDR = struct.Struct("!IIIII")
_AVP = struct.Struct("!II")
D = base_dictionary()


# -- server process ------------------------------------------------------------------------

def serve(port: int, workers: int) -> None:
    import uvloop

    from signaling.diameter import DiameterConfig, DiameterServer
    from signaling.metrics import Metrics
    from signaling.registry.memory import MemoryRegistry

    async def run() -> None:
        config = DiameterConfig(host="127.0.0.1", port=port, origin_host="bench.server",
                                origin_realm="bench", workers=workers)
        server = DiameterServer(config, Metrics(), MemoryRegistry())
        await server.start()
        print("READY", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await server.close(1.0)

    uvloop.run(run())


# -- client process ------------------------------------------------------------------------

def _ccr(sid: str, rtype: int, number: int) -> bytes:
    """A CCR template; the hop-by-hop id (bytes 12-16) is patched per send."""
    avps = [
        D.make("Session-Id", sid), D.make("Origin-Host", "bench.client"),
        D.make("Origin-Realm", "bench"), D.make("Destination-Realm", "bench"),
        D.make("Auth-Application-Id", 4), D.make("Service-Context-Id", "32251@3gpp.org"),
        D.make("CC-Request-Type", rtype), D.make("CC-Request-Number", number),
    ]
    if rtype in (1, 2):
        avps.append(D.make("Requested-Service-Unit", [D.make("CC-Time", 60)]))
    if rtype in (2, 3):
        avps.append(D.make("Used-Service-Unit", [D.make("CC-Time", 60)]))
    return Message(272, FLAG_R | FLAG_P, 4, 0, 0, avps).encode()


def _result_code(data: bytes, start: int, end: int) -> int:
    pos = start + 20
    while pos + 8 <= end:
        code, flags_len = _AVP.unpack_from(data, pos)
        if code == AvpCode.RESULT_CODE:
            return int.from_bytes(data[pos + 8 : pos + 12], "big")
        pos += ((flags_len & 0xFFFFFF) + 3) & ~3
    return 0


class _Load(asyncio.Protocol):
    """One client connection: CER, then pipelined CCRs of its share of the sessions."""

    def __init__(self, bench: _Bench, index: int) -> None:
        self.bench = bench
        self.index = index
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.out: list[bytes] = []

    def write(self, msg: bytes) -> None:
        """Requests made in one loop iteration leave in one send (client cost, not server)."""
        self.out.append(msg)
        if len(self.out) == 1:
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        out, self.out = self.out, []
        if self.transport is not None:
            self.transport.write(b"".join(out))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        caps = Capabilities(origin_host=f"bench.client{self.index}", origin_realm="bench",
                            auth_application_ids=frozenset({4}))
        transport.write(build_cer(caps, 1, 1).encode())  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        pos, end = 0, len(buf)
        while end - pos >= 20:
            length = int.from_bytes(buf[pos + 1 : pos + 4], "big")
            if end - pos < length:
                break
            if not self.ready.done():
                self.ready.set_result(None)
            else:
                hbh = _HDR.unpack_from(buf, pos)[3]
                self.bench.answered(hbh, _result_code(buf, pos, pos + length))
            pos += length
        self.buf = buf[pos:]


class _Bench:
    def __init__(self, in_flight: int, updates: int, connections: int) -> None:
        self.updates = updates
        self.in_flight = in_flight
        self.conns: list[_Load] = []
        self.pending: dict[int, tuple[int, float]] = {}  # hbh -> (session slot, sent at)
        self.slots: list[list[bytes]] = []
        self.next_session = 0
        self.hbh = 1000
        self.count = 0
        self.results: dict[int, int] = {}
        self.hist = HdrHistogram(1, 60_000_000, 3)
        self.measuring = False
        self.n_conns = connections

    def new_session(self) -> list[bytes]:
        self.next_session += 1
        sid = f"bench.client;{self.next_session}"
        msgs = [_ccr(sid, 1, 0)]
        msgs += [_ccr(sid, 2, i + 1) for i in range(self.updates)]
        msgs.append(_ccr(sid, 3, self.updates + 1))
        msgs.reverse()  # pop() from the end in order
        return msgs

    def send(self, slot: int) -> None:
        queue = self.slots[slot]
        if not queue:
            queue.extend(self.new_session())
        wire = queue.pop()
        self.hbh = (self.hbh + 1) & 0xFFFFFFFF
        msg = wire[:12] + self.hbh.to_bytes(4, "big") + wire[16:]
        self.pending[self.hbh] = (slot, time.perf_counter())
        self.conns[slot % self.n_conns].write(msg)

    def answered(self, hbh: int, result: int) -> None:
        slot, sent = self.pending.pop(hbh)
        if self.measuring:
            self.count += 1
            self.results[result] = self.results.get(result, 0) + 1
            self.hist.record_value(max(1, int((time.perf_counter() - sent) * 1e6)))
        self.send(slot)


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process (proc(5)), to report answers per second of server CPU."""
    if pid <= 0:
        return 0.0
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _client(port: int, seconds: float, in_flight: int, updates: int,
                  connections: int, server_pid: int) -> None:
    loop = asyncio.get_running_loop()
    bench = _Bench(in_flight, updates, connections)
    for i in range(connections):
        _t, proto = await loop.create_connection(functools.partial(_Load, bench, i),
                                                 "127.0.0.1", port)
        await asyncio.wait_for(proto.ready, 10)
        bench.conns.append(proto)
    bench.slots = [[] for _ in range(in_flight)]
    for slot in range(in_flight):
        bench.send(slot)
    await asyncio.sleep(WARMUP_SECONDS)
    bench.measuring = True
    start = time.perf_counter()
    cpu_start = _cpu_seconds(server_pid)
    own_start = _cpu_seconds(os.getpid())
    await asyncio.sleep(seconds)
    bench.measuring = False
    elapsed = time.perf_counter() - start
    cpu = _cpu_seconds(server_pid) - cpu_start
    own = _cpu_seconds(os.getpid()) - own_start
    h = bench.hist
    rate = bench.count / elapsed
    print(f"answers: {bench.count} in {elapsed:.2f} s over {connections} connections, "
          f"{in_flight} sessions in flight ({updates} updates per session)")
    print(f"CCA/s (server on one core): {rate:,.0f}   target >= {TARGET:,}: "
          f"{'met' if rate >= TARGET else 'NOT met'}")
    if cpu > 0:
        # The machine is shared: the server's own CPU time says what one core sustains even
        # when other processes take part of core 0.
        print(f"server CPU: {cpu:.2f} s of {elapsed:.2f} s ({100 * cpu / elapsed:.0f}% of core 0);"
              f" answers per server CPU-second: {bench.count / cpu:,.0f}")
    print(f"client CPU: {100 * own / elapsed:.0f}% of core 1")
    print(f"latency us: p50 {h.get_value_at_percentile(50)}  p99 {h.get_value_at_percentile(99)}"
          f"  p99.9 {h.get_value_at_percentile(99.9)}  max {h.get_max_value()}")
    print(f"result codes: {dict(sorted(bench.results.items()))}")
    for conn in bench.conns:
        assert conn.transport is not None
        conn.transport.close()


# -- orchestration -------------------------------------------------------------------------

def _pinned(core: int, *args: str) -> list[str]:
    taskset = shutil.which("taskset")
    if taskset is None:
        raise SystemExit("taskset not found (util-linux): run scripts/test to install it")
    return [taskset, "-c", str(core), sys.executable, "-m", "benchmarks.bench_diameter", *args]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=DEFAULT_SECONDS)
    p.add_argument("--in-flight", type=int, default=DEFAULT_IN_FLIGHT)
    p.add_argument("--connections", type=int, default=DEFAULT_CONNECTIONS)
    p.add_argument("--updates", type=int, default=DEFAULT_UPDATES)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument("--role", choices=["all", "server", "client"], default="all")
    p.add_argument("--server-pid", type=int, default=0)
    args = p.parse_args(argv)
    if args.role == "server":
        serve(args.port, args.workers)
        return
    if args.role == "client":
        import uvloop

        uvloop.run(_client(args.port, args.seconds, args.in_flight, args.updates,
                           args.connections, args.server_pid))
        return
    if (os.cpu_count() or 1) < 2:
        raise SystemExit("needs two cores: server on core 0, client on core 1")
    server = subprocess.Popen(_pinned(0, "--role", "server", "--port", str(args.port),
                                      "--workers", str(args.workers)),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        if "READY" not in line:
            raise SystemExit(f"server did not start: {line!r}")
        print("server: taskset -c 0, client: taskset -c 1")
        subprocess.run(_pinned(1, "--role", "client", "--port", str(args.port),
                               "--seconds", str(args.seconds),
                               "--in-flight", str(args.in_flight),
                               "--connections", str(args.connections),
                               "--updates", str(args.updates),
                               "--server-pid", str(server.pid)), check=True)
    finally:
        if server.stdin is not None:
            server.stdin.close()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    main()

