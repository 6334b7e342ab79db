"""The Diameter server ``signaling serve`` runs: a ``DiameterNode`` with Credit-Control.

The node (``node.py``) knows nothing of Credit-Control; ``CreditControlApplication``
(``creditcontrol.py``) knows nothing of peers.  This class only composes them and keeps the
read-only views the admin API reads (``peers()``, ``sessions()``, ``session_count()``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from signaling.diameter.config import DiameterConfig
from signaling.diameter.creditcontrol import CreditControlApplication, SessionInfo
from signaling.diameter.node import DiameterNode, PeerInfo
from signaling.diameter.store import CCSessionStore
from signaling.metrics import Metrics

if TYPE_CHECKING:
    from signaling.tracing import Tracing

__all__ = ["DiameterServer", "PeerInfo", "SessionInfo"]


class DiameterServer(DiameterNode):
    """Diameter over TCP serving the Credit-Control application from ``store``."""

    def __init__(self, config: DiameterConfig, metrics: Metrics, store: CCSessionStore,
                 tracing: Tracing | None = None) -> None:
        super().__init__(config, metrics)
        self.credit_control = CreditControlApplication(config, metrics, store)
        if tracing is None:
            self.register(self.credit_control)
        else:  # OpenTelemetry only when tracing is on
            from signaling.diameter.tracing import TracedApplication
            self.register(TracedApplication(self.credit_control, tracing))

    def sessions(self, limit: int = 100) -> list[SessionInfo]:
        return self.credit_control.sessions(limit)

    def session_count(self) -> int:
        return self.credit_control.session_count()
