"""CPU instructions the server spends per REGISTER, per stateless OPTIONS and per complete call
through the proxy (issues 2, 3 and 18), the call side by side with Kamailio.

Why instructions: on this shared 2-core machine the per-second figures of ``bench_register``
and ``bench_options`` move by 2x between runs (other tenants), while the number of
instructions the server executes per message is the same from run to run.  It is the figure to
compare two versions of the server by, or the C parser against the pure-Python one.

How: the server runs under ``valgrind --tool=callgrind`` (which counts every instruction the
process executes, on any machine); once it answers, the counters are zeroed
(``callgrind_control -z``), ``--messages`` requests are sent, the counters are dumped
(``callgrind_control -d``) and the dump's total is divided by the number sent.  The count
includes everything the process does meanwhile: the event loop, timers, metrics, the
sweeper.  Each request waits for its answer before the next is sent (valgrind runs the server
~50x slower; a queue would only add retransmissions), so this is the cost per message
without batching: an upper bound of what a loaded server spends.

- REGISTER: SIPp (``../shared/reference/sipp/register.xml``, a new user per call) at a rate
  low enough for the server under valgrind, then SIPp's own count of successful calls;
- REGISTER_AUTH: a registration with digest authentication (issue 14): SIPp
  (``harness/sipp/register-auth.xml``, a new user per call from an injection file) sends
  REGISTER, gets the 401, sends REGISTER with ``[authentication]`` (MD5, qop=auth) and gets the
  200; the server runs ``--auth on --auth-algorithms MD5`` with those users in its subscriber
  file (as ``bench_register_auth``).  The count is per registration: two requests, two answers;
- REGISTER_401: its first leg alone (``harness/sipp/register-401.xml``): the REGISTER without
  credentials and its stateless 401, at the same rate; the authenticated leg costs the
  difference to REGISTER_AUTH;
- REGISTER_REDIS: as REGISTER, with the server's registry in a private redis-server
  (``--registry redis://...``, as ``bench_register_redis``): the server's side of writing each
  binding to Redis before the 200.  Redis's own work is in its process, not counted here.
  Printed net of idle too: the registry sweeps its 256 buckets once a second, and valgrind's
  slowness makes that time-driven work a large, load-dependent share of the total;
- REGISTER_TLS: REGISTERs over TLS 1.3 (issue 15), new users, as ``bench_register_tls`` sends
  them: ``TLS_CONNECTIONS`` persistent connections opened (and their handshakes done) before
  the counters are zeroed, each keeping ``TLS_WINDOW`` REGISTERs outstanding, so reads and
  writes batch as they do under load;
- REGISTER_TCP: the same over plain TCP connections: REGISTER_TLS minus it is what TLS costs,
  it minus REGISTER what a stream connection costs over a datagram;
- REGISTER_TLS1, REGISTER_TCP1: the same over one connection with one REGISTER outstanding:
  nothing batches, each REGISTER is one read, one answer and one write (a lone phone's load);
- REGISTER_WSS, REGISTER_WSS1: the same two loads over secure WebSocket (RFC 7118 over TLS
  1.3, ``--sip-wss``): the connections and their opening handshakes done before the counters
  are zeroed, each REGISTER one masked text frame (as ``bench_ws_idle``'s clients send);
- OPTIONS: to the server itself (stateless 200), from a Python socket, one at a time;
- CALL: INVITE, 100, 180, 200, ACK, BYE, 200 through the record-routing proxy with dialog
  tracking (SIPp ``harness/sipp/uac.xml`` to ``uas.xml``, the UAS registered first), at a low
  rate; the count is per successful call.  Kamailio runs the same calls with the reference
  configuration (``../shared/reference/kamailio/kamailio.cfg``, read from there with its
  listening port changed to a free one in a temporary copy) under callgrind too, all its
  processes counted.  Read its count with care: measured here, Kamailio executes ~3.7M
  instructions per call under valgrind, far more than its native CPU per call (bench_calls:
  ~500 us) suggests, with every call's work in its one UDP worker; a C server of several
  processes sharing locks in shared memory is not slowed by valgrind the way a single Python
  process is.  Compare the two servers by CPU per call (``bench_calls``); compare versions of
  ours by this count.

REGISTER and OPTIONS are run twice, with the C fast path of the parser and with
``--sip-parser python``, side by side in the same run; CALL with the parser(s) asked for and
Kamailio.

    python -m benchmarks.bench_instructions [--messages 1000] [--parser both|c|python]
                                [--kinds REGISTER,REGISTER_REDIS,REGISTER_AUTH,REGISTER_401,
                                         REGISTER_TLS,REGISTER_TCP,REGISTER_WSS,...]

To compare with an older version of the server, run this file from a checkout of it (the
server is started from the tree the file is in): ``--parser c`` uses no option the older
server may lack.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.bench_register_redis import RedisForBench
from harness.serverproc import free_tcp_port, free_udp_port, options, sip_request
from harness.sipp_runner import Sipp, run_sipp

__all__ = ["main"]

ROOT = Path(__file__).resolve().parents[1]
REGISTER_XML = ROOT.parent / "shared" / "reference" / "sipp" / "register.xml"
REGISTER_AUTH_XML = ROOT / "harness" / "sipp" / "register-auth.xml"
REGISTER_401_XML = ROOT / "harness" / "sipp" / "register-401.xml"
#: REGISTERs per second offered to the server under valgrind: well below what it answers
#: there, so SIPp never retransmits (a retransmission would be counted as work).
REGISTER_RATE = 40
#: Calls per second under valgrind: each is seven messages through the proxy and ~50x slower
#: than natively.  10/s was far from SIPp's retransmission timers on a quiet machine, but at
#: load 8-15 only 178-288 of 300 calls were answered and the count per answered call moved
#: by up to 7% (one version 1,624k and 1,568k net of idle at 10/s, 1,572k at 4/s; another
#: 1,412k at 10/s, 1,516k at 4/s); at 4/s every call of five runs at load 8-12 was answered.
CALL_RATE = 4
#: Seconds per process for the server to answer under valgrind: at load 10-15 a worker of
#: --processes 2 took over 4 minutes to start (session 9: two runs gave up at 120 s).
START_TIMEOUT = 300.0
KAMAILIO_CFG = ROOT.parent / "shared" / "reference" / "kamailio" / "kamailio.cfg"
#: The supervisor, with the time it gives a worker to start raised: under valgrind a Python
#: worker takes over a minute, past ``READY_TIMEOUT`` (the workers are started as usual).
SLOW_START = ("import sys, signaling.supervisor as s; s.READY_TIMEOUT = 1800.0; "
              "from signaling.cli import main; sys.exit(main())")
#: Kamailio's shared memory (MB), as bench_calls gives it.
KAMAILIO_SHM_MB = 512
#: REGISTER_TLS: persistent connections, and REGISTERs outstanding on each (as the load of
#: bench_register_tls, scaled down for valgrind).
TLS_CONNECTIONS = 10
TLS_WINDOW = 4
#: REGISTER_TLS1 / REGISTER_TCP1: one connection, one REGISTER outstanding, so every message
#: is read, answered and written on its own (the unbatched per-message cost of the stream path).
SERIAL_KINDS = ("REGISTER_TLS1", "REGISTER_TCP1")
WSS_KINDS = ("REGISTER_WSS", "REGISTER_WSS1")


class ServerUnderCallgrind:
    """Ours (``pure``: the pure-Python parser) or, with ``kamailio``, the reference."""

    def __init__(self, pure: bool, kamailio: bool = False, extra: Sequence[str] = (),
                 processes: int = 1) -> None:
        self.port = free_udp_port()
        self.extra = list(extra)
        self.dir = Path(tempfile.mkdtemp(prefix="bench-instr-"))
        grind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={self.dir}/cg.%p"]
        if processes > 1:  # the supervisor starts its workers as new Python processes
            grind.append("--trace-children=yes")
        if kamailio:
            cfg = self.dir / "kamailio.cfg"
            listen = f"listen=udp:127.0.0.1:{self.port}"
            cfg.write_text(KAMAILIO_CFG.read_text()
                           .replace("listen=udp:127.0.0.1:5060", listen)
                           .replace("unix:/tmp/kamailio_ctl", f"unix:{self.dir}/ctl"))
            cmd = [*grind, "--trace-children=yes", "kamailio", "-f", str(cfg), "-DD", "-E",
                   "-m", str(KAMAILIO_SHM_MB)]
        else:
            cmd = [*grind, sys.executable, *(["-m", "signaling"] if processes == 1 else
                                             ["-c", SLOW_START]), "serve",
                   "--processes", str(processes),
                   "--sip-udp", f"127.0.0.1:{self.port}", "--sip-ws", "off", "--admin", "off",
                   "--diameter", "off", "--log-level", "warning",
                   "--auth", "off", "--pike-rate", "0",  # as the reference Kamailio
                   "--spool", str(self.dir / "spool.jsonl"),
                   # the default is "c": a server from before the option existed runs too
                   *(["--sip-parser", "python"] if pure else []), *extra]
        self.zeroed_at = time.monotonic()
        self.log = open(self.dir / "server.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT * processes
        answered = 0
        # Every worker answers: probes from new source ports hash to every worker in time.
        while answered < (1 if processes == 1 else 8 * processes):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                # Its own session: nothing else would ever stop a server still starting
                # (under valgrind on a loaded machine it outlived the bench, using a core).
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
                self.log.close()
                raise RuntimeError(f"server did not start: {self.dir / 'server.log'}")
            if sip_request(self.port, options(self.port), timeout=1.0) is not None:
                answered += 1
            elif processes > 1:
                # A probe hashed to a worker still starting waits in its socket: the answers
                # must come in a row, else the counters are zeroed while one worker is still
                # importing (two runs at load 13 counted ~290,000 instructions per REGISTER
                # in a second worker: a start-up, ~86M instructions, shared out).
                answered = 0
        if processes > 1:
            time.sleep(5.0)  # the last workers finish starting (and copying the registry)

    def pids(self) -> list[int]:
        """The server's processes: ours is one, Kamailio forks its workers."""
        out = subprocess.run(["pgrep", "-s", str(self.proc.pid)], capture_output=True,
                             text=True, check=False).stdout.split()
        return sorted({self.proc.pid, *map(int, out)})

    def control(self, flag: str) -> None:
        if flag == "-z":
            self.zeroed_at = time.monotonic()
        for pid in self.pids():
            subprocess.run(["callgrind_control", flag, str(pid)], check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def measured(self) -> int:
        """Instructions between the last zero and the dumps just taken, all processes."""
        total = 0
        self.by_process: dict[int, int] = {}
        for pid in self.pids():
            dumps = [p for p in self.dir.glob(f"cg.{pid}.*") if p.suffix != ".log"]
            if not dumps:
                continue  # a process callgrind does not trace (none in practice)
            newest = max(dumps, key=lambda p: int(p.name.rsplit(".", 1)[1]))
            for line in newest.read_text(errors="replace").splitlines():
                if line.startswith("summary:"):
                    self.by_process[pid] = int(line.split()[1])
                    total += self.by_process[pid]
                    break
            else:
                raise RuntimeError(f"no summary in {newest}")
        return total

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def send_registers(port: int, n: int) -> int:
    """SIPp REGISTERs with new users; returns SIPp's count of successful ones."""
    with tempfile.TemporaryDirectory() as tmp:
        stats = Path(tmp) / "stats.csv"
        subprocess.run(["sipp", f"127.0.0.1:{port}", "-sf", str(REGISTER_XML), "-m", str(n),
                        "-r", str(REGISTER_RATE), "-l", "1", "-nostdin", "-trace_stat",
                        "-stf", str(stats), "-timeout", str(n // REGISTER_RATE + 120)],
                       cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       check=False)
        rows = [r.split(";") for r in stats.read_text().splitlines() if r]
        header, last = rows[0], rows[-1]
        return int(last[header.index("SuccessfulCall(C)")])


def _auth_users(n: int) -> dict[str, str]:
    return {f"a{i}": f"pw-{i}-x" for i in range(n)}


def auth_extra(directory: Path, n: int) -> list[str]:
    """The server options of REGISTER_AUTH: its ``n`` users as subscribers (HA1 hashes)."""
    from signaling.auth.subscribers import Subscriber
    subs = directory / "subscribers.jsonl"
    with subs.open("w") as fh:
        for user, password in _auth_users(n).items():
            fh.write(json.dumps(Subscriber.create(user, "127.0.0.1", password).to_json()) + "\n")
    return ["--auth", "on", "--auth-algorithms", "MD5", "--subscribers", str(subs),
            "--auth-nonce-table", str(max(n, 1000))]


def send_auth_registers(port: int, n: int, scenario: Path = REGISTER_AUTH_XML) -> int:
    """SIPp registrations answering the 401 (one per new user); SIPp's count of successes.
    With ``REGISTER_401_XML``, their first legs alone."""
    with tempfile.TemporaryDirectory() as tmp:
        stats, inf = Path(tmp) / "stats.csv", Path(tmp) / "users.csv"
        inf.write_text("SEQUENTIAL\n" + "".join(
            f"{u};[authentication username={u} password={p}]\n"
            for u, p in _auth_users(n).items()))
        subprocess.run(["sipp", f"127.0.0.1:{port}", "-sf", str(scenario),
                        "-inf", str(inf), "-m", str(n), "-r", str(REGISTER_RATE // 2),
                        "-l", "1", "-nostdin", "-trace_stat", "-stf", str(stats),
                        "-timeout", str(2 * n // REGISTER_RATE + 120)],
                       cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       check=False)
        rows = [r.split(";") for r in stats.read_text().splitlines() if r]
        header, last = rows[0], rows[-1]
        return int(last[header.index("SuccessfulCall(C)")])


def send_options(port: int, n: int) -> int:
    """OPTIONS to the server, one at a time; returns the 200s received."""
    ok = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5.0)
        s.bind(("127.0.0.1", 0))
        local = s.getsockname()[1]
        for i in range(n):
            branch = f"z9hG4bKi{i}x"
            s.sendto(options(port, branch=branch, local_port=local), ("127.0.0.1", port))
            with contextlib.suppress(TimeoutError):
                answer = s.recv(65535)
                # options() appends a random number to the branch: match on the prefix
                ok += answer.startswith(b"SIP/2.0 200 ") and f"branch={branch}".encode() in answer
    return ok


def send_calls(server: ServerUnderCallgrind, n: int) -> int:
    """SIPp calls through the proxy to a registered SIPp UAS; SIPp's count of successful ones.
    The counters are zeroed once the UAS is registered: its REGISTER is not part of a call."""
    remote = f"127.0.0.1:{server.port}"
    timeout = n / CALL_RATE + 120
    uas = Sipp("uas", calls=n, timeout=timeout)
    reg = run_sipp("register", remote, keys={"user": "uas", "expires": "3600",
                                             "contact": f"127.0.0.1:{uas.port}"}, timeout=60)
    if not reg.ok:
        raise RuntimeError(f"registration of the UAS failed: {reg.errors[-1000:]}")
    uas.start()
    try:
        time.sleep(0.5)
        server.control("-z")
        return Sipp("uac", remote, service="uas", calls=n, rate=CALL_RATE,
                    timeout=timeout).start().wait().successful
    finally:
        uas.stop()


def tls_extra(directory: Path, listener: str = "--sip-tls") -> list[str]:
    """The server options of REGISTER_TLS (REGISTER_WSS: ``listener`` "--sip-wss"): a TLS
    listener with a certificate made for the run (its CA beside it, ``ca.crt``)."""
    from tests.tlscerts import make_pki
    pki = make_pki(directory)
    return [listener, f"127.0.0.1:{free_tcp_port()}", "--tls-cert", str(pki.cert("server")),
            "--tls-key", str(pki.key("server")),
            # 40 REGISTERs outstanding wait far longer than the default 50 ms under valgrind's
            # ~50x slowdown: the overload control would answer most of them 503.
            "--overload-target", "30"]


def tcp_extra() -> list[str]:
    """The server options of REGISTER_TCP: a TCP listener (and the overload target of
    ``tls_extra``)."""
    return ["--sip-tcp", f"127.0.0.1:{free_tcp_port()}", "--overload-target", "30"]


def send_tls_registers(server: ServerUnderCallgrind, n: int, connections: int = TLS_CONNECTIONS,
                       window: int = TLS_WINDOW) -> int:
    """REGISTERs over ``connections`` TLS connections (plain TCP ones for REGISTER_TCP),
    ``window`` outstanding on each; the counters are zeroed once every connection is
    open.  Returns the 200s received."""
    from benchmarks.bench_register_tls import _register
    from benchmarks.bench_ws_idle import _frame
    from protocols.sip.framing import SipStream

    extra = server.extra
    secure = "--sip-tls" in extra or "--sip-wss" in extra
    ws = "--sip-wss" in extra
    option = "--sip-wss" if ws else "--sip-tls" if secure else "--sip-tcp"
    port = int(extra[extra.index(option) + 1].rpartition(":")[2])
    tls: dict[str, Any] = {}
    if secure:
        tls = {"ssl": ssl.create_default_context(cafile=str(
                   Path(extra[extra.index("--tls-cert") + 1]).parent / "ca.crt")),
               "server_hostname": "sip.example.com"}
    per_conn = n // connections

    async def run() -> int:
        deadline = time.monotonic() + START_TIMEOUT
        while True:  # the stream listener starts after the UDP one that answered the probe
            try:
                first = await asyncio.open_connection("127.0.0.1", port, **tls)
                break
            except ConnectionRefusedError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
        conns = [first, *[await asyncio.open_connection("127.0.0.1", port, **tls)
                          for _ in range(connections - 1)]]
        if ws:
            for reader, writer in conns:
                writer.write(WS_UPGRADE)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), START_TIMEOUT)
                assert head.startswith(b"HTTP/1.1 101 "), head
        server.control("-z")
        oks = await asyncio.gather(*(one(c, r, w) for c, (r, w) in enumerate(conns)))
        for _, w in conns:
            w.close()
        return sum(oks)

    async def one(c: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
        local, sent, ok, answered, stream = writer.get_extra_info("sockname")[1], 0, 0, 0, \
            SipStream()
        def register(i: int) -> bytes:
            return _frame(0x1, _register(c, i, local)) if ws else _register(c, i, local)

        buffer = b""
        while sent < min(window, per_conn):
            writer.write(register(sent))
            sent += 1
        while answered < per_conn:
            data = await asyncio.wait_for(reader.read(65_536), 60)
            if not data:
                break
            items: Sequence[object]
            if ws:  # the server's frames are unmasked, one SIP message each (RFC 7118 §4.2)
                buffer += data
                items, buffer = _payloads(buffer)
            else:
                items = stream.receive(data)
            for item in items:
                if isinstance(item, bytes):
                    answered += 1
                    ok += item.startswith(b"SIP/2.0 200 ")
                    if sent < per_conn:
                        writer.write(register(sent))
                        sent += 1
        return ok

    return asyncio.run(run())


#: A WebSocket opening handshake asking for the ``sip`` subprotocol (RFC 6455 §4.1, RFC 7118).
WS_UPGRADE = (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
              b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
              b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: sip\r\n\r\n")


def _payloads(buffer: bytes) -> tuple[list[bytes], bytes]:
    """The payloads of the whole server frames (unmasked, RFC 6455 §5.2) at the start of
    ``buffer``, and what is left."""
    out = []
    while len(buffer) >= 2:
        n, start = buffer[1] & 0x7F, 2
        if n == 126:
            n, start = int.from_bytes(buffer[2:4], "big"), 4
        elif n == 127:
            n, start = int.from_bytes(buffer[2:10], "big"), 10
        if len(buffer) < start + n:
            break
        out.append(buffer[start:start + n])
        buffer = buffer[start + n:]
    return out, buffer


def _zeroed(send: Callable[[int, int], int]) -> Callable[[ServerUnderCallgrind, int], int]:
    def run(server: ServerUnderCallgrind, n: int) -> int:
        server.control("-z")
        return send(server.port, n)
    return run


#: What each kind sends; the answer is SIPp's (or our socket's) count of successes.
SENDERS: dict[str, Callable[[ServerUnderCallgrind, int], int]] = {
    "REGISTER": _zeroed(send_registers), "REGISTER_REDIS": _zeroed(send_registers),
    "REGISTER_AUTH": _zeroed(send_auth_registers),
    "REGISTER_401": _zeroed(lambda port, n: send_auth_registers(port, n, REGISTER_401_XML)),
    "REGISTER_TLS": send_tls_registers, "REGISTER_TCP": send_tls_registers,
    **{kind: lambda server, n: send_tls_registers(server, n, 1, 1)
       for kind in (*SERIAL_KINDS, "REGISTER_WSS1")},
    "REGISTER_WSS": send_tls_registers,
    "OPTIONS": _zeroed(send_options), "CALL": send_calls}


def measure(kind: str, pure: bool, n: int, kamailio: bool = False,
            extra: Sequence[str] = (), processes: int = 1) -> tuple[int, int, int]:
    """(answered, instructions per message or call, of which idle) for ``n`` of ``kind``.

    Idle: what the server executes in as long a time with no traffic (timers, sweeps, and
    for Kamailio its timer and control processes), shared out per message.  Valgrind makes a
    run last ~50x longer than natively, which inflates the time-driven part ~50x: the call
    figures are compared net of it (``per - idle``)."""
    server = ServerUnderCallgrind(pure, kamailio, extra, processes)
    try:
        answered = SENDERS[kind](server, n)
        elapsed = time.monotonic() - server.zeroed_at
        server.control("-d")
        time.sleep(0.5)
        total = server.measured()
        if processes > 1:  # the supervisor first, then each worker
            print("    per process:", ", ".join(f"{n // max(answered, 1):,}"
                                               for _, n in sorted(server.by_process.items())))
        server.control("-z")
        time.sleep(elapsed)
        server.control("-d")
        time.sleep(0.5)
        idle = server.measured()
        if processes > 1:  # each process's idle apart: what its timers cost in that time
            print("    idle per process:", ", ".join(f"{n // max(answered, 1):,}" for _, n
                                                    in sorted(server.by_process.items())))
        per = max(answered, 1)
        return answered, total // per, idle // per
    finally:
        server.stop()


def kinds_of(text: str) -> list[str]:
    return [k.strip().upper() for k in text.split(",") if k.strip()]


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=1000,
                    help="messages (REGISTER, OPTIONS) or calls (CALL) per measurement")
    ap.add_argument("--parser", choices=["both", "c", "python"], default="both",
                    help="which parser(s) to measure (default: both, side by side)")
    ap.add_argument("--processes", type=int, default=1,
                    help="workers of our server (signaling serve --processes N): every process "
                         "is counted, the supervisor and its replica hub included (issue 16)")
    ap.add_argument("--kinds", default="REGISTER,OPTIONS,CALL",
                    help="what to measure, comma-separated: REGISTER, REGISTER_REDIS, "
                         "REGISTER_AUTH, REGISTER_401, REGISTER_TLS, REGISTER_TCP, "
                         "REGISTER_TLS1, REGISTER_TCP1 (one connection, one outstanding), "
                         "REGISTER_WSS, REGISTER_WSS1, "
                         "OPTIONS, CALL "
                         "(default: REGISTER,OPTIONS,CALL)")
    ap.add_argument("--private", action="store_true",
                    help="with --processes 1: a private UDP port too (--sip-udp-private), the "
                         "receive path a worker runs on its slot port (issue 16: what the "
                         "slot port costs, apart from what sharing the registry costs)")
    ap.add_argument("--no-kamailio", action="store_true",
                    help="CALL: ours only, without the Kamailio reference beside it (comparing "
                         "versions or process counts of ours: its run adds minutes)")
    args = ap.parse_args(argv)
    reference = "CALL" in kinds_of(args.kinds) and not args.no_kamailio
    kinds = kinds_of(args.kinds)
    if unknown := set(kinds) - set(SENDERS):
        sys.exit(f"unknown kinds: {', '.join(sorted(unknown))}")
    for tool in ("valgrind", "callgrind_control", "sipp", *(["kamailio"] if reference else [])):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found (Debian: valgrind, sip-tester, kamailio)")
    print(f"instructions executed by the server per message or call (callgrind), "
          f"{args.messages} each")
    modes = {"both": (False, True), "c": (False,), "python": (True,)}[args.parser]
    for kind in kinds:
        results = {}
        for pure in modes:
            with tempfile.TemporaryDirectory(prefix="bench-instr-subs-") as tmp, \
                    contextlib.ExitStack() as stack:
                extra = (auth_extra(Path(tmp), args.messages)
                         if kind in ("REGISTER_AUTH", "REGISTER_401") else
                         tls_extra(Path(tmp)) if kind in ("REGISTER_TLS", "REGISTER_TLS1") else
                         tls_extra(Path(tmp), "--sip-wss") if kind in WSS_KINDS else
                         tcp_extra() if kind in ("REGISTER_TCP", "REGISTER_TCP1") else [])
                if kind == "REGISTER_REDIS":
                    redis = RedisForBench().start()
                    stack.callback(redis.stop)
                    extra = ["--registry", f"redis://127.0.0.1:{redis.port}/0"]
                if args.private and args.processes == 1:
                    extra = [*extra, "--sip-udp-private", f"127.0.0.1:{free_udp_port()}"]
                answered, per, idle = measure(kind, pure, args.messages, extra=extra,
                                              processes=args.processes)
            # Net of idle where the server has time-driven work that valgrind's slowness
            # inflates: the call's timers, the Redis registry's sweep of its 256 buckets.
            results[pure] = per - idle if kind in ("CALL", "REGISTER_REDIS") else per
            label = "pure-Python parser" if pure else "C fast path"
            print(f"  {kind:<8} {label:<19} answered {answered:>6}/{args.messages}  "
                  f"{per:>10,} instructions each ({idle:,} of them idle)", flush=True)
            if kind == "REGISTER_REDIS":
                print(f"  {kind:<8} {label:<19} net of idle: {per - idle:,}", flush=True)
        if len(results) == 2:
            print(f"  {kind:<8} C fast path / pure: {results[False] / results[True]:.2f}")
        if kind == "CALL" and reference:
            answered, per, idle = measure(kind, False, args.messages, kamailio=True)
            print(f"  {kind:<8} {'Kamailio 5.6':<19} answered {answered:>6}/{args.messages}  "
                  f"{per:>10,} instructions each ({idle:,} of them idle)", flush=True)
            for pure, ours in results.items():
                print(f"  {kind:<8} net of idle, ours ({'pure' if pure else 'C'}) / Kamailio: "
                      f"{ours:,} / {per - idle:,} = {ours / max(per - idle, 1):.2f}")


if __name__ == "__main__":
    main()
