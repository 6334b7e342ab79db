"""Gauges the admin side computes for ``/metrics`` and ``/api/v1/stats``.

Registry counts are asynchronous calls (a ``ZCARD`` per slot bucket on Redis), and a scrape must
never wait on Redis: a refresher task reads them once per ``REFRESH_INTERVAL`` and the callback
gauges expose the cached values.

Gauges over synchronous tables belong to the module owning the table (``signaling_dialogs`` is
the proxy's, ``signaling_diameter_peers`` the Diameter server's); this module only reads those
tables, through the admin's ``ServerView``, for ``/api/v1/stats``.
"""

from __future__ import annotations

import asyncio
import logging
import time

from signaling.admin.growth import Growth
from signaling.admin.view import ServerView
from signaling.periodic import Periodic
from signaling.registry.base import RegistryError

__all__ = ["REFRESH_INTERVAL", "REFRESH_TIMEOUT", "Observer"]

log = logging.getLogger(__name__)

#: Seconds between registry count refreshes: Prometheus scrapes every 15 s or so, and a
#: second-old count is fresh for any dashboard, while costing Redis one ZCARD per bucket a second.
REFRESH_INTERVAL = 1.0
#: Bound on one refresh; a registry slower than this keeps the previous counts (and counts the
#: failure) instead of piling up calls.
REFRESH_TIMEOUT = 2.0


class Observer:
    """Declares the admin-side gauges and keeps the registry counts fresh."""

    def __init__(self, server: ServerView) -> None:
        self.server = server
        self.aors = 0
        self.bindings = 0
        self._ticker = Periodic("admin-refresh", REFRESH_INTERVAL, self._tick, first_now=True)
        m = server.metrics
        self.c_refresh_failed = m.fast_counter(
            "admin_refresh_failures", "Registry count refreshes that failed or timed out")
        m.callback_gauge("registered_aors", "Addresses-of-record with bindings (cached, 1 s)",
                         [], lambda: {(): float(self.aors)})
        m.callback_gauge("registered_bindings", "Stored contact bindings (cached, 1 s)",
                         [], lambda: {(): float(self.bindings)})
        self.growth = Growth(server, lambda: self.bindings)
        m.callback_gauge("uptime_seconds", "Seconds since the server started", [],
                         lambda: {(): self.server_uptime()})

    def server_uptime(self) -> float:
        return max(0.0, time.time() - self.server.started_at)

    def dialog_counts(self) -> dict[str, int]:
        return self.server.dialogs.counts_by_state()

    async def refresh(self) -> bool:
        """Read the registry counts once; False (old values kept) if the registry failed."""
        registry = self.server.registry
        try:
            async with asyncio.timeout(REFRESH_TIMEOUT):
                aors, bindings = await asyncio.gather(registry.count_aors(),
                                                      registry.count_bindings())
        except (TimeoutError, RegistryError, OSError):
            self.c_refresh_failed.inc()
            log.debug("registry count refresh failed", exc_info=True)
            return False
        self.aors, self.bindings = aors, bindings
        return True

    def start(self) -> None:
        self._ticker.start()

    async def close(self) -> None:
        await self._ticker.close()

    async def _tick(self) -> None:
        try:
            await self.refresh()
            self.growth.sample(time.monotonic())
        except Exception:  # a bug here must not end the refresher
            self.c_refresh_failed.inc()
            log.exception("registry count refresh crashed")
