"""Table sizes and their smoothed growth rate, so an alert fires before a table is full.

A registration storm, a flood of INVITEs to a silent callee or a leak shows first as a table
that keeps growing.  Alerting on the size alone fires late (at the bound) or falsely (a busy
hour); on the rate alone it fires on every burst.  Every ``SAMPLE_INTERVAL`` the sizes of the
registry (bindings), the transaction table and the dialog table are read through the admin's
``ServerView`` and a growth rate in entries per second is kept as an exponentially weighted
moving average with time constant ``TAU`` (the weight of a sample taken ``dt`` after the
previous one is ``1 - exp(-dt / TAU)``, so irregular sampling does not bias it).

Exported: ``signaling_table_size{table}``, ``signaling_table_growth_rate{table}`` (entries per
second, negative when draining) and ``signaling_table_bound{table}`` where the table has one,
so a rule can say "full within ten minutes at this rate" (``deploy/prometheus/alerts.yml``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from signaling.admin.view import ServerView

__all__ = ["SAMPLE_INTERVAL", "TAU", "Growth", "TableGrowth"]

#: Seconds between samples (the admin observer's refresh tick).
SAMPLE_INTERVAL = 1.0
#: Time constant of the average, in seconds: a minute smooths out bursts of a few seconds
#: (a retransmission wave, a reconnect of one big PBX) while a sustained trend shows within
#: a couple of minutes, well before Prometheus' 5 to 10 minute alert windows would.
TAU = 60.0


@dataclass(slots=True)
class TableGrowth:
    """One table: how to read its size (and bound), and the state of its average."""

    size: Callable[[], int]
    bound: Callable[[], int] | None = None
    last_size: int | None = None
    last_time: float = 0.0
    rate: float = 0.0

    def sample(self, now: float, tau: float) -> None:
        size = self.size()
        if self.last_size is not None and now > self.last_time:
            dt = now - self.last_time
            weight = 1.0 - math.exp(-dt / tau)
            self.rate += weight * ((size - self.last_size) / dt - self.rate)
        self.last_size, self.last_time = size, now


class Growth:
    """The tables of one server and their gauges (see the module docstring)."""

    def __init__(self, server: ServerView, bindings: Callable[[], int],
                 tau: float = TAU) -> None:
        cfg = server.cfg
        self.tau = tau
        self.tables = {
            "registry_bindings": TableGrowth(bindings),
            "transactions": TableGrowth(server.transactions, lambda: cfg.max_transactions),
            "dialogs": TableGrowth(lambda: len(server.dialogs), lambda: cfg.max_dialogs),
        }
        m = server.metrics
        m.callback_gauge("table_size", "Entries in the server's tables (sampled each second)",
                         ["table"], lambda: {(k,): float(t.last_size or 0)
                                             for k, t in self.tables.items()})
        m.callback_gauge("table_growth_rate", "Table growth in entries per second, "
                         f"exponentially weighted (time constant {tau:.0f} s)", ["table"],
                         lambda: {(k,): t.rate for k, t in self.tables.items()})
        m.callback_gauge("table_bound", "Configured bound of a table", ["table"],
                         lambda: {(k,): float(t.bound()) for k, t in self.tables.items()
                                  if t.bound is not None})

    def sample(self, now: float) -> None:
        for table in self.tables.values():
            table.sample(now, self.tau)
