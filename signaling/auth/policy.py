"""Who may register and call: the digest policy of RFC 3261 §22 in front of registrar and proxy.

``Authenticator.admit(work)`` is awaited at the start of ``Registrar.handle`` and
``Proxy.handle``; False means it answered the request itself (401/407 challenge, 400, 403, 503).

- REGISTER is challenged with 401 + WWW-Authenticate (§22.2 for a registrar); the identity is
  the To URI (the AOR being registered).
- Out-of-dialog requests the proxy forwards for one of our own users (From in a served domain)
  are challenged with 407 + Proxy-Authenticate (§22.3); so are requests we would relay
  elsewhere, whose From can only be ours.  Requests from other domains to our users are not
  ours to authenticate.
- ACK and CANCEL are never challenged (§22.1: they cannot be resubmitted); requests with a To
  tag follow their dialog and are not challenged anew.
- The authenticated username and realm must be the identity's user and domain, else 403.
- An unknown user and a wrong password get the very same answer, a fresh challenge, after the
  same work (a dummy HA1 is checked), so neither content nor timing tells which it was.
- Trusted sources (``trusted`` option) pass without credentials, and so do mutual-TLS peers
  whose verified certificate names a trusted identity (``tls_trusted_peers``, RFC 5922 §7.3:
  a trunk or peer proxy proves who it is by its certificate, not by a password).

Several challenges go out, strongest algorithm first (RFC 8760 §2.4), all with one nonce.

The 401 to a REGISTER without credentials is stateless, and most often made before any parse
(``challenge_unparsed``: one C call, ``digest.challenge_answer``, scans the datagram and
writes the answer from parts encoded once per realm and nonce tick); shapes it does not take
are parsed and challenged by ``challenge_early``, with the same bytes.  Half of all
REGISTERs take this path.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable

from protocols.sip.builders import make_response, reason_phrase
from protocols.sip.digest import (
    ALGORITHMS,
    TICK,
    Credentials,
    DigestError,
    NonceCounts,
    NonceMinter,
    NonceState,
    challenge,
    challenge_answer,
    parse_credentials,
    verify,
)
from protocols.sip.message import Request, SipURI
from protocols.sip.summary import response_summary
from protocols.sip.uri import unescape
from signaling.auth.guard import Guard
from signaling.auth.subscribers import FileSubscribers, SubscriberError, SubscriberStore
from signaling.config import Config
from signaling.metrics import Metrics
from signaling.registry.base import Registry, RegistryError
from signaling.sipcore import Peer, SipCore, Work
from signaling.stateless import stateless_answer, stateless_tail

__all__ = ["SUMMARY_INTERVAL", "Authenticator"]

log = logging.getLogger(__name__)

#: Seconds between log summaries of failures and blocks (never a line per packet).
SUMMARY_INTERVAL = 10.0
_NEVER = frozenset({"ACK", "CANCEL"})
_DUMMY_HA1 = "0" * 64
#: Where the nonce goes in an encoded challenge (``Authenticator._challenges``): no realm
#: (a served domain's name) nor algorithm contains it.
_HOLE = "\x00"
_TAILS_LIMIT = 1024
#: Read once (an enum member looked up on its class costs ten times a global in Python 3.11).
_VALID = NonceState.VALID


class _Kind:
    """What differs between a registrar's and a proxy's challenge (§22.2, §22.3)."""

    def __init__(self, status: int, challenge_header: str, credentials_header: str) -> None:
        self.status = status
        self.challenge_header = challenge_header
        self.credentials_header = credentials_header
        self.credentials_lower = credentials_header.lower()


_REGISTRAR = _Kind(401, "WWW-Authenticate", "Authorization")
_PROXY = _Kind(407, "Proxy-Authenticate", "Proxy-Authorization")


class Authenticator:
    """See the module docstring."""

    def __init__(self, cfg: Config, core: SipCore, store: SubscriberStore, guard: Guard,
                 metrics: Metrics, clock: Callable[[], float] = time.time,
                 shared: Registry | None = None,
                 tls_identity: Callable[[Peer], str | None] | None = None) -> None:
        self.core = core
        #: The trusted identity a peer's connection proved with its client certificate, if
        #: any (``Server``: over TLS and WSS); None when no identity is trusted.
        self.tls_identity = tls_identity
        #: A registry other nodes share: nonce counts are claimed there too, so a count used
        #: on one node is a replay on every other (the local table alone sees only this one).
        self.shared = shared
        self.store = store
        #: The file store answers without a coroutine (``FileSubscribers.find``).
        self._find = store.find if isinstance(store, FileSubscribers) else None
        self.guard = guard
        #: Whether any source can be trusted (``_trusted``), fixed at start: when none can,
        #: as in most deployments, the two calls per request are skipped.
        self._trusting = bool(guard.limits.trusted) or tls_identity is not None
        self.clock = clock
        self.enabled = cfg.auth == "on"
        self.algorithms = [a for a in ALGORITHMS if a in {x.upper() for x in
                                                          cfg.auth_algorithms}]
        secret = cfg.auth_secret.encode() if cfg.auth_secret else os.urandom(32)
        self.nonces = NonceMinter(secret, cfg.auth_nonce_lifetime)
        self.counts = NonceCounts(cfg.auth_nonce_table)
        self.retry_after = cfg.retry_after
        self.c_auth = metrics.fast_counter("auth", "Authentication outcomes", ["result"])
        # Each registration counts one of each: bound once, no label tuple per request.
        self.c_challenged = self.c_auth.child("challenged")
        self.c_ok = self.c_auth.child("ok")
        self._tails: dict[tuple[int, str, bool], list[bytes]] = {}
        #: realm -> the parts of its unparsed 401 in the nonce tick that starts at
        #: ``_ready_start`` and ends before ``_ready_end`` (``challenge_unparsed``); served
        #: realms only, so bounded by the domains.
        self._ready: dict[str, tuple[bytes, ...]] = {}
        self._ready_start = self._ready_end = 0.0
        self._summary: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._report(), name="auth-log")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.flush_summary()  # what happened since the last summary is not lost at shutdown

    # -- the decision ----------------------------------------------------------------------------

    def challenge_early(self, req: Request, peer: Peer) -> bool:
        """A REGISTER without credentials gets its 401 in the receive path, statelessly: no
        transaction and no queue for half of all REGISTERs, and an unauthenticated flood
        leaves no state.  Its nonce is salted with the Call-ID and branch, so a retransmission
        gets the same bytes within a nonce tick (digest.TICK), as from a transaction
        (§17.2.2).  True if answered; everything
        else goes the full way to ``admit``."""
        if not self.enabled or req.method != "REGISTER":
            return False
        # Credentials first: over UDP the REGISTERs without them were challenged unparsed,
        # so nearly all that come this far carry some, and the other checks need not run.
        if req.header("Authorization") is not None or req.to.tag is not None:
            return False
        to = req.to.uri
        if not isinstance(to, SipURI) or to.host.lower() not in self.core.domains:
            return False
        if self._trusting and self._trusted(peer) is not None:
            return False
        self.c_challenged.inc()
        self.core.send_stateless_tail(req, peer, 401, "Unauthorized", self._challenges(
            _REGISTRAR, to.host.lower(), False, f"{req.call_id}|{req.vias[0].branch}"))
        return True

    def challenge_unparsed(self, data: bytes, peer: Peer) -> bool:
        """``challenge_early`` on the bytes of a REGISTER datagram, before any parse: the
        answer copies five headers and needs the To host, and ``challenge_answer`` (C) finds
        them in one scan and writes the whole answer, nonce and To tag included, from the
        parts ``_ready`` holds for the realm in this nonce tick.  Anything it does not take
        (credentials, an unusual shape), a realm not served, or a trusted source goes the
        full way, which answers as before; so does everything but the challenge: the rest of
        the request is judged when it comes back with credentials (§22.1 lets a server
        challenge before looking further).  The same bytes as ``challenge_early`` would send
        (test_policy holds them equal)."""
        assert challenge_answer is not None  # not installed without it (Server)
        # The scan first: nearly every REGISTER it declines carries credentials (the second
        # leg of every registration), and those need nothing else from here.
        answer = challenge_answer(data, peer.host, peer.port, self._ready)
        if answer is None:
            return False
        core = self.core
        if not core.accepting or (self._trusting and self._trusted(peer) is not None):
            return False
        now = self.clock()
        # Two comparisons, not the tick's number: a float floor division costs more.
        if not self._ready_start <= now < self._ready_end or not isinstance(answer, bytes):
            # A new nonce tick (digest.TICK: the answer has the last tick's head), or a
            # realm not seen in this one: served?
            answer = self._ready_answer(data, peer, now)
            if answer is None:
                return False
        self.c_challenged.inc()
        core.send_unparsed_answer("REGISTER", 401, answer, peer)
        return True

    def _ready_answer(self, data: bytes, peer: Peer, now: float) -> bytes | None:
        """``challenge_unparsed``'s answer once ``_ready`` is this tick's and has the realm."""
        assert challenge_answer is not None
        if not self._ready_start <= now < self._ready_end:
            self._ready_start = now // TICK * TICK
            self._ready_end = self._ready_start + TICK
            self._ready.clear()
        answer = challenge_answer(data, peer.host, peer.port, self._ready)
        if isinstance(answer, str):
            if answer not in self.core.domains:
                return None
            self._ready[answer] = self._ready_parts(answer, now)
            answer = challenge_answer(data, peer.host, peer.port, self._ready)
        return answer if isinstance(answer, bytes) else None

    def _ready_parts(self, realm: str, now: float) -> tuple[bytes, ...]:
        """What ``challenge_answer`` completes into a 401 for ``realm`` in ``now``'s tick:
        the status line, then ``_challenges``' pieces with the tick's nonce head after each
        piece a nonce follows (the C side writes the unique part there)."""
        pieces = self._pieces(_REGISTRAR, realm, False)
        head = self.nonces.head(realm, now).encode()
        return (b"SIP/2.0 401 Unauthorized", *[p + head for p in pieces[:-1]], pieces[-1])

    async def admit(self, work: Work) -> bool:
        req = work.request
        if not self.enabled or req.method in _NEVER or req.to.tag is not None:
            return True
        kind = _REGISTRAR if req.method == "REGISTER" else _PROXY
        identity = req.to.uri if kind is _REGISTRAR else req.from_.uri
        domains = self.core.domains
        if not isinstance(identity, SipURI) or (realm := identity.host.lower()) not in domains:
            uri = req.uri
            if kind is _REGISTRAR or (isinstance(uri, SipURI) and uri.host.lower() in domains):
                return True  # the registrar's own answer (404/416), or a foreign caller
            self._answer(work, 403, "Relaying not allowed", "relay_denied")
            return False
        if self._trusting:
            trusted = self._trusted(work.peer)
            if trusted is not None:
                self.c_auth.inc(trusted)
                return True
        return await self._check(work, kind, identity, realm)

    async def _check(self, work: Work, kind: _Kind, identity: SipURI, realm: str) -> bool:
        """The request's credentials for ``realm`` checked (RFC 3261 §22.4, RFC 7616 §3.4):
        response, nonce, count and identity; what fails is answered here."""
        req = work.request
        try:
            creds = _credentials(req, kind, realm)
        except DigestError:
            self._answer(work, 400, "Malformed credentials", "malformed")
            return False
        if creds is None:
            self._challenge(work, kind, realm, False, "challenged")
            return False
        find = self._find
        if find is not None:
            sub = find(creds.username, realm)
        else:
            try:
                sub = await self.store.get(creds.username, realm)
            except SubscriberError:
                self._answer(work, 503, None, "store_unavailable",
                             [("Retry-After", str(self.retry_after))])
                return False
        stored = sub.ha1.get(creds.algorithm) if sub is not None else None
        # The same work whether the user exists or not (no enumeration by timing).
        good = verify(creds, stored or _DUMMY_HA1, req.method, req.body) and stored is not None
        if not good:
            self._failed(work, kind, realm, creds.username, "failed")
            return False
        now = self.clock()
        state, issued = self.nonces.judge(creds.nonce, realm, now)
        if state is _VALID:
            state = self.counts.use(creds.nonce, creds.nc, issued)
            if state is _VALID and self.shared is not None:
                try:
                    fresh = await self.shared.claim(f"nc:{creds.nonce}:{creds.nc or 0}",
                                                    self.nonces.lifetime)
                except RegistryError:
                    self._answer(work, 503, None, "store_unavailable",
                                 [("Retry-After", str(self.retry_after))])
                    return False
                state = NonceState.VALID if fresh else NonceState.STALE
            if state is not _VALID:  # a count used before: a replay (RFC 7616 §3.4)
                self._failed(work, kind, realm, creds.username, "replayed", stale=True)
                return False
        if state is not _VALID:
            # Right password, old nonce (or one from before a restart): stale=true (§3.3),
            # so the client retries with the new nonce without asking its user.
            self._challenge(work, kind, realm, True, "stale")
            return False
        user = identity.user or ""
        if creds.username != (unescape(user) if "%" in user else user):
            self._answer(work, 403, "Identity not allowed for this user", "identity_mismatch")
            return False
        if kind is _PROXY:  # §22.3: credentials for our realm are consumed, not forwarded
            req.wire = None  # changed in place: forwarded by the serializer (edit.py)
            req.extra = [(k, v) for k, v in req.extra
                         if k.lower() != "proxy-authorization" or _realm_of(v) != realm]
        else:
            # The registrar answers a REGISTER itself: its credentials are spent.  Without
            # them most REGISTERs have no other untyped header, and the registrar skips its
            # Path, outbound and Supported look-ups (~19k instructions, callgrind).
            extra = req.extra
            req.extra = [] if len(extra) == 1 else [
                (k, v) for k, v in extra if k.lower() != "authorization"]
        self.c_ok.inc()
        return True

    def _trusted(self, peer: Peer) -> str | None:
        """Why ``peer`` needs no credentials (the result counted), or None."""
        if self.guard.trusted(peer.host):
            return "trusted"
        if self.tls_identity is not None and self.tls_identity(peer) is not None:
            return "trusted_tls_identity"
        return None

    # -- answers -----------------------------------------------------------------------------

    def _challenge(self, work: Work, kind: _Kind, realm: str, stale: bool, result: str) -> None:
        req = work.request
        if req.method == "INVITE":  # its transaction keeps a Response (_answer says why)
            nonce = self.nonces.make(realm, self.clock())
            self._answer(work, kind.status, None, result, [
                (kind.challenge_header, challenge(realm, nonce, alg, stale=stale))
                for alg in self.algorithms])
            return
        self.c_auth.inc(result)
        reason = reason_phrase(kind.status)
        self.core.respond(work.txn, response_summary(kind.status, reason, req.method),
                          stateless_answer(req, kind.status, reason,
                                           self._challenges(kind, realm, stale)))

    def _challenges(self, kind: _Kind, realm: str, stale: bool, salt: str | None = None) -> bytes:
        """A challenge answer's wire form after its CSeq (``stateless_tail``): one challenge
        per algorithm, all with one nonce.  Only the nonce differs from answer to answer, so the
        rest is encoded once per kind, realm and staleness: the pieces around the nonce."""
        return self.nonces.make(realm, self.clock(), salt).encode().join(
            self._pieces(kind, realm, stale))

    def _pieces(self, kind: _Kind, realm: str, stale: bool) -> list[bytes]:
        """``_challenges``' encoded pieces around the nonce, once per kind, realm, staleness."""
        key = (kind.status, realm, stale)
        pieces = self._tails.get(key)
        if pieces is None:
            values = [(kind.challenge_header, challenge(realm, _HOLE, alg, stale=stale))
                      for alg in self.algorithms]
            pieces = stateless_tail([*values, *self.core.answer_headers]).split(_HOLE.encode())
            if len(self._tails) >= _TAILS_LIMIT:
                self._tails.clear()  # realms are served domains, few: never in practice
            self._tails[key] = pieces
        return pieces

    def _failed(self, work: Work, kind: _Kind, realm: str, username: str, result: str,
                stale: bool = False) -> None:
        host = work.peer.host
        if self.guard.failed(host, f"{username}@{realm}", self.core.now()):
            self._note("blocked " + host)
        self._note(result)
        # A fresh challenge, the same for an unknown user and a wrong password.
        self._challenge(work, kind, realm, stale, result)

    def _answer(self, work: Work, status: int, reason: str | None, result: str,
                extra: list[tuple[str, str]] | None = None) -> None:
        self.c_auth.inc(result)
        req = work.request
        if req.method == "INVITE":  # its transaction keeps the response (ACK matching, §17.2.1)
            self.core.respond(work.txn, make_response(req, status, reason,
                                                      to_tag=self.core.stateless_tag(req),
                                                      extra=extra or ()))
            return
        # Straight to bytes, as the registrar's 200: half of all REGISTERs get this answer.
        reason = reason or reason_phrase(status)
        self.core.respond(work.txn, response_summary(status, reason, req.method),
                          stateless_answer(req, status, reason, stateless_tail(extra or ())))

    # -- rate-limited logging ------------------------------------------------------------------

    def _note(self, what: str) -> None:
        if len(self._summary) < 1000 or what in self._summary:
            self._summary[what] = self._summary.get(what, 0) + 1

    async def _report(self) -> None:
        while True:
            await asyncio.sleep(SUMMARY_INTERVAL)
            self.flush_summary()

    def flush_summary(self) -> None:
        if not self._summary:
            return
        items = sorted(self._summary.items(), key=lambda kv: -kv[1])
        shown = ", ".join(f"{k}: {v}" for k, v in items[:20])
        more = f" (+{len(items) - 20} more)" if len(items) > 20 else ""
        log.warning("authentication failures and blocks in the last %.0f s: %s%s",
                    SUMMARY_INTERVAL, shown, more)
        self._summary.clear()


def _realm_of(value: str) -> str | None:
    try:
        return parse_credentials(value).realm.lower()
    except DigestError:
        return None


def _credentials(req: Request, kind: _Kind, realm: str) -> Credentials | None:
    """The credentials for ``realm`` (§22.4: a client may carry some for several realms)."""
    malformed = False
    name, low = kind.credentials_header, kind.credentials_lower
    for key, value in req.extra:
        if key != name and key.lower() != low:
            continue
        try:
            creds = parse_credentials(value)
        except DigestError:
            malformed = True
            continue
        if creds.realm == realm or creds.realm.lower() == realm:  # as challenged, usually
            return creds
    if malformed:
        raise DigestError("malformed credentials")
    return None
