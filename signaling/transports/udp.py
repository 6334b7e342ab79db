"""SIP over UDP (RFC 3261 §18): one message per datagram, read straight off the socket.

Why not the event loop's datagram endpoint: overload control needs to know how long a datagram
waited in the kernel.  When the server is short of CPU the socket's receive buffer becomes the
real queue (megabytes, hundreds of milliseconds); the bounded worker queues never fill and no
503 would ever be sent while every client times out and retransmits.  The kernel stamps each
datagram on arrival (SO_TIMESTAMPNS); a new request that waited longer than
``max_receive_delay`` is answered 503 + Retry-After at once (RFC 3261 §21.5.4), which costs a
parse instead of a full transaction, so goodput holds up past capacity instead of collapsing.

The socket buffers are sized at start: a burst of retransmissions or a registration storm
arrives faster than one loop iteration drains it, and the kernel default (~200 KB) drops
datagrams before any counter can see them.  The size actually granted (capped by
net.core.rmem_max) is logged, because the operator must raise the sysctl if it is short.

The server's own port (``--sip-udp-private``, or a worker's slot port): a second socket whose
port goes into our Via and Record-Route and which sends our requests, so that responses to them
and every in-dialog request arrive there, apart from new requests.  It is read first, always,
with the full buffer; the listening socket's queue is then kept short under overload
(``signaling/transports/udpqueue.py``): the kernel drops the excess of a storm, which costs the
server nothing, instead of the server reading it late; and past the admission limit it is read
no faster than a few times that limit (``ReadPace``).  What arrives beyond the pace is read and
refused in C (``_udpexcess.c``: recvmmsg, a 503 written from the request's bytes, sendmmsg; ~4 µs
a refusal against ~25 µs by the full path), since what the kernel drops comes back as
retransmissions, read later and served late; without the C extension, or with
``--overload-drain off``, it is read and dropped in Python, unanswered, and admitted work
(responses, in-dialog requests, CANCEL) let through beyond the pace as the drain does
(``_read_paced``; the queue is kept short only then: with the drain it keeps its full size,
see ``UdpTransport.__init__``).  The ordinary read
is in C too when the extension is built (``_udpexcess.receive``: one recvmmsg per wakeup, where
a Python loop of recvmsg pays a raised BlockingIOError at every wakeup to learn the queue is
empty).  Both sockets count what the kernel dropped (SO_RXQ_OVFL) in
``sip_overload_dropped{reason="kernel"|"kernel_private"}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

from protocols import stun
from signaling.config import HostPort
from signaling.overload import admitted_work
from signaling.sipcore import SipCore
from signaling.transports.base import Peer, TransportInfo
from signaling.transports.udpebpf import EbpfShed
from signaling.transports.udpqueue import FLOOR, QueueStats, ReadPace, ReceiveQueue
from signaling.transports.udpshed import KernelShed
from signaling.worker import inherited_socket

#: ``_udpexcess.drain`` (see ``_udpexcess.c``); None when built without a C compiler: the
#: excess is then left to the kernel's tail drop.
excess_drain: Callable[[int, int, int, int, int, int, bytes, list[Any], float, int, int, bytes],
                       tuple[int, int, float, int | None, int, int, int, int, int, int, int,
                             int, int, int, int]] | None
#: ``_udpexcess.receive``: the ordinary read in C (recvmmsg); None without the C extension,
#: and the socket is then read with ``recvmsg`` in Python, as before.
_receive: Callable[[int, int, list[Any]],
                   tuple[int, int, float, float, int | None, int]] | None
try:
    from signaling.transports._udpexcess import drain as excess_drain
    from signaling.transports._udpexcess import receive as _receive
    from signaling.transports._udpexcess import set_key as _set_key
except ImportError:
    excess_drain = _receive = None

__all__ = ["EXCESS_MOST", "EXCESS_PASS_MOST", "EXCESS_WAIT", "PEER_CACHE", "READ_BATCH",
           "SLOT_TAG", "TICK", "UdpTransport", "start_udp"]

log = logging.getLogger(__name__)

#: Datagrams read per readiness callback.  Bounds the time one wakeup holds the loop (64 x
#: ~70 µs = ~5 ms), so timers and workers run between batches even under a flood.
READ_BATCH = 64
#: Largest datagram: 65,535 octets minus the UDP/IP headers fit in this.
_MAX_DATAGRAM = 65_535
#: Peers remembered by source address.  Phones and keepalive clients send from the same
#: address again and again; reusing the (immutable) Peer saves building one per datagram.
#: Cleared when full, so a flood from many addresses costs a rebuild, never unbounded memory.
PEER_CACHE = 4096
#: ``Peer.conn_id`` of a request that came in on a worker's slot socket, so that its
#: responses leave from that socket (see ``UdpTransport``).
SLOT_TAG = "slot"
#: Seconds between revisions of the listening queue (and counts of the kernel's drops).
TICK = 0.1
#: Seconds between drains of the listening socket while the read pace binds: what arrives in
#: between is read and refused in one batch (recvmmsg/sendmmsg), not one wakeup per datagram.
#: Short against ``max_receive_delay`` (what is let through has waited at most this long).
EXCESS_WAIT = 0.002
#: Datagrams one drain reads at most: bounds the time it holds the loop (~3 ms at ~3 µs each).
EXCESS_MOST = 1024
#: The most one drain lets through while it reads the queue to the end (see ``_drain``):
#: each costs a parse and a transaction (~25 µs), so this bounds that part of one call to a
#: few ms; the pace's burst is under it for admission limits up to ~10,000/s.
EXCESS_PASS_MOST = 4 * READ_BATCH
#: Seconds of 503s the excess drain may answer in one burst, at its rate: as long as the loop
#: may fall behind (``max_receive_delay``), so a late drain still answers what it finds.
_ANSWER_BURST = 0.25
#: The least burst of 503s, and the first: a storm's first drain answers at least this many.
_ANSWER_LEAST = 64.0
_SOL_SOCKET = socket.SOL_SOCKET
_SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
#: Linux: each datagram read carries the socket's cumulative count of datagrams the kernel
#: dropped because the receive buffer was full.
_SO_RXQ_OVFL = getattr(socket, "SO_RXQ_OVFL", 40)
_CMSG_SPACE = socket.CMSG_SPACE(16) + socket.CMSG_SPACE(4)
_TIMESPEC = struct.Struct("@qq")
_U32 = struct.Struct("@I")
_STUN_COOKIE = stun.MAGIC_COOKIE.to_bytes(4, "big")


class UdpTransport:
    """Reads datagrams with their kernel arrival time and feeds ``SipCore.receive``.

    A worker of a multi-process server (``signaling.supervisor``) has a second socket beside
    the shared listening one: ``slot_sock``, its slot's own port, kept by the supervisor across
    the slot's workers.  It is the port of our Via and Record-Route and the source of every
    request the worker sends, so the responses to its requests (RFC 3581 §4: to the source port)
    and the in-dialog requests of its dialogs come to this worker, not to whichever worker the
    kernel's hash picks; a worker that takes the slot over (restart, reload) gets them, and
    loads the dialog from the shared registry (``signaling.handoff`` passes the responses of
    its predecessor's last transactions on).  A response leaves from the socket its request
    came in on (RFC 3581 §4: NATs let only that through), which a request that came in on
    ``slot_sock`` marks in its ``Peer``.

    A single-process server gets the same from ``--sip-udp-private``: ``slot_sock`` is then its
    own private port.  With either, the listening socket's receive queue is kept short under
    overload (``ReceiveQueue``) unless its excess is drained, since what must never be lost
    does not come in on it.
    """

    def __init__(self, core: SipCore, sock: socket.socket, advertise: str, *,
                 slot_sock: socket.socket | None = None) -> None:
        self.core = core
        self.sock = sock
        self.slot_sock = slot_sock
        self._loop = asyncio.get_running_loop()
        #: Bound of each socket's peer cache (``PEER_CACHE``; a test lowers it).
        self.peer_cache = PEER_CACHE
        sockname = sock.getsockname()
        self.address: tuple[str, int] = (str(sockname[0]), int(sockname[1]))
        own = slot_sock.getsockname()[1] if slot_sock is not None else None
        self.info = TransportInfo("udp", reliable=False, via_token="UDP", host=advertise,
                                  port=self.address[1], uri_transport=None, via_port=own,
                                  record_route_port=own)
        #: (socket, Peer.conn_id of what it receives, its peer cache, what the reader saw),
        #: the private (slot) socket first: it is read first when both are ready.
        self._readers: list[_Reader] = [(sock, None, {}, QueueStats())]
        if slot_sock is not None:
            self._readers.insert(0, (slot_sock, SLOT_TAG, {}, QueueStats()))
        self._reading: set[int] = set()
        self._kernel_seen = [0] * len(self._readers)
        #: The listening socket's queue control; only with a private port (see the class
        #: docstring), else responses would be among what the kernel drops.
        self.queue: ReceiveQueue | None = None
        if slot_sock is not None:
            drained = (excess_drain is not None and core.cfg.overload_read_share > 0
                       and core.cfg.overload_drain == "on")
            # With the excess drained the queue keeps its full size: the drain reads it all
            # and refuses what waited too long for a few µs each, where a datagram the kernel
            # drops comes back retransmitted, to be served after its client's T1.  Cut to
            # 4 MB (the least it was cut to), the queue filled in the ~0.4 s a storm takes to
            # close an open limit, while everything is read in Python (bench_overload, SIPp
            # REGISTERs at 12,000/s: 563-1,571 kernel drops a step, P99 528-592 ms).
            buffer = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
            self.queue = ReceiveQueue(core.cfg.overload_target, buffer,
                                      floor=buffer if drained else FLOOR,
                                      now=self._loop.time())
        #: The listening socket read no faster than the server can use (``ReadPace``); only
        #: with a private port, as the short queue.
        self.pace: ReadPace | None = None
        if slot_sock is not None and core.cfg.overload_read_share > 0:
            self.pace = ReadPace(core.cfg.overload_read_share, now=self._loop.time())
        self._paced: asyncio.TimerHandle | None = None
        #: Beyond the pace, the listening socket's excess is read and refused in C
        #: (``_udpexcess``: new requests get a stateless 503, budgeted at
        #: ``overload_reject_share`` per request the server can serve), rather than left to
        #: the kernel's tail drop, whose losses come back as retransmissions.
        self._excess = (excess_drain if self.pace is not None and core.cfg.overload_drain == "on"
                        else None)
        #: Beyond the drain, a storm's REGISTERs shed in the kernel (``udpshed``): only with
        #: the drain, whose pace and limit it follows.
        # ``ebpf``: the filter with memory (``udpebpf``), the classic one if it cannot load.
        shed = core.cfg.overload_kernel_shed
        self.shed = (None if self._excess is None or shed == "off"
                     else EbpfShed(sock) if shed == "ebpf" else KernelShed(sock))
        #: Stopped by ``pause_reading`` (a worker leaving, or a reload's new worker waiting
        #: for its predecessor): the listening socket's filter is then not this process's to
        #: revise (``udpshed``: one owner per socket).
        self._paused = False
        #: Whether a filter was on during the last tick: the drops it reports are its own,
        #: not a queue that overflowed.
        self._shed_was_on = False
        self._answer_tokens = _ANSWER_LEAST
        self._answer_at = self._loop.time()
        self._answer_extra = "".join(f"\r\n{k}: {v}" for k, v in core.answer_headers).encode(
            "utf-8", "surrogateescape")
        self._ticked_at = self._loop.time()
        self._admitted_seen = 0.0
        self._rejected_seen = (0.0, 0.0)
        self._tick = self._loop.call_later(TICK, self._revise)

    def resume_reading(self) -> None:
        self._paused = False
        for sock, tag, peers, stats in self._readers:
            if sock.fileno() not in self._reading:
                reader = self._readable
                if self.pace is not None and sock is self.sock:
                    reader = self._readable_paced
                self._loop.add_reader(sock.fileno(), reader, sock, tag, peers, stats)
                self._reading.add(sock.fileno())

    def pause_reading(self) -> None:
        self._paused = True
        if self.shed is not None:
            # The slot's next worker reads the socket now: the filter is its to set.
            self.shed.release()
            self.core.overload.kernel_shed = 0.0
        if self._paced is not None:
            self._paced.cancel()
            self._paced = None
        for sock, _, _, _ in self._readers:
            if sock.fileno() in self._reading:
                self._loop.remove_reader(sock.fileno())
                self._reading.discard(sock.fileno())

    def _readable_paced(self, sock: socket.socket, tag: str | None,
                        peers: dict[tuple[Any, ...], Peer], stats: QueueStats) -> None:
        """The listening socket under ``ReadPace``: read in batches (``_drain`` in C, else
        ``_read_paced``), admitted work whatever the pace, new requests as the pace allows;
        with the pace spent, it is not watched for ``EXCESS_WAIT``."""
        pace = self.pace
        assert pace is not None
        control = self.core.overload.control
        # After a storm the kernel shed's dropped transactions may still be retransmitting:
        # the drain refuses those (``udpshed.KernelShed.band``), whatever the limit.
        band = self.shed is not None and self.shed.band and self._excess is not None
        if control.rate >= control.cfg.max_rate and not band:
            # The configured cap binds, not the CPU: the server has the time to read and
            # screen all (per source, as fairness needs), so it does.
            self._read(sock, tag, peers, stats, READ_BATCH)
            return
        # The limit, not the capacity (``control.capacity``, the highest rate recently
        # served): reading at twice that when the limit fell answered 2,400 503s/s at 10x,
        # a quarter of the CPU (bench_overload, calls at 10x: 48% of capacity at load 7,
        # against 72% with this pace at load 4.6; noisy, but the 503s' cost is plain).
        limit = control.rate
        allowed = pace.allowance(self._loop.time(), limit)
        if self._excess is not None:
            self._drain(sock, peers, stats, allowed)
            return
        self._read_paced(sock, peers, stats, allowed)

    def _read_paced(self, sock: socket.socket, peers: dict[tuple[Any, ...], Peer],
                    stats: QueueStats, allowed: int) -> None:
        """The pace without the drain (``--overload-drain off``, or no C extension): a batch
        read; admitted work (``admitted_work``: responses, in-dialog requests, CANCEL) is
        received whatever the pace and not charged to it, the rest while the pace allows, and
        what is beyond it dropped, counted (``reason="paced"``), as the kernel's tail drop
        would have (its client retransmits it, RFC 3261 §17.1.1.2, §17.1.2.2).

        Why read past the pace at all (issue 13: work already admitted comes first and is
        never shed): a caller that ignores our Record-Route's port sends its ACK and BYE here
        (SIPp does).  Left in the kernel, they waited behind the new requests for the pace and
        fell off the short queue with them: the callee retransmitted its 200, the caller its
        BYE, each read and forwarded again (``_udpexcess.c`` has the figures).  The cost:
        while the pace binds the excess is read (one recvmmsg a batch with the C reader, a
        recvmsg each without) and screened by its first bytes and one search, where the
        kernel dropped it for nothing.  With the pace spent, the next read is ``EXCESS_WAIT``
        later, so that what arrives meanwhile is read in one batch, as the drain does."""
        got = self._collect(sock, stats, READ_BATCH)
        receive = self.core.receive
        paced = dropped = 0
        for data, addr, waited in got:
            if data < b"@" and data[4:8] == _STUN_COOKIE:  # as in ``_read``
                self._stun(sock, data, addr)
                continue
            if not admitted_work(data):
                if paced >= allowed:
                    dropped += 1
                    continue
                paced += 1
            peer = peers.get(addr)
            if peer is None:
                peer = self._new_peer(peers, addr, None)
            receive(data, peer, waited)
        assert self.pace is not None
        self.pace.took(paced)
        if dropped:
            self.core.overload.c_dropped.inc("paced", "unknown", amount=dropped)
        if paced >= allowed and len(got) < READ_BATCH and sock.fileno() in self._reading:
            # The pace is spent and the queue read to its end (else the reader stays).
            self._loop.remove_reader(sock.fileno())
            self._reading.discard(sock.fileno())
            self._paced = self._loop.call_later(EXCESS_WAIT, self._unpace)

    def _drain(self, sock: socket.socket, peers: dict[tuple[Any, ...], Peer],
               stats: QueueStats, allowed: int) -> None:
        """The listening socket read to the end in C: ``allowed`` datagrams (the pace) come
        back to be received as ``_read`` would, the excess is refused or dropped there
        (``_udpexcess.c``) and counted.  With the pace spent, the next drain is
        ``EXCESS_WAIT`` later, so that what arrives meanwhile is read in one batch."""
        excess = self._excess
        assert excess is not None and self.pace is not None
        core = self.core
        now = self._loop.time()
        rate = core.cfg.overload_reject_share * core.overload.control.capacity
        tokens = self._answer_tokens + (now - self._answer_at) * rate
        self._answer_tokens = min(tokens, max(_ANSWER_LEAST, rate * _ANSWER_BURST))
        self._answer_at = now
        low, high = core.overload.retry_range()
        passed: list[tuple[bytes, Any, float]] = []
        # The queue is read to the end while the pace allows up to ``EXCESS_PASS_MOST``:
        # what the pace allows is let through, the rest refused.  Beyond that the pace is
        # not what binds (the limit is far above the demand), and a batch is read and the
        # rest left queued for the next call, none of it refused, so that one loop iteration
        # holds the CPU a few ms (at a quarter-core quota 10 ms of CPU is 40 ms of wall time,
        # while nothing else is read).  The bound was one batch, which the pace's burst
        # (20 ms of 1.2 times a limit over ~2,700/s) exceeds: the drain then read 64 datagrams
        # a call, half of them the BYEs SIPp sends after each 503, which take no pass, so the
        # pace stayed over a batch and the queue was never read through: it overflowed
        # (1,453 kernel drops in one 0.1 s tick, bench_overload SIPp REGISTERs at 12,000/s),
        # and what the client then retransmitted was answered after 500 ms.
        passes, most = ((allowed, EXCESS_MOST) if allowed <= EXCESS_PASS_MOST
                        else (READ_BATCH, READ_BATCH))
        # ``admitted``: of ``passed``, responses and in-dialog requests, let through whatever
        # the pace and not charged to it (issue 13: admitted work first; ``_udpexcess.c``).
        # ``band``: the REGISTERs the kernel shed dropped until its share came down, refused
        # (``KernelShed.band``; 0: none).
        shed = self.shed
        salt, band, band_from = ((shed.salt, shed.band, shed.band_from) if shed is not None
                                 else (0, 0, b""))
        (read, payload, max_wait, overflow, invite, register, other, dropped_new,
         dropped_retransmissions, dropped_of_503, dropped_other, late, admitted,
         band_answered, band_dropped) = excess(
            sock.fileno(), passes, int(self._answer_tokens), most, low, high,
            self._answer_extra, passed, core.cfg.max_receive_delay, salt, band, band_from)
        self._answer_tokens -= invite + register + other + band_answered
        if band_answered or band_dropped:
            assert shed is not None
            shed.refused_in_band(band_answered, band_dropped)
            core.overload.band(band_answered, band_dropped)
            core.c_req_in.inc("REGISTER", "udp", amount=band_answered + band_dropped)
            core.c_resp_out.inc("REGISTER", "5xx", "udp", amount=band_answered)
        stats.read += read
        stats.band += band_answered + band_dropped
        stats.payload += payload
        if max_wait > stats.max_wait:
            stats.max_wait = max_wait
        if overflow is not None:
            stats.dropped_total = overflow
        if read > len(passed):
            core.overload.excess((invite, register, other), dropped_new,
                                 dropped_retransmissions, dropped_of_503, dropped_other, late)
            for method, count in (("INVITE", invite), ("REGISTER", register), ("other", other)):
                if count:
                    core.c_req_in.inc(method, "udp", amount=count)
                    core.c_resp_out.inc(method, "5xx", "udp", amount=count)
        paced = len(passed) - admitted
        self.pace.took(paced)
        receive = core.receive
        for data, addr, waited in passed:
            if waited < stats.min_wait:
                stats.min_wait = waited
            if data < b"@" and data[4:8] == _STUN_COOKIE:
                self._stun(sock, data, addr)
                continue
            peer = peers.get(addr)
            if peer is None:
                peer = self._new_peer(peers, addr, None)
            receive(data, peer, waited)
        if paced >= allowed and read < most and sock.fileno() in self._reading:
            # The pace is spent (else the reader stays: the queue may hold more for it).
            self._loop.remove_reader(sock.fileno())
            self._reading.discard(sock.fileno())
            self._paced = self._loop.call_later(EXCESS_WAIT, self._unpace)

    def _unpace(self) -> None:
        self._paced = None
        self.resume_reading()

    def _revise(self) -> None:
        """Every ``TICK``: count the kernel's drops, resize the listening queue."""
        for i, (_, tag, _, stats) in enumerate(self._readers):
            new = (stats.dropped_total - self._kernel_seen[i]) % 2**32  # a u32 that wraps
            if new:
                self._kernel_seen[i] = stats.dropped_total
                # The socket counts its filter's drops with its overflows (one count):
                # while a filter was on, they are taken as the filter's.
                shed = tag is None and self._shed_was_on
                self.core.overload.c_dropped.inc(
                    "kernel_private" if tag == SLOT_TAG else "kernel_shed" if shed
                    else "kernel", "unknown", amount=new)
                if tag is None and self._excess is not None and not shed:
                    # The reader could not keep up with the limit open: the pace engages,
                    # the excess is then the drain's (``AdmissionControl.overflowed``).
                    self.core.overload.control.overflowed()
                    if self.shed is not None and self.shed.band:
                        # Lost unanswered as those the drain could not answer: the band's
                        # transactions retransmit into it again, so it is refused that much
                        # longer.  Else it ended ``BAND_QUIET`` after the share came down
                        # while they still came (the queue had overflowed at 15-50,000/s),
                        # their excess 503s made a storm tick and the share went back up
                        # (bench_recovery, REGISTERs, with the band kept apart).
                        self.shed.refused_in_band(0, new)
        if self.queue is not None:
            # What waits on the private port is admitted work: a standing queue there means
            # admission let in more than the server does (protocols/sip/overload.py).
            control = self.core.overload.control
            stats = self._readers[0][3]
            control.admitted_waited(stats.min_wait if stats.read else 0.0)
            sock, _, _, stats = self._readers[-1]
            if control.rate >= control.cfg.max_rate:
                # The limit open, everything is read in Python as it comes: a standing queue
                # on the listening socket (its least wait over the tick) is the first sign of
                # a storm.  Left to the overflow alone, the 4 MB queue held
                # 270 ms before it showed, and every REGISTER read then was late and dropped,
                # to come back retransmitted (bench_overload, SIPp REGISTERs at 2x).
                control.reader_waited(stats.min_wait if stats.read else 0.0)
            elif self._excess is not None and 2 * stats.band <= stats.read:
                # Drained every EXCESS_WAIT while the pace binds, the listening socket's
                # longest wait is how far the loop fell behind: the server's CPU is short, and
                # no worker queue shows it (the excess it spends on is refused, not queued).
                # Not in a tick that read mostly the kernel shed's band: that lag is the burst
                # of its released transactions' retransmissions, which the drain refuses
                # whatever the limit, so a cut cannot shorten it (bench_recovery: the limit
                # cut from 13,466 to 1,098/s in the second of 16,507 band 503s); the
                # interval then holds the limit (``AdmissionControl``: not sampled).
                control.reader_waited(stats.max_wait)
            if self.shed is not None and not self._paused:
                if not self.shed.owned:
                    self.shed.claim()  # a predecessor's filter, if any, comes off
                on = self.shed.filtering
                # Over the time since the last tick: a tick the loop ran late covers more.
                elapsed = max(self._loop.time() - self._ticked_at, TICK)
                # What was admitted, not the limit: see ``udpshed`` (the filter follows the
                # most served over a few seconds, which the limit's cuts leave as it is).
                admitted = sum(self.core.overload.c_admitted.values.values())
                served, self._admitted_seen = admitted - self._admitted_seen, admitted
                # What was read outside the band: the band's datagrams are the released
                # transactions' retransmissions, not arrivals (``KernelShed.revise``).
                self.shed.revise((stats.read - stats.band) / elapsed, served / elapsed,
                                 control.rate < control.cfg.max_rate and self._registers_refused(),
                                 control.heavy_sources, control.refused_share, self._loop.time())
                self.core.overload.kernel_shed = self.shed.share
                if isinstance(self.shed, EbpfShed):
                    self.core.overload.kernel_memory.update(self.shed.totals)
                self._shed_was_on = on or self.shed.filtering
            size = self.queue.revise(self._loop.time(), stats)
            if size is not None:
                # Linux doubles the value asked for (bookkeeping): ask for half.
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size // 2)
        for _, _, _, stats in self._readers:
            stats.reset()
        self._ticked_at = self._loop.time()
        self._tick = self._loop.call_later(TICK, self._revise)

    def _registers_refused(self) -> bool:
        """Whether new requests were refused since the last tick, mostly REGISTERs: the filter
        sheds REGISTERs only, and its estimate of what arrives counts every datagram read, so
        in a storm of INVITEs it would rise to its most and drop the few REGISTERs among them
        (a caller's callee registering) for nothing.

        Not when none were: with the limit still under its cap after a storm of INVITEs, a
        tick that refused nothing took the filter from off to 0.79, then 0.95, and it stayed
        there while the calls went on (bench_recovery, calls at 0.5x after 10x: 0.95 still 44
        s after the storm): the calls' datagrams read, divided by what the filter would let
        through, read as a REGISTER storm it held back.  Refusing nothing, the limit does not
        bind: a filter that is off stays off, one that is on is held (``held_share``) until
        it starves the server or Timer F after the storm's last excess.

        Nor the drain's 503s to the kernel shed's band (``Overload.capacity_refusals``): the
        filter's release answered as intended, which read as a new storm put it back on."""
        registers, total = self.core.overload.capacity_refusals()
        seen_registers, seen_total = self._rejected_seen
        self._rejected_seen = (registers, total)
        refused = total - seen_total
        return refused > 0 and 2 * (registers - seen_registers) >= refused

    def holds(self, conn_id: str) -> bool:
        return False  # no connections: a UDP flow is its 5-tuple (RFC 5626 §3.5.1)

    def send(self, data: bytes, peer: Peer) -> bool:
        sock = self.sock
        # A worker: requests, and responses to what came in on the slot's port, use that port
        # (see the class docstring).
        if self.slot_sock is not None and (peer.conn_id == SLOT_TAG
                                           or data[:8] != b"SIP/2.0 "):
            sock = self.slot_sock
        try:
            sock.sendto(data, (peer.host, peer.port))
        except BlockingIOError:
            # The send buffer is full: UDP may lose it anyway, the peer retransmits (§17).
            self.core.c_drop.inc("udp_send_buffer_full")
        except OSError:
            self.core.c_drop.inc("udp_send_error")
        return True  # handed to the kernel or lost as UDP may lose it: counted above

    def _readable(self, sock: socket.socket, tag: str | None,
                  peers: dict[tuple[Any, ...], Peer], stats: QueueStats) -> None:
        self._read(sock, tag, peers, stats, READ_BATCH)

    def _read(self, sock: socket.socket, tag: str | None, peers: dict[tuple[Any, ...], Peer],
              stats: QueueStats, batch: int) -> None:
        """Up to ``batch`` datagrams (each counted in ``stats.read``), received."""
        receive = self.core.receive
        for data, addr, waited in self._collect(sock, stats, batch):
            # data < b"@": the first byte is below 0x40 (or the datagram is empty), one compare
            if data < b"@" and data[4:8] == _STUN_COOKIE:
                self._stun(sock, data, addr)  # RFC 5389 §6, RFC 5626 §8: see _stun
                continue
            peer = peers.get(addr)
            if peer is None:
                peer = self._new_peer(peers, addr, tag)
            receive(data, peer, waited)

    def _collect(self, sock: socket.socket, stats: QueueStats,
                 batch: int) -> list[tuple[bytes, Any, float]]:
        """Up to ``batch`` datagrams read, with how long each waited in the kernel, counted
        in ``stats``.  With the C reader (``_udpexcess.receive``) in one recvmmsg, their waits
        computed there, and no BlockingIOError raised to learn that the queue is empty
        (callgrind, ``bench_instructions --kinds CALL``: see the commit that added it)."""
        got: list[tuple[bytes, Any, float]] = []
        if _receive is not None:
            read, payload, max_wait, min_wait, overflow, errors = _receive(
                sock.fileno(), batch, got)
            if errors:
                self.core.c_drop.inc("udp_error", amount=errors)
            if read:
                stats.read += read
                stats.payload += payload
                if max_wait > stats.max_wait:
                    stats.max_wait = max_wait
                if min_wait < stats.min_wait:
                    stats.min_wait = min_wait
                if overflow is not None:
                    stats.dropped_total = overflow
            return got
        recvmsg = sock.recvmsg
        for _ in range(batch):
            try:
                data, ancillary, _flags, addr = recvmsg(_MAX_DATAGRAM, _CMSG_SPACE)
            except BlockingIOError:
                break
            except OSError:
                # ICMP errors and the like: the datagram is lost, the socket lives on.
                self.core.c_drop.inc("udp_error")
                continue
            waited = 0.0
            for level, kind, value in ancillary:
                if level == _SOL_SOCKET:
                    if kind == _SO_TIMESTAMPNS:
                        sec, nsec = _TIMESPEC.unpack_from(value)
                        waited = time.time() - (sec + nsec * 1e-9)
                    elif kind == _SO_RXQ_OVFL:
                        stats.dropped_total = _U32.unpack_from(value)[0]
            stats.read += 1
            stats.payload += len(data)
            if waited > stats.max_wait:
                stats.max_wait = waited
            if waited < stats.min_wait:
                stats.min_wait = waited
            got.append((data, addr, waited))
        return got

    def _stun(self, sock: socket.socket, data: bytes, addr: tuple[Any, ...]) -> None:
        """RFC 5626 §8: STUN Binding requests share the SIP port as keep-alives, told apart from
        SIP by their first two bits (zero) and the magic cookie (RFC 5389 §6; a SIP method may
        start with "!" or a digit, so the first byte alone does not decide).  Each is answered
        with the source address seen (XOR-MAPPED-ADDRESS) and marks the flow alive; a STUN
        message that is not a valid Binding request is a counted drop.  Keep-alives count
        against the source's rate like SIP messages (signaling.auth.guard): a blocked or
        flooding source gets no answers."""
        guard = self.core.guard
        if guard is not None and not guard.admit(addr[0], self.core.now()):
            return
        answer = stun.answer(data, addr[0], addr[1])
        if answer is None:
            self.core.c_drop.inc("stun_invalid")
            return
        self.core.flows.seen(addr[0], addr[1])
        self.core.c_keepalive.inc()
        with contextlib.suppress(OSError):
            sock.sendto(answer, addr)

    def _new_peer(self, peers: dict[tuple[Any, ...], Peer], addr: tuple[Any, ...],
                  tag: str | None) -> Peer:
        # addr: (host, port), or (host, port, flowinfo, scope_id) for IPv6.
        if len(peers) >= self.peer_cache:
            peers.clear()
        peer = peers[addr] = Peer("udp", addr[0], addr[1], tag)
        return peer

    def close(self) -> None:
        self.pause_reading()
        self._tick.cancel()
        self.core.transports.remove(self.info.name)
        for sock, _, _, _ in self._readers:
            sock.close()


_Reader = tuple[socket.socket, str | None, dict[tuple[Any, ...], Peer], QueueStats]


if excess_drain is not None:
    # The key of the refusal tags and of the retransmission memory: per process, so a tag
    # cannot be computed from outside (not a secret that matters: a forged one only gets a
    # request for a dialog that does not exist dropped instead of refused).
    _set_key(os.urandom(16))


def _prepare(sock: socket.socket, buffer_size: int) -> tuple[int, int]:
    """Arrival stamps and kernel drop counts on every datagram read; buffers sized."""
    sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
    with contextlib.suppress(OSError):  # not Linux: no drop count, the rest works
        sock.setsockopt(socket.SOL_SOCKET, _SO_RXQ_OVFL, 1)
    return _size_buffers(sock, buffer_size)


def _size_buffers(sock: socket.socket, size: int) -> tuple[int, int]:
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        with contextlib.suppress(OSError):  # the kernel caps it at rmem_max/wmem_max anyway
            sock.setsockopt(socket.SOL_SOCKET, opt, size)
    return (sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF))


def _bound(inherited: socket.socket | None, family: int, address: HostPort,
           buffer_size: int) -> tuple[socket.socket, tuple[int, int]]:
    sock = inherited or socket.socket(family, socket.SOCK_DGRAM)
    try:
        # No SO_REUSEADDR: on a UDP socket it lets a second server bind a port another one
        # holds and silently take part of its traffic.  A taken port is an error (exit 1).
        sizes = _prepare(sock, buffer_size)
        if inherited is None:
            sock.bind(address)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock, sizes


async def start_udp(core: SipCore, listen: HostPort, buffer_size: int, advertise: str,
                    private: HostPort | None = None) -> UdpTransport:
    """The listener on ``listen``; with ``private``, the server's own port beside it (a
    supervised worker has its slot's instead: ``private`` is then not used)."""
    family = socket.AF_INET6 if ":" in listen[0] else socket.AF_INET
    # A supervised worker reads its supervisor's sockets (signaling/supervisor.py).
    sock, (rcv, snd) = _bound(inherited_socket("sip_udp", family, socket.SOCK_DGRAM), family,
                              listen, buffer_size)
    slot_sock: socket.socket | None = None
    inherited_slot = inherited_socket("sip_udp_slot", family, socket.SOCK_DGRAM)
    try:
        if inherited_slot is not None or private is not None:
            slot_sock, _ = _bound(inherited_slot, family, private or listen, buffer_size)
    except OSError:
        sock.close()
        raise
    transport = UdpTransport(core, sock, advertise, slot_sock=slot_sock)
    core.transports.add(transport)
    transport.resume_reading()
    log.info("SIP UDP listening on %s:%s (receive buffer %d bytes, send buffer %d bytes, "
             "requested %d)", transport.address[0], transport.address[1], rcv, snd, buffer_size)
    if slot_sock is not None and inherited_slot is None:
        log.info("SIP UDP private port %s (Via, Record-Route, requests sent)",
                 slot_sock.getsockname()[1])
    return transport
