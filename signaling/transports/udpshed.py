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
``sip_overload_dropped{reason="kernel_shed"}`` while a filter is attached).  It is what RFC
3261 §21.5.4 and issue 13 allow past the point where answering eats the capacity: excess new
requests dropped, counted.

What it drops: only requests whose first bytes are ``REGISTER`` (methods are case-sensitive,
§7.1), which never belong to a dialog, and only a share of them.  Nothing else is touched:
responses, ACK, CANCEL, in-dialog requests and INVITEs (whose retransmissions after admission
must not be shed) always reach the server, and so does any datagram too short to hold
``REGISTER`` (in classic BPF a load past the end ends the program with 0, which would drop it:
the length is checked before every load).

Which ones: the same transaction always gets the same fate.  The program hashes the datagram's
bytes after ``REGISTER`` (up to ``WORDS`` 32-bit words: the Request-URI, the top Via with its
branch, and what follows; as many whole words as the datagram holds) with a salt, and drops it
when the hash is under ``share`` of 2**32.  A retransmission is the same request, byte for byte
(RFC 3261 §17.1.2.2: Timer E re-sends the request; SIPp, baresip and the project's injector
re-send the same buffer), so a transaction dropped once stays dropped for every retransmission,
at no cost to the server, and one let through is let through at its first send: it is answered
at once, not after the 0.5, 1.5, 3.5 s of retransmissions that a random drop (the first version,
``SKF_AD_RANDOM``) made it wait (P99 572 ms with SIPp, 7.5 s with the injector; see
benchmarks/README.md).  A new transaction (new branch) gets a new draw, so a client refused
once is not refused for ever: after its Timer F it tries again (RFC 5626 §4.5's back-off) and
is shed in the same share as everyone.  The salt is drawn once per socket and never rotated:
with one salt, raising the share only adds transactions to those dropped and lowering it only
releases some, so no admitted transaction's retransmission is dropped for a re-draw, and no
outsider can choose branches that always pass.

Fairness (issue 13: a flood from one source must not starve another): while admission control
finds sources over their share (``AdmissionControl.heavy_sources``), the filter drops only their
REGISTERs, by the IPv4 source address in the IP header (``SKF_NET_OFF``); a polite source is
never filtered.  With no heavy source (a storm of many polite clients, as after an outage), it
drops from every source alike, which is fair by construction.

The share follows what the server can take, while the admission limit binds (``next_share``,
a pure function): the filter lets through about ``HEADROOM`` times that, so the read pace has
a full supply and the drain answers some 503s with Retry-After (clients that honour it back
off).  What it can take is the most it served in a tick over the last 3 s (``HELD``; each
tick the median of three), not the limit: the limit is cut after each stall of the loop and
recovers within a second, and a share that followed it up would release, coming down, the
retransmissions of every transaction dropped in between (measured: with SIPp at 2x, 2,600 of
5,600 REGISTERs admitted after 1 s).  Nor ``AdmissionControl.capacity``, which swung with the
limit between 1,240 and 2,000/s in one step.  A high estimate costs little: what the filter
lets through beyond the read pace is refused in C for a few µs each.  What the socket delivers
under the filter is then about ``1 - share`` of the new REGISTERs (the dropped ones'
retransmissions never come back to be read), so the rate before the filter is estimated as
the read rate over ``1 - share``, the mean of the last second's ticks; the share is moved
only when what gets through leaves a band around ``HEADROOM``, since lowering it releases the
retransmissions of transactions dropped until then (served late, after their client's T1).

Held (``held_share``): raised as soon as more arrives, never lowered while the storm lasts (a
tick in which the server refused ``REFUSING`` or more of what it read), nor for ``HOLD`` (Timer
F, 32 s) after its last such tick, when it comes off whole; sooner only when the filter
starves the server for ``SUSTAIN`` ticks in a row (3 s: less than ``STARVING`` of what the
server took in the storm gets through; the storm eased, or ended).  A share that came down
released at every swing of its estimate: the released transactions were served (a full
REGISTER each) and answered after their client's deadline, which cost goodput as well as P99.
Why not held for Timer F after the storm ends whatever arrives: the filter then dropped the
same share of every new REGISTER for 32 s while the server had room again, each such client's
transaction failing at its Timer F (issue 13: back to normal within seconds once the storm
ends).

When the share comes down (off at the storm's end, or lowered for a starving server), the
transactions it dropped are still retransmitting, until their Timer F.  Let through, each was
served at its next retransmission and answered 7.5 to 31.5 s after its first send (a full
REGISTER's work for an answer its client no longer counted on; bench_overload, the injector
at 2x-10x: P99 of admitted transactions 7.5-31.6 s).  So for a while after that the excess
drain (``_udpexcess.c``, the same hash in C: ``_udpband.c``) answers the REGISTERs in the band
that was dropped with its stateless 503 and a jittered Retry-After (``band``): each such
transaction still alive sends into the band within T2 (4 s, RFC 3261 §17.1.2.2), gets the
503 and ends; its client comes back after Retry-After with a new transaction, which hashes
anew.  The band is refused for ``BAND_QUIET`` (T2 and a margin) after the share came down and
after the last one of it the drain could not answer (its 503 budget spent), never past Timer
F, and only from the sources the filter named (none named: from every source), so a polite
source is not refused for a flooder's storm.  The cost: a new REGISTER that hashes into the
band in those seconds gets a 503 too (its client tries again after Retry-After), where it
would have been served.

On by default (``--overload-kernel-shed off`` reads all) since it is held.  Before that
(session 11, a machine 3-4x slower) it gained goodput but put the P99 of admitted
transactions past 500 ms (SIPp 512-564 ms, the injector 3.5-31.5 s: the transactions dropped
in the storm let through when the share came down, seconds late) and stayed off.  Measured on
this session's machine (benchmarks/README.md, session 12, ``bench_overload --only ours --kinds
register --load sipp,storm --multiples 2,5,10 --duration 5 --capacity
register=4286,register-storm=4388``, goodput as a share of capacity at 2x / 5x / 10x): off,
SIPp 84.8 / 71.6 / 44.6% and the injector 78.7 / 59.3 / 13.0%; on as it was, 86.0 / 96.2 /
99.3% and 85.6 / 87.2 / 91.4% (P99 524-536 ms and 7.5 s); held, 109.8 / 113.3 / 121.0% and
88.5 / 97.3 / 114.1% (P99 136-268 ms; the injector's 10x 7.5 s, see there).

One owner per socket: the workers of one slot (``signaling.supervisor``: the old and the new
during a reload, or a worker restarted after a crash) share the slot's listening socket, and a
filter belongs to the socket, not to the process that attached it.  Only the worker reading
the socket revises its filter (``UdpTransport``): it claims it when it starts reading, which
detaches whatever a predecessor left (one killed with its filter on), and releases it (detached)
when it stops reading.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import ipaddress
import logging
import os
import socket
import statistics
import struct
from collections.abc import Callable, Iterable, Sequence
from typing import Any

__all__ = [
    "BAND_QUIET",
    "FINAL_1",
    "FINAL_2",
    "HEADROOM",
    "HOLD",
    "M32",
    "MIX",
    "MOST",
    "PAYLOAD",
    "REFUSING",
    "SKF_NET_OFF",
    "STARVING",
    "SUSTAIN",
    "WORDS",
    "KernelShed",
    "held_share",
    "label_positions",
    "next_share",
    "payload_word",
    "program",
    "transaction_hash",
]

log = logging.getLogger(__name__)

#: Datagrams let through per new request the server can take: 1.2 of them are read in
#: Python (the read pace, ``--overload-read-share``), the rest refused in C with a 503 (a few
#: µs each, ~2% of a quarter core at a limit of 5,000/s), whose Retry-After makes polite
#: clients back off.
HEADROOM = 1.5
#: The band of let-through rates (times the capacity) within which the share is kept: below
#: ``LOW`` the read pace may run short of new requests, above ``HIGH`` the drain refuses
#: more than it needs to.  Wide enough that a capacity moving by a few % moves nothing.
LOW, HIGH = 1.3, 1.8
#: The largest share dropped: some of every source's REGISTERs always reach the server, so a
#: storm is still seen (and counted, and answered 503) and the share can fall again.
MOST = 0.95
#: A share below this is no share: the filter comes off.
STEP = 0.02
#: Ticks whose mean is the estimate of what arrives before the filter (1 s): one tick's
#: reads are no measure of it, since the read pace leaves what arrives in the socket's queue
#: to be read a tick or two later, and a garbage collection (60-110 ms at the quota) leaves
#: it all there: under SIPp's steady 2,679/s, ticks read 1,050 to 4,369/s, and the median of
#: five still swung between 2,650 and 4,370/s (bench_overload, 2x, 2026-12-05).  A share
#: lowered for such a swing would release the retransmissions of transactions dropped until
#: then.  Over a second the queue's part cancels out.
MEAN_OF = 10
#: Ticks over which the most served is the capacity the share follows: 3 s, longer than the
#: admission limit's cuts after a stall of the loop and their recovery (0.2-0.8 s each,
#: bench_overload), so that neither moves the filter.
HELD = 30
#: Seconds a share is held after the storm's last excess (a tick in which the server refused
#: ``REFUSING`` or more of the new requests it read) before the filter comes off: Timer F,
#: 64*T1 (RFC 3261 §17.1.2.2), the longest a dropped transaction retransmits.  Lowered any
#: sooner, the share lets the next retransmission of every transaction dropped in the band
#: through, to be answered seconds after its first send (see the module docstring).
HOLD = 32.0
#: The share of the new requests read that the server refused in a tick, at or above which
#: the tick is one of the storm's excess: the filter is then never lowered.
REFUSING = 0.1
#: Ticks in a row in which what gets through is under ``STARVING`` of what the server took in
#: the storm before the share is lowered: the filter then starves the server (the storm eased,
#: or ended: 3 s after it the filter comes off).  Three seconds: the storm injector, one
#: Python process sending 44,000 REGISTERs/s and their retransmissions, paused for a second
#: (its reads fell to nothing, the estimate of the arrivals to 1.4 times the capacity), and
#: with ten ticks the filter came off and the storm's dropped transactions were let through
#: when it resumed (bench_overload, injector at 10x: P99 3.9 s).
SUSTAIN = 30
#: What gets through, as a share of what the server took in the storm, under which the filter
#: starves the server.  Not 1: that capacity is the most served in a tick over 3 s, above the
#: mean, and a filter letting through about what the server serves (limit open, nothing
#: refused) read as starving and was lowered (SIPp at 10x: 0.863 to 0.784 while ~6,200/s got
#: through against 5,862/s taken).
STARVING = 0.75
#: Seconds the drain refuses the band a share dropped, after the share came down (``band``),
#: and after the last REGISTER of the band it had to drop unanswered (its 503 budget spent):
#: T2 (4 s, RFC 3261 §17.1.2.2: the longest a non-INVITE client waits between two sends) and
#: 2 s for a late sender and the ticks, so that every transaction dropped and still alive has
#: sent a retransmission into the band and had its 503.  Past that, what hashes into the band
#: is new (the cost: those get a 503, see the module docstring).
BAND_QUIET = 6.0
#: Heavy sources named in the program at most (each is one instruction).
MAX_SOURCES = 16
#: 32-bit words hashed after ``REGISTER``: 496 octets, enough for a long Request-URI and the
#: top Via's branch (at octet ~60-110 in SIPp's and the injector's REGISTERs; a proxy's Via,
#: first in a forwarded one, has its own branch per transaction).  Each costs 7 instructions
#: of the kernel's time per REGISTER while a filter is on, none of the server's.
WORDS = 124

_SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", 26)
_SO_DETACH_FILTER = getattr(socket, "SO_DETACH_FILTER", 27)
# linux/filter.h, bpf_common.h: classic BPF opcodes (class | size | mode, class | op | source).
_LD_W_ABS = 0x20
_LD_W_LEN = 0x80
_LDX_IMM = 0x01
_XOR_X = 0xAC
_MUL_K = 0x24
_RSH_K = 0x74
_TAX = 0x07
_TXA = 0x87
_JA = 0x05
_JEQ_K = 0x15
_JGE_K = 0x35
_RET_K = 0x06
SKF_NET_OFF = -0x100000
_ACCEPT = 0xFFFF_FFFF
_DROP = 0
#: On a UDP socket the filter sees the datagram from its UDP header (8 bytes) on, and its
#: length (``BPF_LEN``) is the UDP length.
PAYLOAD = 8
#: The hash's pieces (PAYLOAD, MIX, FINAL_1/2, M32, ``payload_word``, SKF_NET_OFF) are public:
#: ``udpebpf`` builds the same hash and must stay in step with this one and ``_udpband.c``.
#: The hash's multipliers: the golden ratio's for each word, MurmurHash3's finaliser after.
MIX = 0x9E37_79B1
FINAL_1, FINAL_2 = 0x85EB_CA6B, 0xC2B2_AE35
_INSN = struct.Struct("HBBI")
M32 = 0xFFFF_FFFF

#: (code, jt, jf, k), where jt/jf (and k of a JA) may be a label to resolve.
_Op = tuple[int, int | str, int | str, int | str]


def payload_word(four: bytes) -> int:
    return int.from_bytes(four, "big")  # BPF_ABS loads are in network byte order


def transaction_hash(payload: bytes, salt: int, words: int = WORDS) -> int:
    """What ``program`` computes of a datagram (its UDP payload), in Python: the words after
    ``REGISTER`` that the datagram holds (at most ``words``), last first, each mixed into the
    salt; then MurmurHash3's finaliser.  The tests hold the kernel's verdicts against it."""
    h = salt & M32
    count = max(0, min(words, (len(payload) - 8) // 4))
    for j in range(count - 1, -1, -1):
        m = ((h ^ payload_word(payload[8 + 4 * j:12 + 4 * j])) * MIX) & M32
        h = m ^ (m >> 15)
    h ^= h >> 16
    h = (h * FINAL_1) & M32
    h ^= h >> 13
    h = (h * FINAL_2) & M32
    return h ^ (h >> 16)


def threshold(share: float) -> int:
    """Hashes under this are dropped."""
    return min(int(share * 2**32), M32)


def program(share: float, sources: Iterable[str] = (), salt: int = 0,
            words: int = WORDS) -> list[bytes]:
    """The filter: drop the REGISTERs (of ``sources`` only, when given: IPv4 addresses) whose
    ``transaction_hash`` is under ``share`` of 2**32; accept everything else."""
    heavy = [int(ipaddress.IPv4Address(s)) for s in sources][:MAX_SOURCES]
    ops: list[_Op | str] = [
        (_LD_W_LEN, 0, 0, 0),
        (_JGE_K, 0, "accept", PAYLOAD + 8),  # too short for "REGISTER": never loaded past
        (_LD_W_ABS, 0, 0, PAYLOAD),
        (_JEQ_K, 0, "accept", payload_word(b"REGI")),
        (_LD_W_ABS, 0, 0, PAYLOAD + 4),
        (_JEQ_K, "heavy" if heavy else "hash", 0, payload_word(b"STER")),
        "accept", (_RET_K, 0, 0, _ACCEPT),
    ]
    if heavy:
        # The source address, then one compare per heavy source: equal goes to the hash.
        ops += ["heavy", (_LD_W_ABS, 0, 0, SKF_NET_OFF + 12)]  # IPv4 source (RFC 791)
        ops += [(_JEQ_K, "hash", 0, addr) for addr in heavy]
        ops.append((_RET_K, 0, 0, _ACCEPT))  # no heavy source: accept
    # The hash lives in X.  The longest run of words the datagram holds is found first
    # (from the last word down: one compare each), then entered where it starts, so each
    # word's load is known to be within the datagram.
    ops += ["hash", (_LDX_IMM, 0, 0, salt & M32), (_LD_W_LEN, 0, 0, 0)]
    for j in range(words - 1, -1, -1):
        ops += [(_JGE_K, 0, 1, PAYLOAD + 12 + 4 * j), (_JA, 0, 0, f"w{j}")]
    ops.append((_JA, 0, 0, "final"))  # no whole word after "REGISTER": the salt alone
    for j in range(words - 1, -1, -1):
        ops += [f"w{j}", (_LD_W_ABS, 0, 0, PAYLOAD + 8 + 4 * j), (_XOR_X, 0, 0, 0),
                (_MUL_K, 0, 0, MIX), (_TAX, 0, 0, 0), (_RSH_K, 0, 0, 15), (_XOR_X, 0, 0, 0),
                (_TAX, 0, 0, 0)]
    ops += ["final", (_TXA, 0, 0, 0), (_RSH_K, 0, 0, 16), (_XOR_X, 0, 0, 0),
            (_MUL_K, 0, 0, FINAL_1), (_TAX, 0, 0, 0), (_RSH_K, 0, 0, 13), (_XOR_X, 0, 0, 0),
            (_MUL_K, 0, 0, FINAL_2), (_TAX, 0, 0, 0), (_RSH_K, 0, 0, 16), (_XOR_X, 0, 0, 0),
            (_JGE_K, "pass", 0, threshold(share)),
            (_RET_K, 0, 0, _DROP),
            "pass", (_RET_K, 0, 0, _ACCEPT)]
    return _assemble(ops)


def _assemble(ops: list[_Op | str]) -> list[bytes]:
    """Labels resolved to the relative jumps of classic BPF (forward only; jt/jf 8 bits)."""
    at = label_positions(ops)
    out: list[bytes] = []
    for op in ops:
        if isinstance(op, str):
            continue
        code, jt, jf, k = op
        here = len(out) + 1  # jumps count from the next instruction
        t, f = _relative(jt, at, here), _relative(jf, at, here)
        assert 0 <= t < 256 and 0 <= f < 256, op
        out.append(_INSN.pack(code, t, f, _relative(k, at, here) & M32))
    return out


def label_positions(ops: Sequence[object], slots: Callable[[Any], int] = lambda op: 1,
                    ) -> dict[str, int]:
    """Each label's instruction index, the first pass of both assemblers (classic BPF here, eBPF
    in ``udpebpf``, where a 64-bit load takes two ``slots``)."""
    at: dict[str, int] = {}
    n = 0
    for op in ops:
        if isinstance(op, str):
            at[op] = n
        else:
            n += slots(op)
    return at


def _relative(target: int | str, at: dict[str, int], here: int) -> int:
    return at[target] - here if isinstance(target, str) else target


def next_share(share: float, offered: float, capacity: float) -> float:
    """The share to drop next, from the one in force, the REGISTERs per second estimated to
    arrive before the filter, and the new requests per second the server can take.

    Kept while what gets through, ``offered * (1 - share)``, stays within ``LOW`` to ``HIGH``
    times the capacity; else set to let ``HEADROOM`` times it through.  Off (0) with no
    capacity (the limit does not bind), or below ``STEP``; never over ``MOST``."""
    if capacity <= 0 or offered <= 0:
        return 0.0
    through = offered * (1.0 - share)
    if share and LOW * capacity <= through <= HIGH * capacity:
        return share
    want = 1.0 - HEADROOM * capacity / offered
    want = MOST if want > MOST else want
    return 0.0 if want < STEP else want


def held_share(share: float, want: float, storm: bool, starving: bool, since_excess: float,
               hold: float = HOLD) -> float:
    """The share to drop next, given the one in force and the one ``next_share`` wants.

    Raising it is always taken: it only adds transactions to those dropped (one salt).
    Lowering it lets the next retransmission of every transaction dropped in between through,
    answered 0.5 to 31.5 s after its first send (RFC 3261 §17.1.2.2: Timer E until Timer F),
    so it is taken only when the server needs it: ``starving`` (what gets through has been
    under ``STARVING`` of what the server took in the storm for ``SUSTAIN`` ticks: the storm
    eased, or ended), or the storm over for ``HOLD`` (``since_excess`` seconds since its last
    excess) while about what the server takes still gets through, when the filter comes off
    whole.  Within the storm (``storm``: this tick refused) it never falls:
    a share that followed its own estimate down and up released transactions at every swing
    (bench_overload, SIPp and the injector, P99 past 500 ms with the filter, session 11)."""
    if want >= share:
        return want
    if storm:
        return share
    if starving:
        return want
    return 0.0 if since_excess >= hold else share


class KernelShed:
    """The filter of one listening socket: revised every tick by ``UdpTransport``."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        #: The share of (heavy sources') REGISTERs dropped now; 0: no filter attached.
        self.share = 0.0
        self.sources: tuple[str, ...] = ()
        #: The estimate of what arrives before the filter, per second, and the ticks' own.
        self.offered = 0.0
        self._arrived: collections.deque[float] = collections.deque(maxlen=MEAN_OF)
        #: What the server can take (``capacity``): from the admitted per tick.
        self.capacity = 0.0
        self._served: collections.deque[float] = collections.deque(maxlen=3)
        self._held: collections.deque[float] = collections.deque(maxlen=HELD)
        #: What the server took in the storm (``capacity`` at its last excess), when the
        #: storm's last excess was (``now``), and the ticks in a row the filter starved it.
        self.storm_capacity = 0.0
        self._excess_at = float("-inf")
        #: Seconds the share is held after the storm's last excess (``HOLD``; a test
        #: shortens it).
        self.hold = HOLD
        self._starved = 0
        #: The share whose band the drain refuses (``band``), from when (the share came
        #: down), and the last tick it dropped one of that band unanswered.
        self.band_share = 0.0
        #: The sources the band is refused from (``band_from``): those the filter named when
        #: it came down; none named, every source's.
        self.band_sources: tuple[str, ...] = ()
        self._band_from = self._band_missed = float("-inf")
        self._now = 0.0
        #: ``BAND_QUIET`` (a test shortens it).
        self.band_quiet = BAND_QUIET
        #: Whether this process revises the socket's filter (see the module docstring).
        self.owned = False
        #: Drawn once, never rotated (see the module docstring).
        self.salt = int.from_bytes(os.urandom(4), "big")
        self._ipv4 = sock.family == socket.AF_INET
        #: The attached program's buffer: the kernel copies it, but it must live through the
        #: setsockopt call that reads it.
        self._buffer: ctypes.Array[ctypes.c_char] | None = None

    def claim(self) -> None:
        """This process reads the socket now: whatever filter a predecessor left is its."""
        self.owned = True
        self._detach()

    def release(self) -> None:
        """This process stops reading the socket: its filter comes off for the next reader."""
        if self.owned and self.filtering:
            self._detach()
        self.owned = False

    @property
    def band(self) -> int:
        """Hashes under this (0: none) are refused by the drain (``_udpexcess.c``, the same
        hash as the program's, ``_udpband.c``): the REGISTERs in a band the filter dropped
        until its share came down, for ``BAND_QUIET`` seconds after that.  Each such
        transaction still alive sends its next retransmission into the band within T2 and
        gets a stateless 503 with Retry-After (a few µs), where served it was answered 7.5 to
        31.5 s after its first send: a full REGISTER's work for an answer its client had
        stopped counting on (bench_overload, the injector at 2x-10x, P99 7.5-31.6 s)."""
        if self.band_share <= self.share:
            return 0
        return threshold(self.band_share)

    @property
    def band_from(self) -> bytes:
        """``band_sources`` for the drain: IPv4 addresses, 4 octets each (none: all)."""
        return b"".join(socket.inet_aton(a) for a in self.band_sources)

    def refused_in_band(self, answered: int, dropped: int) -> None:
        """The drain refused ``answered`` REGISTERs of the band with a 503 and dropped
        ``dropped`` more (its 503 budget spent): those retransmit into the band again, which
        is then refused ``BAND_QUIET`` longer."""
        if dropped:
            self._band_missed = self._now

    def _lowered(self, old: float, now: float) -> None:
        """The share came down from ``old``: its band is refused by the drain from now, from
        the sources the filter named (issue 13: a polite source is never refused for a
        flooder's storm), or every source's when it named none or the band already was."""
        named = self.sources if not self.band_share or self.band_sources else ()
        self.band_sources = tuple(sorted(set(named).union(self.band_sources))) if named else ()
        self.band_share = max(self.band_share, old)
        self._band_from = now

    def _revise_band(self, now: float) -> None:
        """The band ends once ``BAND_QUIET`` passed since the share came down and since the
        last REGISTER of it dropped unanswered, or at Timer F after the share came down (every
        transaction it dropped has given up), or when the share in force covers it."""
        if not self.band_share:
            return
        quiet = now - max(self._band_from, self._band_missed) >= self.band_quiet
        if quiet or now - self._band_from >= HOLD or self.band_share <= self.share:
            self.band_share, self.band_sources = 0.0, ()

    def revise(self, read_rate: float, served: float, binding: bool,
               heavy: Iterable[str], refused: float = 0.0, now: float = 0.0) -> None:
        """Every tick: ``read_rate``, datagrams per second the socket delivered under the
        filter in force, less the band's the drain refused; ``served``, new requests per
        second admitted; ``binding``, whether the admission limit binds; ``refused``, the
        share of new requests the server refused lately (``AdmissionControl.refused_share``);
        ``now``, the loop's clock.  The share is raised as soon as more arrives, lowered
        only as ``held_share`` allows."""
        self._now = now
        # What reached the reader outside the filter and the band in force over the tick:
        # the band's REGISTERs are the released transactions' retransmissions, not arrivals
        # (the caller leaves them out), and the new ones in it are refused with them.  Read as
        # arrivals, a burst of them raised the share again (0.75 to 0.88, then 0.95, at every
        # release: bench_recovery, REGISTERs).
        through = 1.0 - max(self.share, self.band_share)
        self._revise_band(now)
        self._served.append(served)
        self._held.append(statistics.median(self._served))
        #: The most the server served in a tick (each the median of three) over the last
        #: ``HELD`` ticks: its cuts of the limit after a stall of the loop, a few tenths of a
        #: second each, leave it as it is (see the module docstring).
        self.capacity = max(self._held)
        # Kept while the limit is open too (all is read then): when it binds, the last
        # second is known.
        self._arrived.append(read_rate / through)
        self.offered = statistics.fmean(self._arrived)
        storm = binding and refused >= REFUSING
        if storm:
            self._excess_at = now
            self.storm_capacity = self.capacity
        if not binding and not self.share:
            return
        # The filter may starve the server (the storm eased, or ended): what the server took
        # in the storm (not ``capacity``, which under a starving filter is only what gets
        # through) is what it can take.
        taken = max(self.capacity, self.storm_capacity) if self.share else self.capacity
        starved = self.offered * (1.0 - self.share) < STARVING * taken
        self._starved = self._starved + 1 if starved and not storm else 0
        want = next_share(self.share, self.offered, taken) if binding else 0.0
        share = self._held_share(want, storm, self._starved >= SUSTAIN, now - self._excess_at)
        # A source named stays named while the filter is on: once shed, a flood takes no
        # more than its share of admissions and is no longer "heavy" by that count, and an
        # unnamed filter would then shed every source's REGISTERs alike.
        named = set(heavy).union(self.sources) if self._ipv4 else set()
        sources = tuple(sorted(named))[:MAX_SOURCES]
        if share == 0.0:
            if self.share:
                self._lowered(self.share, now)
                self._off()
            return
        if share == self.share and sources == self.sources:
            return
        if share < self.share:
            self._starved = 0
        if self._set(share, sources):
            if share < self.share:
                self._lowered(self.share, now)
            self.share, self.sources = share, sources
            self._revise_band(now)

    def _held_share(self, want: float, storm: bool, starving: bool, since: float) -> float:
        """``held_share`` (``udpebpf``, whose lowering releases nothing, holds less)."""
        return held_share(self.share, want, storm, starving, since, self.hold)

    @property
    def filtering(self) -> bool:
        """Whether a filter is attached: the socket's drops are then taken as its own."""
        return self.share > 0.0

    def _set(self, share: float, sources: tuple[str, ...]) -> bool:
        """The filter in force drops ``share`` (of ``sources``' REGISTERs, when named)."""
        return self._attach(program(share, sources, self.salt))

    def _off(self) -> None:
        """The share came down to nothing (``udpebpf`` keeps its memory a while)."""
        self._detach()

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
        with contextlib.suppress(OSError):  # ENOENT: none attached
            self.sock.setsockopt(socket.SOL_SOCKET, _SO_DETACH_FILTER, 0)
        self.share, self.sources, self._buffer = 0.0, (), None
