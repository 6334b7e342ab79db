"""Shared helpers of the admin API tests: SIP over UDP, Prometheus parsing, HTTP sessions."""

from __future__ import annotations

import random
import socket
import time

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from harness.serverproc import ServerProcess, options
from protocols.sip.message import Response
from protocols.sip.parser import parse_message

__all__ = ["TOKEN", "Samples", "answer", "call", "header_values", "recv_request", "register",
           "register_message", "scrape", "send_options", "session", "sip_status", "value",
           "wait_admin"]

TOKEN = "test-admin-token-0123456789"
#: Bound on waiting for one SIP answer or request: far above a loopback round trip, and each
#: wait has an overall deadline so retransmissions cannot keep a test waiting.  Timer F
#: (64*T1, RFC 3261 section 17.1.2.2): a busy machine may delay an answer by seconds.
ANSWER_TIMEOUT = 32.0
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def session(port: int, token: str | None = TOKEN,
            connector: aiohttp.BaseConnector | None = None) -> aiohttp.ClientSession:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}", headers=headers,
                                 connector=connector)


def register_message(port: int, user: str, contact_port: int, expires: int = 3600,
                     domain: str = "example.com") -> bytes:
    """A REGISTER for ``sip:user@domain`` binding ``sip:user@127.0.0.1:contact_port``."""
    n = random.randint(0, 1 << 30)
    return (
        f"REGISTER sip:{domain} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{contact_port};branch=z9hG4bKreg{n};rport\r\n"
        f"From: <sip:{user}@{domain}>;tag=r{n}\r\nTo: <sip:{user}@{domain}>\r\n"
        f"Call-ID: reg-{n}@test\r\nCSeq: 1 REGISTER\r\nMax-Forwards: 70\r\n"
        f"Contact: <sip:{user}@127.0.0.1:{contact_port}>;expires={expires}\r\n"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


#: RFC 3261 section 17.1.2.2: a UDP request is retransmitted from T1 (500 ms), the interval
#: doubling up to T2 (4 s).  A server under overload control may let the kernel drop a
#: datagram it has no time to read; a real client's retransmission is what gets it through.
T1, T2 = 0.5, 4.0


def sip_status(port: int, data: bytes, sock: socket.socket | None = None) -> int:
    """Send one request (from ``sock`` if given), retransmitted like a UA's over UDP until
    ANSWER_TIMEOUT, and return the final status received."""
    own = sock is None
    s = sock or socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        if own:
            s.bind(("127.0.0.1", 0))
        deadline = time.monotonic() + ANSWER_TIMEOUT
        interval, resend = T1, 0.0
        while True:
            now = time.monotonic()
            if now >= resend:
                s.sendto(data, ("127.0.0.1", port))
                resend, interval = now + interval, min(interval * 2, T2)
            s.settimeout(max(0.01, min(deadline, resend) - now))
            try:
                msg = parse_message(s.recv(65535))
            except TimeoutError:
                if time.monotonic() >= deadline:
                    raise
                continue
            assert isinstance(msg, Response)
            if msg.status >= 200:
                return msg.status
    finally:
        if own:
            s.close()


def register(port: int, user: str, contact_port: int = 5999, expires: int = 3600) -> int:
    return sip_status(port, register_message(port, user, contact_port, expires))


def send_options(port: int) -> int:
    return sip_status(port, options(port))


async def scrape(http: aiohttp.ClientSession) -> Samples:
    """``/metrics`` parsed by the Prometheus client's own parser."""
    async with http.get("/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await resp.text()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def wait_admin(server: ServerProcess, timeout: float = 10.0) -> None:
    """Wait until the admin listener accepts connections (it starts after the SIP ones)."""
    assert server.admin_port is not None
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", server.admin_port), timeout=0.5).close()
            # Still alive: the port answering is ours, not another process's that won a race
            # for it (the server exits when it cannot bind).
            assert server.alive(), server.read_log()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _header_lines(raw: bytes) -> list[str]:
    return raw.decode().split("\r\n\r\n", 1)[0].split("\r\n")


def header_values(raw: bytes, *names: str) -> list[str]:
    """Values of the named headers (any spelling given), in message order."""
    wanted = {n.lower() for n in names}
    out = []
    for line in _header_lines(raw)[1:]:
        name, _, val = line.partition(":")
        if name.strip().lower() in wanted:
            out.append(val.strip())
    return out


def answer(raw: bytes, status: int, to_tag: str, contact: str) -> bytes:
    """A UAS response to the request ``raw`` (RFC 3261 §8.2.6, §12.1.1: Record-Route copied)."""
    copied = {"via", "v", "record-route", "from", "f", "call-id", "i", "cseq"}
    lines = [f"SIP/2.0 {status} Answer"]
    for line in _header_lines(raw)[1:]:
        name = line.partition(":")[0].strip().lower()
        if name in copied:
            lines.append(line)
        elif name in ("to", "t"):
            lines.append(line if ";tag=" in line else f"{line};tag={to_tag}")
    lines += [f"Contact: <{contact}>", "Content-Length: 0", "", ""]
    return "\r\n".join(lines).encode()


def recv_until(sock: socket.socket, prefix: bytes, timeout: float = ANSWER_TIMEOUT) -> bytes:
    """The first datagram starting with ``prefix`` (others skipped), within ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        data = sock.recv(65535)
        if data.startswith(prefix):
            return data


def recv_request(sock: socket.socket, method: str, timeout: float = ANSWER_TIMEOUT) -> bytes:
    """The next request of ``method`` arriving on ``sock`` (responses are skipped)."""
    return recv_until(sock, method.encode() + b" ", timeout)


def _udp() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    return s


def call(server_port: int, callee: str) -> tuple[socket.socket, socket.socket, str]:
    """A confirmed call caller -> proxy -> callee over UDP; returns both sockets and Call-ID."""
    a, b = _udp(), _udp()
    a_port, b_port = a.getsockname()[1], b.getsockname()[1]
    assert register(server_port, callee, contact_port=b_port) == 200
    call_id = f"call-{random.randint(0, 1 << 30)}@test"
    invite = (
        f"INVITE sip:{callee}@example.com SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{a_port};branch=z9hG4bKinv{random.randint(0, 1 << 30)}"
        f";rport\r\nFrom: <sip:caller@example.com>;tag=caller1\r\n"
        f"To: <sip:{callee}@example.com>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\n"
        f"Contact: <sip:caller@127.0.0.1:{a_port}>\r\nMax-Forwards: 70\r\n"
        f"Content-Length: 0\r\n\r\n").encode()
    a.sendto(invite, ("127.0.0.1", server_port))
    forwarded = recv_request(b, "INVITE")
    b.sendto(answer(forwarded, 200, "callee1", f"sip:{callee}@127.0.0.1:{b_port}"),
             ("127.0.0.1", server_port))
    ok = recv_until(a, b"SIP/2.0 200")
    routes = [v for h in header_values(ok, "Record-Route") for v in h.split(",")][::-1]
    (to,) = header_values(ok, "To", "t")
    ack = (
        f"ACK sip:{callee}@127.0.0.1:{b_port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{a_port};branch=z9hG4bKack{random.randint(0, 1 << 30)}"
        f";rport\r\n" + "".join(f"Route: {r.strip()}\r\n" for r in routes) +
        f"From: <sip:caller@example.com>;tag=caller1\r\nTo: {to}\r\nCall-ID: {call_id}\r\n"
        f"CSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()
    a.sendto(ack, ("127.0.0.1", server_port))
    recv_request(b, "ACK")
    return a, b, call_id
