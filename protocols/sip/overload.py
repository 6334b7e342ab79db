"""SIP overload control, sans-I/O: admission by sojourn time.

A plain object fed ``now`` (seconds, any monotonic clock) and returning decisions; the asyncio
side (``signaling/overload.py``) owns the sockets and queues.  The RFC 7339 ``oc`` report it
advertises (the share refused here) is built and parsed in ``protocols/sip/oc.py``.

``AdmissionControl``: whether to take a new request at all.  The design chosen is the
latency-target token bucket (Welsh & Culler's SEDA controller, as used by Project Clearwater's
load monitor) with CoDel's standing-queue test as its congestion signal:

* new work is admitted at a rate (a token bucket), the *admission limit*;
* every ``interval`` the limit is revised from what the admitted requests actually lived
  through: the *minimum* sojourn in the worker queue over the interval.  A
  minimum above ``target`` means a standing queue (CoDel's insight: a burst raises the maximum,
  only a standing queue raises the minimum), so the limit drops to 90% of the rate the workers
  actually started requests at, which drains the queue within about one interval; when the
  limit was binding (requests were refused) and the queue is short, it rises by 5% an interval
  (doubling in about 1.5 s, which is the "recovery within seconds" of issue 13), and while
  the queue is short it never stays under twice the rate just served (demand that grows
  while the server keeps up is not refused); one cut per episode (the queue's wait trails
  the limit), and the doubling stops at what was served when the last cut came, as TCP's
  slow start stops at ssthresh.  The law is the pure function ``next_limit``;
* the bucket holds, and a backlog guard lets queue, no more than can start within
  ``burst_time`` (T1/2) at the current limit: a burst (200 REGISTERs of phones coming
  back at once) is absorbed whole, as CoDel absorbs bursts shorter than its interval, but a
  sudden storm cannot queue seconds of work before the first revision;
* a second gate works on the kernel's receive queue, before any of that: a new request that
  waited there longer than ``max_receive_delay`` (250 ms, T1/2) is not admitted.  The reader
  is then behind, and every datagram read costs: cutting the limit would not help (measured:
  with the kernel wait in the sojourn, a 2x REGISTER storm drove the limit down to 10/s and
  goodput to 15% of capacity), while refusing the late ones cheaply lets the reader catch up
  (a late INVITE still gets its 503 within the budget, other late requests and anything later
  than twice the gate are dropped: see ``decide``).  When admitted calls overload the reader
  (their responses and BYEs are read there), new requests arrive late and are refused:
  admission stops by itself until the reader is back in time.  At a storm's onset (the limit
  open, then its first cut until the queue is back under the target) an INVITE is late past
  ``max_answered_delay`` (100 ms): nothing else bounds admission then, and a call admitted
  late brings its later messages to a reader already behind.

Why this and not plain CoDel: CoDel decides at the head of a queue, after the request was read,
parsed and queued; a SIP server must decide before spending that work, and refusing at the door
with a rate gives a number to report (the limit is a metric, and the refused share is exactly the
``oc`` value RFC 7339 asks a server to advertise).  Why not a cost model (CPU per transaction):
the cost of a call differs by route, registry and transport, while the sojourn time measures
directly what callers feel; the target (50 ms) is well under T1 (500 ms), so an admitted request
is answered before its first retransmission.

Refusing costs too, but little: measured in one process (C parser), a refused INVITE costs
7.6 µs to parse and answer and its ACK 3 µs more, a dropped one 1.5 µs; with the socket calls
a refusal costs about 25 µs of the server's CPU, while a call through the proxy costs about
700 µs.  A dropped INVITE comes back, though, retransmitted at T1, 2T1, 4T1 ... (§17.1.1.2),
so dropping is the cheaper refusal only when answering itself would eat the capacity.
Refusals are therefore rate-limited too, at ``reject_share`` (6) answered 503s per request the
server recently served at its best (not per the current limit, which swings while it settles),
about a fifth of the admitted work's cost; beyond that (storms past ~7x) a new request is
dropped unanswered, before it is parsed, and counted.

Fairness between sources: each source's requests are counted over a window in a bounded table;
a source under its fair share (limit / active sources) is admitted even when the bucket is
empty (it borrows, less the more of its share it used, and the debt slows the others), a
source over its share only takes tokens that are there.  So a flood from one address cannot
starve a polite neighbour.

Where REGISTERs stand (bench_overload, a quarter of a core, SIPp): a served REGISTER costs
~59 µs of CPU, and reading and screening one datagram alone ~4-5 µs (``screen`` 1.8 µs),
a 503 by the full path ~25 µs, plus the BYE SIPp sends after each refusal.  At 2x every
refusal would have to cost under ~10% of a served REGISTER for goodput to stay at 90%, so the
excess is left to the kernel (the short listening queue), and what the kernel drops comes back
retransmitted (E: 0.5, 1.5, 3.5 s ...): what is read is then mostly retransmissions, half of
them answered after the client's deadline, which caps goodput near 50% of capacity whatever
the limit does (``overflowed`` closes an open limit then, with the refusals made cheap).

What changed it: the excess beyond the read pace is read and refused in C
(``signaling/transports/_udpexcess.c``: 1.2 µs a datagram read and dropped, 3.6 µs read and
answered 503, the BYE SIPp sends after each 503 dropped unparsed), so a refused REGISTER
costs ~5 µs and ends its client's transaction instead of coming back retransmitted.  The
drain's CPU shows in no queue, so three signals drive the limit besides the worker queues: an
overflow of the listening queue while the limit is open (``overflowed``: the reader is the
bottleneck, the pace must engage), the loop's lag as the drained socket's longest wait per
interval (``reader_waited``), and the drain's refusals (``refused_apart``).  With SIPp at 3x
the server still spends about a quarter of its CPU refusing (a 503 and a BYE per refusal,
mostly the kernel's loopback work), which bounds goodput there well under capacity.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable
from dataclasses import dataclass

__all__ = [
    "OVERFLOW_SLOTS",
    "RETRY_STRETCH_MOST",
    "AdmissionConfig",
    "AdmissionControl",
    "Interval",
    "Move",
    "Verdict",
    "next_limit",
    "retry_after_range",
]

# -- admission --------------------------------------------------------------------------------


class Verdict(enum.Enum):
    ADMIT = "admit"
    REJECT = "reject"  # answer a stateless 503
    DROP = "drop"  # not even that: drop unanswered, counted


#: The members read once: in Python 3.11 a member looked up on its class goes through
#: ``EnumType.__getattr__`` (~170 ns, ten times a global), and ``decide`` runs per new request.
_ADMIT = Verdict.ADMIT
_REJECT = Verdict.REJECT
_DROP = Verdict.DROP


@dataclass(frozen=True, slots=True)
class AdmissionConfig:
    #: The sojourn (kernel + worker queue) an admitted request may wait before it starts.
    target: float = 0.05
    #: How often the limit is revised (CoDel's interval, scaled down: SIP work is short).
    interval: float = 0.1
    #: None: open, the cap, until the first sign of overload.  A guess lower than the
    #: capacity refused a step from idle (REGISTERs at 10,000/s against 2,000/s: 2,318 of
    #: 50,000 in bench_register_redis), and the first standing queue sets the limit to what
    #: was served (``_revise``), so a storm gains nothing from a guess.
    initial_rate: float | None = None
    min_rate: float = 10.0
    max_rate: float = 100_000.0
    #: Answered 503s allowed per admitted request; beyond, refused requests are dropped.
    reject_share: float = 6.0
    #: Per-source accounting window and the bound on sources tracked in it.
    fair_window: float = 1.0
    max_sources: int = 4096
    #: New requests that waited longer than this in the kernel are dropped: the reader is
    #: behind, and reading is what costs (see ``decide``).
    max_receive_delay: float = 0.25
    #: The same gate, tighter, at a storm's onset (``AdmissionControl._onset``) for the
    #: requests the caller says are cheap to refuse (``decide``'s ``answer_late``: INVITEs).
    #: With the limit still open nothing but the reader bounds admission (the first cut comes
    #: an interval or two into the storm), and an INVITE admitted late brings its call's
    #: later work (180, 200, ACK, BYE) on top of a reader already behind: all the answers over
    #: 500 ms were to calls created in the storm's first quarter second (bench_overload, SIPp
    #: at 6,000 calls/s against ~750/s: 508-627 calls admitted in it against 68-136 in each
    #: later one; with the gate at 0.1 s for all requests, 279, and P99 540/500 -> 204/156
    #: ms, session 12).  Refusing an INVITE costs ~1/30 of its call, and it is answered (503)
    #: up to twice ``max_receive_delay``; a REGISTER costs about as much to refuse as to
    #: serve, so it keeps the wider gate.  Not past the onset: with the limit binding the
    #: read pace keeps the reader near, a late read is a stall (a collection, the quota's
    #: period), and refusing its INVITEs cost goodput (always on: calls at 5x 561 and 362/s
    #: against 734/s without, bench_overload, SIPp, 19:13-19:15 UTC, load 2.8-3.1).
    max_answered_delay: float = 0.1
    #: Work the bucket and the worker queues may take in one burst, in seconds of the limit.
    burst_time: float = 0.25


#: Sources beyond ``max_sources`` share this many overflow slots (by hash), so the table is
#: bounded while a spray of addresses still gets per-slot accounting.
OVERFLOW_SLOTS = 64
_INCREASE = 1.05
#: Growth per interval while refusing with idle queues (sojourn under _IDLE of the target).
_SLOW_START = 2.0
_IDLE = 0.25
#: The ceiling of the slow start before any cut: none (``Interval.ceiling``).
_UNBOUNDED = float("inf")
_PEAK_DECAY = 0.99
_HEADROOM = 2.0
_DECREASE = 0.9
_HALF = 0.5
#: Fewer new requests started in an interval than this is next to no demand: a wait then is
#: a stall of the loop, not a standing queue (``next_limit``).
_FEW_STARTED = 10


#: The most the Retry-After of a 503 is stretched by the refused share (``retry_after_range``).
RETRY_STRETCH_MOST = 10.0


def retry_after_range(base: int, refused_share: float) -> tuple[int, int]:
    """The seconds a refused client is told to wait (RFC 3261 §21.5.4), drawn from
    [low, high]: the configured ``base`` stretched by the overload, 1 / (1 - refused share)
    (at most ``RETRY_STRETCH_MOST``), and jittered over [1/2, 3/2] of it so refused clients
    do not return together (RFC 6357 §6.2).

    Why stretched: a client that honours Retry-After comes back, and is refused again while
    the storm lasts, each refusal costing the server a 503 (bench_overload, the storm injector
    at 2x with a fixed 5 s: by the fifth second 40% of what it offered were such returns,
    16,000/s against 10,764/s new, and its goodput fell second by second).  Refusing half, the
    server serves the refused ones in about as long again as the storm has lasted, so their
    returns are spread over twice the base; refusing 90%, over ten times.
    """
    if base <= 1:
        return base, base
    share = min(max(refused_share, 0.0), 1.0 - 1.0 / RETRY_STRETCH_MOST)
    stretched = base / (1.0 - share)
    return int(stretched // 2), int(stretched + stretched // 2)


class Move(enum.Enum):
    """What one revision of the admission limit did (``next_limit``)."""

    CUT = "cut"  # a standing queue: admit less than was served
    HOLD = "hold"  # near the target, or the queue a cut answered is draining
    PROBE = "probe"  # binding, queues short: a little more
    RECOVER = "recover"  # binding, queues idle: double, up to the capacity seen
    FOLLOW = "follow"  # not binding: keep twice what was served above it


@dataclass(frozen=True, slots=True)
class Interval:
    """What one admission interval saw, the input of ``next_limit``."""

    rate: float  # the limit in force (requests/s)
    peak: float  # the highest rate the workers recently started requests at (decayed)
    #: What the slow start doubles up to: the peak at the last cut (TCP's ssthresh), inf
    #: before any.
    ceiling: float
    served: float  # requests the workers started per second in the interval
    started: bool  # whether any started
    stalled: bool  # nothing started while admitted work waited: the sojourn is unknown
    #: The longest of the queues' waits (s): the least worker-queue sojourn (of what
    #: started), the least wait of admitted work on the private port, the reader's lag on
    #: the listening socket.
    wait: float
    previous_wait: float  # the same in the previous interval
    draining: bool  # the previous revision cut, or held after a cut
    just_cut: bool  # the previous revision cut
    binding: bool  # new requests were refused
    overflowed: bool  # the listening queue overflowed with the limit open
    #: The listening socket's reader reported in the interval (or there is none to report):
    #: without its report an interval that refused nothing may have refused nothing because
    #: the loop stalled, not because the demand fell.
    sampled: bool = True
    #: The wait that made the last cut, while its episode lasts (``draining``); 0 without one.
    cut_wait: float = 0.0


def next_limit(seen: Interval, cfg: AdmissionConfig) -> tuple[float, Move]:
    """The admission limit for the next interval; the control law of ``AdmissionControl``.

    * A standing queue (``wait`` over the target, or an overflow) cuts the limit, except in
      the interval right after a cut and then while the queue that cut answered is still
      draining (its wait falling): the queue's wait lags the limit by an interval or two
      (what was admitted before the cut is still queued, the excess that came meanwhile is
      still to be refused), and cutting on every interval of it cut four times per episode and
      ratcheted the limit from 4,100/s to 1,000/s with the server able to serve 3,300/s
      (bench_overload, SIPp REGISTERs at 2x: a one-second cycle, goodput 39% of capacity).
      Cut once per episode, as TCP does once per round trip; the episode lasts while the wait
      is no longer than the one that made the cut (``cut_wait``): under a CPU quota the wait
      has a floor the limit does not move (the loop's batch cycle), and with each uptick a new
      episode the limit fell 10% a cut, 108 to 24 calls/s while ~45/s were served
      (bench_multiproc --share 0.1, calls at 80/s, session 11).
    * Queues idle and the limit binding: double (slow start), but not past what the server
      served at its best when the last cut came (``ceiling``, TCP's ssthresh): the doubling
      from half the capacity overshot it by a quarter and started the next episode (the same
      run); past it, the +5% probe.
    """
    rate, target = seen.rate, cfg.target
    if seen.overflowed or seen.wait > target:
        if not seen.overflowed and (seen.just_cut or (seen.draining and (
                seen.wait < seen.previous_wait or seen.wait <= seen.cut_wait))):
            return rate, Move.HOLD
        if (not seen.overflowed and not seen.binding
                and seen.served * cfg.interval < _FEW_STARTED):
            # A wait with next to no demand and nothing refused is a stall (the loop held by
            # a start, a collection, a slow disk), not a standing queue (CoDel's minimum
            # sojourn needs the packets to take it over): a cut would take the limit to about
            # that demand, with the peak at the cut (nearly nothing) as the ceiling of its
            # recovery, which then crept up by 5% an interval (a worker that read its first
            # requests late at start refused a lone REGISTER: test_tcp's supervisor test, 1
            # run in 5).
            return rate, Move.HOLD
        # Admit a little less than was actually served, so the queue drains; at most halved
        # per interval, since admitted calls bring their work (responses, ACK, BYE) an
        # interval or more later: cutting to what one interval served ratcheted the limit
        # down to min_rate and back (bench_overload, calls at 5x).
        served = seen.served if seen.started else rate
        if rate > _HEADROOM * served:
            # The limit was not what held admission back (at the start it is open): the first
            # sign of a queue sets it to what was served, but not under half the best recently
            # served: an interval in which the loop stalled serves nearly nothing (SIPp
            # REGISTERs at 3x, with the excess drained: the limit fell from 7,000/s to 20/s in
            # one interval and admitted nothing for half a second).
            return max(cfg.min_rate, served * _DECREASE, seen.peak * _HALF), Move.CUT
        return max(cfg.min_rate, rate * _HALF, min(rate, served) * _DECREASE), Move.CUT
    if seen.wait > target / 2 or seen.stalled or not seen.sampled:
        return rate, Move.HOLD
    if seen.binding:
        # With the queues all but empty the server keeps up with what it admits and has
        # room: double, as TCP's slow start does, so a step from idle to several times the
        # initial limit (REGISTERs at 10,000/s against 2,000/s) is admitted within half a
        # second, not refused for three; near the target, or past the capacity seen, probe
        # upwards gently.  After a cut the doubling stops at what the server served at its
        # best when the cut came (``ceiling``), so it may start as soon as the queues are
        # under half the target, not only idle: under a CPU quota the drained reader's lag
        # sits at 15-40 ms (what arrives between the quota's 10-ms periods), idle was never
        # seen, and the limit crept back by 5% an interval (calls at 2x: 350 to 835/s in
        # 1.8 s after one cut, goodput 443/s in that step against 518-522 in the next two,
        # bench_overload, session 10).
        probe = min(cfg.max_rate, rate * _INCREASE)
        grown = min(cfg.max_rate, rate * _SLOW_START, seen.ceiling)
        idle = target * (_IDLE if seen.ceiling == _UNBOUNDED else _HALF)
        if seen.wait > idle or grown <= probe:
            return probe, Move.PROBE
        return grown, Move.RECOVER
    # Nothing refused and queues short: the limit keeps twice what was just served above it,
    # so a demand that grows while the server keeps up is never refused for a limit set when
    # the demand was lower.  Not while refusing: the limit jumped to twice a burst's rate and
    # let in an overload (calls at 5x).
    return max(rate, min(cfg.max_rate, _HEADROOM * seen.served)), Move.FOLLOW


class AdmissionControl:
    """The admission limit and the per-source shares; see the module docstring."""

    def __init__(self, cfg: AdmissionConfig, now: float) -> None:
        self.cfg = cfg
        self.rate = cfg.max_rate if cfg.initial_rate is None else cfg.initial_rate
        #: The highest rate the workers started requests at, decaying by 1% an interval.
        self._peak = 0.0
        self._tokens = self._burst()
        self._reject_tokens = self._burst() * cfg.reject_share
        self._last = now
        # interval statistics
        self._interval_end = now + cfg.interval
        self._interval_start = now
        self._min_sojourn = float("inf")
        self._started = 0
        self._admitted = 0
        self._refused = 0
        self._late = 0
        #: Admitted requests waiting for a worker, as the last decision saw them.
        self._backlog = 0
        #: The longest of the least waits of admitted work on the server's own port per tick.
        self._admitted_wait = 0.0
        #: The longest wait on the drained listening socket over the interval (-1: no drain).
        self._reader_wait = -1.0
        #: The longest queue wait of the previous interval, and whether the limit was cut then
        #: (or held since a cut while that wait fell): ``next_limit``'s one cut per episode.
        self._previous_wait = 0.0
        self._draining = False
        self._cut_wait = 0.0  # the wait that made the last cut (``Interval.cut_wait``)
        self._ceiling = _UNBOUNDED
        self._last_reader_wait = 0.0
        #: Whether the reader ever reported (``reader_waited``): a server without the drain
        #: has no reader lag to miss.
        self._reader_seen = False
        #: A storm's onset: the limit open, or its first cut from open and the holds after
        #: it while the queue that cut answered is over the target.  INVITEs meet the
        #: tighter receive-delay gate then (``AdmissionConfig.max_answered_delay``).
        self._onset = self.rate >= cfg.max_rate
        #: What the last revision did (a metric and the tests read it).
        self.last_move = Move.HOLD
        #: The listening queue overflowed with the limit open (``overflowed``).
        self._overflowed = False
        #: Share of new requests refused over the last interval (the oc value to advertise).
        self.refused_share = 0.0
        #: Intervals completed: the asyncio side updates its oc report once per interval.
        self.revisions = 0
        # per-source accounting
        self._window_end = now + cfg.fair_window
        self._counts: dict[Hashable, int] = {}
        #: Sources over their share in the last window (a subset of its bounded table).
        self._heavy: set[Hashable] = set()
        self._active = 1

    # -- decisions ----------------------------------------------------------------------------

    def decide(self, now: float, source: Hashable, backlog: int = 0,
               waited: float = 0.0, answer_late: bool = False) -> Verdict:
        """A new request from ``source`` arrived (``waited`` s in the kernel queue first) while
        ``backlog`` admitted ones wait for a worker: admit it, answer 503, or drop it.

        ``answer_late``: whether a late request (the reader behind) is still worth a 503 when
        the budget allows.  The caller says so for requests whose refusal costs a small share
        of serving them (an INVITE: ~1/30 of a call, and the 503 stops Timer A's
        retransmissions), not for those that cost about as much to refuse as to serve (a
        REGISTER: measured at 2x, answering late REGISTERs 503 kept goodput at 15% of capacity,
        dropping them at 86%).  At a storm's onset such a request is late past
        ``max_answered_delay``, else (and the others always) past ``max_receive_delay``.
        """
        if now >= self._interval_end:
            self._revise(now)
        if now >= self._window_end:
            self._roll_window(now)
        self._refill(now)
        self._backlog = backlog
        key = self._slot(source)
        count = self._counts.get(key)
        if count is None:
            # Counted as active from its first request, admitted or not: a source refused
            # every time must still get a share (or it would never be let in).
            count = self._counts[key] = 0
        gate = self.receive_gate(answer_late)
        if waited <= gate and self._admissible(key, count, backlog):
            self._tokens -= 1.0
            self._counts[key] = count + 1
            self._admitted += 1
            return _ADMIT
        if waited > gate:
            self._late += 1
            if not answer_late or waited > 2 * self.cfg.max_receive_delay:
                # The reader is behind: answering at the rate datagrams are read would keep it
                # there (a 503 costs five drops), so drop until it catches up.
                return _DROP
        else:
            self._refused += 1
        if self._reject_tokens >= 1.0:
            self._reject_tokens -= 1.0
            return _REJECT
        return _DROP

    def retransmitted(self, source: Hashable, verdict: Verdict) -> None:
        """The request just decided on was a retransmission of one already taken (its server
        transaction absorbed it): no new work, so what ``decide`` took for it is given back,
        its admission token (or its 503's) and its count against the source's share.  Else
        every retransmission of an admitted INVITE (Timer A, RFC 3261 §17.1.1.2, while the
        100 Trying is on its way) would cost a token that a new call needed."""
        key = self._slot(source)
        count = self._counts.get(key, 0)
        if verdict is Verdict.ADMIT:
            self._tokens = min(self._burst(), self._tokens + 1.0)
            self._admitted = max(0, self._admitted - 1)
            if count > 0:
                self._counts[key] = count - 1
        elif verdict is Verdict.REJECT:
            budget = self.capacity * self.cfg.reject_share * self.cfg.burst_time
            self._reject_tokens = min(budget, self._reject_tokens + 1.0)
            self._refused = max(0, self._refused - 1)

    def overflowed(self) -> None:
        """The listening socket's kernel queue overflowed while the limit was open: the reader
        itself is the bottleneck (every datagram read and served in Python), which no worker
        queue shows.  The next revision takes it as a standing queue: the limit falls to what
        was served, so the read pace binds and the excess is refused cheaply
        (``signaling/transports/_udpexcess.c``) instead of falling off the kernel queue and
        coming back as retransmissions."""
        if self.rate >= self.cfg.max_rate:
            self._overflowed = True

    def reader_waited(self, wait: float) -> None:
        """How far the listening socket's reader is behind, over a tick
        (``signaling/transports/udp.py``): with the excess drained every few ms, the longest
        wait, which is the loop's lag, the CPU spent on admitted work that no worker queue
        shows; with the limit open (everything read in Python), the least wait, a standing
        queue on the socket.  Held against the target like the queues' waits (a lag that
        falls again after a cut does not cut twice: ``next_limit``)."""
        self._reader_seen = True
        if wait > self._reader_wait:
            self._reader_wait = wait

    def refused_apart(self, count: int) -> None:
        """``count`` new requests were refused (503 or dropped) before reaching ``decide``:
        the listening socket's excess beyond the read pace, refused in C
        (``signaling/transports/_udpexcess.c``).  They count as refused, so the share
        advertised in ``oc`` includes them and a binding limit may rise (``_revise``)."""
        self._refused += count

    def _admissible(self, key: Hashable, count: int, backlog: int) -> bool:
        cfg = self.cfg
        # Little's law: more queued than starts within T1/2 at the limit is a queue whose
        # last request would be retransmitted before it starts, whatever the bucket says.
        if backlog > self._burst():
            return False
        if self._tokens >= 1.0:
            return True
        active = max(self._active, len(self._counts))
        if active < 2 or key in self._heavy:
            return False
        # Under its fair share a source may borrow, repaid by the refill, i.e. by the sources
        # that take tokens as they come: up to a burst of debt for a source that took nothing
        # yet, less the more of its share it took, so a light source always has headroom a
        # heavier one has not.  A source that was over its share last window borrows nothing.
        share = self.rate * cfg.fair_window / active
        allowance = self._burst() * (1.0 - count / share)
        return self._tokens > -allowance

    def started(self, now: float, sojourn: float) -> None:
        """An admitted request left the queue for a worker after ``sojourn`` seconds."""
        self._started += 1
        if sojourn < self._min_sojourn:
            self._min_sojourn = sojourn
        if now >= self._interval_end:
            self._revise(now)

    def started_at_once(self) -> None:
        """``started`` with no sojourn, for a request ``decide`` admitted just before (with
        the same clock reading, so no revision is due; the next ``decide`` makes it if so)."""
        self._started += 1
        self._min_sojourn = 0.0

    def admitted_waited(self, wait: float) -> None:
        """The least time admitted work (responses and in-dialog requests, on the server's own
        port) waited in the kernel over a tick.  New requests arrive apart from it and are read
        fresh, so the worker queues alone no longer show that admitted calls overload the
        server: a standing queue of their responses does."""
        if wait > self._admitted_wait:
            self._admitted_wait = wait

    # -- the control law ----------------------------------------------------------------------

    def _burst(self) -> float:
        # As many as can start within T1/2 at the limit: a burst the queue absorbs.
        # Conditionals, not min/max, here and in ``_refill`` and ``capacity``: every new
        # request comes through them, and the builtins cost four times as much.
        burst = self.rate * self.cfg.burst_time
        return burst if burst > 2.0 else 2.0

    def _refill(self, now: float) -> None:
        elapsed = now - self._last
        if elapsed <= 0:
            return
        self._last = now
        burst = self._burst()
        tokens = self._tokens + elapsed * self.rate
        self._tokens = tokens if tokens < burst else burst
        # The 503 budget follows the capacity (the highest rate recently served), not the
        # limit: the limit swings while it settles, and a budget that swung with it would
        # drop requests that then come back as retransmissions, the costlier way to refuse.
        budget = self.capacity * self.cfg.reject_share
        most = budget * self.cfg.burst_time
        tokens = self._reject_tokens + elapsed * budget
        self._reject_tokens = tokens if tokens < most else most

    def _revise(self, now: float) -> None:
        cfg = self.cfg
        elapsed = max(now - self._interval_start, 1e-6)
        offered = self._admitted + self._refused + self._late
        self.refused_share = (self._refused + self._late) / offered if offered else 0.0
        self.revisions += 1
        self._peak = max(self._peak * _PEAK_DECAY, self._started / elapsed)
        # Nothing started and nothing waiting: the queue is empty, not unknown.  Read as
        # unknown, a limit cut low (calls at 5x: to 101/s) admitted nothing, so nothing
        # started, so it never rose again, and the server idled at 8% of a core while
        # refusing every INVITE for the rest of the storm (bench_overload, load 2.8).
        sojourn = self._min_sojourn if self._started else 0.0
        # No tick of the reader in this interval (its timer and this one drift apart, and a
        # lagging loop runs it late): its last sample stands.  Read as no lag, a missing one
        # doubled a limit that was cutting (bench_overload, storm REGISTERs at 2x: 2,122/s
        # to 3,182/s, then cut twice to 940/s); and an interval without it that refused
        # nothing is no sign of a falling demand (a 66 ms garbage collection, 260 ms at a
        # quarter core, kept the drain from running: the limit followed to twice what was
        # served, 5,337/s, and the next interval dropped 603 late REGISTERs).
        sampled = self._reader_wait >= 0 or not self._reader_seen
        reader = self._reader_wait if self._reader_wait >= 0 else self._last_reader_wait
        self._last_reader_wait = reader
        seen = Interval(
            rate=self.rate, peak=self._peak, ceiling=self._ceiling, served=self._started / elapsed,
            started=self._started > 0, stalled=not self._started and self._backlog > 0,
            wait=max(sojourn, self._admitted_wait, reader),
            previous_wait=self._previous_wait, draining=self._draining,
            just_cut=self.last_move is Move.CUT, sampled=sampled,
            binding=bool(self._refused or self._late), overflowed=self._overflowed,
            cut_wait=self._cut_wait if self._draining else 0.0)
        opened = self.rate >= cfg.max_rate
        self.rate, move = next_limit(seen, cfg)
        self.last_move = move
        if move is Move.CUT:
            self._ceiling = self._peak
            self._cut_wait = seen.wait
        # A cut, and every hold after it while the queue it answered drains, is one episode.
        self._draining = move is Move.CUT or (move is Move.HOLD and self._draining)
        # The onset lasts while the limit is open and then while the queue its cut from open
        # answered is over the target: not the next cut's episode, nor the holds near the
        # target, which may last the whole storm; late reads then are stalls, and refusing
        # their INVITEs starved the server (``max_answered_delay``).
        self._onset = (self.rate >= cfg.max_rate or (opened and move is Move.CUT)
                       or (self._onset and move is Move.HOLD and seen.wait > cfg.target))
        self._previous_wait = seen.wait
        self._interval_start = now
        self._interval_end = now + cfg.interval
        self._min_sojourn = float("inf")
        self._admitted_wait = 0.0
        self._overflowed = False
        self._reader_wait = -1.0
        self._started = self._admitted = self._refused = self._late = 0

    def _roll_window(self, now: float) -> None:
        self._active = max(1, len(self._counts))
        share = self.rate * self.cfg.fair_window / self._active
        self._heavy = {k for k, c in self._counts.items() if c >= share}
        self._counts.clear()
        self._window_end = now + self.cfg.fair_window

    def _slot(self, source: Hashable) -> Hashable:
        if source in self._counts or len(self._counts) < self.cfg.max_sources:
            return source
        return ("overflow", hash(source) % OVERFLOW_SLOTS)

    def receive_gate(self, answer_late: bool) -> float:
        """Seconds in the kernel past which a new request is late (``decide``): for those
        answered when late (INVITEs), ``max_answered_delay`` at a storm's onset."""
        if answer_late and self._onset:
            return self.cfg.max_answered_delay
        return self.cfg.max_receive_delay

    @property
    def capacity(self) -> float:
        """New requests per second the server can take: the limit, or the highest rate the
        workers recently started requests at when the limit swung below it."""
        return self.rate if self.rate >= self._peak else self._peak

    @property
    def heavy_sources(self) -> list[str]:
        """The addresses over their share in the last window (``_roll_window``): what a
        filter in front of the server may shed first (signaling/transports/udpshed.py)."""
        return [k for k in self._heavy if isinstance(k, str)]

    @property
    def sources_tracked(self) -> int:
        return len(self._counts)
