"""Server memory per INVITE attempt while its transactions live (issue 20, item 5).

    python -m benchmarks.bench_invite_memory [--attempts 20000] [--rate 1000]
                                             [--server-root DIR]

Issue 20 sent 20,000 INVITEs, half to a silent callee, and saw RSS grow ~120 MB (~6-7 kB per
attempt).  Here: a callee that answers (INVITE, 200, ACK, BYE: ``CallGenerator`` from
bench_dialogs_memory) and one registered at a socket that never answers take half the
attempts each, at ``--rate`` per second.  Server RSS is read idle (baseline), right after the
last attempt (every transaction still alive: with the default T1 they linger 32 s, Timers B,
D, H, J, L and M), and 40 s later, once the tables drained.  Printed: (peak - baseline) /
attempts, the bytes each attempt holds while its transactions live.

First, the transaction layer alone (tracemalloc, no I/O): bytes the two transactions of one
proxied INVITE (server and client) hold once answered 486 or 200, with and without
``compact()``, in one run.

``--server-root`` runs the server from another checkout (e.g. ``git worktree add /tmp/base
<commit>``) with this checkout's generator, so two versions are compared with the same load.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import itertools
import os
import socket
import time
import tracemalloc
from collections.abc import Sequence
from pathlib import Path

from benchmarks import bench_dialogs_memory as dm
from protocols.sip.builders import make_response
from protocols.sip.message import Request, Response, Via
from protocols.sip.parser import parse_message
from protocols.sip.serializer import serialize
from protocols.sip.timers import DEFAULT_TIMERS, timer_values
from protocols.sip.transaction import (
    InviteClientTransaction,
    InviteServerTransaction,
    SendMessage,
    Transaction,
)

__all__ = ["main"]

#: Seconds after the last attempt until every transaction is gone (64*T1 with T1 = 0.5 s,
#: Timer B of the silent branches, then H, D and the rest), with slack.
DRAIN = 40.0


class SilentCallee:
    """A registered contact that never answers, and a caller that never ACKs: the INVITEs
    to it stay pending in the proxy (Timers A, B), then end in 408s nobody acknowledges."""

    def __init__(self, server_port: int) -> None:
        self.server = ("127.0.0.1", server_port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # the callee
        self.sock.bind(("127.0.0.1", 0))
        self.caller = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.caller.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._ids = itertools.count(1)

    def register(self) -> None:
        host, port = self.server
        msg = (f"REGISTER sip:{host}:{port} SIP/2.0\r\n"
               f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bKsilentreg\r\n"
               f"From: <sip:silent@{host}>;tag=s\r\nTo: <sip:silent@{host}>\r\n"
               f"Call-ID: silent-reg@bench\r\nCSeq: 1 REGISTER\r\n"
               f"Contact: <sip:silent@127.0.0.1:{self.port}>\r\nExpires: 7200\r\n"
               f"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()
        self.sock.settimeout(5.0)
        self.sock.sendto(msg, self.server)
        assert self.sock.recv(65535).startswith(b"SIP/2.0 200")

    def invite(self) -> None:
        n = next(self._ids)
        host, port = self.server
        cport = self.caller.getsockname()[1]
        body = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        msg = (f"INVITE sip:silent@{host}:{port} SIP/2.0\r\n"
               f"Via: SIP/2.0/UDP 127.0.0.1:{cport};branch=z9hG4bKs{n}x;rport\r\n"
               f"From: <sip:caller@127.0.0.1>;tag=s{n}\r\nTo: <sip:silent@{host}>\r\n"
               f"Call-ID: silent-{n}@bench\r\nCSeq: 1 INVITE\r\n"
               f"Contact: <sip:caller@127.0.0.1:{cport}>\r\nMax-Forwards: 70\r\n"
               f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n"
               ).encode() + body
        self.caller.sendto(msg, self.server)

    def close(self) -> None:
        self.sock.close()
        self.caller.close()


_SDP = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n" \
    b"m=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n"


def _invite(n: int) -> bytes:
    return (f"INVITE sip:bob@example.com SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK{n}abc;rport\r\n"
            f"Max-Forwards: 70\r\nFrom: \"Alice\" <sip:alice@example.com>;tag={n}f\r\n"
            f"To: <sip:bob@example.com>\r\nCall-ID: {n}-3848276298220188511@192.0.2.1\r\n"
            f"CSeq: 1 INVITE\r\nContact: <sip:alice@192.0.2.1:5060>\r\n"
            f"User-Agent: bench\r\nAllow: INVITE, ACK, CANCEL, BYE, OPTIONS\r\n"
            f"Content-Type: application/sdp\r\nContent-Length: {len(_SDP)}\r\n\r\n"
            ).encode() + _SDP


def _io(txn: Transaction, events: Sequence[object]) -> None:
    """What sipcore.run does with first sends: serialise once and cache the bytes."""
    for ev in events:
        if isinstance(ev, SendMessage) and ev.data is None:
            assert isinstance(ev.message, Request | Response)
            txn.cache_bytes(ev.message, serialize(ev.message))


def _attempt(n: int, status: int, compact: bool) -> tuple[Transaction, Transaction]:
    """One proxied INVITE answered ``status``: the server and the client transaction."""
    udp = timer_values(DEFAULT_TIMERS, reliable=False)
    req = parse_message(_invite(n))
    assert isinstance(req, Request)
    st = InviteServerTransaction(req, udp)
    _io(st, st.send_response(make_response(req, 100), 0.0))
    out = dataclasses.replace(req, vias=[Via("UDP", "198.51.100.1", 5060,
                                             {"branch": f"z9hG4bK{n}p"}), *req.vias])
    ct = InviteClientTransaction(out, udp, proxy=True)
    _io(ct, ct.start(0.0))
    answer = parse_message(serialize(make_response(out, status, to_tag=f"{n}t")))
    assert isinstance(answer, Response)
    _io(ct, ct.receive_response(answer, 0.1))
    up = dataclasses.replace(answer, vias=answer.vias[1:])
    _io(st, st.send_response(up, 0.1))
    if compact:
        st.compact()
        ct.compact()
    return st, ct


def _transaction_bytes(count: int) -> None:
    print(f"transaction layer, {count} INVITE attempts each (server + client transaction, "
          f"the proxy's own references not held): bytes per attempt")
    for status in (486, 200):
        row = []
        for compact in (False, True):
            gc.collect()
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
            held = [_attempt(n, status, compact) for n in range(count)]
            gc.collect()
            row.append((tracemalloc.get_traced_memory()[0] - before) / count)
            tracemalloc.stop()
            del held
        print(f"  answered {status}: kept whole {row[0]:6.0f}, compacted {row[1]:6.0f}")


async def _measure(attempts: int, rate: float, root: Path) -> None:
    dm.ROOT = root  # ServerUnderTest runs ``python -m signaling`` from there
    server = dm.ServerUnderTest("--ring-timeout", "600").start()
    gen = dm.CallGenerator(server.port, ring=True, hangup=True)
    silent = SilentCallee(server.port)
    try:
        await gen.open()
        await gen.register()
        silent.register()
        await asyncio.sleep(1.0)
        base = server.rss_kib()
        half = attempts // 2
        t0 = time.perf_counter()
        placed = 0
        while placed < half:  # one silent INVITE per answered call, at the same rate
            due = min(half, int((time.perf_counter() - t0) * rate / 2) + 1)
            for _ in range(due - placed):
                silent.invite()
            await gen.run(due - placed, rate / 2)
            placed = due
        peak = server.rss_kib()
        took = time.perf_counter() - t0
        await asyncio.sleep(DRAIN)
        drained = server.rss_kib()
        print(f"server from {root}")
        print(f"{attempts} INVITE attempts in {took:.1f} s ({gen.answered} answered calls, "
              f"{half} to the silent callee, {gen.lost} lost)")
        print(f"RSS baseline {base / 1024:.1f} MiB, after the attempts {peak / 1024:.1f} MiB, "
              f"{DRAIN:g} s later {drained / 1024:.1f} MiB")
        print(f"  bytes per attempt while its transactions live: "
              f"{(peak - base) * 1024 / attempts:6.0f}", flush=True)
    finally:
        gen.close()
        silent.close()
        server.stop()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--attempts", type=int, default=20_000)
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--server-root", type=Path, default=dm.ROOT)
    args = ap.parse_args(argv)
    _transaction_bytes(5000)
    os.sched_setaffinity(0, {dm.CLIENT_CPU})
    asyncio.run(_measure(args.attempts, args.rate, args.server_root.resolve()))


if __name__ == "__main__":
    main()
