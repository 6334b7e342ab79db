"""A storm's REGISTERs shed in the kernel, before the server reads them (issue 13).

Why: past a few times the server's capacity, even the cheapest refusal costs too much.  The
listening socket's excess is read and refused in C (``_udpexcess.c``), but reading a datagram
alone (recvmmsg) costs the server ~1 µs of its CPU, and a 503 ~1.7 µs more (sendmmsg on
loopback): at 10x of a quarter-core server's REGISTER capacity (~54,000/s) that is a fifth to
a half of its quota spent on what it refuses (bench_overload: 53-63% of capacity at 5x, 16-30%
at 10x).  A socket filter (classic BPF, ``SO_ATTACH_FILTER``) runs in the kernel's receive path
before the datagram is queued, in the sender's or the softirq's time, not the server's: what
it drops costs the server nothing, and the kernel still counts it (the socket's drop count,
which the reader gets with every datagram as ``SO_RXQ_OVFL`` and the metrics show as
``sip_overload_dropped{reason="kernel"}``).  It is what RFC 3261 §21.5.4 and issue 13 allow
past the point where answering eats the capacity: excess new requests dropped, counted.

What it drops: only requests whose first bytes are ``REGISTER `` (methods are case-sensitive,
§7.1), which never belong to a dialog, and only a share of them, at random in the kernel
(``SKF_AD_RANDOM``).  Nothing else is touched: responses, ACK, CANCEL, in-dialog requests and
INVITEs (whose retransmissions after admission must not be shed) always reach the server.  A
dropped REGISTER comes back retransmitted (Timer E, §17.1.2.2) with the same chance, so a
client still gets through within a few retransmissions at moderate shares.

Fairness (issue 13: a flood from one source must not starve another): while admission control
finds sources over their share (``AdmissionControl.heavy_sources``), the filter drops only their
REGISTERs, by the IPv4 source address in the IP header (``SKF_NET_OFF``); a polite source is
never filtered.  With no heavy source (a storm of many polite clients, as after an outage), it
drops from every source alike, which is fair by construction.

Off by default (``--overload-kernel-shed on``): a dropped REGISTER comes back retransmitted
at 0.5, 1.5, 3.5 s ..., so it trades the reads it saves against the latency of what it drops.
Measured back to back (``bench_overload --only ours --kinds register --capacity register=4500
--multiples 2,5``, load 0.5-1.6): SIPp, which ignores Retry-After, 72.9 -> 93.8% at 2x and
79.4 -> 83.6% at 12,000/s, but P99 128 -> 572 ms; the storm injector, which honours it, 79.4 ->
72.2% and 71.6 -> 72.6%, P99 ~125 ms -> 7.5 s (its 503s became drops, then retransmissions).

The share follows the admission limit: the filter lets through about ``HEADROOM`` times the
limit, so the read pace still has a full supply and the drain answers some 503s with
Retry-After (clients that honour it back off); ``next_share`` is the law, a pure function.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import logging
import socket
import struct
from collections.abc import Iterable

__all__ = ["HEADROOM", "MOST", "KernelShed", "next_share", "program"]

log = logging.getLogger(__name__)

#: Datagrams let through per new request the admission limit takes: 1.2 of them are read in
#: Python (the read pace, ``--overload-read-share``), the rest refused in C with a 503 (a few
#: µs each, ~2% of a quarter core at a limit of 5,000/s), whose Retry-After makes polite
#: clients back off.
HEADROOM = 1.5
#: The largest share dropped: some of every source's REGISTERs always reach the server, so a
#: storm is still seen (and counted, and answered 503) and the share can fall again.
MOST = 0.95
#: A change of the share smaller than this keeps the attached program (a setsockopt per tick
#: otherwise, and the random draw makes small steps meaningless anyway).
STEP = 0.02
#: Heavy sources named in the program at most (each is two instructions).
MAX_SOURCES = 16
#: Gain per revision: the share moves half way to what the last tick asks, so that a burst of
#: retransmissions (the filter's own doing, 0.5 s later) does not swing it.
GAIN = 0.5

_SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", 26)
_SO_DETACH_FILTER = getattr(socket, "SO_DETACH_FILTER", 27)
# linux/filter.h: classic BPF opcodes and the ancillary offsets.
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_RET_K = 0x06
_SKF_AD_OFF = -0x1000
_SKF_AD_RANDOM = 56
_SKF_NET_OFF = -0x100000
_ACCEPT = 0xFFFF_FFFF
_DROP = 0
#: On a UDP socket the filter sees the datagram from its UDP header (8 bytes) on.
_PAYLOAD = 8
_INSN = struct.Struct("HBBI")


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return _INSN.pack(code, jt, jf, k & 0xFFFF_FFFF)


def program(share: float, sources: Iterable[str] = ()) -> list[bytes]:
    """The filter: drop ``share`` of REGISTERs (of ``sources`` only, when given: IPv4
    addresses), accept everything else."""
    heavy = [int(ipaddress.IPv4Address(s)) for s in sources][:MAX_SOURCES]
    threshold = min(int(share * 2**32), 2**32 - 1)
    # Tail, as jump targets count from the next instruction: [rand, jge, accept, drop].
    tail = [_insn(_LD_W_ABS, 0, 0, _SKF_AD_OFF + _SKF_AD_RANDOM),
            _insn(_JGE_K, 1, 0, threshold),  # random >= threshold: accept
            _insn(_RET_K, 0, 0, _DROP),
            _insn(_RET_K, 0, 0, _ACCEPT)]
    match: list[bytes] = []
    if heavy:
        # The source address, then one compare per heavy source: equal jumps over the
        # compares after it and the "accept" that ends them, to the random draw.
        n = len(heavy)
        match.append(_insn(_LD_W_ABS, 0, 0, _SKF_NET_OFF + 12))  # IPv4 source (RFC 791)
        for i, addr in enumerate(heavy):
            match.append(_insn(_JEQ_K, n - i, 0, addr))
        match.append(_insn(_RET_K, 0, 0, _ACCEPT))  # no heavy source: accept
    body = match + tail
    # "REGISTER": two words; not equal -> accept (the last instruction).
    to_accept_1 = 2 + len(body) - 1
    to_accept_2 = len(body) - 1
    head = [_insn(_LD_W_ABS, 0, 0, _PAYLOAD), _insn(_JEQ_K, 0, to_accept_1, _word(b"REGI")),
            _insn(_LD_W_ABS, 0, 0, _PAYLOAD + 4), _insn(_JEQ_K, 0, to_accept_2, _word(b"STER"))]
    return head + body


def _word(four: bytes) -> int:
    return int.from_bytes(four, "big")  # BPF_ABS loads are in network byte order


def next_share(share: float, read_rate: float, limit: float) -> float:
    """The share to drop next, from the one in force, the datagrams per second the listening
    socket delivered under it, and the admission limit (new requests per second).

    What arrived before the filter is estimated as ``read_rate / (1 - share)`` (as if all
    were REGISTERs: the others make the estimate low, and the next revisions raise the share
    further while too much still comes through); the share that lets ``HEADROOM`` times the
    limit through is then approached by ``GAIN``.  Off (0) once the limit is not binding."""
    if limit <= 0 or read_rate <= 0:
        return 0.0
    offered = read_rate / (1.0 - share)
    want = 1.0 - HEADROOM * limit / offered
    want = 0.0 if want < 0.0 else MOST if want > MOST else want
    moved = share + GAIN * (want - share)
    return 0.0 if moved < STEP else moved


class KernelShed:
    """The filter of one listening socket: revised every tick by ``UdpTransport``."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        #: The share of (heavy sources') REGISTERs dropped now; 0: no filter attached.
        self.share = 0.0
        self.sources: tuple[str, ...] = ()
        self._ipv4 = sock.family == socket.AF_INET
        #: The attached program's buffer: the kernel copies it, but it must live through the
        #: setsockopt call that reads it.
        self._buffer: ctypes.Array[ctypes.c_char] | None = None

    def revise(self, read_rate: float, limit: float | None, heavy: Iterable[str]) -> None:
        """``limit``: the admission limit when it binds, else None (the filter comes off)."""
        share = 0.0 if limit is None else next_share(self.share, read_rate, limit)
        # A source named stays named while the filter is on: once shed, a flood takes no
        # more than its share of admissions and is no longer "heavy" by that count, and an
        # unnamed filter would then shed every source's REGISTERs alike.
        named = set(heavy).union(self.sources) if self._ipv4 else set()
        sources = tuple(sorted(named))[:MAX_SOURCES]
        if share == 0.0:
            if self.share:
                self._detach()
            return
        if abs(share - self.share) < STEP and sources == self.sources:
            return
        if self._attach(program(share, sources)):
            self.share, self.sources = share, sources

    def _attach(self, insns: list[bytes]) -> bool:
        code = b"".join(insns)
        buffer = ctypes.create_string_buffer(code, len(code))
        fprog = struct.pack("HL", len(insns), ctypes.addressof(buffer))
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)
        except OSError as exc:
            # Not Linux, or a kernel without socket filters: the drain alone refuses.
            log.warning("socket filter not attached (%s): the storm's excess is read", exc)
            return False
        self._buffer = buffer
        return True

    def _detach(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, _SO_DETACH_FILTER, 0)
        self.share, self.sources, self._buffer = 0.0, (), None
