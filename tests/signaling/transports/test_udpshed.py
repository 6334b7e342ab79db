"""The listening socket's kernel filter: a storm's REGISTERs shed before they are read.

The programs run in the real kernel on real sockets: what they drop is never delivered and is
counted in the socket's drop count (SO_RXQ_OVFL), which the server reports."""

from __future__ import annotations

import asyncio
import socket
import struct
import time

import pytest

from signaling.transports.udpshed import HEADROOM, MOST, KernelShed, next_share, program
from tests.signaling.inproc import UdpPeer, running_server
from tests.signaling.test_sipcore import _req

_SO_RXQ_OVFL = 40


def _receiver() -> socket.socket:
    r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    r.bind(("127.0.0.1", 0))
    r.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    r.setsockopt(socket.SOL_SOCKET, _SO_RXQ_OVFL, 1)
    r.setblocking(False)
    return r


def _sender(host: str) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, 0))
    return s


def _drain(r: socket.socket) -> tuple[dict[bytes, int], int]:
    """Datagrams delivered by their first word, and the socket's drop count."""
    got: dict[bytes, int] = {}
    drops = 0
    time.sleep(0.1)
    while True:
        try:
            data, ancillary, _, addr = r.recvmsg(2048, 64)
        except BlockingIOError:
            return got, drops
        key = data.split(b" ", 1)[0] + b"@" + addr[0].encode()
        got[key] = got.get(key, 0) + 1
        for _, kind, value in ancillary:
            if kind == _SO_RXQ_OVFL:
                drops = struct.unpack("I", value)[0]


def _attach(r: socket.socket, share: float, sources: tuple[str, ...] = ()) -> KernelShed:
    shed = KernelShed(r)
    assert shed._attach(program(share, sources))
    return shed


def test_a_share_of_registers_is_dropped_and_nothing_else() -> None:
    r, s = _receiver(), _sender("127.0.0.1")
    _attach(r, 0.75)
    n = 2000
    for _ in range(n):
        for first in (b"REGISTER sip:x SIP/2.0", b"INVITE sip:x SIP/2.0", b"OPTIONS sip:x SIP/2.0",
                      b"SIP/2.0 200 OK", b"register sip:x SIP/2.0", b"REGISTERS sip:x SIP/2.0"):
            s.sendto(first + b"\r\n\r\n", r.getsockname())
    # The drop count comes with each datagram read: one more after all, to read the total.
    s.sendto(b"SENTINEL", r.getsockname())
    got, drops = _drain(r)
    registers = got.get(b"REGISTER@127.0.0.1", 0)
    # Binomial(2000, 0.25): mean 500, sd ~19; ten sd either side cannot fail by chance.
    assert 300 < registers < 700, got
    longer = got.get(b"REGISTERS@127.0.0.1", 0)
    assert 300 < longer < 700, got
    assert drops == 2 * n - registers - longer
    # methods are case-sensitive (RFC 3261 §7.1): "register" is not REGISTER.  "REGISTERS"
    # starts with the same eight bytes and is shed like it (an unknown method: 501 anyway).
    for other in (b"INVITE", b"OPTIONS", b"SIP/2.0", b"register"):
        assert got.get(other + b"@127.0.0.1") == n, (other, got)
    r.close()
    s.close()


def test_with_heavy_sources_only_their_registers_are_dropped() -> None:
    r = _receiver()
    heavy, polite = _sender("127.0.0.2"), _sender("127.0.0.3")
    _attach(r, MOST, ("127.0.0.2", "127.0.0.9"))
    for _ in range(1000):
        heavy.sendto(b"REGISTER sip:x SIP/2.0\r\n\r\n", r.getsockname())
        polite.sendto(b"REGISTER sip:x SIP/2.0\r\n\r\n", r.getsockname())
        heavy.sendto(b"OPTIONS sip:x SIP/2.0\r\n\r\n", r.getsockname())
    got, drops = _drain(r)
    assert got.get(b"REGISTER@127.0.0.3") == 1000, got  # the polite source: all
    assert got.get(b"OPTIONS@127.0.0.2") == 1000, got
    through = got.get(b"REGISTER@127.0.0.2", 0)
    assert through < 200, got  # 5% of 1,000 expected
    assert drops == 1000 - through
    for sock in (r, heavy, polite):
        sock.close()


@pytest.mark.parametrize(("share", "read_rate", "limit", "expected"), [
    # the limit does not bind (or nothing read): no filter
    (0.5, 10_000.0, 0.0, 0.0),
    (0.0, 0.0, 1_000.0, 0.0),
    # under HEADROOM x limit arrives: stays off
    (0.0, 1_400.0, 1_000.0, 0.0),
    # 10x with no filter yet: want 1 - 1.5/10 = 0.85, half way there
    (0.0, 10_000.0, 1_000.0, 0.425),
    # 10x estimated through the share in force: 0.6 lets 4,000 through of 10,000
    (0.6, 4_000.0, 1_000.0, 0.725),
    # the storm is over: half way down, then off below STEP
    (0.5, 500.0, 1_000.0, 0.25),
    (0.03, 100.0, 1_000.0, 0.0),
    # never beyond MOST: some of everything is always read
    (MOST, 5_000.0, 10.0, MOST),
])
def test_the_share_follows_the_limit(share: float, read_rate: float, limit: float,
                                     expected: float) -> None:
    assert next_share(share, read_rate, limit) == pytest.approx(expected)


def test_the_share_settles_where_headroom_times_the_limit_gets_through() -> None:
    share, offered, limit = 0.0, 20_000.0, 1_000.0
    for _ in range(30):
        share = next_share(share, offered * (1 - share), limit)
    assert offered * (1 - share) == pytest.approx(HEADROOM * limit, rel=0.01)


def test_revise_attaches_moves_and_detaches() -> None:
    r, s = _receiver(), _sender("127.0.0.1")
    shed = KernelShed(r)
    shed.revise(10_000.0, None, ())
    assert shed.share == 0.0 and shed._buffer is None
    shed.revise(10_000.0, 1_000.0, ["127.0.0.1"])
    assert shed.share == pytest.approx(0.425) and shed.sources == ("127.0.0.1",)
    kept = shed._buffer
    shed.revise(1_510.0, 1_000.0, ["127.0.0.1"])  # about HEADROOM x limit through: kept
    assert shed._buffer is kept
    shed.revise(1_510.0, 1_000.0, [])  # no longer over its share (it is shed): still named
    assert shed.sources == ("127.0.0.1",)
    shed.revise(10_000.0, None, ())  # the limit no longer binds: off
    assert shed.share == 0.0 and shed._buffer is None and not shed.sources
    for _ in range(100):
        s.sendto(b"REGISTER sip:x SIP/2.0\r\n\r\n", r.getsockname())
    got, drops = _drain(r)
    assert got.get(b"REGISTER@127.0.0.1") == 100 and drops == 0
    r.close()
    s.close()


async def test_a_server_in_a_storm_sheds_the_flooders_registers_in_the_kernel() -> None:
    """End to end: with the private port and the drain, a binding limit and a flood from one
    address, the filter comes on for that address and its drops are counted as the kernel's
    (the metric and the gauge); it comes off when the limit opens again.  (That a source not
    named is never dropped by the program is shown above on bare sockets.)"""
    from signaling.transports.udp import excess_drain
    assert excess_drain is not None, "the C extension is built by the test command"
    async with running_server(domain=["example.com"], sip_udp_private="127.0.0.1:0",
                              overload_kernel_shed="on") as srv:
        assert srv.udp is not None and srv.udp_address is not None and srv.udp.shed is not None
        port = srv.udp_address[1]
        control = srv.core.overload.control
        flood = await UdpPeer.open("127.0.0.2")
        # a second, light source: the flooder is then over its share (half the limit) in
        # every window, so the filter names it (with one source alone it may shed blind)
        light = await UdpPeer.open("127.0.0.3")
        loop = asyncio.get_running_loop()
        start = loop.time()
        i = 0
        while (now := loop.time()) < start + 3.0:
            control.rate = 200.0  # as if the control law had cut it (a storm's CPU)
            # 4,000/s (20x the limit) by the clock, not by loop turns: on a busy machine the
            # turns come late and fewer, and a flood paced by them would not be one
            while i < int((now - start) * 4000):
                flood.send(_req("REGISTER", "sip:example.com", flood.port,
                                branch=f"z9hG4bKf{i}", call_id=f"flood-{i}",
                                extra="Contact: <sip:f@10.0.0.2>"), port)
                i += 1
            light.send(_req("REGISTER", "sip:example.com", light.port, branch=f"z9hG4bKl{i}",
                            call_id=f"light-{i}", extra="Contact: <sip:l@10.0.0.3>"), port)
            await asyncio.sleep(0.01)
        assert srv.udp.shed.share > 0.5, srv.udp.shed.share
        assert srv.udp.shed.sources == ("127.0.0.2",)
        assert srv.core.overload.kernel_shed == srv.udp.shed.share
        assert srv.core.overload.c_dropped.get("kernel", "unknown") > 1000
        control.rate = control.cfg.max_rate  # the storm is over: the limit opens again
        for _ in range(50):
            if srv.udp.shed.share == 0.0:
                break
            await asyncio.sleep(0.05)
        assert srv.udp.shed.share == 0.0 and srv.core.overload.kernel_shed == 0.0
        # and the REGISTERs the filter dropped are read again
        flood.send(_req("REGISTER", "sip:example.com", flood.port, branch="z9hG4bKafter",
                        call_id="after", extra="Contact: <sip:f@10.0.0.2>"), port)
        while (final := await flood.final(5.0)).call_id != "after":
            pass
        assert final.status == 200
        flood.close()
        light.close()
