"""Small SIP client helpers for black-box tests: build REGISTERs, send them, read answers.

They use the project's own codec to build and check messages; the server under test is always
a real process on real sockets.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import time
import uuid
from collections.abc import Callable

from protocols.sip.message import Response
from protocols.sip.parser import parse_message

__all__ = ["UdpClient", "register", "register_many", "registered_contacts", "sipp_register"]

_seq = itertools.count(1)


def sipp_register(i: int, uri: bytes = b"sip:example.com") -> bytes:
    """A REGISTER as SIPp sends it, byte for byte the same at every call (a retransmission):
    transaction ``i``'s branch in the top Via (the kernel shed's tests hash these bytes)."""
    return (b"REGISTER " + uri + b" SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-"
            b"4242-%d-0\r\nMax-Forwards: 70\r\nFrom: <sip:u%d@example.com>;tag=4242SIPpTag00%d"
            b"\r\nTo: <sip:u%d@example.com>\r\nCall-ID: %d-4242@127.0.0.1\r\nCSeq: 1 REGISTER"
            b"\r\nContent-Length: 0\r\n\r\n") % (i, i, i, i, i)


def register(port: int, user: str, contact: str | None, *, expires: int | None = 3600,
             call_id: str | None = None, cseq: int = 1, domain: str = "127.0.0.1",
             local_port: int = 5099) -> bytes:
    """A REGISTER for ``user@domain``; ``contact`` None makes it a query (§10.2.3)."""
    lines = [
        f"REGISTER sip:{domain}:{port} SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:{local_port};branch=z9hG4bK{uuid.uuid4().hex};rport",
        "Max-Forwards: 70",
        f"From: <sip:{user}@{domain}>;tag={next(_seq)}",
        f"To: <sip:{user}@{domain}>",
        f"Call-ID: {call_id or uuid.uuid4().hex}",
        f"CSeq: {cseq} REGISTER",
    ]
    if contact is not None:
        lines.append(f"Contact: <{contact}>")
    if expires is not None:
        lines.append(f"Expires: {expires}")
    lines.append("Content-Length: 0\r\n\r\n")
    return "\r\n".join(lines).encode()


#: RFC 3261 §17.1.2.2 Timer E starts at T1 and doubles up to T2.
_T1, _T2 = 0.5, 4.0


class UdpClient:
    """A blocking UDP client bound to one local port, retransmitting as a SIP UAC does.

    Without retransmissions one datagram the server sheds stands for a failed test: under
    overload control a request that waited in the kernel past ``max_receive_delay`` (a busy
    machine's scheduler can do that alone) is dropped on purpose, and real clients resend it."""

    def __init__(self, timeout: float = 16.0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.timeout = timeout
        self.port = int(self.sock.getsockname()[1])

    def request(self, port: int, data: bytes) -> Response:
        """Send until answered (Timer E), for at most ``timeout`` seconds (the role of Timer
        F), and return the first final response (1xx are skipped, and stop retransmissions
        as §17.1.2.2 says)."""
        deadline = time.monotonic() + self.timeout
        interval, resend = _T1, True
        while True:
            if resend:
                self.sock.sendto(data, ("127.0.0.1", port))
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no final response within {self.timeout} s")
            self.sock.settimeout(min(interval, left))
            try:
                msg = parse_message(self.sock.recv(65535))
            except TimeoutError:
                interval, resend = min(2 * interval, _T2), True
                continue
            assert isinstance(msg, Response)
            if msg.status >= 200:
                return msg
            # A provisional answer: the server has it; resend only every T2 (§17.1.2.2).
            interval, resend = _T2, False

    def close(self) -> None:
        self.sock.close()


def registered_contacts(port: int, user: str, domain: str = "127.0.0.1") -> list[str]:
    """The contacts the registrar lists for ``user`` (a query REGISTER, §10.2.3)."""
    client = UdpClient()
    try:
        resp = client.request(port, register(port, user, None, expires=None, domain=domain,
                                             local_port=client.port))
    finally:
        client.close()
    assert resp.status == 200, resp
    return [str(c.uri) for c in resp.contacts]


async def register_many(port: int, users: list[str], contact_port: int,
                        window: int = 200, timeout: float = 5.0,
                        on_answer: Callable[[int], None] | None = None) -> set[str]:
    """Register every user (contact 127.0.0.1:contact_port) as fast as ``window`` allows;
    returns the users whose REGISTER was answered 200.  ``on_answer`` is called with the
    number of 200s so far after each one (a test can kill the server mid-load)."""
    loop = asyncio.get_running_loop()
    answered: set[str] = set()
    pending: dict[str, asyncio.Future[int]] = {}

    class Proto(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            try:
                msg = parse_message(data)
            except Exception:
                return
            fut = pending.get(msg.call_id)
            done = fut is None or fut.done()
            if isinstance(msg, Response) and not done and msg.status >= 200:
                assert fut is not None
                fut.set_result(msg.status)

    transport, _ = await loop.create_datagram_endpoint(Proto, local_addr=("127.0.0.1", 0))
    local = transport.get_extra_info("sockname")[1]
    sem = asyncio.Semaphore(window)

    async def one(user: str) -> None:
        async with sem:
            call_id = f"{user}-{uuid.uuid4().hex}"
            fut: asyncio.Future[int] = loop.create_future()
            pending[call_id] = fut
            data = register(port, user, f"sip:{user}@127.0.0.1:{contact_port}",
                            call_id=call_id, local_port=local)
            for _ in range(4):  # retransmit like a UA would (T1 doubling, shortened)
                transport.sendto(data, ("127.0.0.1", port))
                try:
                    status = await asyncio.wait_for(asyncio.shield(fut), timeout / 4)
                except TimeoutError:
                    continue
                if status == 200:
                    answered.add(user)
                    if on_answer is not None:
                        on_answer(len(answered))
                return

    try:
        await asyncio.gather(*(one(u) for u in users))
    finally:
        transport.close()
    return answered

