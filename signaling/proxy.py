"""The stateful, record-routing proxy (RFC 3261 §16) with per-dialog tracking.

Request path (a worker, §16.3-§16.6): validate (483, 482), pop our own Route values (§16.4), find
the targets (a dialog's other side, the remaining Route, the registered bindings of a user of a
served domain, or the Request-URI when relaying), and fork one client transaction per target
(§16.6), each copy carrying our Via with a unique branch, Max-Forwards minus one and our
Record-Route: two of them when the call changes transport (RFC 5658 §4), so each side sees a
URI it can reach.

Response path (§16.7): 100 is absorbed, other provisionals are relayed at once, the first 2xx is
relayed and cancels the other branches, 6xx cancels the others too; when every branch has a
final response and no 2xx went up, the best one does (6xx, else the lowest class, 503 becoming
500).  A timed-out branch counts as 408 (Timer B, Timer C §16.8).

ACK for a 2xx and 2xx retransmissions that outlive their transaction are relayed statelessly
(§16.11, §16.7 step 9: responses without a matching transaction).  CANCEL is answered 200 and
propagated to every pending branch (§16.10).

Every INVITE dialog is a ``ProxyDialog`` (see dialogs.py); in-dialog requests reach the other
side through it, which is also how a WebSocket client's ``.invalid`` contact stays reachable.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import os
import zlib
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING

from protocols.sip.builders import make_response
from protocols.sip.message import CSeq, NameAddr, Request, Response, SipURI, Via
from protocols.sip.oc import OcClient, parse_report
from protocols.sip.parser import parse_name_addr
from protocols.sip.summary import ResponseSummary
from protocols.sip.transaction import (
    Event,
    PassToTU,
    ServerTransaction,
    State,
    TimerCFired,
    Transaction,
    TransactionTerminated,
    TransactionTimedOut,
    TransportFailed,
    build_cancel,
)
from protocols.sip.uri import aor_of, parse_uri
from signaling.auth.policy import Authenticator
from signaling.config import Config
from signaling.dialogs import DialogInput, DialogState, DialogTableFull, ProxyDialog
from signaling.edge import EXTENSION_REQUIRED, Edge
from signaling.fanout import cap_per_destination
from signaling.flows import FLOW_FAILED, Reach, flow_tokens, gruu_codec, next_flow
from signaling.forwarding import ack_bytes, request_bytes, response_bytes
from signaling.hops import Hops, Target
from signaling.metrics import Metrics
from signaling.proxy_context import Branch, Context
from signaling.proxy_dialogs import DIALOG_LINGER, DialogKeeper
from signaling.registry.base import Registry, RegistryError
from signaling.sipcore import Peer, SipCore, Work
from signaling.sizeswitch import over_tcp, udp_retry
from signaling.transports.base import TransportInfo

if TYPE_CHECKING:  # imported by the server only when tracing is on (OpenTelemetry is heavy)
    from signaling.tracing import Tracing

__all__ = ["DIALOG_LINGER", "Proxy", "Target"]

log = logging.getLogger(__name__)

#: Seconds between sweeps of dialog deadlines (maximum duration, linger).
DIALOG_TICK = 1.0
#: Seconds a stopping proxy waits for its dialog writes to the shared registry (a round trip is
#: well under a millisecond; a registry that is down is not waited for longer than this).
SHARE_FLUSH_TIMEOUT = 2.0
_COOKIE = "z9hG4bK"

#: RFC 7339 §5.1: our Via on every forwarded request says we do loss-based overload control.
_OC: dict[str, str | None] = {"oc": None, "oc-algo": '"loss"'}
#: RFC 5626 §7: the answers of a flow after which its instance's next flow may be tried.
_NEXT_FLOW = frozenset({408, FLOW_FAILED})


def _oc_key(peer: Peer) -> tuple[str, int]:
    """A downstream server, as RFC 7339 reports are kept: by address."""
    return (peer.host, peer.port)


class Proxy:
    """Routes requests between registered users over the node's transports.

    Transports are named only through ``core.transports``: the hop's transport gives its Via
    and Record-Route, so a new transport needs no change here.
    """

    def __init__(self, core: SipCore, registry: Registry, cfg: Config, metrics: Metrics,
                 node_id: str, tracer: Tracing | None = None,
                 auth: Authenticator | None = None,
                 on_dialog_ended: Callable[[ProxyDialog], None] | None = None,
                 reaches: Callable[[str], bool] | None = None) -> None:
        self.core = core
        #: None when tracing is off: every use is behind ``if self.tracer``, no call per message.
        self.tracer = tracer
        self.registry = registry
        self.cfg = cfg
        self.node_id = node_id
        self.contexts: dict[ServerTransaction, Context] = {}
        #: Unanswered INVITEs by dialog id, so the ring deadline can end them (bounded by the
        #: dialog table: an entry leaves when its final response goes upstream).
        self._ringing: dict[str, Context] = {}
        self.transports = core.transports
        self.hops = Hops(self.transports, node_id, self._is_me, reaches)  # reaches: hops.py
        self.reach = Reach(self.hops, self.transports, node_id, core.flows, gruu_codec(cfg))
        #: REGISTERs relayed with a flow token in their Path, and requests routed back by it.
        self.edge = Edge(self.transports, node_id, flow_tokens(cfg), core.flows, core.domains,
                         cfg.relay, self._is_me, reaches, strict=cfg.path_mode == "strict")
        self._branch_ids = itertools.count(1)
        self._branch_salt = os.urandom(4).hex()
        self._ticker: asyncio.Task[None] | None = None
        #: RFC 3261 §22.3; None when authentication is off (no call per request then).
        self.auth = auth
        #: RFC 7339 reports from the servers we forward to, and the loss they ask of us.
        self.oc = OcClient()
        metrics.callback_gauge("sip_oc_servers_reporting",
                               "Downstream servers whose RFC 7339 report we follow", [],
                               lambda: {(): float(len(self.oc))})
        self.c_proxy = metrics.fast_counter("proxy_events", "Proxy outcomes", ["event"])
        self.keeper = DialogKeeper(cfg, registry, metrics, self.c_proxy, core.now, tracer,
                                   on_dialog_ended)
        #: The dialog table (the admin API lists and ends dialogs through it).
        self.dialogs = self.keeper.table
        self.dialogs.on_terminate = self.terminate_dialog
        self.h_setup = metrics.histogram("call_setup_seconds",
                                         "INVITE received to 2xx relayed")

    # -- life cycle --------------------------------------------------------------------------

    def start(self) -> None:
        self._ticker = asyncio.get_running_loop().create_task(self._tick(), name="dialogs")

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
        await self.keeper.shared.flush(SHARE_FLUSH_TIMEOUT)

    # -- requests (workers) ------------------------------------------------------------------

    async def handle(self, work: Work) -> None:
        if self.auth is not None and not await self.auth.admit(work):
            return  # answered: challenged (407), forbidden (403) or unavailable (503)
        req = work.request
        if req.max_forwards == 0:
            self._reply(work, 483)  # §16.3 step 3
            return
        if self._loop_detected(req):
            self._reply(work, 482)  # §16.3 step 4
            return
        in_dialog = req.to.tag is not None
        flow = None if in_dialog else self.edge.route(req, work.peer)
        self._pop_own_routes(req)
        if in_dialog:
            await self._in_dialog(work)
            return
        if isinstance(flow, int):
            self._reply(work, flow)  # RFC 5626 §5.3.1: 430 the flow is gone, 403 forged
            return
        if req.method == "REGISTER" and self.edge.refuses(req):
            self._reply(work, EXTENSION_REQUIRED, extra=[("Require", "path")])  # RFC 3327 §5.2
            return
        targets = [Target(req.uri, flow)] if flow is not None else await self._targets(work)
        if targets:
            self._fork(work, targets)

    def holds(self, request: Request) -> bool:
        """Whether a request with a To tag belongs to a dialog this node holds (issue 13:
        only such work goes ahead of new requests); one the proxy only has in the shared
        registry is loaded by its worker, as new work is."""
        return self.keeper.find(request) is not None

    async def _in_dialog(self, work: Work) -> None:
        req = work.request
        dialog = await self.keeper.find_or_load(req)
        if dialog is not None:
            peer = self.keeper.other_side(dialog, req)
            if peer is None:
                self._reply(work, 481)
                return
            # Forwarded first, then recorded: a BYE's own spans (tracing.py) belong to the
            # call it is about to end.
            self._fork(work, [Target(req.uri, peer)], dialog=dialog)
            self.keeper.request(dialog, req)
            return
        target = self.hops.route_target(req)
        if target is None:
            # §12.2.2 / §16: no dialog here and nowhere else to send it.
            self.c_proxy.inc("in_dialog_481")
            self._reply(work, 481)
            return
        self._fork(work, [target])

    async def _targets(self, work: Work) -> list[Target]:
        req = work.request
        route = self.hops.route_target(req) if req.routes else None
        uri = req.uri
        if route is not None:
            if not (isinstance(uri, SipURI) and uri.user is not None
                    and uri.host.lower() in self.core.domains):
                return [route]
            # A preloaded Route for a user of ours (§16.5, §16.6 steps 6-7): the location
            # service gives the Request-URI, the Route stays the next hop.  A user without
            # bindings here is left to the proxy the Route names.
            found = await self._lookup(work, uri)
            if found is None:
                return []
            return [Target(t.uri, route.peer) for t in found] or [route]
        if not isinstance(uri, SipURI) or uri.host.lower() not in self.core.domains:
            if self.cfg.relay and isinstance(uri, SipURI):
                relay = await self.hops.resolve(uri)
                if relay is not None:
                    return [Target(uri, relay)]
            self._reply(work, 403, "Relaying not allowed")
            return []
        if uri.user is None:
            self._reply(work, 404, "No user in Request-URI")
            return []
        return await self._user_targets(work, uri)

    async def _user_targets(self, work: Work, uri: SipURI) -> list[Target]:
        targets = await self._lookup(work, uri)
        if targets is None or targets:
            return targets or []
        try:
            known = await self.registry.known_user(aor_of(uri))
        except RegistryError:
            known = True  # the 480 that asks to try later, not the 404 that says never
        # §16.5 / §21.4: 480 for a user we know but cannot reach now, 404 for a stranger.
        self.c_proxy.inc("no_binding")
        self._reply(work, 480 if known else 404)
        return []

    async def _lookup(self, work: Work, uri: SipURI) -> list[Target] | None:
        """The targets of the user's bindings (§16.5; flows, GRUUs, NAT: flows.py); None when
        the request was answered (503 registry down, 404/430/480 from flows.Reach)."""
        try:
            found = await self.reach.lookup(uri, self.registry)
        except RegistryError:
            self._reply(work, 503, extra=[("Retry-After", str(self.cfg.retry_after))])
            return None
        if isinstance(found, int):
            self._reply(work, found)
            return None
        targets, dropped = cap_per_destination(found, self.cfg.max_forks_per_host,
                                               _destination)
        if dropped:
            self.c_proxy.inc("fork_capped")
        return targets

    # -- forking (§16.6) ---------------------------------------------------------------------

    def _fork(self, work: Work, targets: list[Target], dialog: ProxyDialog | None = None) -> None:
        req = work.request
        now = self.core.now()
        if len(self.oc) and req.to.tag is None:
            # RFC 7339 §5.10 / §6: new requests to a server that reported overload are shed
            # at its reported loss rate; when no target is left, we answer 503 ourselves
            # (without Retry-After: it would tell the client that *we* are unavailable).
            targets = [t for t in targets if not self.oc.throttle(_oc_key(t.peer), now)]
            if not targets:
                self.c_proxy.inc("oc_throttled")
                self._reply(work, 503)
                return
        ctx = Context(work.txn, req, now)
        if ctx.creates_dialog:
            try:
                ctx.dialog = self.keeper.create(req, work.peer, now)
            except DialogTableFull:
                self.c_proxy.inc("dialog_table_full")
                self._reply(work, 503, extra=[("Retry-After", str(self.cfg.retry_after))])
                return
            self._ringing[ctx.dialog.id] = ctx
        else:
            ctx.dialog = dialog
        self.contexts[work.txn] = ctx
        self.core.observe(work.txn, self._on_server_event)
        trace: list[tuple[str, str]] = []
        if self.tracer is not None:
            trace = self._trace_start(work, ctx.dialog)
        for target in targets:
            copy = self._copy_for(req, target, work.peer, trace)
            udp: tuple[Request, Peer] | None = None
            # Edited from the received bytes when the C parser noted where (forwarding.py).
            wire = request_bytes(req, copy) if req.wire is not None else None
            tcp, wire = over_tcp(copy, target.peer, self.transports, wire)  # §18.1.1
            if tcp is not None:
                self.c_proxy.inc("udp_too_large_sent_over_tcp")
                udp, target = (copy, target.peer), dataclasses.replace(target, peer=tcp)
                copy = self._copy_for(req, target, work.peer, trace)
            flows = [(self._copy_for(req, t, work.peer, trace), t.peer) for t in target.fallback]
            self._start_branch(ctx, copy, target.peer, udp, flows, wire)
        # Forwarded: the received bytes are not kept with the transaction's request for as
        # long as it lives (bench_invite_memory; later copies are serialized).
        req.wire = None
        if all(b.final is not None for b in ctx.branches):
            self._finish(ctx)

    def _trace_start(self, work: Work, dialog: ProxyDialog | None) -> list[tuple[str, str]]:
        """Spans for a proxied request (signaling/tracing.py); the headers that carry its
        trace context downstream."""
        assert self.tracer is not None
        req = work.request
        if dialog is not None and req.method == "INVITE" and req.to.tag is None:
            self.tracer.call_started(dialog.id, work.request, work.peer)
        self.tracer.transaction_started(work.txn, work.request, work.peer,
                                        dialog.id if dialog is not None else None)
        return self.tracer.traceparent(work.txn)

    def _copy_for(self, req: Request, target: Target, incoming: Peer,
                  trace: Sequence[tuple[str, str]] = ()) -> Request:
        out = target.peer.transport
        vias = [self._via(req, out), *req.vias]
        rr = req.record_routes
        if req.method == "INVITE" and req.to.tag is None:
            # RFC 5658 §4: facing each side, the URI that side can reach; the lower one faces
            # the caller (it is last in the callee's route set, first in the caller's).
            mine = [self._rr(out)]
            if out != incoming.transport:
                mine.append(self._rr(incoming.transport))
            rr = [*mine, *rr]
        mf = 70 if req.max_forwards is None else req.max_forwards - 1  # §16.6 step 3
        extra, require = req.extra, req.require
        if req.method == "REGISTER":  # relayed as an edge proxy (signaling.edge)
            extra, require = self.edge.with_path(req, incoming, out, extra)
        if trace:  # our span's W3C trace context replaces the caller's (tracing.py)
            extra = [*(h for h in extra if h[0].lower() not in ("traceparent", "tracestate")),
                     *trace]
        return req.forwarded(uri=target.uri, vias=vias, record_routes=rr, max_forwards=mf,
                             routes=[*target.routes, *req.routes], extra=extra,
                             require=require)

    def _via(self, req: Request, transport: str) -> Via:
        # §16.6 step 8: a branch unique per request, whose first part is a hash of what
        # loop detection compares (§16.3 step 4).
        branch = f"{_COOKIE}{_loop_hash(req)}.{self._branch_salt}{next(self._branch_ids):x}"
        return self._info(transport).via(branch, _OC)

    def _rr(self, transport: str) -> NameAddr:
        return self._info(transport).record_route

    def _info(self, transport: str) -> TransportInfo:
        info = self.transports.info(transport)
        if info is None:
            # Targets are only ever built for transports this node runs (``for_uri``).
            raise LookupError(f"no {transport} transport on this node")
        return info

    def _start_branch(self, ctx: Context, request: Request, peer: Peer,
                      udp: tuple[Request, Peer] | None = None,
                      flows: list[tuple[Request, Peer]] | None = None,
                      wire: bytes | None = None) -> None:
        branch = Branch(ctx, request, peer)
        branch.udp, branch.flows = udp, flows or []
        ctx.branches.append(branch)
        txn = self.core.start_client_transaction(
            request, peer, partial(self._on_branch_event, branch), proxy=True, wire=wire)
        if txn is None:
            self.c_proxy.inc("transaction_table_full")
            branch.final = make_response(ctx.request, 503)
            return
        branch.txn = txn

    # -- responses (§16.7) -------------------------------------------------------------------

    def _on_branch_event(self, branch: Branch, txn: Transaction, ev: Event) -> None:
        if isinstance(ev, PassToTU):
            msg = ev.message
            if isinstance(msg, Response):
                self._branch_response(branch, msg)
        elif isinstance(ev, TimerCFired):
            self._timer_c(branch, txn)
        elif isinstance(ev, TransactionTimedOut):
            if not self._retry(branch):  # RFC 5626 §7: a timeout counts as a 408
                self._branch_failed(branch, 408)
        elif isinstance(ev, TransportFailed):
            if not self._retry(branch):
                self._branch_failed(branch, 503)
        elif isinstance(ev, TransactionTerminated):
            branch.txn = None

    def _branch_response(self, branch: Branch, resp: Response) -> None:
        ctx = branch.ctx
        status = resp.status
        params = resp.vias[0].params  # the server's report is in our Via (RFC 7339 §5.3)
        if "oc" in params and self.oc.receive(_oc_key(branch.peer), parse_report(params),
                                              self.core.now()):
            self.c_proxy.inc("oc_received")
        if status == 100:
            return  # §16.7 step 3: 100 is hop by hop
        if status < 200:
            branch.provisional = True
            if branch.cancel_pending:
                self._cancel_branch(branch)
            self._dialog_event(ctx, branch, resp, DialogInput.PROVISIONAL)
            if not ctx.done:
                self._relay(ctx, resp)
            return
        if status in _NEXT_FLOW and self._retry(branch):
            # RFC 5626 §7: after a 408 or 430 (and only those) the request may go to another
            # flow of the same instance; the next one has it (flows.py).
            return
        first_final = branch.final is None
        branch.final = resp
        if status < 300:
            self._success(ctx, branch, resp)
            return
        if first_final:
            self._failure(ctx, resp)

    def _success(self, ctx: Context, branch: Branch, resp: Response) -> None:
        # §16.7 step 5: every 2xx is relayed at once, retransmissions included.
        if not ctx.done and ctx.creates_dialog:
            # Call set-up only: the 2xx of a BYE, re-INVITE or MESSAGE is not a call's answer.
            self.h_setup.observe(self.core.now() - ctx.started)
        self._answered(ctx)
        self._dialog_event(ctx, branch, resp, DialogInput.SUCCESS)
        self._relay(ctx, resp)
        self._cancel_others(ctx, branch)  # §16.7 step 10

    def _failure(self, ctx: Context, resp: Response) -> None:
        ctx.best = _better(ctx.best, resp)
        if resp.status >= 600:
            self._cancel_others(ctx, None)  # §16.7 step 5: a 6xx ends the search
        if all(b.final is not None for b in ctx.branches):
            self._finish(ctx)
            ctx.settle(self.core.stateless_tag)  # a late final after the answer went up

    def _branch_failed(self, branch: Branch, status: int) -> None:
        if branch.final is not None:
            return
        synthetic = make_response(branch.ctx.request, status)
        branch.final = synthetic
        self._failure(branch.ctx, synthetic)

    def _retry(self, branch: Branch) -> bool:
        """A failed branch replaced: by the copy made for UDP when it went to TCP for its size
        and the connection was refused (§18.1.1, ``signaling.sizeswitch``), else by its
        instance's next flow (RFC 5626 §5.3, ``signaling.flows``)."""
        udp, ctx, flows = udp_retry(branch, self.transports), branch.ctx, branch.flows
        what = "udp_too_large_retried_over_udp"
        if udp is None:
            udp, flows = next_flow(branch) or (None, [])
            what = "flow_failed_next_flow"
        if udp is None:
            return False
        self.c_proxy.inc(what)
        ctx.branches.remove(branch)
        self._start_branch(ctx, *udp, flows=flows)
        if all(b.final is not None for b in ctx.branches):
            self._finish(ctx)  # the transaction table was full: the 503 is the answer
        return True

    def _timer_c(self, branch: Branch, txn: Transaction) -> None:
        """§16.8: after a provisional, CANCEL the branch; its final answer (487) is the
        instance's, so no other flow follows (RFC 5626 §7).  Without one, act as on a 408:
        the instance's next flow when it has one (RFC 5626 §7, as at Timer B), else 408.  A
        100 alone said nothing of the instance (hop by hop, §16.7 step 3): that branch is
        treated as silent, and its transaction CANCELled (§9.1 allows it after any 1xx) so
        it ends; its late answer is ignored, but a 2xx, which is relayed (§16.7 step 5)."""
        if branch.provisional:
            self._cancel_branch(branch)
            return
        trying = txn.state is State.PROCEEDING and not branch.cancelled
        if self._retry(branch):
            branch.final = make_response(branch.ctx.request, 408)  # replaced: a late 4xx-6xx
        else:
            self._branch_failed(branch, 408)
        if trying:
            branch.cancelled = True
            self._originate(build_cancel(branch.request), branch.peer)

    def _finish(self, ctx: Context) -> None:
        if ctx.done:
            return
        self._answered(ctx)
        best = ctx.best or make_response(ctx.request, 408)
        if best.status == 503:
            best = dataclasses.replace(best, status=500, reason="Server Internal Error")
        if ctx.dialog is not None and ctx.request.to.tag is None:
            # Only the dialog-creating INVITE's answer is the call's outcome; a refused
            # re-INVITE or BYE must not overwrite it (§14.1: the dialog stays as it was).
            ctx.dialog.final_status = best.status
            self.keeper.input(ctx.dialog, DialogInput.FAILURE)
        self._relay(ctx, best)

    def _answered(self, ctx: Context) -> None:
        """A final response is going upstream: the ring deadline no longer applies."""
        ctx.done = True
        if ctx.dialog is not None:
            self._ringing.pop(ctx.dialog.id, None)

    def _ring_expired(self, dialog: ProxyDialog) -> None:
        """The ring time passed without an answer (``--ring-timeout``).

        Timer C (§16.8) is at least three minutes, so a shorter configured ring time is
        enforced here, the way §16.8 treats Timer C: CANCEL every pending branch and answer
        the caller 408 at once (the branches' 487s are then absorbed by ``ctx.done``).
        """
        ctx = self._ringing.pop(dialog.id, None)
        dialog.ended_by = "timeout"
        if ctx is None or ctx.done:
            self.keeper.input(dialog, DialogInput.TIMEOUT)
            return
        self.c_proxy.inc("ring_timeout")
        self._cancel_others(ctx, None)
        ctx.best = _better(ctx.best, make_response(ctx.request, 408))
        self._finish(ctx)

    def _relay(self, ctx: Context, resp: Response) -> None:
        """Send a branch's response upstream with our Via removed (§16.7 step 9)."""
        data = None
        if len(resp.vias) == 1 and self._is_my_via(resp.vias[0]):
            # Only our Via: a callee that copied it from our CANCEL into the INVITE's 487.
            # §16.7 step 3 would keep such a response here; it still ends this branch, and
            # upstream it carries the request's Vias, as every response must (§8.2.6.2).
            self.c_proxy.inc("response_vias_restored")
            up = dataclasses.replace(resp, vias=ctx.request.vias)
        elif resp.vias and self._is_my_via(resp.vias[0]):
            if resp.status < 200 or resp.to.tag is not None:  # else a To tag is added below
                data = response_bytes(resp)  # edited from the received bytes: no copy
            # Edited, ``up`` is read below only for its status and To tag, which it shares.
            up = resp if data is not None else dataclasses.replace(resp, vias=resp.vias[1:])
        else:  # a response we synthesised carries the upstream Vias already
            up = resp
        if up.status >= 200 and up.to.tag is None:
            tag = ctx.tag if ctx.settled else self.core.stateless_tag(ctx.request)
            up = dataclasses.replace(up, to=up.to.with_param("tag", tag))
        if self.tracer is not None and up.status >= 200:
            self.tracer.transaction_answered(ctx.txn, up.status)
        self.core.respond(ctx.txn, up if data is None else ResponseSummary.of(up), data)
        if up.status >= 200:
            ctx.settle(self.core.stateless_tag)

    def _cancel_others(self, ctx: Context, keep: Branch | None) -> None:
        for b in ctx.branches:
            if b is not keep and b.final is None:
                self._cancel_branch(b)

    def _cancel_branch(self, branch: Branch) -> None:
        """§9.1: CANCEL only after a provisional; until then, remember to."""
        if branch.cancelled or branch.final is not None or branch.request.method != "INVITE":
            return
        if not branch.provisional:
            branch.cancel_pending = True
            return
        branch.cancelled = True
        self._originate(build_cancel(branch.request), branch.peer)

    def _originate(self, request: Request, peer: Peer) -> None:
        """A CANCEL or BYE of our own: its outcome needs no action (``_ignore``)."""
        if self.core.start_client_transaction(request, peer, _ignore) is None:
            self.c_proxy.inc("transaction_table_full")

    def _on_server_event(self, txn: Transaction, ev: Event) -> None:
        if isinstance(ev, TransactionTerminated) and isinstance(txn, ServerTransaction):
            if self.tracer is not None:  # answered otherwise than through _relay
                last = txn.last_response
                self.tracer.transaction_answered(txn, last.status if last is not None else 0)
            ctx = self.contexts.pop(txn, None)
            if ctx is not None:
                # Break the context <-> branch cycle so reference counting frees the call's
                # objects at once: the server runs with rare full collections (cli._tune_gc).
                ctx.branches = []
                if ctx.dialog is not None:
                    self._ringing.pop(ctx.dialog.id, None)

    # -- CANCEL, ACK and stray responses (callbacks, synchronous) ----------------------------

    def on_cancel(self, cancel: Request, peer: Peer, now: float) -> bool:
        st = self.core.find_cancel_target(cancel)
        if st is None:
            return False
        self.core.send_stateless(cancel, peer, 200)  # §16.10
        ctx = self.contexts.get(st)
        if ctx is None:
            # Still queued: answer the INVITE 487 now; the worker sees it is answered.  One
            # answered already (404, 480 ...) keeps its answer and no longer its request.
            last = st.last_response
            if last is None or last.status < 200:
                self.core.respond(st, make_response(st.request, 487,
                                                    to_tag=self.core.stateless_tag(st.request)))
            return True
        ctx.cancelled = True
        self._cancel_others(ctx, None)
        return True

    def on_ack(self, ack: Request, peer: Peer) -> None:
        """An ACK matching no transaction: the ACK for a 2xx, relayed statelessly."""
        self._pop_own_routes(ack)
        dialog = self.keeper.find(ack)
        dest: Peer | None
        if dialog is not None:
            if self.tracer is not None and dialog.state is DialogState.WAIT_ACK:
                self.tracer.call_event(dialog.id, "confirmed")
            self.keeper.input(dialog, DialogInput.ACK)
            dest = self.keeper.other_side(dialog, ack)
        else:
            target = self.hops.route_target(ack)
            dest = target.peer if target is not None else None
        if dest is None or ack.max_forwards == 0:
            self.c_proxy.inc("ack_dropped")
            return
        self._stateless_forward(ack, dest)

    def _stateless_forward(self, req: Request, dest: Peer) -> None:
        # §16.11: a stateless branch must be the same for retransmissions: derive it from the
        # incoming one.
        top = req.vias[0].branch or ""
        branch = f"{_COOKIE}{zlib.crc32(top.encode()):08x}.s"
        # From the transport's Via text (``TransportInfo.via``), as every request we send:
        # a Via built field by field is rendered again when serialized.
        via = self._info(dest.transport).via(branch)
        mf = 70 if req.max_forwards is None else req.max_forwards - 1
        # Edited from the received bytes when the C parser noted where (forwarding.py).
        data = ack_bytes(req, via, mf) if req.wire is not None else None
        if data is not None:
            self.core.forward_stateless(req, dest, data)
            return
        # Changed in place, as ``_pop_own_routes`` did: nothing keeps a stateless ACK once it
        # is sent, so a copy (``dataclasses.replace``) would only cost its fields' walk.
        req.vias = [via, *req.vias]
        req.max_forwards = mf
        self.core.forward_stateless(req, dest)

    def on_stray_response(self, resp: Response, peer: Peer) -> None:
        """§16.7 step 9 / §18.2.2: a response with no transaction (a 2xx retransmission after
        ours ended) is relayed by its Via, if the top one is ours."""
        if len(resp.vias) < 2 or not self._is_my_via(resp.vias[0]):
            self.core.c_drop.inc("stray_response")
            return
        nxt = resp.vias[1]
        dialog = self.dialogs.find(resp.call_id, resp.from_.tag, resp.to.tag)
        if dialog is not None:
            dest = dialog.caller_peer
        else:
            name = self.transports.for_via(nxt)
            if name is None or self.transports.reliable(name):
                # §18.2.2: over a connection the response needs the connection it came on,
                # which only a dialog remembers.
                self.core.c_drop.inc("stray_response")
                return
            host = nxt.params.get("received") or nxt.host
            rport = nxt.params.get("rport")
            dest = Peer(name, host, int(rport) if rport else (nxt.port or 5060))
        self.core.forward_stateless(dataclasses.replace(resp, vias=resp.vias[1:]), dest)

    # -- dialogs -------------------------------------------------------------------------------

    def _dialog_event(self, ctx: Context, branch: Branch, resp: Response,
                      inp: DialogInput) -> None:
        """A response of the dialog-creating INVITE or a re-INVITE (§12.1, §16.7)."""
        if ctx.dialog is not None and ctx.method == "INVITE":
            self.keeper.response(ctx.dialog, branch.peer, resp, inp)

    def terminate_dialog(self, dialog: ProxyDialog) -> bool:
        """End a dialog from the server: BYE to both sides (max duration, admin API)."""
        if dialog.state not in (DialogState.WAIT_ACK, DialogState.CONFIRMED):
            if dialog.state is not DialogState.TERMINATED:
                dialog.ended_by = "server"
                self.keeper.input(dialog, DialogInput.TIMEOUT)
            return dialog.state is DialogState.TERMINATED
        caller = parse_name_addr(dialog.caller)
        callee = parse_name_addr(dialog.callee)
        seq = dialog.caller_cseq + 1
        if dialog.callee_peer is not None and dialog.callee_contact:
            self._send_bye(dialog.callee_contact, caller, callee, dialog, seq, dialog.callee_peer)
        if dialog.caller_contact:
            self._send_bye(dialog.caller_contact, callee, caller, dialog, seq, dialog.caller_peer)
        dialog.ended_by = "server"
        self.keeper.input(dialog, DialogInput.TIMEOUT)
        self.c_proxy.inc("dialog_ended_by_server")
        return True

    def _send_bye(self, target: str, from_: NameAddr, to: NameAddr, dialog: ProxyDialog,
                  seq: int, peer: Peer) -> None:
        bye = Request(method="BYE", uri=parse_uri(target), vias=[], from_=from_, to=to,
                      call_id=dialog.call_id, cseq=CSeq(seq, "BYE"), max_forwards=70)
        bye.vias = [self._via(bye, peer.transport)]
        self._originate(bye, peer)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(DIALOG_TICK)
            try:
                self.expire_dialogs(self.core.now())
            except Exception:
                log.exception("dialog timer sweep failed")

    def expire_dialogs(self, now: float) -> None:
        for dialog in self.dialogs.due(now):
            if dialog.state is DialogState.TERMINATED:
                self.dialogs.remove(dialog)
            elif dialog.state in (DialogState.WAIT_ACK, DialogState.CONFIRMED):
                self.terminate_dialog(dialog)  # maximum duration reached
            else:
                self._ring_expired(dialog)

    # -- helpers -------------------------------------------------------------------------------

    def _reply(self, work: Work, status: int, reason: str | None = None,
               extra: list[tuple[str, str]] | None = None) -> None:
        self.core.respond(work.txn, make_response(
            work.request, status, reason, to_tag=self.core.stateless_tag(work.request),
            extra=[*(extra or ()), *self.core.answer_headers]))

    def _is_me(self, uri: SipURI) -> bool:
        host = uri.host.lower()
        if host not in self.core.myself and all(host != i.host.lower() for i in self.transports):
            return False
        return uri.port is None or uri.port in self.transports.ports()

    def _is_my_via(self, via: Via) -> bool:
        return self.transports.is_own_via(via)

    def _pop_own_routes(self, req: Request) -> None:
        """§16.4: remove the Route values naming this proxy (two with RFC 5658)."""
        routes = req.routes
        while routes and isinstance(routes[0].uri, SipURI) and self._is_me(routes[0].uri):
            routes = routes[1:]
        req.routes = routes

    def _loop_detected(self, req: Request) -> bool:
        """§16.3 step 4: our own Via with the same loop hash means the request came back
        unchanged: a loop, not a spiral."""
        mine = [v for v in req.vias[1:] if self._is_my_via(v)]
        if not mine:
            return False
        h = _loop_hash(req)
        return any((v.branch or "").startswith(f"{_COOKIE}{h}.") for v in mine)


def _destination(target: Target) -> str:
    """What ``max_forks_per_host`` counts branches per: the connection or the host."""
    return target.peer.conn_id or target.peer.host


def _ignore(txn: Transaction, ev: Event) -> None:
    """TU of the CANCEL and BYE transactions the proxy originates: outcomes need no action."""


def _loop_hash(req: Request) -> str:
    """§16.6 step 8: the fields whose change makes a returning request a spiral, not a loop."""
    top_route = str(req.routes[0]) if req.routes else ""
    key = (f"{req.uri}|{req.from_.tag}|{req.to.tag}|{req.call_id}|{req.cseq.seq}|"
           f"{top_route}|{','.join(req.proxy_require)}")
    return f"{zlib.crc32(key.encode('utf-8', 'surrogateescape')):08x}"


def _better(best: Response | None, resp: Response) -> Response:
    """§16.7 step 6: 6xx beats everything, then the lowest class; 4xx before 5xx."""
    if best is None:
        return resp
    if best.status >= 600:
        return best
    if resp.status >= 600:
        return resp
    return resp if resp.status // 100 < best.status // 100 else best




