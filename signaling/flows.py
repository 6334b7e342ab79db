"""Which of a user's bindings a request goes to, and over what: SIP Outbound flows (RFC 5626
§5.3, §7), GRUUs (RFC 5627 §8.4) and clients behind NAT; the rest is ``Hops.binding_target``.

Rules, in order (``Reach.targets``):

1. A Request-URI that is a GRUU keeps only the bindings of its instance (RFC 5627 §8.4.1;
   a temp-gruu also only those registered under the Call-ID it was issued under).  None left:
   480, the instance is not registered now.
2. Outbound bindings (a ``reg_id``) are grouped by instance: one target per instance at a time
   (§7: "MUST NOT populate the target set with more than one contact with the same AOR and
   instance-id"), the flow with the lowest reg-id that is still usable.  A flow is usable when
   it is this node's and alive: its connection is open (a flow's binding outlives its
   connection, ``Registry.remove_connection``, so that the closed flow answers 430), or,
   for UDP, keep-alives (STUN, §4.4.2) or REGISTERs came over it within ``2 x FLOW_TIMER``
   (``FlowTable``; one missed keep-alive is tolerated).  Through an edge proxy (a Path), the
   edge holds the flow and answers 430 itself (§5.3).
3. Other bindings go where ``Hops.binding_target`` says; a binding found behind NAT by the
   registrar (``Binding.reach_source``, rule in ``protocols.sip.outbound.behind_nat``) is sent
   to the address its REGISTER came from, the Request-URI still its registered Contact.
4. No target but an instance whose every flow failed: 430 Flow Failed (§5.3, §11.6), which
   tells the caller's proxy to try another flow or give up, rather than 480.
5. A flow that answers 430 (its edge proxy lost it, §5.3) or 408, that never answers (Timer
   B, or Timer C before any provisional but a 100: RFC 3261 §16.8 counts it as 408; after a
   180 Timer C CANCELs instead, and the 487 is the instance's answer), or that cannot be
   sent over (its connection closed after the lookup): the instance's next usable flow gets
   the request instead (§7 allows another flow of the instance after a 408 or 430 only;
   ``next_flow``; the proxy made its copy when it forked, ``Target.fallback``).  Only once
   every flow of the instance failed does that branch's answer count.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from protocols.sip.flowtoken import FlowTokens
from protocols.sip.gruu import GruuCodec, call_digest
from protocols.sip.message import SipURI
from protocols.sip.outbound import FLOW_TIMER, instance_urn
from protocols.sip.uri import aor_of, parse_uri
from signaling.config import Config
from signaling.hops import Hops, Target
from signaling.registry.base import Binding, Registry
from signaling.transports.base import Peer, Transports

if TYPE_CHECKING:
    from protocols.sip.message import Request
    from signaling.proxy_context import Branch

__all__ = ["FLOW_FAILED", "MAX_FLOWS", "FlowTable", "Reach", "flow_tokens", "gruu_codec",
           "next_flow"]

#: RFC 5626 §11.6.
FLOW_FAILED = 430
#: UDP flows whose last keep-alive is remembered.  A flow forgotten (the oldest go first) is
#: taken as alive: not knowing is not evidence of failure.  ~100 bytes each: 100k is ~10 MB.
MAX_FLOWS = 100_000
#: Key of the secret GRUUs are sealed with when ``auth_secret`` is not set: one per process,
#: so the registrar and the proxy of a process agree (see ``gruu_codec``).
_PROCESS_SECRET = os.urandom(32)


def gruu_codec(cfg: Config) -> GruuCodec:
    """The GRUU codec of this process: sealed with ``auth_secret`` (the same on every node and
    worker) when set, else with a random per-process key (temp-gruus then only route through
    the process that issued them, and not after a restart: documented in the README)."""
    return GruuCodec(cfg.auth_secret.encode() if cfg.auth_secret else _PROCESS_SECRET)


def flow_tokens(cfg: Config) -> FlowTokens:
    """The flow-token codec of this process (an edge proxy's Path, ``signaling.edge``), keyed
    as ``gruu_codec`` is: a token made by one worker or node reads on every other."""
    return FlowTokens(cfg.auth_secret.encode() if cfg.auth_secret else _PROCESS_SECRET)


class FlowTable:
    """When each UDP flow of this node last showed it is alive (RFC 5626 §4.4.2 keep-alives,
    and REGISTERs over it).  Bounded by ``MAX_FLOWS``, oldest forgotten first."""

    def __init__(self, flow_timer: int = FLOW_TIMER, clock: Callable[[], float] | None = None,
                 max_flows: int = MAX_FLOWS) -> None:
        self.lapse = 2.0 * flow_timer
        self.clock = clock or time.monotonic
        self.max_flows = max_flows
        self._seen: dict[tuple[str, int], float] = {}

    def seen(self, host: str, port: int) -> None:
        key = (host, port)
        seen = self._seen
        if key in seen:
            del seen[key]  # re-inserted last: the dict's order is the age order
        elif len(seen) >= self.max_flows:
            del seen[next(iter(seen))]
        seen[key] = self.clock()

    def alive(self, host: str, port: int) -> bool:
        last = self._seen.get((host, port))
        return last is None or self.clock() - last <= self.lapse

    def __len__(self) -> int:
        return len(self._seen)


class Reach:
    """Targets of a user's bindings (see the module docstring)."""

    def __init__(self, hops: Hops, transports: Transports, node_id: str, flows: FlowTable,
                 gruu: GruuCodec) -> None:
        self.hops = hops
        self.transports = transports
        self.node_id = node_id
        self.flows = flows
        self.gruu = gruu

    def aor(self, uri: SipURI) -> str | None:
        """The AOR a Request-URI of ours names: its own, or the one a temp-gruu hides; None for
        a temp-gruu that does not open (forged or from another key): 404."""
        aor = aor_of(uri)
        if uri.params and "gr" in uri.params and not uri.params["gr"]:
            target = self.gruu.target(uri, aor)
            return target.aor if target is not None else None
        return aor

    async def lookup(self, uri: SipURI, registry: Registry) -> list[Target] | int:
        """The targets of the user a Request-URI of ours names, or the status to answer (404
        for a temp-gruu that does not open, 430, 480); ``RegistryError`` when the registry
        fails."""
        aor = self.aor(uri)
        if aor is None:
            return 404
        return await self.targets(uri, await registry.lookup(aor, time.time()))

    async def targets(self, uri: SipURI, bindings: Sequence[Binding]) -> list[Target] | int:
        """The targets in q order (§16.6), or the status to answer (430, 480)."""
        gr = self.gruu.target(uri, aor_of(uri)) if uri.params and "gr" in uri.params else None
        if gr is not None:
            bindings = [b for b in bindings if _instance(b) == gr.instance and (
                gr.call_digest is None or call_digest(b.call_id) == gr.call_digest)]
            if not bindings:
                return 480
        groups: dict[str, list[Binding]] = {}
        for b in bindings:
            if b.reg_id is not None:
                groups.setdefault(_instance(b), []).append(b)
        targets: list[Target] = []
        failed = False
        for b in bindings:
            if b.reg_id is None:
                target = await self.hops.binding_target(b)
            else:
                group = groups.pop(_instance(b), None)
                if group is None:
                    continue  # this instance already has its target (or none): one each
                target = await self._first_flow(group)
                failed = failed or target is None
            if target is not None:
                targets.append(target)
        if not targets and failed:
            return FLOW_FAILED
        return targets

    async def _first_flow(self, group: list[Binding]) -> Target | None:
        """Several flows of one instance: the lowest reg-id that is usable (§7 leaves the order
        to the proxy; a stable one makes the choice predictable), the others usable after it
        as its fallback (rule 5)."""
        usable = []
        for b in sorted(group, key=lambda b: b.reg_id or 0):
            target = await self._flow(b)
            if target is not None:
                usable.append(target)
        if not usable:
            return None
        first, *rest = usable
        return dataclasses.replace(first, fallback=tuple(rest)) if rest else first

    async def _flow(self, b: Binding) -> Target | None:
        """The target of an outbound binding when its flow is usable from here, else None."""
        if b.path:
            return await self.hops.binding_target(b)  # the edge proxy's flow (§5.3)
        if b.node not in (None, self.node_id):
            return None
        host, _, port = b.source.rpartition(":")
        if b.transport == "udp":
            if not host or not self.flows.alive(host, int(port)):
                return None
            # The 5-tuple: back to the source, from the socket it came to (connection_id is a
            # worker's slot tag, signaling/transports/udp.py).
            return Target(parse_uri(b.contact), Peer("udp", host, int(port), b.connection_id))
        conns = getattr(self.transports.get(b.transport), "conns", None)
        if b.connection_id is None or not isinstance(conns, dict) or b.connection_id not in conns:
            return None
        # Over the flow only, never a new connection to the Contact (§5.3: a UA using
        # outbound is reachable over its flows).
        return Target(parse_uri(b.contact), Peer(b.transport, "", 0, b.connection_id))


def _instance(b: Binding) -> str:
    return instance_urn(b.instance) or ""


def next_flow(branch: Branch) -> tuple[tuple[Request, Peer], list[tuple[Request, Peer]]] | None:
    """The copy and peer of the next flow to replace a failed ``branch`` with, and the flows
    left after it (rule 5); None when it has none left, or the request is answered or
    cancelled meanwhile."""
    if not branch.flows or branch.ctx.done or branch.cancelled or branch.final is not None:
        return None
    first, *rest = branch.flows
    return first, rest
