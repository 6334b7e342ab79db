"""The registrar (RFC 3261 §10.3) on top of the ``Registry`` interface.

The steps of §10.3 map to small functions; the only await is the one atomic registry call, so a
200 is sent only after the registry confirmed the write (issue: never a 200 before Redis said
yes), and a registry that fails or is slow gives 503 + Retry-After, never a hanging transaction.

Policies the RFC leaves open:
- step 3 (authentication) is ``signaling.auth.policy``, awaited first when configured (with
  ``--auth off`` RFC 4475 regaut01 gets 200);
- a To URI that is not sip/sips is answered 416 (RFC 4475 unksm2 allows 400 or 416);
- a CSeq out of order (step 7) is answered 500, as deployed registrars do;
- a contact asking for more than ``max_expires`` is granted ``max_expires`` (step 7 allows the
  registrar to shorten it);
- Path (RFC 3327 §5.3): the Path values of a REGISTER are stored with each of its bindings (the
  proxy preloads them as Route to reach the binding through the edge proxies it registered
  through) and copied into the 200 when the REGISTER said ``Supported: path``.  A REGISTER
  with Path from a UA that did not say so is left by §5.3 to local policy (``path_mode``):
  ``strict``, the default, is the policy §5.3 recommends (Kamailio's registrar default too):
  420 Bad Extension with ``Unsupported: path``, so that the UA learns a proxy added a Path it
  did not ask for; ``lazy`` accepts it, stores the Path (the edge proxy added it for its own
  sake) and returns none (§8.2.4: no extension the UA did not list is applied to the 200).
  An outbound REGISTER is exempt: RFC 5626 §6 updates §5.3 for flows, the registrar MUST
  store their Path values, whatever the UA's Supported says (its edge MUST add one, §5.1).
  A Path value that does not parse is 400.
- Outbound (RFC 5626 §6, rules in ``protocols.sip.outbound``): a Contact with
  ``+sip.instance`` and ``reg-id`` in a REGISTER that supports outbound is a flow, keyed by
  (instance, reg-id) instead of its URI, so a new REGISTER on that reg-id replaces it; two such
  Contacts in one REGISTER are 400; through a proxy (more than one Via) without a first Path
  value carrying ``ob`` it is 439 (as Kamailio's registrar does it too); the 200 says
  ``Require: outbound`` and ``Flow-Timer`` (§5.4).  Where requests go is ``signaling.flows``.
- NAT without Outbound: a UDP binding whose Contact ``behind_nat`` judges unreachable is
  stored with ``reach_source`` (the request goes to the REGISTER's source address).
- GRUU (RFC 5627 §5): with ``Supported: gruu`` every Contact of an instance in the 200 gets
  ``pub-gruu`` and ``temp-gruu`` (``protocols.sip.gruu``: made without state).
- what one binding stores is bounded: a Contact or To URI longer than ``max_contact_length``,
  or a Call-ID or ``+sip.instance`` longer than 256 bytes, is answered 400 naming the field and
  nothing is stored (header parameters other than expires, q, +sip.instance and reg-id are
  never stored, so they need no bound here); bindings per AOR and the registry's memory are
  bounded by the registry (503 + Retry-After, counted in ``registry_full{bound}``);
- reflection (UDP sources are unauthenticated and may be spoofed): a 200 over UDP lists every
  binding only while it stays within ``udp_answer_limit`` (1300 bytes by default, the size
  RFC 3261 §18.1.1 treats as safe for UDP).  Beyond it the 200 lists the bindings of the
  contacts this request named, each no longer than the request's own Contact, so the answer
  is never much larger than the request, and a Warning (399, §20.43) says the list was cut;
  step 8's list is a SHOULD.  A query REGISTER then lists none: ask over WebSocket.
"""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from protocols.sip.builders import make_response
from protocols.sip.errors import RemoteProtocolError
from protocols.sip.gruu import GruuCodec, pub_gruu
from protocols.sip.message import URI, NameAddr, Request, SipURI
from protocols.sip.outbound import (
    behind_nat,
    has_ob,
    instance_urn,
    option_tags,
    outbound_contact,
)
from protocols.sip.parser import parse_name_addr, split_list
from protocols.sip.summary import response_summary
from protocols.sip.uri import aor_of, unescape
from signaling.auth.policy import Authenticator
from signaling.flows import gruu_codec
from signaling.metrics import Metrics
from signaling.registry.base import (
    Binding,
    ContactChange,
    Registry,
    RegistryError,
    RegistryFull,
)
from signaling.sipcore import Peer, SipCore, Work
from signaling.stateless import stateless_answer, stateless_tail

__all__ = ["Registrar", "RegistrarReject", "contact_key"]

log = logging.getLogger(__name__)

_MAX_UINT32 = 2**32 - 1
#: URI parameters that take part in the comparison of §19.1.4 whenever present.
_KEY_PARAMS = frozenset({"transport", "maddr", "user", "ttl", "method"})
#: What the transaction keeps of a 200 it was handed as bytes (``protocols.sip.summary``).
_OK_SUMMARY = response_summary(200, "OK", "REGISTER")
#: Longest Call-ID and +sip.instance a binding stores (both are short in practice: a UUID
#: and a host, or a URN of ~47 bytes).
_MAX_ID_LENGTH = 256
T = TypeVar("T")


class RegistrarReject(Exception):
    """A REGISTER that gets an error answer: status, reason and extra headers."""

    def __init__(self, status: int, reason: str | None = None,
                 extra: list[tuple[str, str]] | None = None) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.extra = extra or []


def contact_key(uri: URI) -> str:
    """The §19.1.4 comparison form of a contact URI: bindings are matched by it (step 7)."""
    if not isinstance(uri, SipURI):
        return str(uri).lower()
    user = uri.user
    if user is None:
        user = ""
    elif "%" in user:
        user = unescape(user)
    params = ";".join([f"{k.lower()}={(v or '').lower()}" for k, v in sorted(uri.params.items())
                       if k.lower() in _KEY_PARAMS]) if uri.params else ""
    return f"{uri.scheme}:{user!r}@{uri.host.lower()}:{uri.port or ''};{params}"


class Registrar:
    """Handles REGISTER work items from the SIP core."""

    def __init__(self, core: SipCore, registry: Registry, metrics: Metrics, node_id: str,
                 clock: Callable[[], float] = time.time,
                 on_event: Callable[[str, str, list[Binding]], None] | None = None,
                 auth: Authenticator | None = None) -> None:
        self.core = core
        self.registry = registry
        self.node_id = node_id
        self.clock = clock
        self.on_event = on_event
        #: §10.3 step 3; None when authentication is off (no call per REGISTER then).
        self.auth = auth
        cfg = core.cfg
        self.min_expires = cfg.min_expires
        self.max_expires = cfg.max_expires
        self.default_expires = cfg.default_expires
        self.max_contact_length = cfg.max_contact_length
        self.udp_answer_limit = cfg.udp_answer_limit
        #: RFC 5626 §5.4: the keep-alive interval a flow's 200 asks for.
        self._flow_timer = str(cfg.flow_timer)
        #: RFC 3327 §5.3: a Path the UA did not say it supports is 420 (see the docstring).
        self._path_strict = cfg.path_mode == "strict"
        self.gruu: GruuCodec = gruu_codec(cfg)
        self._warning = f'399 {node_id} "Binding list cut over UDP: query over WebSocket"'
        self.c_full = metrics.fast_counter("registry_full",
                                           "REGISTERs refused 503 by a registry bound",
                                           ["bound"])
        self.c_cut = metrics.fast_counter("register_list_cut",
                                          "REGISTER 200s over UDP listing only the "
                                          "request's own contacts (udp_answer_limit)")
        self.c_register = metrics.fast_counter("registrations", "REGISTER outcomes",
                                               ["result"])
        self.c_register_ok = self.c_register.child("200")  # every 200: no label to pack
        self.h_registry = metrics.histogram("registry_call_seconds",
                                            "Registry call latency", ["op"])
        # The in-memory registry answers in microseconds without I/O: timing it would cost
        # more than the call.  Remote engines (Redis) are timed.  So is not a worker's replica
        # (registry/replica.py): it answers from memory, and a write is a copy into its
        # journal (timing it cost a histogram observation, ~2-3% of a REGISTER's calls,
        # cProfile of bench_multiproc's workers).
        self.timed = cfg.registry != "memory" and not cfg.registry.startswith("replica+")
        self._date_second = -1
        self._date = b""

    async def handle(self, work: Work) -> None:
        if self.auth is not None and not await self.auth.admit(work):
            return  # answered: challenged (401), forbidden (403) or unavailable (503)
        req = work.request
        try:
            bindings, now = await self._process(req, work.peer)
        except RegistryError as exc:  # the registry's own answer (§21.5.4 for 503s)
            if isinstance(exc, RegistryFull):
                self.c_full.inc(exc.bound)
            self._reject(work, _reject_for(exc))
            return
        except RegistrarReject as rej:
            self._reject(work, rej)
            return
        self.c_register_ok.inc()
        # The 200 goes straight to bytes (the same bytes make_response + serialize give, the
        # tests hold them equal): the transaction only keeps its wire form and a stub anyway
        # (NonInviteServerTransaction.compact), so a Response would be built only to be dropped.
        data = stateless_answer(req, 200, "OK", self._tail(req, bindings, now))
        if len(data) > self.udp_answer_limit and not self.core.transports.reliable(
                work.peer.transport):
            data = self._cut(req, bindings, now)
        self.core.respond(work.txn, _OK_SUMMARY, data)

    def _cut(self, req: Request, bindings: list[Binding], now: float) -> bytes:
        """The 200 over UDP when the whole list is too large (see the module docstring)."""
        self.c_cut.inc()
        own = {contact_key(c.uri) for c in req.contacts}
        mine = [b for b in bindings if b.key in own]
        tail = self._tail(req, mine, now, [("Warning", self._warning)])
        return stateless_answer(req, 200, "OK", tail)

    def _reject(self, work: Work, rej: RegistrarReject) -> None:
        req = work.request
        self.c_register.inc(str(rej.status))
        self.core.respond(work.txn, make_response(
            req, rej.status, rej.reason, to_tag=self.core.stateless_tag(req),
            extra=[*rej.extra, *self.core.answer_headers]))

    async def _process(self, req: Request, peer: Peer) -> tuple[list[Binding], float]:
        """Steps 1-7 of §10.3; the bindings step 8 lists and the time they were read at."""
        self._check_domain(req)                     # step 1
        aor = self._aor(req)                        # step 5
        if len(req.call_id) > _MAX_ID_LENGTH:
            raise RegistrarReject(400, "Call-ID too long")
        now = self.clock()
        if req.contact_star:                        # step 6
            await self._remove_all(req, aor, now)
            bindings: list[Binding] = []
        else:
            path = _path(req)
            flows = _flows(req, path)
            if path and self._path_strict and not flows \
                    and "path" not in option_tags(req, "Supported"):
                raise RegistrarReject(420, "Bad Extension", [("Unsupported", "path")])
            flow = flows[0] if flows else None
            changes = [self._change(req, c, peer, path, c is flow)
                       for c in req.contacts]                                   # step 7
            call = self.registry.register(aor, req.call_id, req.cseq.seq, changes, now)
            bindings = await (self._timed("register", call) if self.timed else call)
            if changes and self.on_event is not None:
                self.on_event("register", aor, bindings)
            if flows and peer.transport == "udp" and not path:
                self.core.flows.seen(peer.host, peer.port)  # a REGISTER shows the flow alive
        return bindings, now

    def _tail(self, req: Request, bindings: list[Binding], now: float,
              extra: list[tuple[str, str]] | None = None) -> bytes:
        """The 200's wire form after its CSeq (``stateless_tail``): step 8's list and Date."""
        # Step 8: every binding, as str(NameAddr(uri, params={"expires": ...})) renders it; a
        # binding stores its URI's wire text, which is what str() of the parsed URI gives.
        tags = option_tags(req, "Supported") if req.extra else _NO_TAGS
        if tags:
            contacts = "".join([f"\r\nContact: <{b.contact}>;expires={b.remaining(now)}"
                                f"{self._instance_params(b, tags)}" for b in bindings])
        else:
            contacts = "".join([f"\r\nContact: <{b.contact}>;expires={b.remaining(now)}"
                                for b in bindings])
        if "path" in tags:
            # RFC 3327 §5.3: the Path of this REGISTER, in order, back to the UA.
            contacts += "".join([f"\r\nPath: {p}" for p in _path(req)])
        if "outbound" in tags and _flows(req, _path(req)):
            # RFC 5626 §6: the registrar applied outbound to this REGISTER; §5.4: how often
            # the flow's keep-alives should come.
            contacts += f"\r\nRequire: outbound\r\nFlow-Timer: {self._flow_timer}"
        date = self._date_tail(now) if extra is None else stateless_tail(
            [*extra, ("Date", email.utils.formatdate(int(now), usegmt=True)),
             *self.core.answer_headers])
        return contacts.encode("utf-8", "surrogateescape") + date

    def _instance_params(self, b: Binding, tags: set[str]) -> str:
        """A binding's instance in the 200: ``+sip.instance`` and ``reg-id`` echoed (RFC 5626
        §6), and its GRUUs when the REGISTER supports them (RFC 5627 §5)."""
        urn = instance_urn(b.instance)
        if urn is None:
            return ""
        out = f';+sip.instance="<{urn}>"'
        if b.reg_id is not None:
            out += f";reg-id={b.reg_id}"
        if "gruu" in tags:
            domain = b.aor.partition("@")[2] or b.aor.partition(":")[2]
            out += (f';pub-gruu="{pub_gruu(b.aor, urn)}"'
                    f';temp-gruu="{self.gruu.temp_gruu(b.aor, urn, b.call_id, domain)}"')
        return out

    def _date_tail(self, now: float) -> bytes:
        """``Date`` (§10.3 step 8) and the end of the 200, encoded once a second."""
        second = int(now)
        if second != self._date_second:  # formatting costs microseconds: once a second
            self._date_second = second
            self._date = stateless_tail([("Date", email.utils.formatdate(second, usegmt=True)),
                                         *self.core.answer_headers])
        return self._date

    def _check_domain(self, req: Request) -> None:
        uri = req.uri
        if not isinstance(uri, SipURI) or uri.host.lower() not in self.core.domains:
            # §10.3 step 1: this registrar has no bindings for that domain.
            raise RegistrarReject(403, "Domain not served here")

    def _aor(self, req: Request) -> str:
        to_uri = req.to.uri
        if not isinstance(to_uri, SipURI):
            raise RegistrarReject(416, "Address-of-record must be a SIP or SIPS URI")
        if to_uri.host.lower() not in self.core.domains:
            raise RegistrarReject(404, "Address-of-record not in a served domain")
        aor = aor_of(to_uri)
        if len(aor) > self.max_contact_length:
            raise RegistrarReject(400, "To URI too long")
        return aor

    async def _remove_all(self, req: Request, aor: str, now: float) -> None:
        # §10.3 step 6: "*" only alone and only with Expires: 0.
        if req.contacts or req.expires != 0:
            raise RegistrarReject(400, "Contact * needs Expires: 0 and no other contact")
        call = self.registry.remove_all(aor, req.call_id, req.cseq.seq, now)
        await (self._timed("remove_all", call) if self.timed else call)
        if self.on_event is not None:
            self.on_event("unregister", aor, [])

    def _change(self, req: Request, contact: NameAddr, peer: Peer,
                path: tuple[str, ...] = (), flow: bool = False) -> ContactChange:
        expires = self._expires(req, contact)
        uri = contact.uri
        raw = uri.raw  # str(uri) without the __str__ call: the wire text the parser kept
        uri_text = raw if raw is not None else str(uri)
        if len(uri_text) > self.max_contact_length:
            raise RegistrarReject(400, "Contact URI too long")
        raw_q = contact.params.get("q")
        q = 1.0 if raw_q is None else _q_value(raw_q)
        instance = contact.params.get("+sip.instance")
        if instance is not None and len(instance) > _MAX_ID_LENGTH:
            raise RegistrarReject(400, "+sip.instance too long")
        key = contact_key(uri)
        reg_id = None
        direct_udp = peer.transport == "udp" and not path
        if flow:
            # RFC 5626 §6: the binding is the flow of (instance, reg-id), whatever its Contact:
            # a new REGISTER on the same reg-id replaces it.  Over UDP the flow is the source.
            raw_reg_id = contact.params["reg-id"] or ""
            if len(raw_reg_id) > 10 or int(raw_reg_id) > _MAX_UINT32:  # §13: 1*DIGIT, 32 bits
                raise RegistrarReject(400, "Malformed reg-id parameter")
            reg_id = int(raw_reg_id)
            key = f"{instance_urn(instance)};reg-id={reg_id}"
            reach_source = direct_udp
        else:
            reach_source = direct_udp and behind_nat(uri, req.vias[0], (peer.host, peer.port))
        return ContactChange(
            contact=uri_text, expires=expires, q=q, transport=peer.transport,
            source=f"{peer.host}:{peer.port}", connection_id=peer.conn_id,
            node=self.node_id if peer.conn_id else None,
            instance=instance, reg_id=reg_id, path=path, key=key, reach_source=reach_source,
        )

    def _expires(self, req: Request, contact: NameAddr) -> int:
        raw = contact.params.get("expires")
        if raw is not None:
            if not raw.isdigit() or len(raw) > 10 or int(raw) > _MAX_UINT32:
                raise RegistrarReject(400, "Malformed expires parameter")
            value = int(raw)
        elif req.expires is not None:
            value = req.expires
        else:
            value = self.default_expires
        if 0 < value < self.min_expires:
            # §10.3 step 7 / §21.4.17: too brief; tell the client the minimum.
            raise RegistrarReject(423, None, [("Min-Expires", str(self.min_expires))])
        return min(value, self.max_expires)

    async def _timed(self, op: str, aw: Awaitable[T]) -> T:
        # No timeout here: every Registry engine bounds each call itself and raises
        # RegistryUnavailable (signaling/registry/base.py), which ``handle`` answers with
        # 503 + Retry-After.  Untimed calls are awaited directly (one coroutine less).
        start = time.perf_counter()
        try:
            return await aw
        finally:
            self.h_registry.labels(op).observe(time.perf_counter() - start)


#: Path values kept per binding: each is one proxy between the UA and us; more than the
#: Max-Forwards budget of hops (70) cannot be a real path.
MAX_PATH = 70


def _path(req: Request) -> tuple[str, ...]:
    """The REGISTER's Path values (RFC 3327 §4), in order, as their wire text."""
    if not req.extra:
        return ()
    values = [item for v in req.headers("Path") for item in split_list(v)]
    if len(values) > MAX_PATH:
        raise RegistrarReject(400, "Too many Path values")
    for value in values:
        try:
            na = parse_name_addr(value)
        except RemoteProtocolError:
            raise RegistrarReject(400, "Malformed Path header") from None
        if not isinstance(na.uri, SipURI):
            raise RegistrarReject(416, "Path must be a SIP or SIPS URI")
    return tuple(values)


_NO_TAGS: set[str] = set()


def _flows(req: Request, path: tuple[str, ...]) -> list[NameAddr]:
    """The Contacts of this REGISTER that register an RFC 5626 flow (§6)."""
    if not req.extra:
        return []
    flows = [c for c in req.contacts if outbound_contact(req, c)]
    if len(flows) > 1:
        # §6: "more than one Contact header field value with a reg-id": 400.
        raise RegistrarReject(400, "More than one Contact with reg-id")
    if flows and len(req.vias) > 1 and not (path and has_ob(parse_name_addr(path[0]))):
        # §6: a registrar not adjacent to the UA (more than one Via) needs the first hop to
        # keep the flow: a first Path value with ``ob``.  Without one (no Path, or an edge
        # proxy without outbound) a REGISTER with reg-id and Supported: outbound is 439.
        raise RegistrarReject(439, "First Hop Lacks Outbound Support")
    return flows


def _reject_for(exc: RegistryError) -> RegistrarReject:
    extra = [("Retry-After", str(exc.retry_after))] if exc.retry_after is not None else []
    return RegistrarReject(exc.status, exc.reason, extra)


def _q_value(raw: str) -> float:
    try:
        q = float(raw)
    except ValueError:
        raise RegistrarReject(400, "Malformed q parameter") from None
    if not 0.0 <= q <= 1.0:
        raise RegistrarReject(400, "q parameter out of range")
    return q
