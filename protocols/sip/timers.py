"""SIP transaction timer values (RFC 3261 §17 and Table 4, RFC 6026 §8.4 and §8.7).

Nothing here reads a clock: these are durations in seconds.  A transaction adds them to the
``now`` its caller passes in.

Three base values are configurable (RFC 3261 §17.1.1.1 lets an element raise T1 and T2 when it
knows the network; tests shrink them): T1, the round-trip estimate; T2, the cap on non-INVITE
and response retransmission intervals; T4, how long a message may live in the network.  Every
transaction timer is derived from them, once per transport kind, into a ``TimerValues``.

Reliable transports (TCP, TLS, SCTP, WebSocket) differ in two ways the RFC spells out:

* the request and response retransmission timers A, E and G are never armed (§17.1.1.2,
  §17.1.2.2, §17.2.1): the transport retransmits, so ``None`` here;
* the "wait for stray retransmissions" timers D, I, J and K are zero (§17.1.1.2, §17.1.2.2,
  §17.2.1, §17.2.2): there are no retransmissions to wait for, so the transaction ends at once.

Timers B, F, H (give up), L and M (RFC 6026: absorb retransmitted INVITEs and 2xx responses)
are 64*T1 on every transport.  Timer C is the proxy's INVITE guard (§16.6 step 11), which the
RFC requires to be longer than three minutes.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

__all__ = ["DEFAULT_TIMERS", "TimerConfig", "TimerValues", "timer_values"]

#: RFC 3261 §17.1.1.2: Timer D is "at least 32 seconds" on unreliable transports, a fixed
#: value rather than a multiple of T1, because it must outlive the peer's response retransmissions.
TIMER_D_UNRELIABLE = 32.0

#: RFC 3261 §16.6 step 11: Timer C MUST be larger than 3 minutes.
TIMER_C_MIN = 180.0


@dataclass(frozen=True, slots=True)
class TimerConfig:
    """The configurable base values (RFC 3261 Table 4 defaults)."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    timer_c: float = TIMER_C_MIN
    timer_d: float = TIMER_D_UNRELIABLE

    def __post_init__(self) -> None:
        # A zero or negative T1 would make every retransmission fire at once, forever.
        if not (self.t1 > 0 and self.t2 >= self.t1 and self.t4 > 0):
            raise ValueError(f"need 0 < T1 <= T2 and T4 > 0, got {self}")
        if not (self.timer_c > 0 and self.timer_d >= 0):
            raise ValueError(f"Timer C must be positive and Timer D non-negative, got {self}")


@dataclass(frozen=True, slots=True)
class TimerValues:
    """Every transaction timer for one transport kind, in seconds.

    ``a``, ``e`` and ``g`` are the *initial* retransmission intervals, ``None`` when the
    transport is reliable and nothing is retransmitted.  ``t2`` caps the E and G back-off.
    """

    reliable: bool
    t1: float
    t2: float
    t4: float
    a: float | None  # INVITE request retransmit, doubles each time (§17.1.1.2)
    b: float  # INVITE transaction timeout (§17.1.1.2)
    c: float  # proxy INVITE guard (§16.6 step 11)
    d: float  # wait for response retransmits, INVITE client (§17.1.1.2)
    e: float | None  # non-INVITE request retransmit, doubles up to T2 (§17.1.2.2)
    f: float  # non-INVITE transaction timeout (§17.1.2.2)
    g: float | None  # INVITE response retransmit, doubles up to T2 (§17.2.1)
    h: float  # wait for ACK (§17.2.1)
    i: float  # absorb ACK retransmits (§17.2.1)
    j: float  # absorb non-INVITE request retransmits (§17.2.2)
    k: float  # absorb non-INVITE response retransmits (§17.1.2.2)
    l: float  # noqa: E741 - the RFC's name; absorb INVITE retransmits after 2xx (RFC 6026 §8.7)
    m: float  # absorb 2xx retransmits, INVITE client (RFC 6026 §8.4)


@lru_cache(maxsize=64)  # one entry per (config, transport kind); configs are few and frozen
def timer_values(config: TimerConfig, reliable: bool) -> TimerValues:
    """The derived timers for ``config`` on a reliable or unreliable transport."""
    t1 = config.t1
    sixty_four = 64 * t1
    retransmit = None if reliable else t1
    return TimerValues(
        reliable=reliable,
        t1=t1,
        t2=config.t2,
        t4=config.t4,
        a=retransmit,
        b=sixty_four,
        c=config.timer_c,
        d=0.0 if reliable else config.timer_d,
        e=retransmit,
        f=sixty_four,
        g=retransmit,
        h=sixty_four,
        i=0.0 if reliable else config.t4,
        j=0.0 if reliable else sixty_four,
        k=0.0 if reliable else config.t4,
        l=sixty_four,
        m=sixty_four,
    )


#: The RFC 3261 defaults.
DEFAULT_TIMERS = TimerConfig()
