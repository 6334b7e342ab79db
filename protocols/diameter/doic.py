"""Diameter Overload Indication Conveyance, DOIC (RFC 7683), with the loss algorithm.

Both roles, sans-I/O (``now`` passed in, no clock, no socket):

* ``Reporter`` (reporting node, §5.2.1, §5.3): fed a load figure, it decides the reduction it
  asks for and turns it into an OC-OLR (§7.3) of type host.  The reduction follows the load in
  steps (up ``STEP_UP`` percent while the load is above ``HIGH``, down ``STEP_DOWN`` while it is
  below ``LOW``, at most once per ``interval``): reacting nodes need a round trip to react, so
  jumping straight to "whatever the queue says now" would oscillate.  Every change of content
  gets a new OC-Sequence-Number (§7.4), and so does a report older than half its validity, since
  validity counts from the first receipt of a sequence number (§7.5), not from each answer.
  When the reduction is back at 0 the report is ended explicitly with OC-Validity-Duration 0
  (§5.5), repeated until the last report would have expired anyway.
* ``Reactor`` (reacting node, §5.2.2, §5.3): keeps the host report of one peer.  A report whose
  sequence number is not greater than the last one received is stale or the same and is
  ignored (the reporter seeds its numbers from the clock, so they grow across its restarts);
  validity 0 ends the report; validity absent or above 86,400 s means 30 s (§7.5).  ``admit()``
  throttles exactly the reduction's share of requests (the loss algorithm, §6; a credit counter
  instead of a random draw, so the share is exact over any window and tests are deterministic).

Only requests that carry OC-Supported-Features (§7.1) get DOIC AVPs in their answers (§5.1);
legacy peers see nothing new.  DOIC AVPs go without the M bit (§7.8), so a node that does not
know them ignores them (RFC 6733 §4.1).  Realm reports (OC-Report-Type 1) are parsed but not
acted on: this node talks to its peers directly, where a host report is what applies.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from protocols.diameter.codec import Avp, Message, decode_avps, encode_avp
from protocols.diameter.errors import RemoteProtocolError

__all__ = [
    "DEFAULT_VALIDITY",
    "HOST_REPORT",
    "MAX_REDUCTION",
    "MAX_VALIDITY",
    "OC_FEATURE_VECTOR",
    "OC_OLR",
    "OC_SUPPORTED_FEATURES",
    "OLR_DEFAULT_ALGO",
    "REALM_REPORT",
    "OverloadReport",
    "Reactor",
    "Reporter",
    "olr_avp",
    "parse_olr",
    "supported_features_avp",
    "supports_doic",
]

# AVP codes (RFC 7683 §7, IANA).
OC_SUPPORTED_FEATURES = 621
OC_FEATURE_VECTOR = 622
OC_OLR = 623
OC_SEQUENCE_NUMBER = 624
OC_VALIDITY_DURATION = 625
OC_REPORT_TYPE = 626
OC_REDUCTION_PERCENTAGE = 627

OLR_DEFAULT_ALGO = 0x1  # §7.2: the loss algorithm
HOST_REPORT = 0  # §7.6
REALM_REPORT = 1

DEFAULT_VALIDITY = 30  # §7.5
MAX_VALIDITY = 86_400

# Reporter tuning.  The load figure is the share of the request queue in use (0..1).  Above
# HIGH the queue is building (half full is ~135 ms of backlog at the default size and rate);
# below LOW it is draining.  Steps of 20 up and 10 down reach a heavy reduction within a few
# intervals and back off gently, like AIMD.  Never 100: a peer that sends nothing brings no
# answers to carry the report that lifts the reduction again.
HIGH = 0.5
LOW = 0.1
STEP_UP = 20
STEP_DOWN = 10
MAX_REDUCTION = 90
DEFAULT_INTERVAL = 1.0

_U32 = struct.Struct("!I")
_U64 = struct.Struct("!Q")


@dataclass(frozen=True, slots=True)
class OverloadReport:
    """One OC-OLR's content (§7.3)."""

    sequence: int
    report_type: int = HOST_REPORT
    reduction: int = 0
    validity: int = DEFAULT_VALIDITY


def _u32(code: int, value: int) -> bytes:
    return encode_avp(code, 0, _U32.pack(value))


def _u64(code: int, value: int) -> bytes:
    return encode_avp(code, 0, _U64.pack(value))


_SUPPORTED = Avp(OC_SUPPORTED_FEATURES, 0, _u64(OC_FEATURE_VECTOR, OLR_DEFAULT_ALGO))


def supported_features_avp() -> Avp:
    """OC-Supported-Features announcing (request) or selecting (answer) the loss algorithm."""
    return _SUPPORTED


def supports_doic(msg: Message) -> bool:
    """Did the sender announce DOIC with the loss algorithm (or no vector: the default, §7.2)?"""
    avp = msg.find(OC_SUPPORTED_FEATURES)
    if avp is None:
        return False
    try:
        children = avp.children()
    except RemoteProtocolError:
        return False
    for child in children:
        if child.code == OC_FEATURE_VECTOR and child.vendor_id == 0 and len(child.data) == 8:
            return bool(_U64.unpack(child.data)[0] & OLR_DEFAULT_ALGO)
    return True


def olr_avp(report: OverloadReport) -> Avp:
    data = _u64(OC_SEQUENCE_NUMBER, report.sequence) + _u32(OC_REPORT_TYPE, report.report_type)
    data += _u32(OC_REDUCTION_PERCENTAGE, report.reduction)
    data += _u32(OC_VALIDITY_DURATION, report.validity)
    return Avp(OC_OLR, 0, data)


def parse_olr(msg: Message) -> OverloadReport | None:
    """The answer's OC-OLR, or None if absent or unusable (missing required parts, §7.3)."""
    avp = msg.find(OC_OLR)
    if avp is None:
        return None
    try:
        children = decode_avps(avp.data)
    except RemoteProtocolError:
        return None
    values: dict[int, int] = {}
    for child in children:
        if child.vendor_id == 0 and child.code not in values:
            if child.code == OC_SEQUENCE_NUMBER and len(child.data) == 8:
                values[child.code] = _U64.unpack(child.data)[0]
            elif len(child.data) == 4:
                values[child.code] = _U32.unpack(child.data)[0]
    if OC_SEQUENCE_NUMBER not in values or OC_REPORT_TYPE not in values:
        return None
    validity = values.get(OC_VALIDITY_DURATION, DEFAULT_VALIDITY)
    if validity > MAX_VALIDITY:
        validity = DEFAULT_VALIDITY
    return OverloadReport(values[OC_SEQUENCE_NUMBER], values[OC_REPORT_TYPE],
                          min(100, values.get(OC_REDUCTION_PERCENTAGE, 0)), validity)


class Reporter:
    """The reporting node's side: load in, the AVPs for each DOIC answer out."""

    def __init__(self, first_sequence: int, interval: float = DEFAULT_INTERVAL,
                 validity: int = DEFAULT_VALIDITY) -> None:
        self.interval = interval
        self.validity = validity
        self.reduction = 0
        self._sequence = first_sequence
        self._report: OverloadReport | None = None  # what answers carry now
        self._issued = 0.0  # when the current sequence number was first sent
        self._until = 0.0  # when the current report stops being sent
        self._next_eval = float("-inf")

    @property
    def report(self) -> OverloadReport | None:
        return self._report

    def observe(self, load: Callable[[], float], now: float) -> None:
        """Before an answer: the reduction may move (at most once per ``interval``, and only
        then is ``load()``, 0..1, asked), and the report is renewed or retired as due."""
        if now < self._next_eval:
            self._refresh(now)
            return
        self._next_eval = now + self.interval
        reduction = self.reduction
        level = load()
        if level > HIGH:
            reduction = min(MAX_REDUCTION, reduction + STEP_UP)
        elif level < LOW:
            reduction = max(0, reduction - STEP_DOWN)
        if reduction != self.reduction:
            self.reduction = reduction
            if reduction:
                self._issue(OverloadReport(0, HOST_REPORT, reduction, self.validity), now)
            elif self._report is not None:
                # §5.5: end the report explicitly; reacting nodes that miss it (they sent
                # nothing meanwhile) still stop when the previous validity runs out.
                self._issue(OverloadReport(0, HOST_REPORT, 0, 0), now, self.validity)
        self._refresh(now)

    def answer_avps(self) -> list[Avp]:
        """OC-Supported-Features, plus OC-OLR while a report (or its end) is current."""
        report = self._report
        if report is None:
            return [_SUPPORTED]
        return [_SUPPORTED, olr_avp(report)]

    def _issue(self, report: OverloadReport, now: float, lasts: float | None = None) -> None:
        self._sequence += 1
        self._report = OverloadReport(self._sequence, report.report_type, report.reduction,
                                      report.validity)
        self._issued = now
        self._until = now + (lasts if lasts is not None else float("inf"))

    def _refresh(self, now: float) -> None:
        report = self._report
        if report is None:
            return
        if now >= self._until:
            self._report = None  # the end was announced long enough
        elif report.validity and now - self._issued >= report.validity / 2:
            self._issue(report, now)  # same content, new number: validity starts again


class Reactor:
    """The reacting node's side for one peer: its host report and the throttle it implies."""

    def __init__(self) -> None:
        self.report: OverloadReport | None = None
        self._last_sequence = -1
        self._expires = 0.0
        self._credit = 0

    def receive(self, answer: Message, now: float) -> bool:
        """Take the answer's OC-OLR into account; True if it changed the stored report."""
        olr = parse_olr(answer)
        if olr is None or olr.report_type != HOST_REPORT:
            return False
        if olr.sequence <= self._last_sequence:
            return False  # stale, or the same report again: validity does not restart (§7.5)
        self._last_sequence = olr.sequence
        current = self.reduction(now) and self.report
        if olr.validity == 0:
            self.report = None  # §5.5: the report ends
            self._credit = 0
            return bool(current)
        self.report = olr
        self._expires = now + olr.validity
        return True

    def reduction(self, now: float) -> int:
        if self.report is not None and now >= self._expires:
            self.report = None  # expired (§7.5)
            self._credit = 0
        return self.report.reduction if self.report is not None else 0

    def admit(self, now: float) -> bool:
        """Whether to send this request (False: throttle it, §6 loss algorithm)."""
        reduction = self.reduction(now)
        if not reduction:
            return True
        self._credit += reduction  # in percent: integers, so the share is exact
        if self._credit >= 100:
            self._credit -= 100
            return False
        return True
