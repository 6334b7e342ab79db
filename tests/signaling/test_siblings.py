"""Calls to a WebSocket user from any worker of ``signaling serve --processes 2`` (issue 16).

Real supervisor and worker processes; real WebSocket and UDP user agents
(``tests.peers.sipua``).  The kernel picks the worker of each UDP source and of each connection,
so the tests place a call from fresh sockets until one crossed workers (the callee's connection
on one, the caller's INVITE on the other: ``signaling_sibling_relay_total`` counts what one
worker sent over the other's connection), and check that every call, crossing or not, completes
with either side hanging up.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.serverproc import free_tcp_port
from protocols.sip.message import Response
from protocols.sip.parser import parse_message
from signaling import outbox
from signaling.metrics import Metrics
from signaling.siblings import DECODER, Frame, Siblings, handoff_path
from signaling.transports.base import Peer
from signaling.worker import WorkerInfo
from tests.peers.sipua import UA, StreamUA, UdpUA, WsUA
from tests.signaling.test_supervisor import Supervised, front_metrics, metric_value

#: Calls tried before giving up on the kernel ever putting the two sides on different
#: workers: each new source lands on either worker (even odds), so 40 tries all landing on
#: the callee's worker has probability 2**-40.
MAX_TRIES = 40
#: Seconds a test waits for what it expects; a bound, never the measure.
BOUND = 10.0
#: Messages relayed at once to a sibling that does not read meanwhile: far beyond the 10
#: datagrams its socket queues (``net.unix.max_dgram_qlen``), which were all it got before.
BURST = 100


def _siblings(tmp_path: Path, slot: int, generation: int) -> Siblings:
    info = WorkerInfo(slot=slot, generation=generation, fds={}, ready_fd=-1,
                      run_dir=str(tmp_path))
    return Siblings(info, f"host:5060/{info.name}", Metrics())


def _bound(tmp_path: Path, slot: int, generation: int) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(handoff_path(str(tmp_path), slot, generation))
    sock.settimeout(5)
    return sock


BYE = (b"BYE sip:a@x.invalid;transport=ws SIP/2.0\r\n"
       b"Via: SIP/2.0/WS h.invalid;branch=z9hG4bK1\r\n"
       b"From: <sip:b@h>;tag=1\r\nTo: <sip:a@h>;tag=2\r\ni: the-call\r\n"
       b"CSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")


def test_holder_names_the_sibling_of_a_node_or_connection(tmp_path: Path) -> None:
    me = _siblings(tmp_path, 0, 1)
    try:
        assert me.holder("host:5060/w1.3") == "w1.3"
        assert me.holder("host:5060/w1.3/17") == "w1.3"          # a WebSocket connection
        assert me.holder("host:5060/w1.3/wss/17") == "w1.3"      # a WSS connection
        assert me.holder("host:5060/w0.1/17") is None            # our own
        assert me.holder("other:5060/w1.3/17") is None           # another server's
        assert me.holder("host:5060/nonsense/1") is None
        assert me.holder(None) is None and me.holder("slot") is None
        assert me.reaches("host:5060/w1.3") and not me.reaches("host:5060/w0.1")
    finally:
        me.close()


def test_a_message_out_over_a_sibling_connection_and_what_comes_back(tmp_path: Path) -> None:
    """Worker w0.1 sends a BYE on w1.3's connection; w1.3 remembers the Call-ID, and hands
    back what then arrives on its connection for it, with the peer it came from."""
    a, b = _siblings(tmp_path, 0, 1), _siblings(tmp_path, 1, 3)
    a_sock, b_sock = _bound(tmp_path, 0, 1), _bound(tmp_path, 1, 3)
    conn = Peer("ws", "10.0.0.9", 50000, "host:5060/w1.3/17")
    try:
        assert a.relay_out(BYE, Peer("udp", "10.0.0.1", 5060)) is None  # not a connection
        assert a.relay_out(BYE, conn) is True
        frame = DECODER.decode(b_sock.recv(70_000))
        assert (frame.kind, frame.peer, frame.origin, frame.data) == ("out", conn, "w0.1", BYE)
        b.took_out(frame)
        assert b.calls == {"the-call": "w0.1"}
        answer = parse_message(BYE)
        assert b.relay_in(answer, conn._replace(conn_id=None)) is False  # not from a connection
        assert b.relay_in(answer, conn) is True
        back = DECODER.decode(a_sock.recv(70_000))
        assert (back.kind, back.peer, back.origin) == ("in", conn, "w1.3")
        assert parse_message(back.data).call_id == "the-call"
    finally:
        for closing in (a, b, a_sock, b_sock):
            closing.close()


def test_a_closed_connection_is_told_back_to_the_worker_that_used_it(tmp_path: Path) -> None:
    """w1.3 could not write w0.1's message on its connection (closed meanwhile): w0.1 gets a
    "gone" frame naming the connection, so its transaction fails at once."""
    a, b = _siblings(tmp_path, 0, 1), _siblings(tmp_path, 1, 3)
    a_sock, b_sock = _bound(tmp_path, 0, 1), _bound(tmp_path, 1, 3)
    conn = Peer("ws", "10.0.0.9", 50000, "host:5060/w1.3/17")
    try:
        assert a.relay_out(BYE, conn) is True
        b.tell_gone(DECODER.decode(b_sock.recv(70_000)))
        back = DECODER.decode(a_sock.recv(70_000))
        assert (back.kind, back.peer, back.origin, back.data) == ("gone", conn, "w1.3", b"")
    finally:
        for closing in (a, b, a_sock, b_sock):
            closing.close()


def test_a_gone_sibling_fails_like_a_closed_connection(tmp_path: Path) -> None:
    a = _siblings(tmp_path, 0, 1)
    try:
        assert a.relay_out(BYE, Peer("ws", "h", 1, "host:5060/w1.3/17")) is False
        a.calls["the-call"] = "w1.3"
        assert a.relay_in(parse_message(BYE), Peer("ws", "h", 1, "host:5060/w0.1/2")) is False
        assert "the-call" not in a.calls  # forgotten: its worker is gone
    finally:
        a.close()


def _bye(n: int) -> bytes:
    return BYE.replace(b"i: the-call", f"i: call-{n}".encode())


async def _read(sock: socket.socket, count: int) -> list[Frame]:
    """``count`` frames, read as a worker's loop reads them (a batch per wake-up)."""
    sock.setblocking(False)
    got: list[Frame] = []
    deadline = asyncio.get_running_loop().time() + BOUND
    while len(got) < count:
        assert asyncio.get_running_loop().time() < deadline, len(got)
        try:
            got.append(DECODER.decode(sock.recv(70_000)))
        except BlockingIOError:
            await asyncio.sleep(0.001)
    return got


async def test_a_burst_to_a_sibling_that_reads_late_arrives_all_in_order(
        tmp_path: Path) -> None:
    """A sibling busy (not reading) while a hundred messages are relayed over its connection:
    its queue is full after ten, and each refused one was taken for a gone sibling and lost
    (over a connection nothing retransmits it, §17.1.1.2).  Now they wait, and once it reads
    every one arrives, in the order sent, none counted lost."""
    a = _siblings(tmp_path, 0, 1)
    b_sock = _bound(tmp_path, 1, 3)
    conn = Peer("ws", "10.0.0.9", 50000, "host:5060/w1.3/17")
    try:
        assert all([a.relay_out(_bye(n), conn) for n in range(BURST)])
        got = await _read(b_sock, BURST)
        assert [f.data for f in got] == [_bye(n) for n in range(BURST)]
        assert a.c_relay.values == {("out", "sent"): BURST}
        assert a.c_frames.values == {("sent", "out"): BURST}
    finally:
        a.close()
        b_sock.close()


async def test_what_waits_for_a_sibling_that_exits_fails_as_a_closed_connection(
        tmp_path: Path) -> None:
    """The sibling exits with relayed messages still waiting for its queue: they are counted
    lost, and the transactions they were for fail now (§17.1.4), as over a connection that
    closed; what is relayed to it afterwards fails at once."""
    a = _siblings(tmp_path, 0, 1)
    b_sock = _bound(tmp_path, 1, 3)
    failed: list[Peer] = []
    a.connection_gone = failed.append
    conn = Peer("ws", "10.0.0.9", 50000, "host:5060/w1.3/17")
    try:
        assert all([a.relay_out(_bye(n), conn) for n in range(BURST)])
        waiting = len(a.outboxes["w1.3"].waiting)
        assert waiting  # its queue is full: the rest waits for it
        b_sock.close()
        Path(handoff_path(str(tmp_path), 1, 3)).unlink()
        deadline = asyncio.get_running_loop().time() + BOUND
        while not failed:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.001)
        assert failed == [conn] * waiting
        assert a.c_frames.get("sent", "lost_out") == waiting
        assert "w1.3" not in a.outboxes
        assert a.relay_out(BYE, conn) is False
    finally:
        a.close()


async def test_a_sibling_that_takes_nothing_has_what_waits_dropped_and_counted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bounded: a sibling alive but reading nothing for ``outbox.STUCK`` seconds has what
    waits for it dropped, each counted (``signaling_sibling_frames_total``), not silently."""
    monkeypatch.setattr(outbox, "STUCK", 0.05)
    a = _siblings(tmp_path, 0, 1)
    b_sock = _bound(tmp_path, 1, 3)
    conn = Peer("ws", "10.0.0.9", 50000, "host:5060/w1.3/17")
    try:
        assert all([a.relay_out(_bye(n), conn) for n in range(BURST)])
        box = a.outboxes["w1.3"]
        deadline = asyncio.get_running_loop().time() + BOUND
        while box.waiting:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.01)
        lost = a.c_frames.get("sent", "lost_out")
        assert lost and lost + a.c_frames.get("sent", "out") == BURST
    finally:
        a.close()
        b_sock.close()


@pytest.fixture
def server() -> Iterator[Supervised]:
    srv = Supervised()
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def relayed(srv: Supervised) -> float:
    return metric_value(front_metrics(srv), "signaling_sibling_relay_total",
                        direction="out", outcome="sent")


async def call(caller: UA, callee: UA, callee_hangs_up: bool) -> None:
    """INVITE, 180, 200, ACK, then a BYE from either side, each checked where it arrives."""
    invite = caller.invite(callee.user)
    await caller.send(invite)
    got = await callee.request("INVITE", timeout=10)
    tag = f"t{invite.call_id[:6]}"
    await callee.send(callee.reply(got, 180, tag=tag))
    await caller.response(180, timeout=10)
    await callee.send(callee.reply(got, 200, tag=tag, body=b"v=0\r\n"))
    ok = await caller.response(200, timeout=10)
    leg = caller.uac_leg(invite, ok)
    await caller.send(caller.in_dialog(leg, "ACK", cseq=invite.cseq.seq))
    await callee.request("ACK", timeout=10)
    if callee_hangs_up:
        cleg = callee.uas_leg(got, tag)
        await callee.send(callee.in_dialog(cleg, "BYE"))
        bye = await caller.request("BYE", timeout=10)
        await caller.send(caller.reply(bye, 200))
        done = await callee.response(200, "BYE", timeout=10)
    else:
        await caller.send(caller.in_dialog(leg, "BYE"))
        bye = await callee.request("BYE", timeout=10)
        await callee.send(callee.reply(bye, 200))
        done = await caller.response(200, "BYE", timeout=10)
    assert isinstance(done, Response) and done.call_id == invite.call_id


async def _registered_ws(srv: Supervised, user: str) -> WsUA:
    assert srv.ws_port is not None
    ua = await WsUA(user, "127.0.0.1", srv.udp_port, srv.ws_port).start()
    await ua.send(ua.register())
    await ua.response(200, "REGISTER")
    return ua


def test_udp_callers_reach_a_websocket_user_from_either_worker(server: Supervised) -> None:
    async def run() -> tuple[int, int]:
        callee = await _registered_ws(server, "wsdora")
        crossed = local = 0
        try:
            for n in range(MAX_TRIES):
                before = relayed(server)
                caller = await UdpUA(f"udp{n}", "127.0.0.1", server.udp_port).start()
                try:
                    await call(caller, callee, callee_hangs_up=n % 2 == 1)
                finally:
                    await caller.close()
                if relayed(server) > before:
                    crossed += 1
                else:
                    local += 1
                if crossed >= 2 and local >= 1:
                    break
        finally:
            await callee.close()
        return crossed, local

    crossed, local = asyncio.run(run())
    assert crossed >= 2 and local >= 1, (crossed, local)


def test_websocket_to_websocket_call_across_workers(server: Supervised) -> None:
    """Both sides hold a connection, each to its own worker: the caller's worker keeps the
    call and uses the callee's worker's connection, in both directions."""

    async def run() -> int:
        callee = await _registered_ws(server, "wserin")
        crossed = 0
        try:
            for n in range(MAX_TRIES):
                before = relayed(server)
                caller = await _registered_ws(server, f"wscaller{n}")
                try:
                    await call(caller, callee, callee_hangs_up=crossed == 0)
                finally:
                    await caller.close()
                if relayed(server) > before:
                    crossed += 1
                    if crossed == 2:  # one hung up by each side
                        break
        finally:
            await callee.close()
        return crossed

    assert asyncio.run(run()) == 2


def test_a_tcp_user_is_reached_from_either_worker() -> None:
    """The TCP listener is shared like the others (one socket per slot), and a user registered
    over TCP through one worker is called from both."""
    tcp_port = free_tcp_port()
    srv = Supervised("--sip-tcp", f"127.0.0.1:{tcp_port}")
    srv.start()

    async def run() -> tuple[int, int]:
        callee = await StreamUA("tcpfay", "127.0.0.1", srv.udp_port, tcp_port).start()
        await callee.send(callee.register())
        await callee.response(200, "REGISTER")
        crossed = local = 0
        try:
            for n in range(MAX_TRIES):
                before = relayed(srv)
                caller = await UdpUA(f"udp{n}", "127.0.0.1", srv.udp_port).start()
                try:
                    await call(caller, callee, callee_hangs_up=n % 2 == 0)
                finally:
                    await caller.close()
                if relayed(srv) > before:
                    crossed += 1
                else:
                    local += 1
                if crossed >= 1 and local >= 1:
                    break
        finally:
            await callee.close()
        return crossed, local

    try:
        crossed, local = asyncio.run(run())
    finally:
        srv.stop()
    assert crossed >= 1 and local >= 1, (crossed, local)
