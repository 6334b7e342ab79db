"""Overload control on the receive path: admitted work first, new work by measured capacity.

``SipCore`` calls ``screen`` with every datagram before parsing it.  Only requests that would
start new work (an INVITE, REGISTER, SUBSCRIBE ... without a To tag) are screened; responses,
ACK, CANCEL, BYE, PRACK, every in-dialog request and anything else pass untouched, so a call that
was admitted completes whatever the storm.  A screened request is

* admitted by ``AdmissionControl`` (``protocols/sip/overload.py``): the admission limit follows
  the sojourn time in the worker queues, reported through ``started``, and nothing that waited
  longer than ``max_receive_delay`` in the kernel is admitted (``max_invite_delay`` for an
  INVITE at a storm's onset);
* refused with a stateless 503 and a jittered Retry-After (RFC 3261 §21.5.4; jittered so the
  refused clients do not all come back in the same second, RFC 6357 §6.2), which leaves no
  transaction, or
* dropped before it is even parsed, when answering would cost more than the server has
  (``reject_share``), and counted.

The decision is made on the raw bytes (method token and To tag found by a scan, a few µs) so a
drop costs no parse; the 503 is sent only after the parse, and only when the request matched no
transaction (a retransmission of admitted work is absorbed by its transaction as always).

RFC 7339: requests whose top Via says ``oc`` get this server's current report written into that
Via, so every response to them (the 503s included) tells the client how much to shed.

Not here: the proxy's side of RFC 7339 (honouring reports from downstream) is ``OcClient`` used
in ``signaling/proxy.py``; the priority of admitted work in the worker queues is
``Dispatcher.submit(urgent=...)``.
"""

from __future__ import annotations

import random
import re
from typing import TYPE_CHECKING

from protocols.sip.message import Request
from protocols.sip.oc import OcServer, client_supports_loss, oc_via_params
from protocols.sip.overload import AdmissionConfig, AdmissionControl, Verdict, retry_after_range
from signaling.config import Config
from signaling.metrics import Metrics

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["REFUSED_GENERATION_T1", "REFUSED_MEMORY", "SHED_BAND", "Overload", "Verdict",
           "admitted_work", "starts_new_work"]

#: Methods that start new work when outside a dialog.  OPTIONS is not among them: the core
#: answers it statelessly for itself (a keepalive or health probe costs what a 503 would) and
#: proxies the rest like any request.
_NEW_WORK = {m.encode(): m for m in
             ("INVITE", "REGISTER", "SUBSCRIBE", "PUBLISH", "MESSAGE", "REFER", "NOTIFY")}
_NEW_WORK_NAMES = frozenset(_NEW_WORK.values())
#: A To header (or its compact form ``t``, §7.3.3) carrying a tag: a request inside a dialog.
_TO_TAG = re.compile(rb"\n(?:to|t)[ \t]*:[^\r\n]*;[ \t]*tag[ \t]*=", re.IGNORECASE)
#: The Call-ID and the To tag of an ACK, to recognise the ACK of one of our 503s unparsed.
_CALL_ID = re.compile(rb"\n(?:call-id|i)[ \t]*:[ \t]*([^\r\n]*?)[ \t]*\r?\n", re.IGNORECASE)
_TO_TAG_VALUE = re.compile(rb"\n(?:to|t)[ \t]*:[^\r\n]*;[ \t]*tag[ \t]*=[ \t]*([^;\s]+)",
                           re.IGNORECASE)
#: Read once: an enum member looked up on its class costs ten times a global in Python 3.11
#: (``EnumType.__getattr__``), and ``screen`` and ``decide`` run per message.
_ADMIT = Verdict.ADMIT
_DROP = Verdict.DROP
#: 503s remembered for their ACK, per generation (two generations: the last 2 x this many).
REFUSED_MEMORY = 16_384
#: Seconds, in T1 units, a generation of remembered 503s lasts: an ACK comes when a 503
#: reaches its client, whose INVITE retransmissions (each answered again) end at Timer B,
#: 64*T1 (RFC 3261 §17.1.1.2).  After two generations without a refusal the memory is empty
#: and an ACK costs no scan.
REFUSED_GENERATION_T1 = 64
#: The reason the drain's refusals of the kernel shed's band are counted under (``band``):
#: the released transactions of a storm already refused, not refusals for want of capacity.
SHED_BAND = "shed_band"


def starts_new_work(data: bytes) -> str | None:
    """The method, when ``data`` is a request that would start new work; else None.

    A scan, not a parse: the method token, then a To tag in the header section.  Anything
    that does not look like such a request (a response, a malformed datagram) is not screened
    here; the parser deals with it.
    """
    method = _NEW_WORK.get(data[:data.find(b" ", 0, 12)])
    if method is None:
        return None
    # The whole datagram is searched and the end of the header section looked for only when
    # a To tag turned up: finding it first took a third of this function (timeit), and the
    # first match lies before it exactly when one does (a match never leaves its line).
    tagged = _TO_TAG.search(data)
    if tagged is not None:
        end = data.find(b"\r\n\r\n")
        if end < 0 or tagged.start() < end:
            return None
    return method


def admitted_work(data: bytes) -> bool:
    """Whether ``data`` is work already admitted: a response (to a transaction of ours), a
    CANCEL (of an INVITE let in, RFC 3261 §9.2; one that matches none gets its 481), or a
    request with a To tag in its header section (inside a dialog, §12.2: the ACK of a 2xx, a
    BYE, a re-INVITE ...).  Issue 13: such work comes first and is never shed, whatever the
    read pace (``signaling/transports/udp.py``), as ``_udpexcess.c`` classes it
    (``K_ADMITTED``).  A scan, not a parse: the first bytes, then one search (callgrind,
    this function on a 380-byte REGISTER: ~8,300 instructions, a BYE ~10,000; a
    plain search for the usual ``\nTo:`` first saved a third of it but misjudged a compact
    To header with a ``To:`` line in the body, so it was not kept).  A To tag
    proves no dialog: a made-up one costs its read and parse, and is then admitted like a new
    request against its source's share (``SipCore``: only a dialog held here is admitted
    work), so a source that floods them is named heavy and refused.
    """
    head = data[:8]
    if head == b"SIP/2.0 " or head[:7] == b"CANCEL ":
        return True
    tagged = _TO_TAG.search(data)
    if tagged is None:
        return False
    end = data.find(b"\r\n\r\n")  # a To tag in the body is no To tag (see ``starts_new_work``)
    return end < 0 or tagged.start() < end


class Overload:
    """The admission controller, its metrics, the jittered 503 and the ``oc`` report."""

    def __init__(self, cfg: Config, metrics: Metrics, clock: Callable[[], float],
                 rng: random.Random | None = None) -> None:
        self.cfg = cfg
        self._clock = clock
        self._rng = rng or random.Random()
        now = clock()
        self.control = AdmissionControl(AdmissionConfig(
            target=cfg.overload_target, max_rate=cfg.overload_max_rate,
            reject_share=cfg.overload_reject_share,
            max_receive_delay=cfg.max_receive_delay,
            max_answered_delay=cfg.max_invite_delay), now)
        self.oc = OcServer()
        self._revision = 0
        #: Returns the number of admitted requests waiting for a worker.
        self.backlog: Callable[[], int] = lambda: 0
        self._tails: dict[int, bytes] = {}
        #: (Call-ID, To tag) of recent 503s: their ACKs (§17.1.1.3, hop by hop, ours) are
        #: absorbed before any parse.  Two bounded generations, the older dropped whole.
        self._refused: set[tuple[bytes, bytes]] = set()
        self._refused_old: set[tuple[bytes, bytes]] = set()
        self._generation_end = now + REFUSED_GENERATION_T1 * cfg.t1
        self.c_admitted = metrics.fast_counter(
            "sip_overload_admitted",
            "New SIP requests admitted (with the retransmissions among them, which "
            "sip_overload_retransmitted counts apart)", ["method"])
        self.c_rejected = metrics.fast_counter(
            "sip_overload_rejected", "New SIP requests refused with 503", ["reason", "method"])
        self.c_retransmitted = metrics.fast_counter(
            "sip_overload_retransmitted", "Retransmissions of new SIP requests already taken, "
            "absorbed by their transaction (what their admission took given back)",
            ["method"])
        self.c_dropped = metrics.fast_counter(
            "sip_overload_dropped", "New SIP requests dropped unanswered", ["reason", "method"])
        self.c_drain_late = metrics.fast_counter(
            "sip_overload_drain_late", "New SIP requests the listening socket's excess drain "
            "refused (503 or drop, counted in sip_overload_rejected or _dropped with reason "
            "excess) because they waited longer than max_receive_delay in the kernel")
        self.c_moves = metrics.fast_counter(
            "sip_admission_revisions", "Revisions of the admission limit by what they did "
            "(cut, hold, probe, recover, follow: protocols.sip.overload.next_limit)", ["move"])
        self.c_oc_sent = metrics.fast_counter(
            "sip_oc_sent", "Responses carrying our RFC 7339 oc report", ["reduction"])
        self.h_sojourn = metrics.histogram(
            "sip_queue_sojourn_seconds", "Read from the socket to a worker taking the request",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5))
        metrics.callback_gauge("sip_admission_limit", "Current admission limit, requests/s", [],
                               lambda: {(): self.control.rate})
        metrics.callback_gauge("sip_overload_sources", "Sources tracked for fairness", [],
                               lambda: {(): float(self.control.sources_tracked)})
        #: Share of REGISTERs the listening socket's kernel filter drops now (set by the UDP
        #: transport: signaling/transports/udpshed.py); its drops are counted as
        #: "kernel_shed" (the socket counts them with its overflows: while a filter is on,
        #: all are taken as its own).
        self.kernel_shed = 0.0
        metrics.callback_gauge("sip_overload_kernel_shed_share",
                               "Share of REGISTER transactions dropped by the listening "
                               "socket's filter, retransmissions and all (counted in "
                               "sip_overload_dropped{reason=\"kernel_shed\"})", [],
                               lambda: {(): self.kernel_shed})
        #: With ``--overload-kernel-shed ebpf`` (signaling/transports/udpebpf.py), since the
        #: start: transactions the filter remembered (dropped at their first send) and the
        #: retransmissions its memory dropped (RFC 3261 §17.1.2.2), also after the share came
        #: down.  Both among the "kernel_shed" drops.
        self.kernel_memory = {"added": 0.0, "remembered": 0.0}
        metrics.callback_gauge("sip_overload_kernel_shed_memory",
                               "eBPF kernel shed, so far: REGISTER transactions remembered "
                               "(kind=added) and retransmissions dropped by that memory "
                               "(kind=remembered)", ["kind"],
                               lambda: {(k,): v for k, v in self.kernel_memory.items()})

    def screen(self, data: bytes, source: str, waited: float) -> Verdict:
        """ADMIT for everything that is not new work and for admitted new work; REJECT (answer
        503 after the parse, unless it is a retransmission) or DROP (discard now)."""
        method = starts_new_work(data)
        if method is None:
            if data[:4] == b"ACK " and self._refusing() and self._ack_of_503(data):
                self.c_dropped.inc("ack_of_503", "ACK")
                return _DROP
            return _ADMIT
        return self.decide(method, source, waited)

    def decide(self, method: str, source: str, waited: float) -> Verdict:
        """Admit, refuse or drop a new request of ``method`` (a metric label: one of a known
        set); ``screen`` for raw bytes, the core for parsed requests of no dialog it holds."""
        verdict = self.control.decide(self._clock(), source, self.backlog(), waited,
                                      method == "INVITE")
        if verdict is _ADMIT:
            self.c_admitted.inc(method)
        elif verdict is _DROP:
            self.c_dropped.inc(self._reason(waited, method), method)
        if self.control.revisions != self._revision:
            self._revision = self.control.revisions
            self.oc.update(self._clock(), self.control.refused_share)
            self.c_moves.inc(self.control.last_move.value)
        return verdict

    def retransmitted(self, method: str, source: str, verdict: Verdict) -> None:
        """A request that ``screen`` took for new work (``verdict``) matched a server
        transaction: a retransmission, absorbed there.  What its admission took is given
        back (``AdmissionControl.retransmitted``) and it is counted apart."""
        if method in _NEW_WORK_NAMES and verdict is not Verdict.DROP:
            self.control.retransmitted(source, verdict)
            self.c_retransmitted.inc(method)

    def excess(self, answered: tuple[int, int, int], dropped_new: int,
               dropped_retransmissions: int, dropped_of_503: int, dropped_other: int,
               late: int = 0) -> None:
        """Count what the listening socket's excess drain (``signaling/transports/
        _udpexcess.c``) did beyond the read pace: 503s to INVITE, REGISTER and other new
        requests, new requests dropped (the 503 budget spent, or outside the subset a 503 is
        written from), retransmissions of requests let through (dropped, never refused),
        requests carrying one of its 503s' To tag (an ACK, a load generator's BYE) and
        anything else (left as the kernel's tail drop would have).  ``late``: of the new
        requests answered or dropped, those refused because they waited longer than
        ``max_receive_delay`` in the kernel, whatever the pace (counted apart too).  The
        refusals count for admission control too (``AdmissionControl.refused_apart``)."""
        for method, count in zip(("INVITE", "REGISTER", "other"), answered, strict=True):
            if count:
                self.c_rejected.inc("excess", method, amount=count)
        for reason, method, count in (("excess", "new", dropped_new),
                                      ("excess_retransmission", "new", dropped_retransmissions),
                                      ("ack_of_503", "ACK_BYE", dropped_of_503),
                                      ("excess", "other", dropped_other)):
            if count:
                self.c_dropped.inc(reason, method, amount=count)
        if late:
            self.c_drain_late.inc(amount=late)
        refused = sum(answered) + dropped_new
        if refused:
            self.control.refused_apart(refused)

    def band(self, answered: int, dropped: int) -> None:
        """Count the REGISTERs the drain refused for the kernel shed's band
        (``udpshed.KernelShed.band``: after the filter's share came down, the retransmissions
        of the transactions it dropped): 503s, and drops once the 503 budget is spent.  Not
        refusals for want of capacity: admission control does not count them."""
        if answered:
            self.c_rejected.inc(SHED_BAND, "REGISTER", amount=answered)
        if dropped:
            self.c_dropped.inc(SHED_BAND, "REGISTER", amount=dropped)

    def capacity_refusals(self) -> tuple[float, float]:
        """The 503s sent so far for want of capacity: REGISTERs, and all methods.  Not the
        band's (``band``): those answer the retransmissions of the transactions the kernel
        shed dropped, released when its share came down, and read as refusals they made the
        filter's release a new storm (bench_recovery, REGISTERs: 16,507 band 503s in the
        second after the share came down, the share straight back up, four times over 45 s
        after the storm)."""
        registers = total = 0.0
        for labels, count in self.c_rejected.values.items():  # (reason, method)
            if labels[0] != SHED_BAND:
                total += count
                if labels[-1] == "REGISTER":
                    registers += count
        return registers, total

    def _reason(self, waited: float, method: str) -> str:
        # The gate ``decide`` applied: past a storm's onset an INVITE that waited 0.1-0.25 s
        # and was refused was refused by the limit, not as late.
        late = waited > self.control.receive_gate(method == "INVITE")
        return "receive_delay" if late else "admission"

    def rejected(self, req: Request, to_tag: str, waited: float, label: str) -> bytes:
        """Count a 503 about to be sent with ``to_tag`` (``label``: the method as a metric
        label); the tail (Retry-After onwards) to send it with.  Its ACK will be absorbed
        unparsed (``screen``)."""
        self.c_rejected.inc(self._reason(waited, label), label)
        if req.method == "INVITE":
            now = self._clock()
            if len(self._refused) >= REFUSED_MEMORY:
                self._generation_end = now  # full: the next generation starts now
            self._rotate(now)
            self._refused.add((req.call_id.encode("utf-8", "surrogateescape"),
                               to_tag.encode()))
        return self.retry_tail()

    @property
    def remembered(self) -> int:
        """503s remembered for their ACKs now (at most ``2 * REFUSED_MEMORY``)."""
        return len(self._refused) + len(self._refused_old)

    def _refusing(self) -> bool:
        """Whether a 503 is still remembered for its ACK."""
        if not (self._refused or self._refused_old):
            return False
        self._rotate(self._clock())
        return bool(self._refused or self._refused_old)

    def _rotate(self, now: float) -> None:
        """Past its end, the current generation becomes the old one (the old one is
        forgotten), or both are forgotten when the old one would be over too."""
        if now < self._generation_end:
            return
        span = REFUSED_GENERATION_T1 * self.cfg.t1
        self._refused_old = self._refused if now < self._generation_end + span else set()
        self._refused = set()
        self._generation_end = now + span

    def _ack_of_503(self, data: bytes) -> bool:
        # A refusal costs a parse and a 503; without this its ACK would cost a parse and the
        # proxy's look-up of a dialog that does not exist, nearly as much again.
        end = data.find(b"\r\n\r\n")
        end = end if end >= 0 else len(data)
        call_id = _CALL_ID.search(data, 0, end)
        tag = _TO_TAG_VALUE.search(data, 0, end)
        if call_id is None or tag is None:
            return False
        key = (call_id.group(1), tag.group(1))
        return key in self._refused or key in self._refused_old

    def retry_range(self) -> tuple[int, int]:
        """Retry-After's bounds now: the configured one stretched by the share refused
        (``protocols.sip.overload.retry_after_range``)."""
        return retry_after_range(self.cfg.retry_after, self.control.refused_share)

    def retry_tail(self) -> bytes:
        """Retry-After drawn from ``retry_range`` so refused clients spread their return."""
        low, high = self.retry_range()
        value = self._rng.randint(low, high)
        tail = self._tails.get(value)
        if tail is None:
            # What ``sipcore.stateless_tail`` makes of one Retry-After header (the core
            # imports this module, not the other way round).
            tail = self._tails[value] = b"\r\nRetry-After: %d\r\nContent-Length: 0\r\n\r\n" % value
        return tail

    def started(self, sojourn: float) -> None:
        """An admitted request was taken by a worker after ``sojourn`` seconds."""
        self.h_sojourn.observe(sojourn)
        self.control.started(self._clock(), sojourn)

    def started_at_once(self) -> None:
        """``started`` for a request handled as it was read (``SipCore.answer_at_once``): it
        never queued, so its sojourn is 0, and it was screened (``screen`` or ``decide``) a
        moment ago, which read the clock and revised the limit if due: no second read."""
        self.h_sojourn.observe(0.0)
        self.control.started_at_once()

    def stamp_oc(self, req: Request) -> None:
        """Write our current report into the top Via of a request from an oc client (§5.2),
        so every response to it carries the report back."""
        top = req.vias[0]
        if not client_supports_loss(top.params):
            return
        report = self.oc.report()
        if report is None:
            return
        params = dict(top.params)
        for name in [k for k in params if k.lower().startswith("oc")]:
            del params[name]  # the client's bare oc / oc-algo list are replaced (§5.2)
        params.update(oc_via_params(report))
        req.vias[0] = type(top)(top.transport, top.host, top.port, params, top.protocol)
        self.c_oc_sent.inc(str(report.reduction))
