"""The UDP listener: buffers sized at start and logged, one message per datagram."""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Iterator

import pytest

from signaling.overload import Overload
from signaling.transports.udp import _size_buffers
from tests.signaling.inproc import UdpPeer, arrivals_stamped, owned_shed, running_server


def test_buffers_are_sized_to_what_the_kernel_grants() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        rcv, snd = _size_buffers(s, 1 << 20)
    # Linux doubles the request for bookkeeping and caps it at rmem_max/wmem_max.
    assert rcv >= min(1 << 20, 212992) and snd > 0


async def test_listener_logs_achieved_buffer_size(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="signaling.transports.udp")
    async with running_server(udp_buffer=4 << 20) as srv:
        assert srv.udp_address is not None
        peer = await UdpPeer.open()
        peer.send(b"\r\n\r\n", srv.udp_address[1])  # a keepalive is a counted drop
        assert await peer.silent(0.2)
        peer.close()
    assert any("receive buffer" in r.getMessage() for r in caplog.records)


async def test_requests_that_queued_too_long_in_the_kernel_are_dropped_and_counted() -> None:
    import asyncio

    from protocols.sip.message import Response
    from tests.signaling.test_sipcore import _req

    async with running_server(domain=["example.com"], max_receive_delay=0.2,
                              retry_after=9) as srv:
        assert srv.udp is not None and srv.udp_address is not None
        port = srv.udp_address[1]
        peer = await UdpPeer.open()
        await arrivals_stamped()  # else they could be read as fresh (see there)
        srv.udp.pause_reading()  # the server falls behind: datagrams wait in the kernel
        for i in range(3):
            peer.send(_req("REGISTER", "sip:example.com", peer.port, branch=f"z9hG4bKq{i}",
                           call_id=f"queued-{i}", extra="Contact: <sip:a@10.0.0.1>"), port)
        await asyncio.sleep(0.4)
        srv.udp.resume_reading()
        # The reader is behind: answering costs a parse and a send, so late new requests are
        # dropped unanswered and counted (signaling/overload.py); the clients retransmit.
        assert await peer.silent(0.5)
        assert srv.core.overload.c_dropped.get("receive_delay", "REGISTER") == 3
        assert len(srv.core.table) == 0  # shed before any transaction was created
        fresh = _req("REGISTER", "sip:example.com", peer.port, branch="z9hG4bKfresh",
                     call_id="fresh", extra="Contact: <sip:a@10.0.0.1>")
        peer.send(fresh, port)
        ok = await peer.final()
        assert isinstance(ok, Response) and ok.status == 200
        peer.close()


async def test_peers_are_reused_per_address_and_the_cache_stays_bounded() -> None:
    from protocols.sip.message import Response
    from tests.signaling.test_sipcore import _req

    async with running_server() as srv:
        assert srv.udp is not None and srv.udp_address is not None
        port = srv.udp_address[1]
        srv.udp.peer_cache = 2
        peers = [await UdpPeer.open() for _ in range(3)]
        for round_ in range(2):
            for i, peer in enumerate(peers):
                peer.send(_req("OPTIONS", f"sip:127.0.0.1:{port}", peer.port,
                               branch=f"z9hG4bKp{round_}{i}", call_id=f"peer-{i}"), port)
                # Every answer goes back to the address its request came from (§18.2.2).
                answer = await peer.final()
                assert isinstance(answer, Response) and answer.call_id == f"peer-{i}"
                assert len(srv.udp._readers[0][2]) <= 2
        cached = next(iter(srv.udp._readers[0][2].values()))
        assert cached.transport == "udp" and cached.host == "127.0.0.1"
        assert cached.port in {p.port for p in peers}
        for peer in peers:
            peer.close()


async def test_responses_and_in_dialog_requests_use_the_private_port_never_the_stalled_one(
        ) -> None:
    """With --sip-udp-private our Via and Record-Route name the private port, so a call's
    responses and in-dialog requests arrive there and complete while the listening socket is
    not read at all and its kernel queue overflows; the kernel's drops are counted."""
    import asyncio

    from protocols.sip.message import SipURI
    from tests.peers.sipua import UdpUA, invited

    async with running_server(sip_udp_private="127.0.0.1:0") as srv:
        assert srv.udp is not None and srv.udp.slot_sock is not None
        public = srv.udp.address[1]
        private = srv.udp.slot_sock.getsockname()[1]
        assert private != public
        caller = await UdpUA("alice", "127.0.0.1", public).start()
        callee = await UdpUA("bob", "127.0.0.1", public).start()
        flooder = await UdpPeer.open()
        try:
            invite, got = await invited(caller, callee)
            assert got.vias[0].port == private  # §18.2.2: responses go to the Via's port
            rr = got.record_routes[0].uri
            assert isinstance(rr, SipURI) and rr.port == private  # in-dialog requests come here
            # The listening socket is no longer read and its queue overflows (a storm).
            loop = asyncio.get_running_loop()
            fd = srv.udp.sock.fileno()
            loop.remove_reader(fd)
            srv.udp._reading.discard(fd)
            srv.udp.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            for i in range(300):
                flooder.send(b"OPTIONS sip:x SIP/2.0\r\nCall-ID: storm-%d\r\n\r\n" % i, public)
            callee.server_port = private  # a UA answers to the top Via (§18.2.2)
            await callee.send(callee.reply(got, 180, tag="c1"))
            await caller.response(180)
            await callee.send(callee.reply(got, 200, tag="c1", body=b"v=0\r\n"))
            ok = await caller.response(200)
            leg = caller.uac_leg(invite, ok)
            route = leg.routes[0].uri
            assert isinstance(route, SipURI) and route.port == private
            caller.server_port = private  # the first Route (§12.2.1.1, loose routing)
            await caller.send(caller.in_dialog(leg, "ACK", cseq=1))
            await callee.request("ACK")
            await caller.send(caller.in_dialog(leg, "BYE"))
            bye = await callee.request("BYE")
            await callee.send(callee.reply(bye, 200))
            await caller.response(200, "BYE")
            # Read again.  A datagram carries the drop count as of its own arrival, so the
            # count shows with the first one that arrives after the queue was drained.
            srv.udp.resume_reading()
            dropped = srv.core.overload.c_dropped
            for _ in range(100):
                if dropped.get("kernel", "unknown"):
                    break
                flooder.send(b"\r\n\r\n", public)  # a keepalive: itself a counted drop
                await asyncio.sleep(0.05)
            assert dropped.get("kernel", "unknown") > 0
            assert dropped.get("kernel_private", "unknown") == 0
        finally:
            await caller.close()
            await callee.close()
            flooder.close()


async def test_without_a_private_port_the_listening_queue_is_left_alone() -> None:
    async with running_server() as srv:
        assert srv.udp is not None
        assert srv.udp.slot_sock is None and srv.udp.queue is None



async def test_past_the_admission_limit_the_listening_socket_is_read_at_its_pace() -> None:
    """With a private port and a limit set by measured capacity (under its cap), the listening
    socket is read at most ``overload_read_share`` x the limit a second: a burst far beyond that
    stays in (or falls off) the kernel queue unread."""
    import asyncio
    import time

    from tests.signaling.test_overload import _register

    async with running_server(sip_udp_private="127.0.0.1:0", overload_read_share=2.0) as srv:
        assert srv.udp is not None and srv.udp.pace is not None
        port = srv.udp.address[1]
        overload = srv.core.overload
        control = overload.control
        control.rate = 50.0  # as if measured: capacity for 50 new requests a second
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            for i in range(3000):
                s.sendto(_register(port, "127.0.0.1", s.getsockname()[1], i), ("127.0.0.1", port))
            # The limit moves (protocols/sip/overload.py: here it rises, nothing waits): the
            # reads are bounded by the pace over the limit's own course, each slice at the
            # highest limit seen in it, plus the bucket's first burst.
            pace = srv.udp.pace
            bound = max(pace.min_burst, 2.0 * control.rate * pace.burst_time)
            before, t = control.rate, time.monotonic()
            for _ in range(50):
                await asyncio.sleep(0.01)
                top, now = max(before, control.rate), time.monotonic()
                bound += 2.0 * top * (now - t)
                before, t = control.rate, now
                if control.rate >= control.cfg.max_rate:
                    break  # at the cap everything is read (below)
            read = _screened(overload)
            assert 0 < read <= bound, (read, bound)
            assert read < 3000  # some of the burst was never read: the kernel's to drop
    # (At the configured cap everything is read: test_overload's fairness test, private port.)


@pytest.mark.parametrize("drain", ["on", "off"])
async def test_past_the_pace_the_excess_is_refused_with_503_by_the_drain(drain: str) -> None:
    """With the excess drain (the default, ``_udpexcess``), a burst far beyond the pace is
    read and answered 503 with the drain's tag, counted, and the refusals reach admission
    control; off, it is left to the kernel queue, unanswered, as before."""
    import asyncio

    from protocols.sip.message import Response
    from protocols.sip.parser import parse_message
    from signaling.transports.udp import excess_drain
    from tests.signaling.test_overload import _register

    assert excess_drain is not None, "the C extension is not built"  # scripts/test builds it
    async with running_server(sip_udp_private="127.0.0.1:0", overload_read_share=1.0,
                              overload_drain=drain) as srv:
        assert srv.udp is not None
        port = srv.udp.address[1]
        overload = srv.core.overload
        overload.control.rate = 50.0  # as if measured: capacity for 50 new requests a second
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            s.setblocking(False)
            for i in range(500):
                s.sendto(_register(port, "127.0.0.1", s.getsockname()[1], i), ("127.0.0.1", port))
            await asyncio.sleep(0.5)
            refusals = []
            while True:
                try:
                    msg = parse_message(s.recv(65_535))
                except BlockingIOError:
                    break
                if isinstance(msg, Response) and msg.status == 503:
                    refusals.append(msg)
        drained = overload.c_rejected.get("excess", "REGISTER")
        if drain == "off":
            assert drained == 0 and not any(m.to.tag and m.to.tag.startswith("x503")
                                            for m in refusals)
            return
        # Most of the burst refused, as its 503 budget allows (``overload_reject_share`` per
        # request the server can take) and dropped beyond it, all counted: the pace let ~8
        # through (its first burst at 50/s).
        dropped = overload.c_dropped.get("excess", "new")
        assert drained > 0 and drained + dropped >= 400
        assert sum(1 for m in refusals if m.to.tag and m.to.tag.startswith("x503")) == drained
        assert all(m.header("Retry-After") for m in refusals)
        assert overload.control.refused_share > 0 or overload.control.revisions == 0


async def test_past_the_pace_in_dialog_requests_on_the_listening_port_all_reach_the_core(
        ) -> None:
    """Issue 13: work already admitted is never shed.  A caller that sends its ACK and BYE to
    the address it called (SIPp does, ignoring our Record-Route's port) puts them on the
    listening socket, behind a storm's new requests: past the pace, the drain refuses the new
    requests and lets every in-dialog request through to the core (before, they were dropped
    with the excess, and each call's 200 and BYE came back retransmitted)."""
    import asyncio

    async with running_server(sip_udp_private="127.0.0.1:0", overload_read_share=1.0) as srv:
        assert srv.udp is not None
        port = srv.udp.address[1]
        core = srv.core
        core.overload.control.rate = 50.0  # as if measured: the pace binds at once
        with _storm_then_dialog_requests(port, 300):
            await asyncio.sleep(0.5)
        overload = core.overload
        assert overload.c_rejected.get("excess", "REGISTER") > 0  # the pace bound
        assert core.c_req_in.get("ACK", "udp") == 40
        assert core.c_req_in.get("BYE", "udp") == 40
        assert overload.c_dropped.get("excess", "other") == 0


async def test_past_the_pace_without_the_drain_in_dialog_requests_still_all_reach_the_core(
        ) -> None:
    """As above with ``--overload-drain off`` (the Python reader): the ACKs and BYEs a caller
    sends to the listening port behind a storm's new requests all reach the core, beyond the
    pace, while the new requests past it are dropped unanswered.  Before, the reader left
    the queue to the kernel once the pace was spent, and the in-dialog requests waited behind
    the storm at the pace's rate, or fell off the short queue with it."""
    import asyncio
    import dataclasses

    async with running_server(sip_udp_private="127.0.0.1:0", overload_read_share=1.0,
                              overload_drain="off") as srv:
        assert srv.udp is not None
        port = srv.udp.address[1]
        core = srv.core
        control = core.overload.control
        control.rate = 50.0  # as if measured: the pace binds at once
        # ... and stays (one revision at most): nothing waits here, and each revision would
        # double the limit until the pace no longer binds.
        control.cfg = dataclasses.replace(control.cfg, interval=3600.0)
        with _storm_then_dialog_requests(port, 600):
            # Bounded generously (a busy machine): what tells the old way from the new is not
            # how soon they arrive but what was read before them (below).
            for _ in range(200):
                if core.c_req_in.get("BYE", "udp") >= 40:
                    break
                await asyncio.sleep(0.05)
            registers_before = core.c_req_in.get("REGISTER", "udp")
        overload = core.overload
        assert core.c_req_in.get("ACK", "udp") == 40
        assert core.c_req_in.get("BYE", "udp") == 40
        assert overload.c_dropped.get("paced", "unknown") > 0  # the pace bound
        # Not behind the storm: they did not wait for the pace to read the 600 REGISTERs
        # queued in front of them (the old way read every one first, at the pace's rate).
        assert registers_before < 600
        assert _kernel_dropped(overload) == 0


@contextlib.contextmanager
def _storm_then_dialog_requests(port: int, registers: int) -> Iterator[None]:
    """``registers`` new REGISTERs to ``port``, then 40 ACKs and 40 BYEs of dialogs (To tags)
    behind them, as a caller that sends its in-dialog requests to the address it called does
    in a storm (SIPp); the socket stays open while the body of the ``with`` runs."""
    from tests.signaling.test_overload import _register

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        src = s.getsockname()[1]
        for i in range(registers):
            s.sendto(_register(port, "127.0.0.1", src, i), ("127.0.0.1", port))
        for i in range(40):
            for method in ("ACK", "BYE"):
                s.sendto((f"{method} sip:callee@127.0.0.1:9 SIP/2.0\r\n"
                          f"Via: SIP/2.0/UDP 127.0.0.1:{src};branch=z9hG4bKd{method}{i}\r\n"
                          f"Max-Forwards: 70\r\nFrom: <sip:a@127.0.0.1>;tag=a{i}\r\n"
                          f"To: <sip:callee@127.0.0.1>;tag=b{i}\r\nCall-ID: dialog-{i}\r\n"
                          f"CSeq: 2 {method}\r\nContent-Length: 0\r\n\r\n").encode(),
                         ("127.0.0.1", port))
        yield


def _kernel_dropped(overload: Overload) -> float:
    return sum(v for k, v in overload.c_dropped.values.items() if k[0].startswith("kernel"))


def _excess(overload: Overload) -> float:
    """What the excess drain refused or dropped in C (``_udpexcess.c``), never read in Python."""
    return sum(v for counter in (overload.c_rejected, overload.c_dropped)
               for k, v in counter.values.items() if k[0].startswith(("excess", "ack_of_503")))


def _screened(overload: Overload) -> float:
    """New requests read and decided on in Python (admitted, refused or dropped after the
    read)."""
    return (overload.c_admitted.total() + overload.c_rejected.total()
            + overload.c_dropped.total() - _kernel_dropped(overload) - _excess(overload))


async def test_a_standing_queue_on_the_listening_socket_closes_an_open_limit() -> None:
    """The limit open (no overload seen yet), everything on the listening socket is read in
    Python: a queue whose every datagram waited past the target is the first sign of a storm,
    before the kernel's queue overflows (4 MB held 270 ms of a 2x REGISTER storm, and what was
    read then was late, dropped and retransmitted)."""
    import asyncio

    from tests.signaling.test_overload import _register

    async with running_server(sip_udp_private="127.0.0.1:0") as srv:
        assert srv.udp is not None and srv.udp.queue is not None
        port = srv.udp.address[1]
        control = srv.core.overload.control
        assert control.rate >= control.cfg.max_rate  # open
        loop = asyncio.get_running_loop()
        fd = srv.udp.sock.fileno()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            for round_ in range(4):  # the reader 150 ms behind, round after round
                loop.remove_reader(fd)
                srv.udp._reading.discard(fd)
                for i in range(20):  # far under any buffer: nothing overflows
                    s.sendto(_register(port, "127.0.0.1", s.getsockname()[1], 20 * round_ + i),
                             ("127.0.0.1", port))
                await asyncio.sleep(0.15)
                srv.udp.resume_reading()
                await asyncio.sleep(0.01)
        assert srv.core.overload.c_dropped.get("kernel", "unknown") == 0
        assert control.rate < control.cfg.max_rate


async def test_a_burst_of_the_kernel_sheds_band_reads_as_no_new_storm() -> None:
    """After a storm the filter's share came down: the drain refuses the band it dropped
    (``KernelShed.band``), and the retransmissions of those transactions come in a burst.
    That burst is the filter's release answered as intended, not a new storm: its 503s are
    no REGISTERs refused, its reads no arrivals (the filter stays off) and its lag no late
    reader (no cut of the limit).  Read as a storm, it put the share straight back up and cut
    the limit, for 45 s after the storm (bench_recovery, REGISTERs).  Ticks counted, not
    seconds: a slow machine runs them later."""
    import asyncio

    from signaling.transports.udpshed import threshold, transaction_hash
    from tests.signaling.test_overload import _register

    async with running_server(sip_udp_private="127.0.0.1:0", overload_kernel_shed="on") as srv:
        udp, shed = await owned_shed(srv)
        control = srv.core.overload.control
        loop = asyncio.get_running_loop()
        waits: list[float] = []
        reported = control.reader_waited

        def reader_waited(wait: float) -> None:
            waits.append(wait)
            reported(wait)

        control.reader_waited = reader_waited  # type: ignore[method-assign]
        shed._lowered(0.9, loop.time())  # as the filter came off from 0.9 after a storm
        control.rate = 2_000.0  # the limit as the storm left it, under its cap
        port, fd = udp.address[1], udp.sock.fileno()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            src = s.getsockname()[1]
            band: list[bytes] = []
            outside: list[bytes] = []
            for i in range(4000):
                data = _register(port, "127.0.0.1", src, i)
                (band if transaction_hash(data, shed.salt) < threshold(0.9)
                 else outside).append(data)
            for data in outside[:40]:  # REGISTERs served, over a few ticks
                s.sendto(data, ("127.0.0.1", port))
                await asyncio.sleep(0.01)
            loop.remove_reader(fd)  # the reader 0.3 s behind the band's burst
            udp._reading.discard(fd)
            for data in band[:1000]:
                s.sendto(data, ("127.0.0.1", port))
            await asyncio.sleep(0.3)
            udp.resume_reading()
            ticks, ticked = 0, udp._ticked_at
            while ticks < 15:
                await asyncio.sleep(0.02)
                if udp._ticked_at != ticked:
                    ticks, ticked = ticks + 1, udp._ticked_at
                assert shed.share == 0.0 and srv.core.overload.kernel_shed == 0.0
        overload = srv.core.overload
        assert overload.c_rejected.get("shed_band", "REGISTER") >= 500  # the burst, refused
        assert overload.capacity_refusals() == (0.0, 0.0)
        assert waits and max(waits) < 0.3, max(waits, default=0.0)


async def test_the_bands_datagrams_the_full_queue_dropped_keep_the_band() -> None:
    """While the drain refuses the kernel shed's band (the filter off), what the listening
    queue drops for want of room is the band's retransmissions lost unanswered, like those
    the drain could not answer (its 503 budget spent): they come back, so the band is kept
    (``KernelShed.refused_in_band``).  Else it ended while they still came, and their 503s
    as the pace's excess put the filter back on (bench_recovery, REGISTERs)."""
    import asyncio

    from signaling.transports.udpshed import threshold, transaction_hash
    from tests.signaling.test_overload import _register

    async with running_server(sip_udp_private="127.0.0.1:0", overload_kernel_shed="on") as srv:
        udp, shed = await owned_shed(srv)
        loop = asyncio.get_running_loop()
        missed: list[int] = []
        refused_in_band = shed.refused_in_band

        def spy(answered: int, dropped: int) -> None:
            missed.append(dropped)
            refused_in_band(answered, dropped)

        shed.refused_in_band = spy  # type: ignore[method-assign]
        shed._lowered(0.9, loop.time())  # as the filter came off from 0.9 after a storm
        srv.core.overload.control.rate = 2_000.0
        port, fd = udp.address[1], udp.sock.fileno()
        loop.remove_reader(fd)  # the reader behind, the queue short: it overflows
        udp._reading.discard(fd)
        udp.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            src = s.getsockname()[1]
            band = [d for d in (_register(port, "127.0.0.1", src, i) for i in range(2000))
                    if transaction_hash(d, shed.salt) < threshold(0.9)]
            for data in band[:300]:
                s.sendto(data, ("127.0.0.1", port))
            await asyncio.sleep(0.2)
            udp.resume_reading()
            await asyncio.sleep(0.2)
            # the drop count comes with the next datagram queued after the drops
            s.sendto(band[300], ("127.0.0.1", port))
            for _ in range(100):
                if srv.core.overload.c_dropped.get("kernel", "unknown"):
                    break
                await asyncio.sleep(0.05)
        overflowed = srv.core.overload.c_dropped.get("kernel", "unknown")
        assert overflowed > 0
        assert sum(missed) == overflowed and shed.band == threshold(0.9)
