"""The Credit-Control server application (RFC 4006 / RFC 8506) on a ``DiameterNode``.

A worker of the node hands each validated CCR to ``handle``: the session's state is read from
the ``CCSessionStore``, the sans-I/O session table (``protocols.diameter.creditcontrol``) decides
the answer, and the new state is written back (or deleted) before the CCA goes out, so a
session can continue on another node that shares the store.

Tcc deadlines of the sessions this node touched sit in one ``TccTimers`` heap swept once a
second; the store's TTL covers sessions whose node went away.  Each peer may hold at most
``max_peer_sessions`` of them here: beyond it a CCR-Initial is answered DIAMETER_TOO_BUSY
(3004), so one peer cannot fill the store that every peer shares (issue 20).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from protocols.diameter.builders import LocalIdentity
from protocols.diameter.codec import Message
from protocols.diameter.constants import AppId, CCRequestType, CommandCode, ResultCode
from protocols.diameter.creditcontrol import (
    CreditControl,
    TccTimers,
    decode_session,
    encode_session,
    parse_ccr,
)
from protocols.diameter.errors import RemoteProtocolError
from signaling.diameter.config import DiameterConfig
from signaling.diameter.store import CCSessionStore
from signaling.logs import RateLimitedLog
from signaling.metrics import Metrics

__all__ = ["STORE_TTL_MARGIN", "TCC_SWEEP_INTERVAL", "CreditControlApplication", "SessionInfo"]

log = logging.getLogger(__name__)
#: While the session store is down every request fails the same way: one line a minute.
_store_failures = RateLimitedLog(log, 60.0)

# Tcc is minutes long (RFC 4006 §13); checking expiries once a second is precise enough and
# costs nothing.
TCC_SWEEP_INTERVAL = 1.0

# The store keeps a session this much longer than Tcc, so the Tcc sweep (which releases the
# reservation and counts it) finds it first; the TTL itself only cleans up after a node that
# died.  A minute is many sweep intervals.
STORE_TTL_MARGIN = 60.0

_INITIAL = int(CCRequestType.INITIAL_REQUEST)


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """One Credit-Control session this node handled, with its Tcc deadline (UNIX time)."""

    session_id: str
    tcc_deadline: float


class CreditControlApplication:
    """Credit-Control server sessions kept in a ``CCSessionStore``."""

    application_id = int(AppId.CREDIT_CONTROL)
    commands = frozenset({int(CommandCode.CREDIT_CONTROL)})

    def __init__(self, config: DiameterConfig, metrics: Metrics, store: CCSessionStore) -> None:
        self.store = store
        identity = LocalIdentity(config.origin_host, config.origin_realm)
        self.cc = CreditControl(identity, config.credit_policy(), config.tcc)
        self.max_peer_sessions = config.max_peer_sessions
        self._tcc = TccTimers()
        # Which peer each tracked session belongs to, and how many each peer holds.
        self._owner: dict[str, str] = {}
        self._per_peer: dict[str, int] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self.m_expired = metrics.fast_counter(
            "diameter_cc_sessions_expired", "Credit-Control sessions released by Tcc")
        self.m_refused = metrics.fast_counter(
            "diameter_cc_refused", "CCR-Initial refused DIAMETER_TOO_BUSY, by reason", ["reason"])
        metrics.callback_gauge("diameter_cc_sessions", "Credit-Control sessions tracked on this "
                               "node", [], lambda: {(): float(len(self._tcc))})

    async def start(self) -> None:
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_tcc(),
                                                               name="diameter-tcc")

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)

    # -- read-only views for the admin API ----------------------------------------------

    def sessions(self, limit: int = 100) -> list[SessionInfo]:
        return [SessionInfo(sid, deadline) for sid, deadline in self._tcc.items(limit)]

    def session_count(self) -> int:
        return len(self._tcc)

    def peer_sessions(self, peer: str) -> int:
        return self._per_peer.get(peer, 0)

    # -- requests -----------------------------------------------------------------------

    async def handle(self, request: Message, peer: str) -> Message:
        req = parse_ccr(request)
        sid = req.session_id
        if (req.request_type == _INITIAL and sid not in self._owner
                and self._per_peer.get(peer, 0) >= self.max_peer_sessions):
            self.m_refused.inc("peer_sessions")
            raise RemoteProtocolError(f"{self.max_peer_sessions} sessions open from this peer",
                                      ResultCode.DIAMETER_TOO_BUSY)
        store = self.store
        try:
            raw = await store.get_session(sid)
        except Exception as exc:  # any store failure: a transient refusal, never a crash
            raise _store_failed(exc) from None
        session = decode_session(raw) if raw is not None else None
        out = self.cc.handle(request, req, session, time.time())
        if out.duplicate:
            return out.answer
        try:
            if out.session is not None:
                await store.put_session(sid, encode_session(out.session),
                                        self.cc.tcc + STORE_TTL_MARGIN)
                if out.session.tcc_deadline is not None:
                    self._track(sid, out.session.tcc_deadline, peer)
            elif session is not None:
                await store.delete_session(sid)
                self._untrack(sid)
        except Exception as exc:
            raise _store_failed(exc) from None
        return out.answer

    # -- Tcc ----------------------------------------------------------------------------

    def _track(self, sid: str, deadline: float, peer: str) -> None:
        if not self._tcc.set(sid, deadline):
            self.m_refused.inc("session_index_full")  # the store's TTL still expires it
            return
        if sid not in self._owner:
            self._owner[sid] = peer
            self._per_peer[peer] = self._per_peer.get(peer, 0) + 1

    def _untrack(self, sid: str) -> None:
        self._tcc.cancel(sid)
        peer = self._owner.pop(sid, None)
        if peer is not None:
            left = self._per_peer.get(peer, 0) - 1
            if left > 0:
                self._per_peer[peer] = left
            else:
                del self._per_peer[peer]  # no entry per peer that left: bounded by live ones

    async def _sweep_tcc(self) -> None:
        while True:
            await asyncio.sleep(TCC_SWEEP_INTERVAL)
            now = time.time()
            for sid in self._tcc.expired(now):
                peer = self._owner.get(sid, "")
                self._untrack(sid)
                try:
                    await self._expire(sid, now, peer)
                except Exception:
                    log.exception("diameter Tcc expiry of %s failed", sid)

    async def _expire(self, sid: str, now: float, peer: str) -> None:
        raw = await self.store.get_session(sid)
        if raw is None:
            return
        session = decode_session(raw)
        if self.cc.expire(session, now) is None:
            await self.store.delete_session(sid)
            self.m_expired.inc()
        elif session.tcc_deadline is not None:
            self._track(sid, session.tcc_deadline, peer)  # another node refreshed it


def _store_failed(exc: Exception) -> RemoteProtocolError:
    _store_failures.warning("store", "diameter session store failed: %s", exc)
    return RemoteProtocolError("session store unavailable", ResultCode.DIAMETER_TOO_BUSY)
