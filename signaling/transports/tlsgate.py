"""TLS handshakes of a listener's incoming connections: bounded per source and in total, timed
out, and counted (issue 15, "TLS handshakes that never finish: bounded, closed, counted").

A listener given an SSL context by asyncio (``create_server(ssl=...)``) runs the handshake
before its protocol ever learns the peer's address, so a source that opens connections and
never completes the handshake holds sockets and TLS state that no per-source limit sees.
Here the TLS listeners (SIP over TLS and WSS, both ``tcp.StreamTransport``) accept plain TCP
and each connection runs its handshake itself over memory BIOs (``tlsstream.py``); the gate
only counts, from the connection's first moment, before a byte is read:

- ``begin``: the source's handshakes in progress and the listener's in total are checked
  first: past ``per_source`` or ``total()`` (read at each handshake: the limit may be changed
  while the server runs) the connection is aborted at once
  (``rejected_source_limit``, ``rejected_total_limit``), before any TLS work;
- ``end`` with the outcome: a peer that stalls past ``timeout`` is aborted and counted
  (``handshake_timeout``), one that fails (a bad certificate, garbage, a reset) is counted as
  ``handshake_failed``, a finished one as ``handshake_done``.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

from signaling.metrics import FastCounter, Metrics

__all__ = ["HandshakeGate"]

_GATES: weakref.WeakKeyDictionary[Metrics, list[HandshakeGate]] = weakref.WeakKeyDictionary()


class HandshakeGate:
    """The handshakes in progress of one TLS listener (see the module docstring)."""

    def __init__(self, name: str, metrics: Metrics, *,
                 per_source: int, total: Callable[[], int], timeout: float) -> None:
        self.name = name
        self.per_source = per_source
        #: The bound on handshakes in progress in total, asked at each ``begin``: the
        #: listener's connection limit, which may change while the server runs
        #: (``ws_max_connections``, signaling.admin.livecfg).
        self.total = total
        self.timeout = timeout
        self._by_source: dict[str, int] = {}
        self._count = 0
        self.metrics_key = metrics
        self.c_events: FastCounter = metrics.fast_counter(
            "tls_handshakes", "TLS handshakes of incoming connections, by listener and outcome",
            ["listener", "event"])
        # One gauge for every gate of a node (a gauge is registered once per name).
        gates = _GATES.setdefault(metrics, [])
        gates.append(self)
        metrics.callback_gauge("tls_handshakes_in_progress",
                               "TLS handshakes of incoming connections in progress",
                               ["listener"], lambda: {(g.name,): float(g._count) for g in gates})

    @property
    def in_progress(self) -> int:
        return self._count

    def begin(self, source: str) -> str | None:
        """Count a handshake from ``source`` in progress; or, past a bound, refuse it: the
        refusal (counted) is returned and nothing is counted in progress.  ``end`` must follow
        an accepted one."""
        refused = ("rejected_source_limit" if self._by_source.get(source, 0) >= self.per_source
                   else "rejected_total_limit" if self._count >= self.total() else None)
        if refused is not None:
            self.c_events.inc(self.name, refused)
            return refused
        self._by_source[source] = self._by_source.get(source, 0) + 1
        self._count += 1
        return None

    def end(self, source: str, event: str) -> None:
        """A handshake ``begin`` accepted ended: ``handshake_done``, ``handshake_failed`` or
        ``handshake_timeout``."""
        self.c_events.inc(self.name, event)
        self._release(source)

    def _release(self, source: str) -> None:
        self._count -= 1
        left = self._by_source[source] - 1
        if left:
            self._by_source[source] = left
        else:
            del self._by_source[source]

    async def close(self) -> None:
        gates = _GATES.get(self.metrics_key)
        if gates is not None and self in gates:
            gates.remove(self)
