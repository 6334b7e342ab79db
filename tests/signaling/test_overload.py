"""Overload control against real UDP sockets and a real server (signaling/overload.py).

The admission limit is capped low (``--overload-max-rate``) so that a modest flood is several
times what the server admits on any machine: these tests check behaviour (who is served, who is
refused, what is never shed, what the ``oc`` parameters say), not speed.  Floods come from other
loopback addresses (127.0.0.2, 127.0.0.3 ...) so that per-source accounting sees distinct
sources.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from harness.serverproc import ServerProcess, free_udp_port
from protocols.sip.message import Request, Response
from protocols.sip.oc import parse_report
from protocols.sip.overload import OVERFLOW_SLOTS
from protocols.sip.parser import parse_message
from signaling import overload as overload_module
from signaling.config import load_config
from signaling.metrics import Metrics
from signaling.overload import (
    REFUSED_GENERATION_T1,
    Overload,
    Verdict,
    admitted_work,
    starts_new_work,
)
from tests.peers.sipua import UdpUA, confirmed_call, invited
from tests.signaling.inproc import UdpPeer, arrivals_stamped, running_server
from tests.signaling.test_sipcore import _req


def _register(port: int, src: str, src_port: int, i: int, via_extra: str = "") -> bytes:
    return (f"REGISTER sip:127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {src}:{src_port};branch=z9hG4bK{os.getpid()}x{i}{via_extra}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:u{i}@127.0.0.1>;tag=f{i}\r\n"
            f"To: <sip:u{i}@127.0.0.1>\r\nCall-ID: flood-{src}-{i}-{time.monotonic_ns()}\r\n"
            f"CSeq: 1 REGISTER\r\nContact: <sip:u{i}@{src}:{src_port}>\r\nExpires: 60\r\n"
            "Content-Length: 0\r\n\r\n").encode()


def _fake_bye(port: int, src: str, src_port: int, i: int) -> bytes:
    """A BYE of no dialog: a made-up To tag (in-dialog by its bytes, §12.2) and Call-ID."""
    return (f"BYE sip:u{i}@127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {src}:{src_port};branch=z9hG4bK{os.getpid()}b{i}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:a@127.0.0.1>;tag=f{i}\r\n"
            f"To: <sip:u{i}@127.0.0.1>;tag={os.urandom(6).hex()}\r\n"
            f"Call-ID: fake-{src}-{i}-{time.monotonic_ns()}\r\n"
            "CSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n").encode()


@dataclass
class _Flood:
    """Sends REGISTERs (or what ``message`` makes) from ``src`` at ``rate`` for ``seconds`` in
    a thread; counts answers."""

    port: int
    src: str
    rate: float
    seconds: float
    message: Callable[[int, str, int, int], bytes] = _register
    sent: int = 0
    answers: dict[int, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)  # of 2xx, seconds

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((self.src, 0))
        self.sock.settimeout(0.05)
        self._sent_at: dict[str, float] = {}
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._send, daemon=True),
                         threading.Thread(target=self._recv, daemon=True)]

    def __enter__(self) -> _Flood:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._threads[0].join(self.seconds + 30)
        time.sleep(1.5)  # the last answers
        self._stop.set()
        self._threads[1].join(10)
        self.sock.close()

    def _send(self) -> None:
        my_port = self.sock.getsockname()[1]
        start = time.monotonic()
        while (elapsed := time.monotonic() - start) < self.seconds:
            due = int(elapsed * self.rate) + 1
            while self.sent < due:
                data = self.message(self.port, self.src, my_port, self.sent)
                self._sent_at[f"f{self.sent}"] = time.monotonic()
                self.sock.sendto(data, ("127.0.0.1", self.port))
                self.sent += 1
            time.sleep(0.001)

    def _recv(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65535)
            except (TimeoutError, OSError):
                continue
            resp = parse_message(data)
            assert isinstance(resp, Response)
            self.answers[resp.status] = self.answers.get(resp.status, 0) + 1
            sent = self._sent_at.get(resp.from_.tag or "")
            if resp.status == 200 and sent is not None:
                self.latencies.append(time.monotonic() - sent)


def _limited(*extra: str) -> Iterator[ServerProcess]:
    srv = ServerProcess("--overload-max-rate", "50", "--log-level", "warning", *extra,
                        ws=False).start()
    try:
        yield srv
    finally:
        assert srv.stop() == 0
        assert "Traceback" not in srv.log, srv.log[-3000:]


@pytest.fixture
def limited() -> Iterator[ServerProcess]:
    yield from _limited()


@pytest.fixture(params=[False, True], ids=["listener", "private-port"])
def limited_any(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    """With and without --sip-udp-private (where the listening socket's kernel queue is kept
    short under overload, signaling/transports/udpqueue.py)."""
    extra = ("--sip-udp-private", f"127.0.0.1:{free_udp_port()}") if request.param else ()
    yield from _limited(*extra)


@pytest.fixture(params=["listener", "private-port", "private-port-drain-off"])
def limited_every(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    """``limited_any``, and with the private port the Python read of the listening socket
    (``--overload-drain off``: ``UdpTransport._read_paced``) beside the C drain."""
    extra: tuple[str, ...] = ()
    if request.param != "listener":
        extra = ("--sip-udp-private", f"127.0.0.1:{free_udp_port()}")
    if request.param == "private-port-drain-off":
        extra = (*extra, "--overload-drain", "off")
    yield from _limited(*extra)


def test_admitted_work_is_responses_cancel_and_requests_with_a_to_tag() -> None:
    """What the read pace lets through uncharged (issue 13), by bytes: as ``_udpexcess.c``."""
    assert admitted_work(b"SIP/2.0 200 OK\r\n\r\n")
    assert admitted_work(_req("CANCEL", "sip:b@example.com", 5060))
    assert admitted_work(_req("BYE", "sip:b@example.com", 5060, to_tag="x"))
    assert admitted_work(_req("ACK", "sip:b@example.com", 5060, to_tag="x"))
    assert admitted_work(_req("INVITE", "sip:b@example.com", 5060, to_tag="x"))  # re-INVITE
    compact = _req("BYE", "sip:b@example.com", 5060).replace(
        b"To: <sip:bob@example.com>", b"t: <sip:bob@example.com> ; TAG=7")
    assert admitted_work(compact)
    assert not admitted_work(_req("INVITE", "sip:b@example.com", 5060))
    assert not admitted_work(_req("REGISTER", "sip:example.com", 5060))
    assert not admitted_work(_req("OPTIONS", "sip:example.com", 5060))
    assert not admitted_work(_req("ACK", "sip:b@example.com", 5060))  # no dialog: not shown
    # a To tag in the body is no To tag
    body = _req("BYE", "sip:b@example.com", 5060).replace(
        b"Content-Length: 0\r\n\r\n", b"Content-Length: 13\r\n\r\nt=0 0;tag=1\r\n")
    assert not admitted_work(body)


def test_raw_screen_finds_new_work_only() -> None:
    assert starts_new_work(_req("INVITE", "sip:b@example.com", 5060)) == "INVITE"
    assert starts_new_work(_req("REGISTER", "sip:example.com", 5060)) == "REGISTER"
    assert starts_new_work(_req("INVITE", "sip:b@example.com", 5060, to_tag="x")) is None
    assert starts_new_work(_req("BYE", "sip:b@example.com", 5060, to_tag="x")) is None
    assert starts_new_work(_req("ACK", "sip:b@example.com", 5060)) is None
    assert starts_new_work(_req("CANCEL", "sip:b@example.com", 5060)) is None
    assert starts_new_work(_req("PRACK", "sip:b@example.com", 5060)) is None
    assert starts_new_work(_req("OPTIONS", "sip:example.com", 5060)) is None
    assert starts_new_work(b"SIP/2.0 200 OK\r\n\r\n") is None
    compact = _req("INVITE", "sip:b@example.com", 5060).replace(
        b"To: <sip:bob@example.com>", b"t: <sip:bob@example.com> ; TAG=7")
    assert starts_new_work(compact) is None
    # an SDP "t=" line in the body is not a To header
    body = _req("INVITE", "sip:b@example.com", 5060).replace(
        b"Content-Length: 0\r\n\r\n", b"Content-Length: 13\r\n\r\nt=0 0;tag=1\r\n")
    assert starts_new_work(body) == "INVITE"


async def test_admitted_call_completes_while_new_requests_are_refused(
        limited: ServerProcess) -> None:
    caller = await UdpUA("alice", "127.0.0.1", limited.udp_port).start()
    callee = await UdpUA("bob", "127.0.0.1", limited.udp_port).start()
    try:
        invite, got = await invited(caller, callee)
        await callee.send(callee.reply(got, 180, tag="c1"))
        await caller.response(180)
        with _Flood(limited.udp_port, "127.0.0.2", rate=1500, seconds=3.0) as flood:
            await asyncio.sleep(1.0)  # the flood is on: the limit (50/s) is binding
            await callee.send(callee.reply(got, 200, tag="c1", body=b"v=0\r\n"))
            ok = await caller.response(200)
            leg = caller.uac_leg(invite, ok)
            await caller.send(caller.in_dialog(leg, "ACK", cseq=1))
            await callee.request("ACK")
            await caller.send(caller.in_dialog(leg, "BYE"))
            await callee.send(callee.reply(await callee.request("BYE"), 200))
            await caller.response(200, "BYE")
        refused = flood.sent - flood.answers.get(200, 0)
        assert flood.answers.get(503, 0) > 0, flood.answers
        assert refused > flood.sent * 0.8, (flood.sent, flood.answers)
    finally:
        await caller.close()
        await callee.close()


async def test_in_dialog_requests_are_never_shed_even_late_from_the_kernel() -> None:
    async with running_server(max_receive_delay=0.2) as srv:
        assert srv.udp is not None and srv.udp_address is not None
        port = srv.udp_address[1]
        caller = await UdpUA("alice", "127.0.0.1", port).start()
        callee = await UdpUA("bob", "127.0.0.1", port).start()
        peer = await UdpPeer.open()
        try:
            leg = await confirmed_call(caller, callee)
            # Else, on a busy machine, all three could be read as fresh (see there): the
            # REGISTER answered and the made-up BYE forwarded to bob.
            await arrivals_stamped()
            srv.udp.pause_reading()  # the server falls behind: all three wait in the kernel
            peer.send(_req("REGISTER", "sip:127.0.0.1", peer.port, branch="z9hG4bKlate",
                           call_id="late-reg", extra="Contact: <sip:a@10.0.0.1>"), port)
            # A BYE with a To tag but of no dialog held here: not admitted work.
            peer.send(_req("BYE", "sip:bob@127.0.0.1", peer.port, branch="z9hG4bKbye",
                           call_id="late-made-up-bye", to_tag="b1"), port)
            sent = time.monotonic()
            await caller.send(caller.in_dialog(leg, "BYE"))
            # Dropped unanswered only past twice the limit (0.4 s); between once and twice
            # it would get a 503.  A timer can fire early by as long as the loop's last
            # iteration took (its clock is read once per iteration), so wait on the clock.
            while time.monotonic() - sent < 0.6:
                await asyncio.sleep(0.05)
            srv.udp.resume_reading()
            # the BYE of the held dialog reaches the callee although it waited too long
            await callee.send(callee.reply(await callee.request("BYE"), 200))
            await caller.response(200, "BYE")
            # the late new request and the late made-up BYE are dropped, counted (what came
            # instead is shown: this failed once in a full CI run and never alone)
            assert await peer.silent(0.3), peer.raw[-2:]
            dropped = srv.core.overload.c_dropped
            assert dropped.get("receive_delay", "REGISTER") == 1
            assert dropped.get("receive_delay", "BYE") == 1
        finally:
            peer.close()
            await caller.close()
            await callee.close()


async def test_a_late_invite_is_refused_at_the_onset_while_a_register_alike_is_served() -> None:
    """The limit still open (no overload seen yet): a new INVITE that waited past
    max_invite_delay in the kernel gets its 503, counted as late; a REGISTER that waited as
    long, under max_receive_delay, is served.  Gates far apart, so the test does not hang on
    the machine's speed."""
    async with running_server(max_receive_delay=3.0, max_invite_delay=0.3) as srv:
        assert srv.udp is not None and srv.udp_address is not None
        port = srv.udp_address[1]
        caller, phone = await UdpPeer.open(), await UdpPeer.open()
        try:
            await arrivals_stamped()  # else the INVITE could be read as fresh (see there)
            srv.udp.pause_reading()
            caller.send(_req("INVITE", "sip:bob@127.0.0.1", caller.port, branch="z9hG4bKli",
                             call_id="late-invite"), port)
            phone.send(_req("REGISTER", "sip:127.0.0.1", phone.port, branch="z9hG4bKlr",
                            call_id="late-reg", extra="Contact: <sip:a@10.0.0.1>"), port)
            sent = time.monotonic()
            while time.monotonic() - sent < 0.8:  # past the INVITE gate, on the clock
                await asyncio.sleep(0.05)
            srv.udp.resume_reading()
            refused = await caller.final(timeout=5.0)
            assert refused.status == 503, refused.status
            served = await phone.final(timeout=5.0)
            assert served.status != 503, served.status
            assert srv.core.overload.c_rejected.get("receive_delay", "INVITE") == 1
        finally:
            caller.close()
            phone.close()


async def test_made_up_in_dialog_requests_are_refused_like_new_work(
        limited: ServerProcess) -> None:
    """A flood of BYEs with To tags of no dialog here gets the new requests' 503s, while a
    held dialog's BYE still goes through."""
    caller = await UdpUA("alice", "127.0.0.1", limited.udp_port).start()
    callee = await UdpUA("bob", "127.0.0.1", limited.udp_port).start()
    flood = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    flood.bind(("127.0.0.2", 0))
    flood.settimeout(2.0)
    try:
        leg = await confirmed_call(caller, callee)
        src_port = flood.getsockname()[1]
        for i in range(600):  # twelve times what the limit (50/s) admits in a second
            flood.sendto(_req("BYE", "sip:bob@127.0.0.1", src_port, branch=f"z9hG4bKfb{i}",
                              call_id=f"made-up-{i}", to_tag="t1"),
                         ("127.0.0.1", limited.udp_port))
        await caller.send(caller.in_dialog(leg, "BYE"))
        await callee.send(callee.reply(await callee.request("BYE"), 200))
        await caller.response(200, "BYE")
        answers: dict[int, int] = {}
        with contextlib.suppress(TimeoutError):
            while sum(answers.values()) < 600:
                status = parse_message(flood.recv(65535))
                assert isinstance(status, Response)
                answers[status.status] = answers.get(status.status, 0) + 1
        assert answers.get(503, 0) > 0, answers
        # what was admitted is answered 481 (§12.2.2): at most the limit's burst and rate
        assert answers.get(481, 0) < 300, answers
    finally:
        flood.close()
        await caller.close()
        await callee.close()


async def test_a_flood_from_one_source_does_not_starve_another(
        limited_any: ServerProcess) -> None:
    limited = limited_any
    with _Flood(limited.udp_port, "127.0.0.2", rate=5000, seconds=5.0) as flood:
        await asyncio.sleep(1.0)
        with _Flood(limited.udp_port, "127.0.0.3", rate=20, seconds=3.0) as polite:
            pass
    within = sum(1 for t in polite.latencies if t <= 1.0)
    assert within >= 0.95 * polite.sent, (polite.sent, polite.answers, sorted(polite.latencies))
    # the flooder got the rest of the limit and no more (50/s for ~6 s plus bursts)
    assert flood.answers.get(200, 0) < 0.1 * flood.sent, (flood.sent, flood.answers)


async def test_a_flood_of_made_up_in_dialog_requests_does_not_starve_another_source(
        limited_every: ServerProcess) -> None:
    """Requests with a To tag are admitted work by their bytes (issue 13: never shed, let
    through beyond the read pace, ``admitted_work``), so a flood of BYEs of no dialog is not
    refused at the door as a REGISTER flood is: it must still not starve a polite source's
    REGISTERs.  What bounds it: once parsed, a request with a To tag of no dialog this node
    holds is admitted like a new one (``SipCore``), against its source's share, so the
    flooder is named heavy and refused.  Without that the polite source had 5 and 13 of 60
    REGISTERs answered within 1 s here."""
    limited = limited_every
    with _Flood(limited.udp_port, "127.0.0.2", rate=5000, seconds=5.0,
                message=_fake_bye) as flood:
        await asyncio.sleep(1.0)
        with _Flood(limited.udp_port, "127.0.0.3", rate=20, seconds=3.0) as polite:
            pass
    within = sum(1 for t in polite.latencies if t <= 1.0)
    assert within >= 0.95 * polite.sent, (polite.sent, polite.answers, sorted(polite.latencies))
    # no dialog: never a 200; a 481 only within the source's share of the limit (50/s for
    # ~6 s plus bursts), the rest refused (503) or dropped
    assert flood.answers.get(200, 0) == 0, flood.answers
    assert flood.answers.get(481, 0) < 0.1 * flood.sent, (flood.sent, flood.answers)


async def test_oc_report_is_produced_for_oc_clients_and_stops_after_the_storm() -> None:
    async with running_server(domain=["example.com"], overload_max_rate=5.0) as srv:
        assert srv.udp_address is not None
        port = srv.udp_address[1]
        peer = await UdpPeer.open()
        oc = ';oc;oc-algo="loss"'
        for i in range(60):  # 120/s against a limit of 5/s
            peer.send(_register(port, "127.0.0.1", peer.port, i, oc), port)
            await asyncio.sleep(1 / 120)
        await asyncio.sleep(0.3)
        plain = _req("REGISTER", "sip:example.com", peer.port, branch="z9hG4bKplain",
                     call_id="plain", extra="Contact: <sip:a@10.0.0.1>")
        peer.send(plain, port)
        for i in range(100, 130):  # then 5/s, under the limit
            peer.send(_register(port, "127.0.0.1", peer.port, i, oc), port)
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.3)
        msgs = [parse_message(d) for d in peer.raw]
        peer.close()
    during = [m for m in msgs if isinstance(m, Response) and m.call_id != "plain"
              and int(m.from_.tag[1:] if m.from_.tag else 0) < 100]
    reports = [parse_report(m.vias[0].params) for m in during]
    loaded = [r for r in reports if r is not None and r.reduction > 0]
    assert loaded, "no oc report while refusing most requests"
    assert all(r.validity_ms > 0 for r in loaded)
    assert any(m.status == 503 and parse_report(m.vias[0].params) for m in during)
    raw_vias = [m.vias[0].params for m in during if parse_report(m.vias[0].params)]
    assert all(p.get("oc-algo") == '"loss"' and p.get("oc-seq") for p in raw_vias)
    # a client that did not ask gets no report (§5.1)
    [plain_answer] = [m for m in msgs if m.call_id == "plain"]
    assert not any(k.startswith("oc") for k in plain_answer.vias[0].params)
    # afterwards: oc-validity=0 tells clients to stop (§5.2), seq never goes back
    after = [parse_report(m.vias[0].params) for m in msgs
             if isinstance(m, Response) and m.from_.tag and m.from_.tag[1:].isdigit()
             and int(m.from_.tag[1:]) >= 100]
    assert any(r is not None and r.stops for r in after), after
    seqs = [r.seq for r in [*reports, *after] if r is not None]
    assert seqs == sorted(seqs)


def _with_report(resp: Response, oc: int, validity: int, seq: str) -> Response:
    top = resp.vias[0]
    assert "oc" in top.params  # the proxy advertised support in its Via (§5.1)
    params = dict(top.params)
    params.update({"oc": str(oc), "oc-algo": '"loss"', "oc-validity": str(validity),
                   "oc-seq": seq})
    resp.vias[0] = type(top)(top.transport, top.host, top.port, params, top.protocol)
    return resp


async def test_proxy_honours_oc_from_downstream(limited: ServerProcess) -> None:
    caller = await UdpUA("carol", "127.0.0.1", limited.udp_port).start()
    callee = await UdpUA("dave", "127.0.0.1", limited.udp_port).start()
    try:
        invite, got = await invited(caller, callee)
        # 180 says: shed everything for a minute (seq 20); the 200 carries an older report
        # (seq 19, "stop") that arrived out of order and must be ignored (§5.3)
        await callee.send(_with_report(callee.reply(got, 180, tag="d1"), 100, 60_000, "20.0"))
        await caller.response(180)
        ok = callee.reply(got, 200, tag="d1", body=b"v=0\r\n")
        await callee.send(_with_report(ok, 0, 0, "19.0"))
        leg = caller.uac_leg(invite, await caller.response(200))
        await caller.send(caller.in_dialog(leg, "ACK", cseq=1))
        await callee.request("ACK")
        # a new call to that server is refused by the proxy itself and never reaches it
        second = caller.invite("dave")
        await caller.send(second)
        refused = await caller.response(503)
        await caller.send(caller.ack_non2xx(second, refused))
        assert not [m for m in await callee.quiet(0.5) if getattr(m, "method", "") == "INVITE"]
        # in-dialog requests are not throttled; the BYE's 200 stops overload control (seq 21)
        await caller.send(caller.in_dialog(leg, "BYE"))
        bye_ok = callee.reply(await callee.request("BYE"), 200)
        await callee.send(_with_report(bye_ok, 0, 0, "21.0"))
        await caller.response(200, "BYE")
        third = caller.invite("dave")
        await caller.send(third)
        assert (await callee.request("INVITE")).call_id == third.call_id
    finally:
        await caller.close()
        await callee.close()


async def test_nothing_grows_without_bound_under_a_storm() -> None:
    async with running_server(domain=["example.com"], overload_max_rate=100.0,
                              t1=0.02) as srv:
        assert srv.udp_address is not None
        port = srv.udp_address[1]
        socks = []
        for host in range(2, 202):  # 200 sources
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((f"127.0.0.{host}", 0))
            s.setblocking(False)
            socks.append(s)
        try:
            for i in range(10_000):
                s = socks[i % len(socks)]
                src, sport = s.getsockname()
                with contextlib.suppress(BlockingIOError):
                    s.sendto(_register(port, src, sport, i), ("127.0.0.1", port))
                if i % 100 == 99:
                    await asyncio.sleep(0.005)
            await asyncio.sleep(64 * 0.02 + 1.5)  # every transaction's Timer J has fired
            core = srv.core
            assert len(core.table) == 0
            assert core.dispatcher.backlog == 0 and sum(core.dispatcher.depths()) == 0
            assert core.overload.control.sources_tracked <= core.overload.control.cfg.max_sources
            total = sum(core.overload.c_dropped.get(r, "REGISTER")
                        for r in ("admission", "receive_delay"))
            assert total + core.overload.c_admitted.get("REGISTER") > 0
            # recovery: a fresh request is served at once
            peer = await UdpPeer.open()
            peer.send(_req("REGISTER", "sip:example.com", peer.port, branch="z9hG4bKafter",
                           call_id="after", extra="Contact: <sip:a@10.0.0.1>"), port)
            assert (await peer.final(timeout=1.0)).status == 200
            peer.close()
        finally:
            for s in socks:
                s.close()


#: IP_PKTINFO (linux/in.h; the socket module lacks it): a datagram's source address chosen
#: per send, so one socket speaks for thousands of loopback sources.
_IP_PKTINFO = 8


def _send_from(sock: socket.socket, host: str, data: bytes, port: int) -> None:
    info = struct.pack("@i4s4s", 0, socket.inet_aton(host), bytes(4))
    with contextlib.suppress(BlockingIOError):
        sock.sendmsg([data], [(socket.IPPROTO_IP, _IP_PKTINFO, info)], 0, ("127.0.0.1", port))


async def test_a_storm_of_invites_and_registers_from_more_sources_than_tracked_leaves_nothing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 13: nothing grows without bound under a 10x storm.  INVITEs and REGISTERs at
    ten times and more the admission limit, each from a source of its own, more sources than
    the fairness table tracks and more refused INVITEs than the 503s remembered for their
    ACKs: while it lasts those two stay within their bounds (the table's overflow slots
    included), and once its transactions have ended (the callee never answers: Timer B ends
    the admitted calls) no transaction, proxy context, dialog or queued request is left.
    The bounds are lowered (the tracked sources to 256, the remembered 503s to 128 a
    generation) so that the storm passes them on any machine."""
    monkeypatch.setattr(overload_module, "REFUSED_MEMORY", 128)
    async with running_server(domain=["example.com"], overload_max_rate=100.0,
                              t1=0.02) as srv:
        assert srv.udp_address is not None
        port = srv.udp_address[1]
        control = srv.core.overload.control
        control.cfg = dataclasses.replace(control.cfg, max_sources=256)
        callee = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # never answers
        callee.bind(("127.0.0.1", 0))
        phone = await UdpPeer.open()
        storm = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        storm.bind(("127.0.0.1", 0))
        storm.setblocking(False)
        try:
            phone.send(_req("REGISTER", "sip:example.com", phone.port, branch="z9hG4bKbob",
                            call_id="bob-reg", extra="Contact: <sip:bob@127.0.0.1:"
                            f"{callee.getsockname()[1]}>"), port)
            assert (await phone.final()).status == 200
            most_sources = most_remembered = 0
            for i in range(4000):
                host = f"127.0.{2 + i // 250}.{1 + i % 250}"
                method = "INVITE" if i % 2 else "REGISTER"
                _send_from(storm, host, _req(
                    method, "sip:bob@example.com" if i % 2 else "sip:example.com",
                    storm.getsockname()[1], branch=f"z9hG4bKs{i}", call_id=f"storm-{i}",
                    extra="" if i % 2 else f"Contact: <sip:u{i}@{host}>"), port)
                if i % 100 == 99:
                    await asyncio.sleep(0.005)
                    most_sources = max(most_sources, control.sources_tracked)
                    most_remembered = max(most_remembered, srv.core.overload.remembered)
            overload = srv.core.overload
            assert overload.c_rejected.get("admission", "INVITE") > 256  # both bounds passed
            assert 256 < most_sources <= 256 + OVERFLOW_SLOTS
            assert 0 < most_remembered <= 2 * 128
            # Every transaction of the storm ends (Timer B, H, J: 64*T1, 1.28 s here), and the
            # failed calls' dialogs linger as long again (``LINGER_T1``); waited for, not
            # timed: a slow machine takes longer, the assertions are the same.
            core, proxy = srv.core, srv.proxy
            for _ in range(600):
                if not (len(core.table) or proxy.contexts or len(proxy.dialogs)):
                    break
                await asyncio.sleep(0.05)
            assert len(core.table) == 0 and not proxy.contexts
            assert not proxy._ringing and len(proxy.dialogs) == 0
            assert not core.waiting
            assert core.dispatcher.backlog == 0 and sum(core.dispatcher.depths()) == 0
            assert control.sources_tracked <= 256 + OVERFLOW_SLOTS
        finally:
            storm.close()
            callee.close()
            phone.close()


async def test_a_retransmission_of_an_admitted_request_takes_no_admission_token() -> None:
    # 1/s: a burst of 2 tokens.  The first INVITE takes one; if its retransmissions took the
    # other, the second INVITE would be refused (on any machine slower than a token a second
    # it would merely be late: the counter below holds either way).
    async with running_server(domain=["example.com"], overload_max_rate=1.0) as srv:
        assert srv.udp_address is not None
        port = srv.udp_address[1]
        peer = await UdpPeer.open()
        first = _req("INVITE", "sip:bob@example.com", peer.port, branch="z9hG4bKt0",
                     call_id="taken-0")
        peer.send(first, port)
        assert (await peer.final()).status != 503
        for _ in range(5):  # Timer A, §17.1.1.2: the same bytes again
            peer.send(first, port)
        for _ in range(100):
            if srv.core.overload.c_retransmitted.get("INVITE") >= 5:
                break
            await asyncio.sleep(0.02)
        assert srv.core.overload.c_retransmitted.get("INVITE") == 5
        peer.send(_req("INVITE", "sip:bob@example.com", peer.port, branch="z9hG4bKt1",
                       call_id="taken-1"), port)
        second = await peer.final()
        while second.call_id != "taken-1":  # the retransmitted final of the first
            second = await peer.final()
        assert second.status != 503
        peer.close()


async def test_the_ack_of_a_503_is_absorbed_before_any_parse() -> None:
    async with running_server(domain=["example.com"], overload_max_rate=1.0) as srv:
        assert srv.udp is not None and srv.udp_address is not None
        port = srv.udp_address[1]
        peer = await UdpPeer.open()
        for i in range(4):  # a burst of 2 is admitted at 1/s, then refusals
            peer.send(_req("INVITE", "sip:bob@example.com", peer.port, branch=f"z9hG4bKr{i}",
                           call_id=f"refused-{i}"), port)
        finals = [await peer.final() for _ in range(4)]
        refused = next(f for f in finals if f.status == 503)
        assert refused.to.tag and refused.header("Retry-After")
        parsed_before = srv.core.c_req_in.get("ACK", "udp")
        # §17.1.1.3: the ACK of a non-2xx final response goes to whoever sent it: us
        peer.send(_req("ACK", "sip:bob@example.com", peer.port, call_id=refused.call_id,
                       to_tag=refused.to.tag), port)
        # an ACK of the same call with another tag is not ours to absorb
        peer.send(_req("ACK", "sip:bob@example.com", peer.port, call_id=refused.call_id,
                       to_tag="someone-else"), port)
        for _ in range(100):
            if srv.core.c_req_in.get("ACK", "udp") > parsed_before:
                break
            await asyncio.sleep(0.02)
        assert srv.core.overload.c_dropped.get("ack_of_503", "ACK") == 1
        assert srv.core.c_req_in.get("ACK", "udp") == parsed_before + 1  # only the other one
        peer.close()


def test_a_503_is_remembered_for_its_ack_only_as_long_as_its_client_retransmits() -> None:
    """The ACK of a 503 is absorbed unparsed while the client may still send it (Timer B,
    64*T1, §17.1.1.2); then the refusal is forgotten, and ACKs are no longer scanned."""
    now = [100.0]
    cfg = load_config({}, env={})
    overload = Overload(cfg, Metrics(), lambda: now[0])
    invite = parse_message(_req("INVITE", "sip:bob@example.com", 5060, call_id="refused"))
    assert isinstance(invite, Request)
    overload.rejected(invite, "t503", 0.0, "INVITE")
    ack = _req("ACK", "sip:bob@example.com", 5060, call_id="refused", to_tag="t503")
    span = REFUSED_GENERATION_T1 * cfg.t1
    now[0] += span
    assert overload.screen(ack, "10.9.9.9", 0.0) is Verdict.DROP
    now[0] += span - 1
    assert overload.screen(ack, "10.9.9.9", 0.0) is Verdict.DROP
    now[0] += 2
    assert overload.screen(ack, "10.9.9.9", 0.0) is Verdict.ADMIT
    # Two generations without a refusal forget everything at once, the late one included.
    overload.rejected(invite, "t503", 0.0, "INVITE")
    now[0] += 3 * span
    assert overload.screen(ack, "10.9.9.9", 0.0) is Verdict.ADMIT


def test_the_kernel_sheds_band_refused_is_no_refusal_for_want_of_capacity() -> None:
    """The drain's 503s to the kernel shed's band (``Overload.band``: the retransmissions of
    the transactions the filter dropped, released when its share came down) are counted
    apart (``shed_band``) and are no refusal for want of capacity: not in
    ``capacity_refusals`` (which tells the filter whether REGISTERs were refused) nor in the
    share refused (``oc``, the filter's storm test).  The excess refused beyond the pace is."""
    now = [100.0]
    overload = Overload(load_config({}, env={}), Metrics(), lambda: now[0])
    control = overload.control
    overload.band(16_000, 500)
    assert overload.c_rejected.get("shed_band", "REGISTER") == 16_000
    assert overload.c_dropped.get("shed_band", "REGISTER") == 500
    assert overload.capacity_refusals() == (0.0, 0.0)
    for i in range(10):  # admitted work over an interval, and its revision
        assert overload.decide("REGISTER", f"10.0.0.{i}", 0.0) is Verdict.ADMIT
    now[0] += 2 * control.cfg.interval
    overload.decide("REGISTER", "10.0.0.1", 0.0)
    assert control.refused_share == 0.0
    overload.excess((1, 30, 2), 0, 0, 0, 0)
    assert overload.capacity_refusals() == (30.0, 33.0)
    now[0] += 2 * control.cfg.interval
    overload.decide("REGISTER", "10.0.0.1", 0.0)
    assert control.refused_share > 0.5
