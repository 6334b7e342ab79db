"""The kernel shed with memory: an eBPF socket filter that keeps dropping what it dropped.

The program runs in the real kernel on real loopback sockets, as ``test_udpshed``'s do: what
it drops is never delivered.  No test depends on the machine's speed: each sends a fixed set
and reads back what was delivered."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import struct
import time

import pytest

from signaling.config import ConfigError, load_config
from signaling.transports import udpebpf
from signaling.transports.udpebpf import EbpfShed, assemble, load
from signaling.transports.udpshed import MOST, WORDS, threshold, transaction_hash
from tests.signaling.inproc import UdpPeer, owned_shed, running_server
from tests.signaling.test_sipcore import _req
from tests.siptools import sipp_register

_SO_RXQ_OVFL = 40


def _receiver() -> socket.socket:
    r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    r.bind(("127.0.0.1", 0))
    r.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    r.setblocking(False)
    return r


def _sender(host: str = "127.0.0.1") -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, 0))
    return s


def _delivered(r: socket.socket) -> list[tuple[bytes, str]]:
    time.sleep(0.1)
    out: list[tuple[bytes, str]] = []
    while True:
        try:
            data, addr = r.recvfrom(70_000)
        except BlockingIOError:
            return out
        out.append((data, addr[0]))


def _shed(r: socket.socket, share: float, sources: tuple[str, ...] = ()) -> EbpfShed:
    shed = EbpfShed(r, entries=1 << 14)  # small: quick to create, ample for a test
    shed.claim()
    assert shed._set(share, sources)
    assert not shed.classic and shed.maps is not None
    shed.share, shed.sources = share, sources
    return shed



def test_the_kernel_computes_the_reference_hash_at_every_length() -> None:
    """Every verdict is ``transaction_hash`` (the classic program's, ``_udpband.c``'s) against
    the threshold, for REGISTERs of every length up to past the words hashed; a datagram too
    short to hold ``REGISTER`` is never dropped.  Remembering changes no verdict here: only
    hashes under the threshold are remembered, and it stays put."""
    r, s = _receiver(), _sender()
    share = 0.6
    shed = _shed(r, share)
    rng = random.Random(13)
    sent = [b"", b"R", b"REG", b"REGISTE"]
    for size in [*range(8, 8 + 4 * WORDS + 12), 1400]:
        for _ in range(2):
            sent.append((b"REGISTER" + rng.randbytes(1400))[:size])
    for data in sent:
        s.sendto(data, r.getsockname())
    got = {data for data, _ in _delivered(r)}
    wrong = [data for data in sent
             if (data[:8] == b"REGISTER" and transaction_hash(data, shed.salt) < threshold(share))
             == (data in got)]
    assert not wrong, [(len(w), w[:12]) for w in wrong[:3]]
    for short in (b"", b"R", b"REG", b"REGISTE"):
        assert short in got
    r.close()
    s.close()


def test_a_dropped_transaction_stays_dropped_when_the_share_comes_down() -> None:
    """RFC 3261 §17.1.2.2: a dropped transaction retransmits the same bytes until its Timer F.
    With the share at 0 its retransmissions are still dropped in the kernel, while new
    REGISTERs (new branches) and the transactions let through all pass."""
    r, s = _receiver(), _sender()
    shed = _shed(r, 0.5)
    n = 400
    for i in range(n):
        s.sendto(sipp_register(i), r.getsockname())
    first = {data for data, _ in _delivered(r)}
    dropped = n - len(first)
    assert 100 < dropped < 300, dropped  # Binomial(400, 0.5): sd 10
    assert shed.counts() == (dropped, 0) and shed.held() == dropped
    shed._off()  # the storm is over: nothing new is dropped
    assert shed.share == 0.0 and shed.filtering and shed.band == 0
    for i in range(n):
        s.sendto(sipp_register(i), r.getsockname())  # every one's retransmission
        s.sendto(sipp_register(n + i), r.getsockname())  # a new transaction
    again = [data for data, _ in _delivered(r)]
    assert sorted(d for d in again if d in first) == sorted(first)  # let through: again
    assert sum(sipp_register(i) in again for i in range(n)) == len(first)  # dropped: still
    assert all(sipp_register(n + i) in again for i in range(n))  # new: all pass
    assert shed.counts() == (dropped, dropped) and shed.held() == dropped
    r.close()
    s.close()


def test_other_datagrams_always_pass() -> None:
    """Only REGISTERs are shed: responses, other methods, "register" (methods are
    case-sensitive, RFC 3261 §7.1) and datagrams too short to hold ``REGISTER`` pass even
    with every REGISTER's hash under the threshold."""
    r, s = _receiver(), _sender()
    _shed(r, 1.0)
    others = [b"", b"REG", b"REGISTE", b"register sip:x SIP/2.0\r\n\r\n"]
    for i in range(200):
        for first in (b"INVITE", b"OPTIONS", b"ACK", b"SIP/2.0 200 OK", b"REGISTRAR"):
            others.append(first + b" sip:x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK%d\r\n"
                                  b"\r\n" % i)
    for data in others:
        s.sendto(data, r.getsockname())
    for i in range(200):
        s.sendto(sipp_register(i), r.getsockname())
    got = [data for data, _ in _delivered(r)]
    assert sorted(got) == sorted(others)  # no REGISTER (hash 2**32-1 alone would pass)
    r.close()
    s.close()


def test_with_sources_named_only_their_registers_are_dropped() -> None:
    """Issue 13's fairness: with heavy sources named, a polite source's REGISTERs pass
    whatever their hash; the named ones' are shed and remembered; renaming revises the map."""
    r, a, b = _receiver(), _sender("127.0.0.1"), _sender("127.0.0.2")
    shed = _shed(r, MOST, ("127.0.0.2",))
    n = 300
    for i in range(n):
        a.sendto(sipp_register(i), r.getsockname())
        b.sendto(sipp_register(n + i), r.getsockname())
    got = _delivered(r)
    assert sum(host == "127.0.0.1" for _, host in got) == n
    from_b = sum(host == "127.0.0.2" for _, host in got)
    assert from_b < 50, from_b  # Binomial(300, 0.05): mean 15, sd 3.8
    assert shed.counts()[0] == n - from_b
    # The other source named instead: 127.0.0.2's new REGISTERs pass, its dropped ones stay
    # dropped.
    assert shed._set(MOST, ("127.0.0.1",))
    for i in range(n):
        b.sendto(sipp_register(n + i), r.getsockname())
        b.sendto(sipp_register(2 * n + i), r.getsockname())
    got = _delivered(r)
    assert all((sipp_register(2 * n + i), "127.0.0.2") in got for i in range(n))
    assert sum(data == sipp_register(n + i) for data, _ in got for i in range(n)) == from_b
    r.close()
    a.close()
    b.close()


def test_revise_keeps_the_memory_for_timer_f_after_the_storm() -> None:
    """Driven by ``revise`` as ``UdpTransport`` does: the storm raises the share, its end (the
    limit no longer binds) puts it to 0 at once, not after the classic filter's hold, and the
    program (with its memory) comes off ``MEMORY`` (Timer F) later; no band is left to the
    drain."""
    r, s = _receiver(), _sender()
    shed = EbpfShed(r, entries=1 << 14)
    shed.claim()
    now = 0.0
    for _ in range(20):  # a 10x storm, the server taking 1,000/s
        now += 0.1
        shed.revise(10_000.0 * (1 - shed.share), 1_000.0, True, (), 0.4, now)
    assert shed.share > 0.8 and shed.maps is not None
    share = shed.share
    shed.revise(3_000.0, 1_000.0, True, (), 0.4, now)  # a storm tick: never lowered
    assert shed.share == share
    for i in range(200):
        s.sendto(sipp_register(i), r.getsockname())
    first = {data for data, _ in _delivered(r)}
    shed.revise(1_000.0, 1_000.0, False, (), 0.0, now + 0.1)
    assert shed.share == 0.0 and shed.filtering and shed.band == 0 and shed.band_share == 0.0
    for i in range(200):
        s.sendto(sipp_register(i), r.getsockname())
    assert {data for data, _ in _delivered(r)} == first
    shed.revise(1_000.0, 1_000.0, False, (), 0.0, now + 0.1 + shed.memory - 0.1)
    assert shed.maps is not None
    shed.revise(1_000.0, 1_000.0, False, (), 0.0, now + 0.1 + shed.memory)
    assert shed.maps is None and not shed.filtering
    for i in range(200):
        s.sendto(sipp_register(i), r.getsockname())
    assert len(_delivered(r)) == 200
    shed.release()
    r.close()
    s.close()


def test_release_takes_the_program_off_with_the_share_at_zero() -> None:
    r, s = _receiver(), _sender()
    shed = _shed(r, 1.0)
    shed._off()
    shed.release()
    assert shed.maps is None and not shed.owned
    for i in range(50):
        s.sendto(sipp_register(i), r.getsockname())
    assert len(_delivered(r)) == 50
    r.close()
    s.close()


def test_without_ebpf_the_classic_filter_sheds(monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:
    """No ``bpf`` system call (another architecture, or refused): one log line, and the
    classic filter drops the same transactions (same hash), with its band after."""
    monkeypatch.setattr(udpebpf, "_SYS_BPF", -1)
    r, s = _receiver(), _sender()
    shed = EbpfShed(r)
    shed.claim()
    with caplog.at_level(logging.WARNING, logger="signaling.transports.udpebpf"):
        assert shed._set(0.5, ())
        assert shed._set(0.7, ())
    assert shed.classic and shed.maps is None
    assert len([m for m in caplog.messages if "eBPF" in m]) == 1
    shed.share = 0.7
    for i in range(300):
        s.sendto(sipp_register(i), r.getsockname())
    got = {data for data, _ in _delivered(r)}
    want = {sipp_register(i) for i in range(300)
            if transaction_hash(sipp_register(i), shed.salt) >= threshold(0.7)}
    assert got == want
    shed._lowered(0.7, 0.0)
    shed.share = 0.0
    assert shed.band == threshold(0.7)  # the classic filter's band, as ``udpshed``'s
    shed.release()
    r.close()
    s.close()


def test_a_verifier_rejection_is_reported_in_its_words() -> None:
    """A program the verifier refuses (here r0 is read before it is set) raises with the
    verifier's log."""
    exit_only = assemble([(0x95, 0, 0, 0, 0)])
    with pytest.raises(OSError, match=r"(?s)verifier: .*R0 !read_ok"):
        load(exit_only)


def test_the_instructions_are_ebpfs_eight_octets() -> None:
    out = assemble([(0x18, 1, 1, 0, 7), "x", (0x05, 0, 0, "x", 0), (0x95, 0, 0, 0, 0)])
    assert [len(i) for i in out] == [8, 8, 8, 8]
    assert struct.unpack("<BBhi", out[0]) == (0x18, 0x11, 0, 7)
    assert struct.unpack("<BBhi", out[2]) == (0x05, 0, -1, 0)


def test_the_option_selects_it() -> None:
    flags = {"overload_kernel_shed": "ebpf"}
    assert load_config(flags, env={}).overload_kernel_shed == "ebpf"
    assert load_config({}, env={}).overload_kernel_shed == "on"  # the default is unchanged
    with pytest.raises(ConfigError, match="'on', 'off' or 'ebpf'"):
        load_config({"overload_kernel_shed": "bpf"}, env={})


async def test_a_server_with_the_option_sheds_with_memory() -> None:
    """``--overload-kernel-shed ebpf``: the listening socket's shed is this one; a storm's
    share puts the program on, and the worker that stops reading takes it off."""
    async with running_server(domain=["example.com"], sip_udp_private="127.0.0.1:0",
                              overload_kernel_shed="ebpf") as srv:
        udp, shed = await owned_shed(srv)  # claimed at its first tick
        assert isinstance(shed, EbpfShed)
        for _ in range(3):  # what it serves: the median of three ticks
            shed.revise(100_000.0, 1_000.0, True, ())
        assert shed.share == MOST and shed.maps is not None and not shed.classic
        udp.pause_reading()
        assert not shed.owned and shed.maps is None and not shed.filtering


async def test_after_a_storm_new_registers_are_served_and_old_ones_stay_dropped() -> None:
    """End to end, as ``test_udpshed``'s storm: a flood from one address at 20x a limit cut
    to 200/s puts the program on for it.  When the limit opens the share comes to 0 at once
    (no hold: lowering releases nothing); a retransmission of a transaction it dropped is
    dropped in the kernel (counted as the shed's), while a new REGISTER that hashes where
    the storm's were is served (no band of 503s)."""
    from signaling.transports.udp import excess_drain
    assert excess_drain is not None, "the C extension is built by the test command"
    async with running_server(domain=["example.com"], sip_udp_private="127.0.0.1:0",
                              overload_kernel_shed="ebpf") as srv:
        assert srv.udp is not None and srv.udp_address is not None
        shed = srv.udp.shed
        assert isinstance(shed, EbpfShed)
        port = srv.udp_address[1]
        control = srv.core.overload.control
        flood = await UdpPeer.open("127.0.0.2")
        light = await UdpPeer.open("127.0.0.3")
        loop = asyncio.get_running_loop()
        start = loop.time()
        sent: list[bytes] = []
        while (now := loop.time()) < start + 3.0:
            control.rate = 200.0  # as if the control law had cut it (a storm's CPU)
            while len(sent) < int((now - start) * 4000):  # by the clock, not loop turns
                i = len(sent)
                sent.append(_req("REGISTER", "sip:example.com", flood.port,
                                 branch=f"z9hG4bKf{i}", call_id=f"flood-{i}",
                                 extra="Contact: <sip:f@10.0.0.2>"))
                flood.send(sent[-1], port)
            light.send(_req("REGISTER", "sip:example.com", light.port,
                            branch=f"z9hG4bKl{len(sent)}", call_id=f"light-{len(sent)}",
                            extra="Contact: <sip:l@10.0.0.3>"), port)
            await asyncio.sleep(0.01)
        assert shed.share > 0.5 and shed.sources == ("127.0.0.2",), shed.share
        assert shed.maps is not None
        shared = shed.share
        control.rate = control.cfg.max_rate  # the storm is over
        for _ in range(100):
            if shed.share == 0.0:
                break
            await asyncio.sleep(0.05)
        assert shed.share == 0.0 and shed.filtering and shed.band == 0
        maps = shed.maps
        remembered = [data for data in sent
                      if maps.get(maps.dropped,
                                  struct.pack("=I", transaction_hash(data, shed.salt)), 4)]
        assert len(remembered) > 1000, len(remembered)
        before = shed.counts()[1]
        flood.send(remembered[-1], port)  # a retransmission (RFC 3261 §17.1.2.2)
        for _ in range(100):
            if shed.counts()[1] > before:
                break
            await asyncio.sleep(0.05)
        assert shed.counts()[1] == before + 1
        await asyncio.sleep(0.3)  # a tick or more: the metric follows
        memory = srv.core.overload.kernel_memory
        assert memory["added"] >= len(remembered) and memory["remembered"] >= 1
        for i in range(1000):
            data = _req("REGISTER", "sip:example.com", flood.port, branch=f"z9hG4bKa{i}",
                        call_id=f"after-{i}", extra="Contact: <sip:f@10.0.0.2>")
            if transaction_hash(data, shed.salt) < threshold(shared):
                flood.send(data, port)
                while (final := await flood.final(5.0)).call_id != f"after-{i}":
                    pass
                assert final.status == 200
                break
        assert srv.core.overload.c_rejected.get("shed_band", "REGISTER") == 0
        flood.close()
        light.close()
