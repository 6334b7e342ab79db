"""The listening socket's kernel queue kept short under overload: the kernel drops the excess.

Why: past about 5x of capacity on a quarter of a core, merely reading and screening every
datagram in Python (~5-10 µs each, measured by ``benchmarks/bench_overload.py``) takes the CPU
that admitted work needs, and a full 8 MB receive buffer holds seconds of datagrams, so what is
read is already late, its client has retransmitted, and the retransmissions are read too.  The
only drop cheaper than reading is not reading: when the socket's buffer holds no more than the
server reads within ``target``, the kernel drops the rest on arrival (tail drop, counted by
SO_RXQ_OVFL) and what is read is fresh.

This is safe only when admitted work does not come in on that socket: responses to our client
transactions and in-dialog requests (ACK of a 2xx, BYE, re-INVITE, PRACK ...) must arrive on the
server's own port (``UdpTransport``'s private or slot socket, the port of our Via and
Record-Route), which keeps the full buffer and is read first.  The listening port then gets only
new requests, their retransmissions, CANCEL and ACK of non-2xx, all of which a client sends
again when one is lost (RFC 3261 §17.1.1.2, §17.1.2.2, §9.1).

The control law, revised every tick (0.1 s) from what the reader saw (sans-I/O, ``now`` in):

* pressed (a datagram read in the interval had waited longer than ``target``): the buffer is
  set to what the reader actually read in ``target`` at the rate of the interval, in bytes as
  the kernel counts them (payload plus its per-datagram bookkeeping), never under ``floor``;
* the kernel dropped datagrams while what was read had waited under target/2: the reader keeps
  up and bursts overflow the buffer, which doubles (drops counted as pressure kept a bursty
  sender's buffer at the floor while the server idled: the storm injector's calls at 2x);
* calm for ``calm_time`` (nothing waited past target/2, nothing dropped): the buffer doubles
  back towards ``ceiling`` (the configured ``udp_buffer``), so bursts are absorbed whole again.

Fairness: tail drop is blind to the source.  It happens only while the reader cannot keep up at
all; below that every datagram is read and the per-source accounting of admission control
(``protocols/sip/overload.py``) decides who is served.

Tried and not kept: reading the listening socket on a CPU budget while admitted work queued
(reading what is not admitted limited to 10% of the CPU, the rest left to the kernel).  Measured
in the same time window as the plain short queue (``benchmarks/bench_overload.py`` steps, load
3-5): calls at 2x/5x/10x of capacity 24/57/49% and 68/53/35% of capacity against 82/71/53% and
85/75/41% without it; REGISTERs 125/101/98% against 93/114/89%.  Calls lost, so it went.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FLOOR", "SKB_OVERHEAD", "QueueStats", "ReadPace", "ReceiveQueue"]

#: Bytes the kernel charges a datagram's receive buffer beyond its payload (the skb and its
#: bookkeeping, "truesize"): measured on Linux 6.x loopback, 131,072 bytes held 102 datagrams
#: of 500 bytes.
SKB_OVERHEAD = 780
#: The least buffer the listening socket is cut to: about a dozen datagrams.  It was 128 KB,
#: ~100 datagrams, which at a read pace of 200/s (a low admission limit) is half a second of
#: queue: every request read had waited past ``max_receive_delay`` and was refused as late,
#: nothing was admitted and the limit never rose again (bench_overload, calls at 5x).
FLOOR = 16 * 1024


@dataclass(slots=True)
class QueueStats:
    """What the reader saw on one socket since the last revision (updated per datagram)."""

    read: int = 0
    payload: int = 0
    max_wait: float = 0.0
    min_wait: float = float("inf")
    #: The kernel's cumulative drop count (SO_RXQ_OVFL) as of the last datagram read.
    dropped_total: int = 0
    #: Of ``read``, the REGISTERs of the kernel shed's band the drain refused
    #: (``udpshed.KernelShed.band``): no arrivals, and their burst no lag of the reader's.
    band: int = 0

    def reset(self) -> None:
        """A new interval (the drop total is cumulative and stays)."""
        self.read = self.payload = self.band = 0
        self.max_wait = 0.0
        self.min_wait = float("inf")


class ReceiveQueue:
    """The receive buffer size to ask for; see the module docstring."""

    def __init__(self, target: float, ceiling: int, *, floor: int = FLOOR,
                 calm_time: float = 1.0, now: float = 0.0) -> None:
        self.target = target
        self.ceiling = max(ceiling, floor)
        self.floor = floor
        self.calm_time = calm_time
        #: The buffer size wanted now (bytes, as the kernel counts them).
        self.size = self.ceiling
        self._since = now
        self._calm_since = now
        self._dropped_seen = 0

    def revise(self, now: float, stats: QueueStats) -> int | None:
        """Take the interval's statistics (and reset them); the new size, or None if unchanged."""
        elapsed = max(now - self._since, 1e-6)
        dropped = (stats.dropped_total - self._dropped_seen) % 2**32  # a u32 that wraps
        self._dropped_seen = stats.dropped_total
        size = self.size
        if stats.max_wait > self.target:
            per_datagram = stats.payload / stats.read + SKB_OVERHEAD
            size = int(stats.read / elapsed * self.target * per_datagram)
            self._calm_since = now
        elif stats.max_wait > self.target / 2:
            self._calm_since = now
        elif dropped:
            size = 2 * size
            self._calm_since = now
        elif now - self._calm_since >= self.calm_time:
            size = 2 * size
        self._since = now
        stats.reset()
        size = max(self.floor, min(self.ceiling, size))
        if size == self.size:
            return None
        self.size = size
        return size


class ReadPace:
    """How many datagrams the listening socket may be read now: a token bucket filled at
    ``share`` times the admission limit (new requests per second).

    Why: a short queue makes the kernel drop only what the reader cannot read at all, and a
    reader with the CPU reads everything: at 5x-10x of capacity reading the excess and answering
    it (a 503 and its ACK, ~30 µs) or dropping it after the read (~6 µs, but the client then
    retransmits it up to six times, RFC 3261 §17.1.1.2) took a quarter of the CPU admitted
    calls needed.  What is not read costs nothing: the listening socket is read at the rate
    the server can use, a few times the admission limit (the admitted requests, 503s for a
    share of the rest so that clients honouring Retry-After back off, their ACKs and
    retransmissions), and the short queue's tail drop discards the remainder in the kernel.
    Below overload the limit keeps twice what is served above it (``AdmissionControl``), so
    the pace never binds; nor while the limit is at its configured cap (the CPU is then not
    what limits, and everything is read and screened per source).  Only with a private port,
    like the short queue: what must not be lost does not come in on the listening socket.

    The cost: the kernel's tail drop is blind to the source, so while the pace binds a polite
    source loses datagrams in the same proportion as a flooding one (it retransmits them, §17);
    per-source fairness (``AdmissionControl``) holds among what is read.  With the excess
    drain (``signaling/transports/_udpexcess.c``, the default where it is built) the remainder
    is read and refused with a 503 in C rather than left to the kernel: blind to the source
    too, but answered, so clients stop retransmitting (or wait their Retry-After).  The drain
    lets responses and in-dialog requests through beyond the pace and does not charge them to
    it: a caller that ignores our Record-Route's port (SIPp) sends its ACK and BYE here, and
    paced with the INVITEs they were dropped past capacity (see ``_udpexcess.c``).  Without
    the drain the reader does the same in Python (``UdpTransport._read_paced``): it reads the
    queue, lets admitted work through uncharged and drops the new requests beyond the pace,
    where it left them to the kernel's tail drop, which dropped the admitted work with them.
    """

    def __init__(self, share: float, *, burst_time: float = 0.02, min_burst: float = 8.0,
                 now: float = 0.0) -> None:
        self.share = share
        self.burst_time = burst_time
        self.min_burst = min_burst
        self.tokens = min_burst
        self._last = now

    def allowance(self, now: float, limit: float) -> int:
        """Datagrams that may be read now under admission limit ``limit`` (requests/s)."""
        rate = self.share * limit
        burst = max(self.min_burst, rate * self.burst_time)
        self.tokens = min(burst, self.tokens + max(0.0, now - self._last) * rate)
        self._last = now
        return int(self.tokens)

    def took(self, read: int) -> None:
        self.tokens -= read
