"""TLS handshakes of a listener's incoming connections: bounded per source and in total, timed
out, and counted (issue 15, "TLS handshakes that never finish: bounded, closed, counted").

A listener given an SSL context by asyncio (``create_server(ssl=...)``) runs the handshake
before its protocol ever learns the peer's address, so a source that opens connections and
never completes the handshake holds sockets and TLS state that no per-source limit sees.
Here the listener accepts plain TCP instead, and the gate takes over in ``connection_made``,
before a byte is read:

- the source's handshakes in progress and the listener's in total are checked first: past
  ``per_source`` or ``total`` the connection is aborted at once (``rejected_source_limit``,
  ``rejected_total_limit``), before any TLS work;
- the socket is taken from the plain transport (a duplicate of its descriptor; the transport
  is then closed, which leaves the connection open through the duplicate) and given to
  ``loop.connect_accepted_socket`` with the SSL context and ``timeout``: the event loop runs
  the handshake, then calls the application protocol's ``connection_made`` with the TLS
  transport.  A peer that stalls is aborted and counted (``handshake_timeout``), one that fails
  (a bad certificate, garbage, a reset) is counted as ``handshake_failed``, a finished one as
  ``handshake_done``.

That is ``start``, for the WSS listener.  The SIP-over-TLS listener (``tcp.py``) runs the
handshake itself over memory BIOs (``tlsstream.py``) and uses only the counts: ``begin`` before
any TLS work (refused past the bounds, as above), ``end`` with the outcome.

Only public event-loop calls (asyncio's and uvloop's alike): uvloop starts reading a plain
transport right after ``connection_made`` returns and ``start_tls`` cannot be given bytes
already read, so upgrading the plain transport in place would lose or misplace the ClientHello.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import weakref
from typing import cast

from signaling.metrics import FastCounter, Metrics

__all__ = ["HandshakeGate"]

_GATES: weakref.WeakKeyDictionary[Metrics, list[HandshakeGate]] = weakref.WeakKeyDictionary()


class HandshakeGate:
    """The handshakes in progress of one TLS listener (see the module docstring)."""

    def __init__(self, name: str, context: ssl.SSLContext, metrics: Metrics, *,
                 per_source: int, total: int, timeout: float) -> None:
        self.name = name
        self.context = context
        self.per_source = per_source
        self.total = total
        self.timeout = timeout
        self._by_source: dict[str, int] = {}
        self._count = 0
        self._tasks: set[asyncio.Task[None]] = set()
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
        an accepted one.  For listeners that run the handshake themselves (``tcp.py``)."""
        refused = ("rejected_source_limit" if self._by_source.get(source, 0) >= self.per_source
                   else "rejected_total_limit" if self._count >= self.total else None)
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

    def start(self, transport: asyncio.BaseTransport, app: asyncio.Protocol) -> bool:
        """Take over a just-accepted plain ``transport`` (from its protocol's
        ``connection_made``): after the handshake ``app.connection_made`` gets the TLS
        transport.  False if refused (aborted)."""
        # A stream transport (uvloop's are not asyncio.Transport subclasses, so no isinstance).
        plain = cast(asyncio.Transport, transport)
        peer = plain.get_extra_info("peername")
        source = str(peer[0]) if peer else ""
        sock = plain.get_extra_info("socket")
        refused = self.begin(source) is not None
        fd = os.dup(sock.fileno()) if not refused and sock is not None else -1
        plain.set_protocol(_Detached())  # its connection_lost is not the application's
        plain.abort()  # closes this descriptor only: the duplicate keeps the connection
        if fd < 0:
            if not refused:
                self.end(source, "handshake_failed")
            return False
        task = asyncio.get_running_loop().create_task(
            self._handshake(socket.socket(fileno=fd), app, source))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _handshake(self, sock: socket.socket, app: asyncio.Protocol, source: str) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            await loop.connect_accepted_socket(lambda: app, sock, ssl=self.context,
                                               ssl_handshake_timeout=self.timeout)
        except (OSError, ssl.SSLError, RuntimeError):
            # The event loop aborts a handshake that outlives the timeout (as a
            # ConnectionAbortedError); anything sooner failed: a bad certificate, a client
            # speaking something else, a reset mid-handshake.
            late = loop.time() - started >= self.timeout
            self.c_events.inc(self.name, "handshake_timeout" if late else "handshake_failed")
            sock.close()
        else:
            self.c_events.inc(self.name, "handshake_done")
        finally:
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
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


class _Detached(asyncio.Protocol):
    """The plain transport's protocol while it is closed under the connection it handed on."""
