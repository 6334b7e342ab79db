"""SIP overload control, sans-I/O: RFC 7339 ``oc`` Via parameters, both ways.

``OcServer`` / ``OcClient``: RFC 7339 loss-based overload control.  A client that supports it
marks its Via with ``oc`` and ``oc-algo="loss"`` (§5.1); a server tells it, in the same Via of
its responses, what share of new requests to shed (``oc``, 0-100), for how long
(``oc-validity``, ms) and in which order the reports were made (``oc-seq``) (§5.2).  The
client keeps per server the report with the highest ``oc-seq`` (a lower one arrived out of order
and is ignored, an equal one repeats what it has and does not restart its validity), sheds that
percentage of new requests while the report is valid, and stops when it expires or when a report
says ``oc-validity=0`` (§5.3, §6).

Plain objects fed ``now`` (seconds, any monotonic clock); the share a server reports is the
share its admission control refused (``protocols/sip/overload.py``), which ``signaling/overload.py``
passes in: this module imports neither.
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Mapping
from dataclasses import dataclass

__all__ = [
    "DEFAULT_VALIDITY_MS",
    "OcClient",
    "OcReport",
    "OcServer",
    "client_supports_loss",
    "format_seq",
    "oc_via_params",
    "parse_report",
]

#: RFC 7339 §5.2: without ``oc-validity`` a report holds for 500 ms.
DEFAULT_VALIDITY_MS = 500
#: Highest ``oc`` value for the loss algorithm: a percentage (§6.1).
MAX_REDUCTION = 100
#: Percentage points the advertised reduction falls per admission interval once nothing is
#: refused any more.
STEP_DOWN = 10


# -- RFC 7339 parameters ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OcReport:
    """One server's overload report as carried in a response's Via (§5.2)."""

    reduction: int  # percent of new requests the client must shed (loss, §6)
    validity_ms: int  # how long it holds; 0 = overload control stopped
    seq: float  # oc-seq: orders reports from one server

    @property
    def stops(self) -> bool:
        return self.validity_ms == 0


def _get(params: Mapping[str, str | None], name: str) -> tuple[bool, str | None]:
    """Whether ``name`` is present (any case, §7.3.1) and its value."""
    if name in params:
        return True, params[name]
    for key, value in params.items():
        if key.lower() == name:
            return True, value
    return False, None


def _algos(value: str | None) -> list[str]:
    if value is None:
        return []
    return [a.strip().lower() for a in value.strip('"').split(",") if a.strip()]


def client_supports_loss(params: Mapping[str, str | None]) -> bool:
    """A request's top Via says its sender does loss-based overload control (§5.1): ``oc``
    present and ``oc-algo`` listing "loss" (every client must support loss, §5.1, so an absent
    ``oc-algo`` means loss)."""
    present, _ = _get(params, "oc")
    if not present:
        return False
    has_algo, algo = _get(params, "oc-algo")
    return not has_algo or "loss" in _algos(algo)


def format_seq(seq: float) -> str:
    """``oc-seq = 1*12DIGIT "." 1*5DIGIT`` (§9): a timestamp-like number."""
    whole = int(seq)
    frac = round((seq - whole) * 100_000)
    if frac >= 100_000:
        whole, frac = whole + 1, frac - 100_000
    return f"{whole % 10**12}.{frac:05d}"


def oc_via_params(report: OcReport) -> dict[str, str | None]:
    """The parameters a server writes into the client's Via of a response (§5.2)."""
    return {"oc": str(report.reduction), "oc-algo": '"loss"',
            "oc-validity": str(report.validity_ms), "oc-seq": format_seq(report.seq)}


def parse_report(params: Mapping[str, str | None]) -> OcReport | None:
    """The report in a response's Via (our own Via, §5.3), or None when it carries none.

    A report without a numeric ``oc`` value (the client's own bare ``oc`` coming back), with an
    algorithm other than loss, or with a malformed ``oc-seq`` is not a loss report and is
    ignored rather than guessed at.
    """
    present, value = _get(params, "oc")
    if not present or value is None or not value.isdigit():
        return None
    has_algo, algo = _get(params, "oc-algo")
    if has_algo and _algos(algo) != ["loss"]:
        return None  # the server must choose exactly one algorithm (§5.2)
    _, validity = _get(params, "oc-validity")
    if validity is None:
        validity_ms = DEFAULT_VALIDITY_MS
    elif validity.isdigit():
        validity_ms = int(validity)
    else:
        return None
    _, seq_text = _get(params, "oc-seq")
    seq = 0.0
    if seq_text is not None:
        whole, dot, frac = seq_text.partition(".")
        if not (whole.isdigit() and (not dot or frac.isdigit())):
            return None
        seq = float(seq_text)
    return OcReport(min(int(value), MAX_REDUCTION), validity_ms, seq)


class OcServer:
    """What this server advertises (§5.2): the share it refuses now, with a sequence number
    that increases whenever the advertised values change (so clients can order reports)."""

    def __init__(self, validity_ms: int = 2_000) -> None:
        self.validity_ms = validity_ms
        self._report: OcReport | None = None
        self._stopped_until = 0.0

    def update(self, now: float, refused_share: float) -> None:
        """Once per admission interval: the share of new requests refused in it (0..1).

        Clients that follow a report send only (100 - oc)% of their new requests, so what we
        still refuse comes on top: the next report compounds the two.  With nothing refused,
        the reduction steps down by ``STEP_DOWN`` points per interval rather than to 0 at
        once, so clients do not all return together and refill the queue (RFC 6357 §6.2).
        """
        current = self._report
        held = 0 if current is None or current.stops else current.reduction
        if refused_share > 0:
            kept = (1 - held / 100) * (1 - refused_share)
            reduction = round(100 * (1 - kept))
        else:
            reduction = max(0, held - STEP_DOWN)
        reduction = max(0, min(MAX_REDUCTION, reduction))
        if reduction > 0:
            if current is None or current.stops or current.reduction != reduction:
                self._report = OcReport(reduction, self.validity_ms, self._next_seq(now))
            return
        if current is not None and not current.stops:
            # Overload over: tell clients to stop (oc-validity=0, §5.2) for one validity
            # period, long enough for every client holding the old report to hear it.
            self._report = OcReport(0, 0, self._next_seq(now))
            self._stopped_until = now + self.validity_ms / 1000
        elif current is not None and now >= self._stopped_until:
            self._report = None

    def report(self) -> OcReport | None:
        """The report to put in responses to clients that support oc, or None."""
        return self._report

    def _next_seq(self, now: float) -> float:
        # oc-seq must increase from report to report (§5.2): a timestamp, nudged past the
        # previous one when two changes fall in the same 10 µs.
        seq = round(now, 5)
        if self._report is not None and seq <= self._report.seq:
            seq = self._report.seq + 0.00001
        return seq


@dataclass(slots=True)
class _Held:
    report: OcReport
    expires: float


class OcClient:
    """Reports from downstream servers and the loss-based throttle they impose (§5.3, §6).

    Keyed by whatever identifies a server (host, port); at most ``max_servers`` are held (an
    expired one is forgotten first, then the oldest), so a spray of responses from invented
    servers cannot grow the table.
    """

    def __init__(self, max_servers: int = 1024, rng: random.Random | None = None) -> None:
        self.max_servers = max_servers
        self._held: dict[Hashable, _Held] = {}
        self._rng = rng or random.Random()

    def receive(self, server: Hashable, report: OcReport | None, now: float) -> bool:
        """Take a report from a response; True when it changed what is held."""
        if report is None:
            return False
        held = self._held.get(server)
        if held is not None and now < held.expires:
            if report.seq < held.report.seq:
                return False  # out of order: an older report (§5.3)
            if report.seq == held.report.seq:
                return False  # the same report again: its validity runs from the first
        if report.stops:
            return self._held.pop(server, None) is not None
        if held is None and len(self._held) >= self.max_servers:
            self._evict(now)
        self._held[server] = _Held(report, now + report.validity_ms / 1000)
        return True

    def reduction(self, server: Hashable, now: float) -> int:
        """The percentage of new requests to ``server`` to shed now (0 when none held)."""
        held = self._held.get(server)
        if held is None:
            return 0
        if now >= held.expires:
            del self._held[server]  # expired: back to normal (§5.3)
            return 0
        return held.report.reduction

    def throttle(self, server: Hashable, now: float) -> bool:
        """Whether to shed this new request to ``server`` (§6: random loss at the reported
        percentage, so each request has the same chance and no client is singled out)."""
        reduction = self.reduction(server, now)
        return reduction > 0 and self._rng.random() * 100 < reduction

    def __len__(self) -> int:
        return len(self._held)

    def _evict(self, now: float) -> None:
        expired = [k for k, h in self._held.items() if now >= h.expires]
        for key in expired:
            del self._held[key]
        if len(self._held) >= self.max_servers:
            del self._held[next(iter(self._held))]  # the oldest inserted
