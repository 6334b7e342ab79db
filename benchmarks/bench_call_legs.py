"""Instructions per call through the proxy, fed to an in-process server (issue 18).

Why beside ``bench_instructions --kinds CALL``: that bench counts what a server process executes
while SIPp sends 4 calls a second, so every datagram gets an event-loop wakeup of its own and
the time-driven work (transaction timers, sweeps) is shared out per call, net of an idle run of
the same length; it moves by a few percent with the machine's load.  This counts the receive
path of a call alone, as ``bench_auth_legs`` does for a registration: a server is started in
this process (the reference configuration's proxy: record-routing, dialogs tracked, no
authentication), a callee registers, and each call's datagrams are fed to ``SipCore.receive``
(what the UDP reader calls for a datagram) one at a time, each request's worker awaited:

    INVITE (caller) -> 100 to the caller, INVITE to the callee
    180, 200 (callee) -> relayed to the caller
    ACK, BYE (caller, routed by the Record-Route) -> relayed to the callee
    200 to the BYE (callee) -> relayed to the caller

The callee's answers and the caller's in-dialog requests are written from the bytes the proxy
sent (its Vias, Record-Route, tags), as a UA would.  Left out: ``recvmsg``, the wait for the
next datagram and the transactions' timers (none fires while the calls run), the same for
every version; the loop iterations that take a request to its worker are counted.  The
client's own work (writing its requests and answers) runs in the same process: it is counted
again on its own after the loop, from the same messages without the proxy, and subtracted.
``--profile`` runs the loop under cProfile instead and prints the functions by call count and
by cumulative time (callgrind sees only the interpreter, not which Python function it runs;
in CPython 3.11 each Python call costs a few hundred instructions of its own).

    python -m benchmarks.bench_call_legs [--calls 300] [--parser both|c|python]
                                         [--seeds 1,2,3] [--profile]

Prints instructions per call and the calls completed (every call must complete), for each
``--seeds`` value and their mean.  The hash seed moves the count by a few percent (string
hashes decide dict collisions on every lookup: one version read 1,419k with random seeds and
1,481k with seed 0), so versions are compared over the same seeds.  Needs valgrind (not with
``--profile``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import uvloop

from benchmarks import inprocess

__all__ = ["main"]

DOMAIN = "127.0.0.1"
_SDP = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        "m=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
_SDP_BYTES = _SDP.encode()
_REGISTER = ("REGISTER sip:{d} SIP/2.0\r\n"
             "Via: SIP/2.0/UDP 127.0.0.1:{p};branch=z9hG4bK-reg;rport\r\n"
             "Max-Forwards: 70\r\nFrom: <sip:uas@{d}>;tag=r1\r\nTo: <sip:uas@{d}>\r\n"
             "Call-ID: reg@127.0.0.1\r\nCSeq: 1 REGISTER\r\n"
             "Contact: <sip:uas@127.0.0.1:{p}>\r\nExpires: 3600\r\nContent-Length: 0\r\n\r\n")
# As harness/sipp/uac.xml writes them (the caller of bench_calls and bench_instructions).
_INVITE = ("INVITE sip:uas@{d}:{sp} SIP/2.0\r\n"
           "Via: SIP/2.0/UDP 127.0.0.1:{p};branch=z9hG4bK-{n}-1-0;rport\r\n"
           "From: <sip:caller@127.0.0.1:{p}>;tag={n}c1\r\n"
           "To: <sip:uas@{d}:{sp}>\r\nCall-ID: {n}-call@127.0.0.1\r\nCSeq: 1 INVITE\r\n"
           "Contact: <sip:caller@127.0.0.1:{p};transport=UDP>\r\nMax-Forwards: 70\r\n"
           "Content-Type: application/sdp\r\nContent-Length: {blen}\r\n\r\n{sdp}")
_IN_DIALOG = ("{m} {target} SIP/2.0\r\n"
              "Via: SIP/2.0/UDP 127.0.0.1:{p};branch=z9hG4bK-{n}-{c}-{m};rport\r\n"
              "{routes}From: <sip:caller@127.0.0.1:{p}>;tag={n}c1\r\n"
              "To: {to}\r\nCall-ID: {n}-call@127.0.0.1\r\nCSeq: {c} {m}\r\n"
              "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n")


async def _recv(sock: socket.socket, prefix: bytes) -> bytes:
    """The next datagram on ``sock`` starting with ``prefix`` (others, a 100, are skipped).
    A request handed to a worker is answered after a loop iteration or two: this yields to
    the loop until then (``asyncio.sleep(0)``, one iteration each; not ``Dispatcher.drain``,
    whose futures and timeout would be counted as the server's)."""
    while True:
        try:
            data = sock.recv(65535)
        except BlockingIOError:
            await asyncio.sleep(0)
            continue
        if data.startswith(prefix):
            return data


def _lines(data: bytes, *names: bytes) -> list[bytes]:
    """The header lines of ``data`` whose name is one of ``names`` (as the peers write them)."""
    return [line for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
            if line.split(b":", 1)[0] in names]


class _Client:
    """The caller's requests and the callee's answers, written as harness/sipp/uac.xml and
    uas.xml write them, from the bytes the proxy sent."""

    def __init__(self, domain: str, server_port: int, caller_port: int, callee_port: int
                 ) -> None:
        self.domain, self.sport, self.pc = domain, server_port, caller_port
        self.contact = f"Contact: <sip:127.0.0.1:{callee_port};transport=UDP>".encode()

    def invite(self, n: int) -> bytes:
        return _INVITE.format(d=self.domain, sp=self.sport, p=self.pc, n=n, blen=len(_SDP),
                              sdp=_SDP).encode()

    def _answer(self, request: bytes, status: bytes, body: bytes = b"") -> bytes:
        """§8.2.6.2: Vias, Record-Route (§12.1.1), From, To (the callee's tag added),
        Call-ID and CSeq copied."""
        lines = [status, *_lines(request, b"Via", b"Record-Route", b"From", b"Call-ID",
                                 b"CSeq")]
        to = _lines(request, b"To")[0]
        lines.append(to if b";tag=" in to else to + b";tag=1u1")
        lines.append(self.contact)
        if body:
            lines.append(b"Content-Type: application/sdp")
        lines.append(b"Content-Length: %d\r\n" % len(body))
        return b"\r\n".join(lines) + b"\r\n" + body

    def ringing(self, invite: bytes) -> bytes:
        return self._answer(invite, b"SIP/2.0 180 Ringing")

    def ok(self, invite: bytes) -> bytes:
        return self._answer(invite, b"SIP/2.0 200 OK", _SDP_BYTES)

    def bye_ok(self, bye: bytes) -> bytes:
        return self._answer(bye, b"SIP/2.0 200 OK")

    def in_dialog(self, ok: bytes, n: int) -> tuple[bytes, bytes]:
        """ACK and BYE: the route set is the Record-Route reversed, the target the Contact
        (§12.1.2)."""
        rr = [line.split(b":", 1)[1].strip() for line in _lines(ok, b"Record-Route")]
        routes = "".join(f"Route: {r.decode()}\r\n" for r in reversed(rr))
        to = _lines(ok, b"To")[0].split(b":", 1)[1].strip().decode()
        target = _lines(ok, b"Contact")[0].split(b":", 1)[1].strip().decode().strip("<>")
        return tuple(_IN_DIALOG.format(m=m, target=target, p=self.pc, n=n, c=c, routes=routes,
                                       to=to).encode()
                     for c, m in ((1, "ACK"), (2, "BYE")))  # type: ignore[return-value]


async def _inner(calls: int, parser: str, profile: bool, directory: Path) -> int:
    """The measured loop; returns the calls completed (the BYE's 200 back at the caller)."""
    from signaling.cli import _tune_gc
    from signaling.config import load_config
    from signaling.server import Server
    from signaling.transports.base import Peer

    server = Server(load_config({
        "sip_udp": "127.0.0.1:0", "sip_ws": "off", "admin": "off", "diameter": "off",
        "domain": [DOMAIN], "auth": "off", "pike_rate": "0", "sip_parser": parser,
        "spool": str(directory / "spool.jsonl"),
        # Admission control judges wall-clock queueing, which valgrind stretches ~50x.
        "overload_target": "30", "max_receive_delay": "30"}, env={}))
    await server.start()
    uac, uas = (socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2))
    try:
        for s in (uac, uas):
            s.bind(("127.0.0.1", 0))
            s.setblocking(False)
        pc, ps = uac.getsockname()[1], uas.getsockname()[1]
        caller, callee = Peer("udp", "127.0.0.1", pc), Peer("udp", "127.0.0.1", ps)
        core = server.core
        sport = min(core.transports.ports())
        receive = core.receive
        receive(_REGISTER.format(d=DOMAIN, p=ps).encode(), callee)
        await _recv(uas, b"SIP/2.0 200 ")
        await asyncio.sleep(0.1)
        _tune_gc()  # as ``signaling serve`` does at start
        client = _Client(DOMAIN, sport, pc, ps)
        done = 0
        prof = inprocess.start(profile)
        seen: list[tuple[bytes, bytes, bytes]] = []
        for n in range(calls):
            receive(client.invite(n), caller)
            invite = await _recv(uas, b"INVITE ")
            receive(client.ringing(invite), callee)
            await _recv(uac, b"SIP/2.0 180 ")
            receive(client.ok(invite), callee)
            ok = await _recv(uac, b"SIP/2.0 200 ")
            ack, bye = client.in_dialog(ok, n)
            receive(ack, caller)
            await _recv(uas, b"ACK ")
            receive(bye, caller)
            request = await _recv(uas, b"BYE ")
            receive(client.bye_ok(request), callee)
            await _recv(uac, b"SIP/2.0 200 ")
            seen.append((invite, ok, request))
            done += 1
        if prof is None:
            inprocess.control("-d")
            # The client's own work, counted apart to be subtracted: the same messages made
            # again from what the proxy sent, without the proxy.
            inprocess.control("-z")
            for n, (invite, ok, request) in enumerate(seen):
                client.invite(n)
                client.ringing(invite)
                client.ok(invite)
                client.in_dialog(ok, n)
                client.bye_ok(request)
            inprocess.control("-d")
        else:
            inprocess.print_profile(prof, "cumulative", 70)
        return done
    finally:
        uac.close()
        uas.close()
        await server.stop()


def measure(calls: int, parser: str, seed: int) -> tuple[int, int, int]:
    """(instructions per call net of the client's, the client's, calls completed), the
    server's process run with ``PYTHONHASHSEED=seed``."""
    directory = Path(tempfile.mkdtemp(prefix="bench-call-legs-"))
    try:
        out = directory / "cg.out"
        proc = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable,
             "-m", "benchmarks.bench_call_legs", "--inner", "--calls", str(calls),
             "--parser", parser, "--dir", str(directory)],
            cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True,
            check=False, env={**os.environ, "PYTHONHASHSEED": str(seed)})
        done = [line for line in proc.stdout.splitlines() if line.startswith("completed ")]
        dumps = [out.with_name(f"cg.out.{i}") for i in (1, 2)]
        if proc.returncode != 0 or not done or not all(d.exists() for d in dumps):
            raise RuntimeError(f"the measured run failed: {proc.stderr[-2000:]}")
        both, client = (_summary(d) for d in dumps)
        return (both - client) // calls, client // calls, int(done[0].split()[1])
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _summary(dump: Path) -> int:
    for line in dump.read_text(errors="replace").splitlines():
        if line.startswith("summary:"):
            return int(line.split()[1])
    raise RuntimeError(f"no summary in {dump}")


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--parser", choices=["c", "python", "both"], default="both")
    ap.add_argument("--seeds", default="1,2,3",
                    help="PYTHONHASHSEED of each run, comma-separated (default 1,2,3)")
    ap.add_argument("--profile", action="store_true",
                    help="cProfile the loop in this process instead of counting instructions")
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--dir", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    parsers = ["c", "python"] if args.parser == "both" else [args.parser]
    if args.inner or args.profile:
        with contextlib.ExitStack() as stack:
            directory = (Path(args.dir) if args.dir else
                         Path(stack.enter_context(tempfile.TemporaryDirectory())))
            done = uvloop.run(_inner(args.calls, parsers[0], args.profile, directory))
        print(f"completed {done}")
        return
    if shutil.which("valgrind") is None:
        sys.exit("valgrind not found (Debian: valgrind)")
    print(f"instructions per call through the proxy (callgrind), {args.calls} calls, "
          "fed in process")
    seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
    for parser in parsers:
        figures = []
        for seed in seeds:
            per, client, done = measure(args.calls, parser, seed)
            figures.append(per)
            print(f"  parser {parser:<6} seed {seed:<3} {per:>10,} instructions per call "
                  f"({client:,} of the client's own subtracted), completed "
                  f"{done}/{args.calls}", flush=True)
        print(f"  parser {parser:<6} mean of {len(seeds)} seeds: "
              f"{sum(figures) // len(figures):,}", flush=True)


if __name__ == "__main__":
    main()
