"""Memory per confirmed dialog: 100,000 concurrent calls held through the proxy.

A caller and a callee UA (``CallGenerator``, in this process, on core 0) set up calls
through the server (pinned to core 1) as fast as it takes them, and never hang up: INVITE,
100, 200, ACK, so every call ends as a confirmed dialog in the proxy's table.  The callee is
registered first.  The UAs are bare UDP sockets formatting messages from templates (the cost
of a full SIP stack on the client side would only slow the set-up).

Process RSS (VmRSS) is read at idle after the registration (baseline), after each tenth of
the calls, and once the last transactions are gone (64*T1 after the last call, RFC 6026
Timers L and M).  Printed: (RSS - baseline) / dialogs, and the marginal cost over the
second half of the set-up (which leaves out one-off growth: dict resizes, allocator arenas
kept from the transactions' high-water mark).

    python -m benchmarks.bench_dialogs_memory [--dialogs 100000] [--rate 2500] [--t1 0.02]

Target (issue 4): <= 2 KB per dialog.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from harness.serverproc import free_tcp_port, free_udp_port, options, sip_request

__all__ = ["CallGenerator", "ServerUnderTest", "main"]

ROOT = Path(__file__).resolve().parent.parent
SERVER_CPU = 1
CLIENT_CPU = 0
#: Calls in flight (INVITE sent, 200 not yet received) at most: enough to keep the server
#: busy, few enough that a slow moment never overflows a socket buffer.
WINDOW = 400
#: Seconds between sending batches: the rate is kept per tick.
TICK = 0.005
#: Seconds a call may wait for its 200 before it counts as lost.
CALL_TIMEOUT = 10.0
#: The server's T1 for this run.  Transactions linger 64*T1 after a 2xx (RFC 6026 Timers L
#: and M): with the default 0.5 s that is 32 s, so at ~1,500 calls/s some 50,000 calls'
#: worth of transactions (~10 KB each) are alive at once, and that high-water mark stays in
#: RSS (the allocator keeps arenas the dialogs are interleaved with) and swamps what the
#: dialogs cost.  20 ms keeps them to 1.3 s; T1 changes no dialog state.  Measured here:
#: T1 0.02 -> ~1.2 KB/dialog overall, ~0.85 KB marginal; T1 0.1 -> ~2.7 KB / ~1 KB.
DEFAULT_T1 = 0.02
#: RSS readings during the set-up (for the marginal cost over the second half).
STEPS = 10


def _headers(data: bytes) -> tuple[bytes, list[bytes]]:
    head = data.split(b"\r\n\r\n", 1)[0]
    lines = head.split(b"\r\n")
    return lines[0], lines[1:]


def _get(lines: list[bytes], name: bytes) -> list[bytes]:
    return [ln for ln in lines if ln.startswith(name)]


class CallGenerator(asyncio.DatagramProtocol):
    """Caller and callee on two UDP sockets; see the module docstring.

    ``ring`` adds a 180 before the 200, ``hangup`` a BYE after the ACK (a complete call);
    ``on_answer(seconds)`` receives each call's INVITE-sent to 200-received time.
    """

    def __init__(self, server_port: int, *, ring: bool = False, hangup: bool = False,
                 on_answer: Callable[[float], None] | None = None) -> None:
        self.server = ("127.0.0.1", server_port)
        self.ring = ring
        self.hangup = hangup
        self.on_answer = on_answer
        self.sent: dict[bytes, float] = {}   # Call-ID -> INVITE send time, until the 200
        self.answered = 0
        self.acked = 0      # ACKs that reached the callee: confirmed dialogs
        self.ended = 0      # BYEs answered 200 at the caller
        self.lost = 0
        self._ids = itertools.count(1)
        self._pid = os.getpid()
        self.caller: asyncio.DatagramTransport | None = None
        self.callee: asyncio.DatagramTransport | None = None
        self.caller_port = 0
        self.callee_port = 0
        self.registered: asyncio.Future[None] | None = None

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        gen = self

        class _Caller(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
                gen.caller_received(data)

        class _Callee(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
                gen.callee_received(data)

        self.caller, _ = await loop.create_datagram_endpoint(_Caller, ("127.0.0.1", 0))
        self.callee, _ = await loop.create_datagram_endpoint(_Callee, ("127.0.0.1", 0))
        for t in (self.caller, self.callee):
            # The usual rmem_max: a moment off the CPU must not drop answers.
            t.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.caller_port = self.caller.get_extra_info("sockname")[1]
        self.callee_port = self.callee.get_extra_info("sockname")[1]

    def close(self) -> None:
        for t in (self.caller, self.callee):
            if t is not None:
                t.close()

    async def register(self, user: str = "callee") -> None:
        assert self.callee is not None
        host, port = self.server
        msg = (f"REGISTER sip:{host}:{port} SIP/2.0\r\n"
               f"Via: SIP/2.0/UDP 127.0.0.1:{self.callee_port};branch=z9hG4bKreg{self._pid}\r\n"
               f"From: <sip:{user}@{host}>;tag=r{self._pid}\r\nTo: <sip:{user}@{host}>\r\n"
               f"Call-ID: reg-{self._pid}@bench\r\nCSeq: 1 REGISTER\r\n"
               f"Contact: <sip:{user}@127.0.0.1:{self.callee_port}>\r\nExpires: 7200\r\n"
               f"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()
        self.registered = asyncio.get_running_loop().create_future()
        self.callee.sendto(msg, self.server)
        await asyncio.wait_for(self.registered, 5.0)

    # -- caller ---------------------------------------------------------------------------------

    def invite(self) -> None:
        assert self.caller is not None
        n = next(self._ids)
        host, port = self.server
        cid = f"{n}-{self._pid}@bench"
        msg = (f"INVITE sip:callee@{host}:{port} SIP/2.0\r\n"
               f"Via: SIP/2.0/UDP 127.0.0.1:{self.caller_port};branch=z9hG4bK{n}i{self._pid}"
               f";rport\r\nFrom: <sip:caller@127.0.0.1>;tag=c{n}\r\n"
               f"To: <sip:callee@{host}>\r\nCall-ID: {cid}\r\nCSeq: 1 INVITE\r\n"
               f"Contact: <sip:caller@127.0.0.1:{self.caller_port}>\r\nMax-Forwards: 70\r\n"
               f"Content-Length: 0\r\n\r\n").encode()
        self.sent[cid.encode()] = time.perf_counter()
        self.caller.sendto(msg, self.server)

    def caller_received(self, data: bytes) -> None:
        first, lines = _headers(data)
        if not first.startswith(b"SIP/2.0 200"):
            return
        cseq = _get(lines, b"CSeq:")[0]
        cid = _get(lines, b"Call-ID:")[0][9:]
        if cseq.endswith(b"BYE"):
            self.ended += 1
            return
        started = self.sent.pop(cid, None)
        if started is None:
            return  # a 2xx retransmission: ACKed already
        self.answered += 1
        if self.on_answer is not None:
            self.on_answer(time.perf_counter() - started)
        self._ack_and_bye(lines, cid)

    def _ack_and_bye(self, lines: list[bytes], cid: bytes) -> None:
        assert self.caller is not None
        target = _get(lines, b"Contact:")[0][8:].strip().strip(b"<>")
        rr = [ln[len(b"Record-Route:"):].strip() for ln in _get(lines, b"Record-Route:")]
        routes = b"".join(b"Route: " + r + b"\r\n" for r in reversed(rr))  # section 12.1.2
        common = (_get(lines, b"From:")[0] + b"\r\n" + _get(lines, b"To:")[0] + b"\r\n"
                  b"Call-ID: " + cid + b"\r\n" + routes +
                  b"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
        via = b"Via: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bK%sa;rport\r\n" % (
            self.caller_port, cid.split(b"@")[0])
        self.caller.sendto(b"ACK " + target + b" SIP/2.0\r\n" + via + b"CSeq: 1 ACK\r\n" +
                           common, self.server)
        if self.hangup:
            via = via.replace(b"a;rport", b"b;rport")
            self.caller.sendto(b"BYE " + target + b" SIP/2.0\r\n" + via + b"CSeq: 2 BYE\r\n" +
                               common, self.server)

    # -- callee ---------------------------------------------------------------------------------

    def callee_received(self, data: bytes) -> None:
        first, lines = _headers(data)
        if first.startswith(b"SIP/2.0 "):
            if self.registered is not None and not self.registered.done():
                self.registered.set_result(None)  # the REGISTER's answer: nothing else comes
            return
        if first.startswith(b"INVITE"):
            self._answer(lines)
        elif first.startswith(b"ACK"):
            self.acked += 1
        elif first.startswith(b"BYE"):
            self._reply(lines, b"200 OK", b"", record_route=False)

    def _answer(self, lines: list[bytes]) -> None:
        tag = b";tag=u" + _get(lines, b"Call-ID:")[0][9:].split(b"-")[0]
        if self.ring:
            self._reply(lines, b"180 Ringing", tag, record_route=True)
        self._reply(lines, b"200 OK", tag, record_route=True)

    def _reply(self, lines: list[bytes], status: bytes, tag: bytes, record_route: bool) -> None:
        assert self.callee is not None
        keep = [ln for ln in lines if ln.startswith((b"Via:", b"From:", b"Call-ID:", b"CSeq:"))
                or (record_route and ln.startswith(b"Record-Route:"))]
        to = _get(lines, b"To:")[0] + tag
        out = (b"SIP/2.0 " + status + b"\r\n" + b"\r\n".join(keep) + b"\r\n" + to + b"\r\n"
               b"Contact: <sip:callee@127.0.0.1:%d>\r\nContent-Length: 0\r\n\r\n"
               % self.callee_port)
        self.callee.sendto(out, self.server)

    # -- driving --------------------------------------------------------------------------------

    async def run(self, calls: int, rate: float, window: int = WINDOW) -> float:
        """Place ``calls`` calls at ``rate``/s (at most ``window`` unanswered); returns the
        seconds it took until every call was answered or given up."""
        t0 = time.perf_counter()
        placed = 0
        while placed < calls:
            due = min(calls, int((time.perf_counter() - t0) * rate) + 1)
            while placed < due and len(self.sent) < window:
                self.invite()
                placed += 1
            self._expire()
            await asyncio.sleep(TICK)
        while self.sent:
            self._expire()
            await asyncio.sleep(TICK)
        return time.perf_counter() - t0

    def _expire(self) -> None:
        limit = time.perf_counter() - CALL_TIMEOUT
        for cid in [c for c, t in self.sent.items() if t < limit][:1000]:
            del self.sent[cid]
            self.lost += 1


class ServerUnderTest:
    """``signaling serve`` on private ports, pinned to SERVER_CPU."""

    def __init__(self, *extra: str, admin: bool = False) -> None:
        self.port = free_udp_port()
        self.admin_port = free_tcp_port() if admin else None
        self.extra = list(extra)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServerUnderTest:
        admin = f"127.0.0.1:{self.admin_port}" if self.admin_port else "off"
        cmd = ["taskset", "-c", str(SERVER_CPU), sys.executable, "-m", "signaling", "serve",
               "--processes", "1", "--sip-udp", f"127.0.0.1:{self.port}", "--sip-ws", "off",
               "--admin", admin, "--diameter", "off", "--log-level", "warning",
               "--auth", "off", "--pike-rate", "0", *self.extra]  # as Kamailio: no auth
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}")
            if sip_request(self.port, options(self.port), timeout=0.2) is not None:
                return self
        raise RuntimeError("server did not answer OPTIONS")

    def rss_kib(self) -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def _measure(dialogs: int, rate: float, t1: float) -> None:
    server = ServerUnderTest("--max-dialogs", str(max(dialogs + 10_000, 200_000)),
                             "--t1", f"{t1:g}").start()
    gen = CallGenerator(server.port)
    linger = 64 * t1 + 2.0  # Timers L and M (RFC 6026), then some slack
    try:
        await gen.open()
        await gen.register()
        await asyncio.sleep(1.0)
        base = server.rss_kib()
        print(f"baseline RSS (idle, callee registered): {base / 1024:.1f} MiB; T1 {t1:g} s "
              f"(transactions linger {64 * t1:g} s)", flush=True)
        t0 = time.perf_counter()
        readings: list[tuple[int, int]] = []
        for _ in range(STEPS):
            await gen.run(dialogs // STEPS, rate)
            readings.append((gen.acked, server.rss_kib()))
            print(f"  {gen.acked:7d} dialogs: RSS {readings[-1][1] / 1024:7.1f} MiB", flush=True)
        took = time.perf_counter() - t0
        await asyncio.sleep(linger)
        held = server.rss_kib()
        alive = server.proc is not None and server.proc.poll() is None
        n = gen.acked
        mid_n, mid_rss = readings[len(readings) // 2 - 1]
        print(f"{n} confirmed dialogs held ({gen.answered} answered, {gen.lost} lost) set up in "
              f"{took:.1f} s = {gen.answered / took:.0f} calls/s; server alive: {alive}")
        print(f"RSS {held / 1024:.1f} MiB after the transactions expired ({linger:g} s):")
        print(f"  (RSS - baseline) / dialogs          = {(held - base) * 1024 / max(n, 1):6.0f}"
              f" bytes per dialog (target <= 2048)")
        print(f"  marginal, {mid_n} -> {n} dialogs = "
              f"{(held - mid_rss) * 1024 / max(n - mid_n, 1):6.0f} bytes per dialog", flush=True)
    finally:
        gen.close()
        server.stop()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dialogs", type=int, default=100_000)
    ap.add_argument("--rate", type=float, default=2500.0)
    ap.add_argument("--t1", type=float, default=DEFAULT_T1)
    args = ap.parse_args(argv)
    os.sched_setaffinity(0, {CLIENT_CPU})
    asyncio.run(_measure(args.dialogs, args.rate, args.t1))


if __name__ == "__main__":
    main()
