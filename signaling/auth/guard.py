"""Source protection: a per-source rate limit (like Kamailio's pike) and password-guessing
blocks (like fail2ban), in bounded tables.

Pure logic, ``now`` passed in (monotonic seconds): the SIP core asks ``admit`` for every message
before parsing it, and the authenticator reports ``failed`` authentications.  A blocked source is
dropped without an answer (an answer would feed the flood and tell a scanner it was seen) until
its block ends or an operator lifts it.  Trusted sources (configured trunks and gateways) are
never limited.

Every table is bounded by ``max_sources``: a flood from many forged addresses can fill it, but
then idle sources are forgotten first (their bucket would be full again anyway), so memory stays
flat and the sources actually sending keep being measured.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from signaling.metrics import Metrics

__all__ = ["Block", "Guard", "GuardLimits", "parse_networks"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(items: Iterable[str]) -> list[Network]:
    """``10.0.0.1``, ``10.0.0.0/8`` or ``2001:db8::/32``; ValueError names a bad one."""
    return [ipaddress.ip_network(i.strip(), strict=False) for i in items if i.strip()]


@dataclass(frozen=True, slots=True)
class GuardLimits:
    """The thresholds (``signaling.config`` options of the same names, without prefix)."""

    pike_rate: float = 100.0       # messages per second per source; 0 disables
    pike_burst: int = 200          # bucket size: a burst a source may send at once
    pike_block: float = 60.0       # seconds a flooding source stays blocked
    fail_limit: int = 10           # failed authentications (per source or per user) ...
    fail_window: float = 60.0      # ... within this many seconds ...
    fail_block: float = 600.0      # ... block the source this long
    max_sources: int = 100_000     # bound of each table
    trusted: tuple[Network, ...] = ()


@dataclass(slots=True)
class Block:
    """A blocked source: why, until when (monotonic), and what it sent since."""

    host: str
    reason: str  # "flood" or "auth_failures"
    since: float
    until: float
    dropped: int = 0


@dataclass(slots=True)
class _Bucket:
    tokens: float
    last: float


@dataclass(slots=True)
class _Failures:
    times: deque[float] = field(default_factory=deque)


class Guard:
    """Admission of sources; see the module docstring."""

    def __init__(self, limits: GuardLimits, metrics: Metrics | None = None) -> None:
        self.limits = limits
        m = metrics if metrics is not None else Metrics()
        self.blocks: dict[str, Block] = {}
        self._buckets: dict[str, _Bucket] = {}
        self._by_source: dict[str, _Failures] = {}
        self._by_user: dict[str, _Failures] = {}
        self._trusted_cache: dict[str, bool] = {}
        self.c_blocks = m.fast_counter("guard_blocks", "Sources blocked, by reason",
                                       ["reason"])
        self.c_dropped = m.fast_counter("guard_dropped",
                                        "Messages dropped from blocked sources, by reason",
                                        ["reason"])
        m.callback_gauge("guard_blocked_sources", "Sources blocked now", [],
                         lambda: {(): float(len(self.blocks))})

    # -- per message ---------------------------------------------------------------------------

    def admit(self, host: str, now: float) -> bool:
        """False when ``host`` is blocked or just went over its rate (then it is blocked)."""
        block = self.blocks.get(host)
        if block is not None:
            if now < block.until:
                block.dropped += 1
                self.c_dropped.inc(block.reason)
                return False
            del self.blocks[host]
        limits = self.limits
        if limits.pike_rate <= 0:
            return True
        bucket = self._buckets.get(host)
        if bucket is None:
            if self.trusted(host):
                return True
            if len(self._buckets) >= limits.max_sources:
                self._forget_idle(now)
            self._buckets[host] = _Bucket(limits.pike_burst - 1.0, now)
            return True
        tokens = min(float(limits.pike_burst),
                     bucket.tokens + (now - bucket.last) * limits.pike_rate)
        bucket.last = now
        if tokens < 1.0:
            del self._buckets[host]
            self.block(host, "flood", now, limits.pike_block)
            self.c_dropped.inc("flood")
            return False
        bucket.tokens = tokens - 1.0
        return True

    def trusted(self, host: str) -> bool:
        if not self.limits.trusted:
            return False
        known = self._trusted_cache.get(host)
        if known is None:
            try:
                addr = ipaddress.ip_address(host.strip("[]"))
                known = any(addr in net for net in self.limits.trusted)
            except ValueError:
                known = False
            if len(self._trusted_cache) >= self.limits.max_sources:
                self._trusted_cache.clear()
            self._trusted_cache[host] = known
        return known

    def _forget_idle(self, now: float) -> None:
        """Drop buckets that would be full again (idle sources); if none, the oldest half."""
        refill = self.limits.pike_burst / self.limits.pike_rate
        idle = [h for h, b in self._buckets.items() if now - b.last >= refill]
        if not idle:
            idle = list(self._buckets)[: len(self._buckets) // 2 or 1]
        for h in idle:
            del self._buckets[h]

    # -- authentication outcomes ---------------------------------------------------------------

    def failed(self, host: str, user: str, now: float) -> bool:
        """A failed authentication from ``host`` for ``user``; True when it blocked ``host``."""
        if self.trusted(host):
            return False
        over = (self._record(self._by_source, host, now)
                | self._record(self._by_user, user, now))
        if over:
            self.block(host, "auth_failures", now, self.limits.fail_block)
            self._by_source.pop(host, None)
        return over

    def _record(self, table: dict[str, _Failures], key: str, now: float) -> bool:
        limits = self.limits
        entry = table.get(key)
        if entry is None:
            if len(table) >= limits.max_sources:
                self._prune(table, now)
            entry = table[key] = _Failures()
        times = entry.times
        times.append(now)
        while times and times[0] <= now - limits.fail_window:
            times.popleft()
        while len(times) > limits.fail_limit:
            times.popleft()
        return len(times) >= limits.fail_limit

    def _prune(self, table: dict[str, _Failures], now: float) -> None:
        horizon = now - self.limits.fail_window
        stale = [k for k, f in table.items() if not f.times or f.times[-1] <= horizon]
        if not stale:
            stale = list(table)[: len(table) // 2 or 1]
        for k in stale:
            del table[k]

    # -- blocks ----------------------------------------------------------------------------------

    def block(self, host: str, reason: str, now: float, seconds: float) -> Block:
        if host not in self.blocks and len(self.blocks) >= self.limits.max_sources:
            expired = [h for h, b in self.blocks.items() if b.until <= now]
            for h in expired or [min(self.blocks, key=lambda h: self.blocks[h].until)]:
                del self.blocks[h]
        block = self.blocks[host] = Block(host, reason, now, now + seconds)
        self.c_blocks.inc(reason)
        return block

    def active(self, now: float) -> list[Block]:
        for host in [h for h, b in self.blocks.items() if b.until <= now]:
            del self.blocks[host]
        return sorted(self.blocks.values(), key=lambda b: b.since)

    def lift(self, host: str) -> bool:
        """An operator's pardon: the block ends and the source's failure history with it."""
        self._by_source.pop(host, None)
        self._buckets.pop(host, None)
        return self.blocks.pop(host, None) is not None
