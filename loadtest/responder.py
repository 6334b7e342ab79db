"""A trivial stateless SIP responder: the far end for measuring the injector itself.

It answers every request except ACK with ``200 OK`` carrying the request's Via, From, To (a tag
added, RFC 3261 §8.2.6.2), Call-ID and CSeq, and nothing else.  It parses nothing beyond splitting
header lines: its job is to be cheaper than the injector, so the injector is what a benchmark
measures.  ``--reject-first STATUS:RETRY_AFTER`` answers the first request of each Call-ID with
that status and ``Retry-After`` instead (to exercise RFC 3261 §21.5.4 handling).
``--max-rate N`` answers at most N requests per second (a token bucket of BURST_S worth) and
silently drops the rest, like a saturated server: a known knee for tests.

Run: ``python -m loadtest.responder --port 39001`` (127.0.0.1 by default).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import sys
import time
from collections import OrderedDict
from typing import Any, cast

import uvloop

__all__ = ["BURST_S", "MAX_REMEMBERED_CALLS", "Responder", "main", "respond"]

_COPY = frozenset([b"via", b"v", b"from", b"f", b"to", b"t", b"call-id", b"i", b"cseq"])
_TAG = b";tag=resp1"
#: Call-IDs remembered for --reject-first: a minute of 1,000 new calls per second.
MAX_REMEMBERED_CALLS = 60_000
SOCKET_BUFFER = 4 * 1024 * 1024  # as the injector's: absorb bursts without drops
#: --max-rate bucket depth: 100 ms of the rate, like a server whose queue holds that much.
BURST_S = 0.1


def respond(data: bytes, status: bytes = b"200 OK", extra: bytes = b"") -> bytes | None:
    """The response bytes for a request, or None (ACK, responses, garbage)."""
    end = data.find(b"\r\n\r\n")
    if end < 0 or data[:4] == b"SIP/" or data[:4] == b"ACK ":
        return None
    lines = data[:end].split(b"\r\n")
    out = [b"SIP/2.0 " + status]
    for line in lines[1:]:
        name = line[: line.find(b":")].strip().lower()
        if name in _COPY:
            if (name == b"to" or name == b"t") and b";tag=" not in line:
                line += _TAG
            out.append(line)
    out.append(extra + b"Content-Length: 0\r\n\r\n")
    return b"\r\n".join(out)


def _call_id(data: bytes) -> bytes:
    for line in data.split(b"\r\n", 30)[1:]:
        low = line[:8].lower()
        if low.startswith(b"call-id:") or low.startswith(b"i:"):
            return line.split(b":", 1)[1].strip()
    return b""


class Responder(asyncio.DatagramProtocol):
    def __init__(self, reject: tuple[int, int] | None = None,
                 max_rate: float | None = None) -> None:
        self.tr: asyncio.DatagramTransport | None = None
        self.count = 0
        self.dropped = 0
        self.reject = reject
        self.seen: OrderedDict[bytes, None] = OrderedDict()
        self.max_rate = max_rate
        self.depth = (max_rate or 0.0) * BURST_S
        self.tokens = self.depth
        self.refilled = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport does not subclass asyncio.DatagramTransport: a cast, no check.
        self.tr = cast(asyncio.DatagramTransport, transport)
        sock = transport.get_extra_info("socket")
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.count += 1
        if self.max_rate is not None and not self._take_token():
            self.dropped += 1
            return
        out = respond(data) if self.reject is None else self._maybe_reject(data)
        if out is not None:
            self.tr.sendto(out, addr)  # type: ignore[union-attr]

    def _take_token(self) -> bool:
        assert self.max_rate is not None
        now = time.monotonic()
        self.tokens = min(self.depth, self.tokens + (now - self.refilled) * self.max_rate)
        self.refilled = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True

    def _maybe_reject(self, data: bytes) -> bytes | None:
        assert self.reject is not None
        cid = _call_id(data)
        if cid in self.seen or data[:4] == b"ACK ":
            return respond(data)
        self.seen[cid] = None
        if len(self.seen) > MAX_REMEMBERED_CALLS:
            self.seen.popitem(last=False)
        status, ra = self.reject
        return respond(data, b"%d Rejected" % status, b"Retry-After: %d\r\n" % ra)


async def serve(host: str, port: int, reject: tuple[int, int] | None,
                max_rate: float | None = None) -> None:
    loop = asyncio.get_running_loop()
    proto = Responder(reject, max_rate)
    tr, _ = await loop.create_datagram_endpoint(lambda: proto, local_addr=(host, port))
    stop = loop.create_future()

    def _stop() -> None:
        if not stop.done():
            stop.set_result(None)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _stop)
    print(f"ready {tr.get_extra_info('sockname')[1]}", flush=True)
    await stop
    tr.close()
    print(f"received {proto.count} dropped {proto.dropped}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0: ephemeral, printed as 'ready PORT'")
    ap.add_argument("--reject-first", metavar="STATUS:RETRY_AFTER", default=None)
    ap.add_argument("--max-rate", type=float, default=None,
                    help="answer at most this many requests per second, drop the rest")
    a: Any = ap.parse_args(argv)
    reject = None
    if a.reject_first:
        status, ra = a.reject_first.split(":")
        reject = (int(status), int(ra))
    uvloop.run(serve(a.host, a.port, reject, a.max_rate))
    return 0


if __name__ == "__main__":
    sys.exit(main())
