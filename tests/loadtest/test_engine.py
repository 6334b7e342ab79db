"""The engine over real UDP sockets (and a real WebSocket server) against real peers.

Peers are the trivial responder (``loadtest.responder``), a silent socket that only records what
arrives, and, for the UAS side, a socket of the test acting as the calling peer.  Timers are
shrunk (T1 of 10-50 ms) so RFC 3261 schedules run in a fraction of a second.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import time
import zlib
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from loadtest.engine import Engine, EngineConfig, RunResult, schedule_offsets
from loadtest.responder import Responder, respond
from loadtest.sipmsg import BranchFactory
from loadtest.timeline import SecondPoint
from loadtest.trace import Call, Event, Options, Register
from loadtest.uac import WS_SHARE_STEPS
from protocols.sip.message import Request, Response
from protocols.sip.parser import parse_message
from tests.signaling.inproc import running_server

DOMAIN = "example.com"


class Recording(Responder):
    """The trivial responder, remembering every request it answered, with arrival times."""

    def __init__(self, reject: tuple[int, int] | None = None) -> None:
        super().__init__(reject)
        self.log: list[tuple[float, bytes]] = []

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.log.append((time.monotonic(), data))
        super().datagram_received(data, addr)

    def methods(self) -> list[str]:
        return [d.split(b" ", 1)[0].decode() for _, d in self.log]


class Silent(asyncio.DatagramProtocol):
    """Receives and never answers: a dead server."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, bytes]] = []

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.seen.append((time.monotonic(), data))


async def _peer(proto: Any) -> tuple[asyncio.DatagramTransport, tuple[str, int]]:
    loop = asyncio.get_running_loop()
    tr, _ = await loop.create_datagram_endpoint(lambda: proto, local_addr=("127.0.0.1", 0))
    return tr, tr.get_extra_info("sockname")[:2]


async def _run(events: list[Event], **kw: Any) -> RunResult:
    cfg = EngineConfig(**{"sockets": 8, "register_callees": False, **kw})
    return await Engine(events, cfg).run()


def _regs(n: int, spacing: float = 0.001, **kw: Any) -> list[Event]:
    return [Register(t=i * spacing, user=f"u{i}", domain=DOMAIN, **kw) for i in range(n)]


async def test_registrations_all_answered_from_many_source_ports() -> None:
    rec = Recording()
    tr, addr = await _peer(rec)
    try:
        res = await _run(_regs(300), target=addr, sockets=16)
    finally:
        tr.close()
    reg = res.kinds["register"]
    assert reg.sent == 300 and reg.answered == {"2xx": 300}
    assert reg.timeouts == reg.retransmissions == reg.abandoned == 0
    assert reg.latency.get_total_count() == 300
    assert res.events_started == 300 and res.lateness.get_total_count() == 300
    assert sum(reg.goodput.values) == 300
    sources = {parse_message(d).vias[0].port for _, d in rec.log}
    assert len(sources) == 16  # UAs spread over the socket pool, one port per UA
    assert res.cpu_user_s + res.cpu_sys_s > 0


async def test_lost_first_attempts_are_recovered_by_retransmission_after_t1() -> None:
    rec = Recording()
    tr, addr = await _peer(rec)
    try:
        res = await _run(_regs(40, lose_first=True) + _regs(10, spacing=0.002), target=addr,
                         t1=0.05)
    finally:
        tr.close()
    reg = res.kinds["register"]
    assert reg.lost_simulated == 40 and reg.retransmissions == 40
    assert reg.answered == {"2xx": 50}
    # The 40 recovered ones waited one T1 (50 ms) at least; P50 sits among them.
    assert reg.latency.get_value_at_percentile(50) >= 50_000


async def test_silent_server_retransmissions_follow_rfc3261_then_time_out() -> None:
    silent = Silent()
    tr, addr = await _peer(silent)
    t1, t2 = 0.02, 0.08
    events: list[Event] = [
        Register(t=0, user="alice", domain=DOMAIN),
        Call(t=0, user="bob", domain=DOMAIN, callee="carol", hold=1),
    ]
    start = time.monotonic()  # at or before the schedule's start
    try:
        res = await _run(events, target=addr, t1=t1, t2=t2, backoff=False)
    finally:
        tr.close()
    by_method: dict[str, list[float]] = {}
    for at, data in silent.seen:
        by_method.setdefault(data.split(b" ", 1)[0].decode(), []).append(at)
    # Non-INVITE (§17.1.2.2): T1, 2T1, then T2 each time, until Timer F = 64*T1 = 1.28 s:
    # sends at 0, .02, .06, .14, .22, ..., 1.26 -> 1 + 17.
    # Each send is checked against its due time, counted from a moment at or before the
    # schedule's start: a loaded machine can only make a send later, never earlier (the
    # schedule is kept from due times).  Counting from the first send instead fails when that
    # one is late and the next on time (seen in CI).
    reg = by_method["REGISTER"]
    assert len(reg) == 18
    reg_offsets = list(itertools.accumulate([0.0, t1, 2 * t1] + [t2] * 15))
    for at, offset in zip(reg, reg_offsets, strict=True):
        assert at - start >= offset - 0.002
    # INVITE (§17.1.1.2): Timer A doubles without cap until Timer B: 0, .02, .06, .14, .30,
    # .62, 1.26 -> 1 + 6.
    inv = by_method["INVITE"]
    assert len(inv) == 7
    inv_offsets = list(itertools.accumulate([0.0] + [t1 * 2**i for i in range(6)]))
    for at, offset in zip(inv, inv_offsets, strict=True):
        assert at - start >= offset - 0.002
    assert res.kinds["register"].timeouts == 1 and res.kinds["register"].retransmissions == 17
    assert res.kinds["invite"].timeouts == 1 and res.kinds["invite"].retransmissions == 6
    assert res.calls.attempted == 1 and res.calls.failed == 1 and res.calls.established == 0
    assert "ACK" not in by_method and "BYE" not in by_method


async def test_register_failure_backs_off_as_rfc5626_says_and_is_bounded() -> None:
    silent = Silent()
    tr, addr = await _peer(silent)
    try:
        res = await _run([Register(t=0, user="alice", domain=DOMAIN)], target=addr, t1=0.005,
                         t2=0.02, backoff_base=0.1, backoff_max=0.15, drain=3.0)
    finally:
        tr.close()
    reg = res.kinds["register"]
    # MAX_ATTEMPTS = 4: the first attempt and three back-off retries, each timing out.
    assert reg.sent == 4 and reg.timeouts == 4 and reg.backoff_retries == 3
    firsts = []
    seen_branches: set[str] = set()
    for at, data in silent.seen:
        msg = parse_message(data)
        assert isinstance(msg, Request)
        if msg.vias[0].branch not in seen_branches:
            seen_branches.add(msg.vias[0].branch or "")
            firsts.append((at, msg.cseq.seq))
    assert [c for _, c in firsts] == [1, 2, 3, 4]  # same Call-ID, CSeq + 1 (RFC 3261 §10.2)
    timeout = 64 * 0.005
    for k, ((a, _), (b, _)) in enumerate(itertools.pairwise(firsts), start=1):
        ceiling = min(0.15, 0.1 * 2**k)
        assert b - a >= timeout + 0.5 * ceiling - 0.002  # never before the back-off


async def test_503_with_retry_after_is_honoured() -> None:
    rec = Recording(reject=(503, 1))
    tr, addr = await _peer(rec)
    try:
        res = await _run(_regs(20), target=addr)
    finally:
        tr.close()
    reg = res.kinds["register"]
    assert reg.status_503 == 20 and reg.retry_after_honoured == 20
    assert reg.answered == {"5xx": 20, "2xx": 20}
    by_user: dict[str, list[float]] = {}
    for at, data in rec.log:
        msg = parse_message(data)
        by_user.setdefault(str(msg.from_.uri), []).append(at)
    assert all(len(v) == 2 and v[1] - v[0] >= 1.0 for v in by_user.values())


async def test_calls_run_full_dialogs_invite_ack_bye_after_the_holding_time() -> None:
    rec = Recording()
    tr, addr = await _peer(rec)
    calls: list[Event] = [Call(t=i * 0.01, user=f"a{i}", domain=DOMAIN, callee=f"b{i}",
                               hold=0.2) for i in range(30)]
    try:
        res = await _run(calls, target=addr)
    finally:
        tr.close()
    assert res.calls.attempted == res.calls.established == res.calls.completed == 30
    assert res.kinds["invite"].answered == {"2xx": 30}
    assert res.kinds["bye"].answered == {"2xx": 30}
    methods = rec.methods()
    assert methods.count("INVITE") == methods.count("ACK") == methods.count("BYE") == 30
    times: dict[str, dict[str, float]] = {}
    for at, data in rec.log:
        msg = parse_message(data)
        assert isinstance(msg, Request)
        times.setdefault(msg.call_id, {})[msg.method] = at
        if msg.method in ("ACK", "BYE"):
            assert msg.to.tag == "resp1"  # in the dialog the responder's 2xx created
    for t in times.values():
        assert t["BYE"] - t["ACK"] >= 0.2 - 0.002


async def test_callees_refused_at_pre_registration_are_registered_before_the_calls() -> None:
    """A flash crowd calls users who are registered already: a callee's REGISTER refused
    with 503 during the set-up is sent again after its Retry-After, before any call."""
    rec = Recording(reject=(503, 1))  # the first request of each Call-ID: 503, Retry-After 1
    tr, addr = await _peer(rec)
    n = 10
    calls: list[Event] = [Call(t=i * 0.01, user=f"a{i}", domain=DOMAIN, callee=f"b{i}",
                               hold=0.1) for i in range(n)]
    try:
        res = await _run(calls, target=addr, register_callees=True)
    finally:
        tr.close()
    assert res.kinds["prereg"].answered == {"5xx": n, "2xx": n}
    assert "callee-not-registered" not in res.events_skipped
    first_invite = min(at for at, data in rec.log if data.startswith(b"INVITE "))
    registers = [(at, parse_message(data)) for at, data in rec.log
                 if data.startswith(b"REGISTER ")]
    assert len(registers) == 2 * n
    assert all(at < first_invite for at, _ in registers)
    assert {str(m.to.uri) for _, m in registers} == {f"sip:b{i}@{DOMAIN}" for i in range(n)}
    again = [at for at, m in registers if m.cseq.seq == 2]  # each callee's second REGISTER
    assert len(again) == n and min(again) - max(at for at, m in registers if m.cseq.seq == 1) > 0


async def test_uas_side_answers_invites_that_reach_a_registered_ua() -> None:
    rec = Recording()
    tr, addr = await _peer(rec)
    events: list[Event] = [Register(t=0, user="bob", domain=DOMAIN),
                           Options(t=1.0, user="bob", domain=DOMAIN)]
    engine = Engine(events, EngineConfig(target=addr, sockets=4, register_callees=False,
                                         t1=0.05))
    run = asyncio.create_task(engine.run())
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(10):  # the engine's first REGISTER, due at t=0
        while not rec.log:
            await asyncio.sleep(0.01)
    contact = parse_message(rec.log[0][1]).contacts[0].uri
    bob = (contact.host, contact.port)  # type: ignore[union-attr]
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.setblocking(False)
    port = peer.getsockname()[1]
    br = BranchFactory()().decode()

    def req(method: str, branch: str, to_tag: str = "") -> bytes:
        to = "<sip:bob@example.com>" + (f";tag={to_tag}" if to_tag else "")
        cseq = 2 if method == "BYE" else 1
        return (f"{method} sip:bob@{bob[0]}:{bob[1]} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch={branch}\r\nMax-Forwards: 70\r\n"
                f"From: <sip:alice@example.com>;tag=a1\r\nTo: {to}\r\nCall-ID: uas-test\r\n"
                f"CSeq: {cseq} {method}\r\nContact: <sip:alice@127.0.0.1:{port}>\r\n"
                f"Content-Length: 0\r\n\r\n").encode()

    async def recv() -> Response:
        data = await asyncio.wait_for(loop.sock_recv(peer, 65535), 2)
        msg = parse_message(data)
        assert isinstance(msg, Response)
        return msg

    try:
        peer.sendto(req("INVITE", br), bob)
        ringing, ok = await recv(), await recv()
        assert (ringing.status, ok.status) == (180, 200)
        assert ok.to.tag and ok.to.tag == ringing.to.tag
        assert ok.content_type == "application/sdp" and ok.body
        assert str(ok.contacts[0].uri) == str(contact)
        again = await recv()  # no ACK yet: the 2xx is retransmitted (§13.3.1.4)
        assert again.status == 200
        peer.sendto(req("ACK", br + "a", ok.to.tag), bob)
        peer.sendto(req("BYE", br + "b", ok.to.tag), bob)
        bye_ok = await recv()
        while bye_ok.cseq.method != "BYE":  # a 2xx retransmission crossing our ACK
            bye_ok = await recv()
        assert bye_ok.status == 200
        res = await run
    finally:
        peer.close()
        tr.close()
    assert res.uas.requests == {"INVITE": 1, "ACK": 1, "BYE": 1}
    assert res.uas.ok_retransmitted >= 1 and res.uas.ack_timeouts == 0


async def test_duration_stops_offering_and_max_inflight_defers() -> None:
    silent = Silent()
    tr, addr = await _peer(silent)
    try:
        res = await _run(_regs(1000, spacing=0.01), target=addr, duration=0.5, drain=0.2,
                         max_inflight=10, backoff=False)
    finally:
        tr.close()
    reg = res.kinds["register"]
    assert reg.sent == 10  # the cap held: nobody answered, so nothing more started
    assert res.deferred_by_cap > 0
    assert reg.abandoned == 10 and res.wall_s < 2


async def test_max_lateness_skips_what_the_injector_cannot_offer_in_time() -> None:
    """An injector behind its schedule (here its loop blocked 0.4 s as the first second
    closes) does not send what was due over --max-lateness ago: it counts it, and the
    seconds say what it really started, so a rate test reads what was offered."""
    rec = Recording()
    tr, addr = await _peer(rec)

    def stall(p: SecondPoint, engine: Any) -> None:
        if p.second == 0:
            time.sleep(0.4)

    try:
        res = await _run(_regs(300, spacing=0.005), target=addr, max_lateness=0.1,
                         on_second=stall)
    finally:
        tr.close()
    skipped = res.events_skipped["behind-schedule"]
    sent = res.kinds["register"].sent
    assert skipped > 0 and sent + skipped == 300 == res.events_started
    assert sum(p.started for p in res.timeline) == sent == len(rec.log)
    # Whatever was sent went no later than the limit (HDR's 3 digits of rounding).
    assert res.lateness.get_max_value() <= 100_100


def test_schedule_offsets_speed_and_linear_ramp() -> None:
    assert schedule_offsets([0, 1, 2], 2.0, 0) == [0, 0.5, 1.0]
    # A ramp of R: trace time R/2 is reached at wall time R, then one to one.
    offs = schedule_offsets([0.0, 0.5, 2.0, 3.0], 1.0, 4.0)
    assert offs[0] == 0 and offs[1] == pytest.approx(2.0) and offs[2] == pytest.approx(4.0)
    assert offs[3] == pytest.approx(5.0)
    with pytest.raises(ValueError):
        schedule_offsets([0], 0, 0)


async def test_websocket_target_sip_subprotocol() -> None:
    got: list[str] = []

    async def handler(ws: ServerConnection) -> None:
        assert ws.subprotocol == "sip"
        async for msg in ws:
            text = msg if isinstance(msg, str) else msg.decode()
            got.append(text)
            out = respond(text.encode())
            if out is not None:
                await ws.send(out.decode())

    async with serve(handler, "127.0.0.1", 0, subprotocols=["sip"]) as server:  # type: ignore[list-item]
        port = next(iter(server.sockets)).getsockname()[1]
        res = await _run(_regs(50), ws_url=f"ws://127.0.0.1:{port}/", ws_connections=4)
    reg = res.kinds["register"]
    assert reg.answered == {"2xx": 50} and reg.retransmissions == 0
    first = parse_message(got[0].encode())
    assert first.vias[0].transport == "WS" and first.vias[0].host.endswith(".invalid")
    assert first.contacts[0].uri.params.get("transport") == "ws"  # type: ignore[union-attr]


class RingingOnly(asyncio.DatagramProtocol):
    """Answers INVITE with 180 and never with a final response (a phone nobody picks up)."""

    def __init__(self) -> None:
        self.tr: asyncio.DatagramTransport | None = None
        self.invites: list[float] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.tr = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if data.startswith(b"INVITE"):
            self.invites.append(time.monotonic())
            out = respond(data, b"180 Ringing")
            assert out is not None and self.tr is not None
            self.tr.sendto(out, addr)


async def test_provisional_stops_invite_retransmissions_and_the_guard_ends_it() -> None:
    ringing = RingingOnly()
    tr, addr = await _peer(ringing)
    try:
        res = await _run([Call(t=0, user="a", domain=DOMAIN, callee="b", hold=1)],
                         target=addr, t1=0.02, invite_guard=1.5)
    finally:
        tr.close()
    inv = res.kinds["invite"]
    # §17.1.1.2: the 180 moved the transaction to Proceeding: no retransmission, and Timer B
    # (64*T1 = 1.28 s) did not end it; the guard did, at 1.5 s.
    assert len(ringing.invites) == 1 and inv.retransmissions == 0
    assert inv.provisional == 1 and inv.timeouts == 1
    assert res.calls.failed == 1
    assert res.wall_s >= 1.5


async def test_engine_tests_run_on_uvloop_as_storm_replay_does() -> None:
    import uvloop

    assert isinstance(asyncio.get_running_loop(), uvloop.Loop)


async def test_a_ua_never_has_two_registers_in_flight() -> None:
    # RFC 3261 §10.2: a new REGISTER waits for the previous one's answer or timeout; of those
    # that pile up meanwhile, the latest is sent.
    silent = Silent()
    tr, addr = await _peer(silent)
    events: list[Event] = [Register(t=i * 0.001, user="alice", domain=DOMAIN, expires=60 + i)
                           for i in range(3)]
    try:
        res = await _run(events, target=addr, t1=0.005, t2=0.02, backoff=False, drain=1.0)
    finally:
        tr.close()
    reg = res.kinds["register"]
    assert reg.sent == 2 and reg.queued == 2 and reg.superseded == 1 and reg.timeouts == 2
    firsts: dict[str, tuple[float, int, int | None]] = {}
    for at, data in silent.seen:
        msg = parse_message(data)
        assert isinstance(msg, Request)
        firsts.setdefault(msg.vias[0].branch or "", (at, msg.cseq.seq, msg.expires))
    (t_a, cseq_a, exp_a), (t_b, cseq_b, exp_b) = sorted(firsts.values())
    assert (cseq_a, exp_a, cseq_b, exp_b) == (1, 60, 2, 62)
    assert t_b - t_a >= 64 * 0.005 - 0.002  # only after the first one timed out


async def test_a_closed_port_times_out_without_breaking_the_run() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[:2]
    # Nothing listens there now: the kernel answers ICMP port unreachable to each send.
    res = await _run(_regs(3), target=closed, t1=0.005, t2=0.02, backoff=False, sockets=1)
    reg = res.kinds["register"]
    assert reg.timeouts == 3 and reg.answered == {} and reg.retransmissions == 3 * 17


async def test_a_websocket_closed_by_the_server_ends_in_timeouts_and_send_errors() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        await ws.close()  # hang up after the first request, unanswered

    async with serve(handler, "127.0.0.1", 0, subprotocols=["sip"]) as server:  # type: ignore[list-item]
        port = next(iter(server.sockets)).getsockname()[1]
        res = await _run(_regs(5, spacing=0.05), ws_url=f"ws://127.0.0.1:{port}/",
                         ws_connections=1, t1=0.005, backoff=False)
    reg = res.kinds["register"]
    assert reg.sent == 5 and reg.timeouts == 5 and reg.answered == {}
    assert reg.retransmissions == 0  # reliable transport: never retransmitted (§17.1.1.2)
    assert res.send_errors >= 3  # the requests after the close could not be sent


class Tap(asyncio.DatagramProtocol):
    """A UDP wire tap between the injector and the server: what the injector sends is recorded
    and passed to the server from one upstream socket; the server's responses come back to that
    socket (rport) and are recorded and passed on to the address in their top Via, the
    injector's socket that sent the request."""

    def __init__(self, server: tuple[str, int]) -> None:
        self.server = server
        self.sent: list[Request] = []  # by the injector
        self.answers: list[Response] = []  # to the injector
        self.front: asyncio.DatagramTransport | None = None
        self.up: asyncio.DatagramTransport | None = None

    async def open(self) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        tap = self

        class Up(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                msg = parse_message(data)
                assert isinstance(msg, Response), "the server sends requests to Contacts"
                tap.answers.append(msg)
                assert tap.front is not None and msg.vias[0].port is not None
                tap.front.sendto(data, (msg.vias[0].host, msg.vias[0].port))

        self.up, _ = await loop.create_datagram_endpoint(Up, local_addr=("127.0.0.1", 0))
        self.front, _ = await loop.create_datagram_endpoint(lambda: self,
                                                            local_addr=("127.0.0.1", 0))
        return self.front.get_extra_info("sockname")[:2]  # type: ignore[no-any-return]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        msg = parse_message(data)
        assert isinstance(msg, Request)
        self.sent.append(msg)
        assert self.up is not None
        self.up.sendto(data, self.server)

    def close(self) -> None:
        for tr in (self.front, self.up):
            if tr is not None:
                tr.close()


def _users(prefix: str, n: int, on_ws: bool) -> list[str]:
    """``n`` user names the UAC puts on WebSocket (or on UDP) at --ws-share 0.5."""
    names = (f"{prefix}{i}" for i in itertools.count())
    return list(itertools.islice(
        (u for u in names
         if (zlib.crc32(u.encode()) % WS_SHARE_STEPS < WS_SHARE_STEPS // 2) == on_ws), n))


@pytest.mark.parametrize("callee_on", ["udp", "ws"])
async def test_calls_through_the_record_routing_proxy_bye_carries_the_models_route_set(
    callee_on: str,
) -> None:
    # Caller and callee are the injector's own UAs (UAC and UAS); the real server, in process,
    # proxies between them and record-routes (§16.6 step 4), so the caller's dialog has a
    # route set: the model's, from the 2xx's Record-Route reversed (§12.1.2).  With the callee
    # on WebSocket the proxy record-routes twice (RFC 5658 §4), so the order shows.
    n = 5
    callers, callees = _users("a", n, False), _users("b", n, callee_on == "ws")
    calls: list[Event] = [Call(t=0.05 * i, user=callers[i], domain=DOMAIN, callee=callees[i],
                               hold=0.1) for i in range(n)]
    async with running_server(domain=DOMAIN) as server:
        assert server.udp_address is not None and server.ws_address is not None
        tap = Tap(server.udp_address)
        ws = f"ws://127.0.0.1:{server.ws_address[1]}/" if callee_on == "ws" else None
        try:
            target = await tap.open()
            res = await Engine(calls, EngineConfig(target=target, sockets=4, ws_url=ws,
                                                   ws_share=0.5, ws_connections=2)).run()
        finally:
            tap.close()
    assert res.calls.attempted == res.calls.established == res.calls.completed == n
    assert res.uas.requests == {"INVITE": n, "ACK": n, "BYE": n}
    assert res.kinds["bye"].answered == {"2xx": n} and res.uas.ack_timeouts == 0
    oks = {m.call_id: m for m in tap.answers if m.status == 200 and m.cseq.method == "INVITE"}
    assert len(oks) == n
    for method in ("ACK", "BYE"):
        sent = [m for m in tap.sent if m.method == method]
        assert len(sent) == n
        for req in sent:
            ok = oks[req.call_id]
            assert len(ok.record_routes) == (2 if callee_on == "ws" else 1)
            assert [str(r.uri) for r in req.routes] == [
                str(rr.uri) for rr in reversed(ok.record_routes)]
            assert str(req.uri) == str(ok.contacts[0].uri)  # the remote target
            assert req.to.tag == ok.to.tag and req.to.tag
