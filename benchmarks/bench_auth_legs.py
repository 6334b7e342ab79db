"""Instructions per leg of an authenticated registration, fed to an in-process server (issue 14).

Why beside ``bench_instructions``: that bench counts what a server process executes between
two callgrind dumps while SIPp sends at a low rate, so every datagram gets an event-loop wakeup
of its own and the time-driven work (timers, sweeps, the UDP reader's revisions) is shared out
per message; how much of it lands on a message depends on the machine's load: its
REGISTER_401 read 82k to 148k instructions from run to run for the same code (82k and 142k
this session, load 6 and 9).  Versions of the digest path do not compare on that.

This counts the receive path alone.  A server is started in this process (``--auth on``, MD5,
``--users`` subscribers, as ``bench_register_auth``), the datagrams of that many registrations
are made first (each first leg answered once, so each second leg answers a real challenge),
then one leg of each registration is fed to ``SipCore.receive`` (what the UDP reader calls
for a datagram) with the answers going to a local socket; callgrind's counters are zeroed
before the loop and dumped after it (``callgrind_control`` on this process).  Left out:
``recvmsg`` and the event loop's wakeups, the same for every version, and the time-driven work
(``_steady``: the admission limit's revisions, the Date formatted once a second), which under
valgrind fell on as few requests as the machine's load made it.

- 401: the REGISTER without credentials and its stateless 401;
- AUTH: the REGISTER with credentials answering its 401, one at a time (each answered before
  the next is fed, as bench_instructions sends them): the parse, transaction, worker, digest
  check, registrar and 200;
- PLAIN: the same REGISTER without credentials to a server with ``--auth off``, one at a
  time as AUTH: the registrar's path without authentication, so AUTH minus PLAIN is what
  checking the credentials costs.

    python -m benchmarks.bench_auth_legs [--users 300] [--legs 401,AUTH,PLAIN] [--seeds 1,2,3]
                                         [--keep DIR] [--profile]

``--seeds``: the server's process runs with each ``PYTHONHASHSEED`` in turn and the mean is
printed, as ``bench_call_legs`` does.  With a random seed the AUTH leg read 364,481 to 373,426
for the same code in one session (string hashes decide dict collisions on every lookup), more
than a change to the digest path moves it; compare versions over the same seeds.

``--keep DIR`` keeps each leg's callgrind dump (``callgrind_annotate --inclusive=yes
DIR/cg.AUTH.out``: the C functions, hashing and parsing included); ``--profile`` runs the first
of ``--legs`` under cProfile in this process instead and prints the Python functions by call
count and by own time (callgrind sees the interpreter, not which Python function it runs).

Prints instructions per leg and the answers counted (every leg must be answered: 401s, then
200s).  Needs valgrind.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import inprocess

__all__ = ["main"]

DOMAIN = "127.0.0.1"
_REGISTER = ("REGISTER sip:{d} SIP/2.0\r\n"
             "Via: SIP/2.0/UDP 127.0.0.1:{p};branch=z9hG4bK-{n}-{c};rport\r\n"
             "Max-Forwards: 70\r\nFrom: <sip:{u}@{d}>;tag={n}r1\r\nTo: <sip:{u}@{d}>\r\n"
             "Call-ID: {n}-bench@127.0.0.1\r\nCSeq: {c} REGISTER\r\n"
             "Contact: <sip:{u}@127.0.0.1:{p}>\r\n{auth}Expires: 600\r\nContent-Length: 0\r\n\r\n")
_STATUS = {"401": b"SIP/2.0 401 ", "AUTH": b"SIP/2.0 200 ", "PLAIN": b"SIP/2.0 200 "}


def _drain(sock: socket.socket, prefix: bytes) -> int:
    count = 0
    with contextlib.suppress(BlockingIOError):
        while True:
            count += sock.recv(65535).startswith(prefix)
    return count


def _steady(server: Any) -> None:
    """No time-driven work in the measured loop: the admission limit's revision (every 100 ms,
    ~45k instructions, ``AdmissionControl._revise``) and its fairness window, and the 200's
    Date (formatted once a second).  At a real rate each falls on thousands of requests; under
    valgrind (~50x slower) on a few, as many more the slower the machine runs it: with seed 1
    the PLAIN leg read 214,171 on main and 218,879 with a change that takes ~3.3k of work away.
    Frozen, a version and seed repeat within ~200 instructions, so a change of 1% shows."""
    control = server.core.overload.control
    control._interval_end = control._window_end = float("inf")
    server.registrar.clock = functools.partial(float, time.time())


async def _inner(leg: str, users: int, directory: Path, profile: bool = False) -> int:
    """Under callgrind (or cProfile, ``profile``): the measured loop; returns the answers with
    the expected status."""
    from protocols.sip.digest import authorization, parse_challenge
    from protocols.sip.parser import parse_message
    from signaling.auth.subscribers import Subscriber
    from signaling.cli import _tune_gc
    from signaling.config import load_config
    from signaling.server import Server
    from signaling.transports.base import Peer

    subscribers = directory / "subscribers.jsonl"
    with subscribers.open("w") as fh:
        for n in range(users):
            fh.write(json.dumps(Subscriber.create(f"a{n}", DOMAIN, f"pw-{n}").to_json()) + "\n")
    server = Server(load_config({
        "sip_udp": "127.0.0.1:0", "sip_ws": "off", "admin": "off", "diameter": "off",
        "domain": [DOMAIN], "auth": "off" if leg == "PLAIN" else "on",
        "auth_algorithms": ["MD5"], "pike_rate": "0",
        "subscribers": str(subscribers), "auth_nonce_table": str(max(users, 1000)),
        "spool": str(directory / "spool.jsonl"),
        # Admission control judges wall-clock queueing, which valgrind stretches ~50x: at
        # its defaults it refused some REGISTERs (503) on a loaded machine, and a 503 is not
        # the leg measured here.  Out of reach, as no load is offered anyway.
        "overload_target": "30", "max_receive_delay": "30"}, env={}))
    await server.start()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        port = sock.getsockname()[1]
        peer = Peer("udp", "127.0.0.1", port)
        core = server.core
        firsts, seconds = [], []
        for n in range(users):
            first = _REGISTER.format(d=DOMAIN, p=port, n=n, c=1, u=f"a{n}", auth="").encode()
            firsts.append(first)
            if leg == "PLAIN":
                continue
            core.receive(first, peer)
            challenge = parse_challenge(parse_message(sock.recv(65535)).header(
                "WWW-Authenticate") or "")
            value = authorization(challenge, method="REGISTER", uri=f"sip:{DOMAIN}",
                                  username=f"a{n}", password=f"pw-{n}", cnonce=f"{n:08x}")
            seconds.append(_REGISTER.format(d=DOMAIN, p=port, n=n, c=2, u=f"a{n}",
                                            auth=f"Authorization: {value}\r\n").encode())
        await asyncio.sleep(0.1)
        _tune_gc()  # as ``signaling serve`` does at start: its collector, not the default one
        _steady(server)
        receive, drain, prefix = core.receive, core.dispatcher.drain, _STATUS[leg]
        answered = 0
        prof = inprocess.start(profile)
        if leg == "401":
            for n, data in enumerate(firsts):
                receive(data, peer)
                if n % 32 == 31:
                    answered += _drain(sock, prefix)
        else:
            for data in seconds if leg == "AUTH" else firsts:
                receive(data, peer)
                await drain(10.0)  # one outstanding: answered before the next
                answered += _drain(sock, prefix)
        if prof is None:
            inprocess.control("-d")
        else:
            inprocess.print_profile(prof, "tottime", 40)
        return answered + _drain(sock, prefix)
    finally:
        sock.close()
        await server.stop()


def measure(leg: str, users: int, keep: Path | None = None,
            seed: int | None = None) -> tuple[int, int]:
    """(instructions per leg, answers with the expected status) for ``users`` of ``leg``, the
    server's process run with ``PYTHONHASHSEED=seed`` when given; with ``keep``, the measured
    loop's callgrind dump is copied there as ``cg.LEG.out`` (``cg.LEG.SEED.out`` with a seed;
    per function: ``callgrind_annotate --inclusive=yes``)."""
    directory = Path(tempfile.mkdtemp(prefix="bench-auth-legs-"))
    try:
        out = directory / "cg.out"
        proc = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable,
             "-m", "benchmarks.bench_auth_legs", "--inner", leg, "--users", str(users),
             "--dir", str(directory)],
            cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True,
            check=False, env=os.environ if seed is None else
            {**os.environ, "PYTHONHASHSEED": str(seed)})
        answered = [line for line in proc.stdout.splitlines() if line.startswith("answered ")]
        dump = out.with_name("cg.out.1")
        if proc.returncode != 0 or not answered or not dump.exists():
            raise RuntimeError(f"the measured run failed: {proc.stderr[-2000:]}")
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(dump, keep / (f"cg.{leg}.out" if seed is None
                                          else f"cg.{leg}.{seed}.out"))
        for line in dump.read_text(errors="replace").splitlines():
            if line.startswith("summary:"):
                return int(line.split()[1]) // users, int(answered[0].split()[1])
        raise RuntimeError(f"no summary in {dump}")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, default=300, help="registrations (legs of each kind)")
    ap.add_argument("--legs", default="401,AUTH", help="401, AUTH, PLAIN, comma-separated")
    ap.add_argument("--seeds", default="",
                    help="PYTHONHASHSEED of each run, comma-separated (e.g. 1,2,3; default: "
                         "one run, random)")
    ap.add_argument("--profile", action="store_true",
                    help="cProfile the loop of the first leg in this process instead")
    ap.add_argument("--keep", type=Path, help="directory to keep each leg's callgrind dump in")
    ap.add_argument("--inner", help=argparse.SUPPRESS)
    ap.add_argument("--dir", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.inner or args.profile:
        import uvloop
        leg = args.inner or args.legs.split(",")[0].strip().upper()
        with contextlib.ExitStack() as stack:
            directory = (Path(args.dir) if args.dir else
                         Path(stack.enter_context(tempfile.TemporaryDirectory())))
            answered = uvloop.run(_inner(leg, args.users, directory, args.profile))
        print(f"answered {answered}")
        return
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        sys.exit("valgrind not found (Debian: valgrind)")
    print(f"instructions per leg of a registration, in-process receive path (callgrind), "
          f"{args.users} each")
    seeds: list[int | None] = [int(x) for x in args.seeds.split(",") if x.strip()] or [None]
    for leg in [x.strip().upper() for x in args.legs.split(",") if x.strip()]:
        if leg not in _STATUS:
            sys.exit(f"unknown leg {leg}: 401, AUTH or PLAIN")
        figures = []
        for seed in seeds:
            per, answered = measure(leg, args.users, args.keep, seed)
            figures.append(per)
            flag = "" if answered == args.users else "  INCOMPLETE: not every leg was measured"
            where = "" if seed is None else f" seed {seed:<3}"
            print(f"  {leg:<5}{where} answered {answered:>5}/{args.users}  {per:>9,} "
                  f"instructions each{flag}", flush=True)
        if len(seeds) > 1:
            print(f"  {leg:<5} mean of {len(seeds)} seeds: {sum(figures) // len(figures):,}",
                  flush=True)


if __name__ == "__main__":
    main()
