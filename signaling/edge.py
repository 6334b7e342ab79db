"""This server as an edge proxy (RFC 5626 §5.1, §5.3.1; RFC 3327): REGISTERs it relays to
another registrar carry a Path naming the flow they came over, and requests that come back
with that Path value as their Route go over that flow.

- Which REGISTERs are relayed (``relays``): §10.3 step 1, a registrar without bindings for the
  Request-URI's domain forwards the REGISTER as a proxy.  Here: a domain this server does not
  serve, with a Route to another proxy or with ``relay`` on; every other REGISTER is the
  registrar's, as before (a domain not served and nowhere to send it: its 403).
- The Path (``with_path``): when this server is the UA's first hop (the REGISTER has one Via),
  its Path value goes on top: our address facing the registrar, a flow token in its user part
  (``protocols.sip.flowtoken``: the flow sealed with a key of ours) and ``lr``; ``ob`` when a
  Contact registers an outbound flow (§5.1: the first hop MUST add a Path with ``ob`` to such
  a REGISTER).  A REGISTER relayed from a further proxy gets none: its flow is that proxy's
  (§5.1: nor may a later hop put ``ob`` in a Path).
- Whether the UA asked for it (RFC 3327 §5.2): a proxy SHOULD NOT add Path unless the UA says
  ``Supported: path``; this edge needs its Path honoured (requests for the UA must come back
  over the flow), so with the tag it adds ``Require: path`` too, so that a registrar without
  Path answers 420 rather than bind the UA around the edge; without the tag, §5.2's answer is
  421 Extension Required with ``Require: path`` (``refuses``; ``path_mode`` ``strict``, the
  default).  An outbound REGISTER gets its Path with or without the tag: RFC 5626 §5.1's MUST
  (and §6: a registrar of outbound supports Path).  ``path_mode`` ``lazy`` adds the Path to
  every first-hop REGISTER, as Kamailio's ``add_path`` does.
- A request whose top Route is ours with a flow token (``route``, §5.3.1): when it came over
  the flow itself it is outgoing (the UA's own) and routed as any other; otherwise it goes over
  the flow, never a new connection; a flow that is gone gets 430 Flow Failed, a token that does
  not verify 403 Forbidden (§5.3.1: it was tampered with).  A flow is gone when its
  connection closed, or for UDP when its keep-alives lapsed (``FlowTable``).
"""

from __future__ import annotations

from collections.abc import Callable

from protocols.sip.flowtoken import TOKEN_PREFIX, Flow, FlowTokens
from protocols.sip.message import NameAddr, Request, SipURI
from protocols.sip.outbound import option_tags, outbound_contact
from signaling.flows import FLOW_FAILED, FlowTable
from signaling.transports.base import Peer, Transports

__all__ = ["EXTENSION_REQUIRED", "Edge"]

#: §5.3.1: a flow token that does not verify.
FORBIDDEN = 403
#: RFC 3327 §5.2: the UA did not say it supports the Path this edge needs.
EXTENSION_REQUIRED = 421


class Edge:
    """The edge-proxy side of the proxy (see the module docstring)."""

    def __init__(self, transports: Transports, node_id: str, tokens: FlowTokens,
                 flows: FlowTable, domains: frozenset[str] | set[str], relay: bool,
                 is_me: Callable[[SipURI], bool],
                 reaches: Callable[[str], bool] | None = None, strict: bool = True) -> None:
        self.transports = transports
        #: ``path_mode`` strict: 421 for a first-hop REGISTER that does not support path.
        self.strict = strict
        self.node_id = node_id
        self.tokens = tokens
        self.flows = flows
        self.domains = domains
        self.relay = relay
        self.is_me = is_me
        self.reaches = reaches

    def relays(self, req: Request) -> bool:
        """A REGISTER the proxy forwards rather than the registrar answers (§10.3 step 1)."""
        uri = req.uri
        if not isinstance(uri, SipURI) or uri.host.lower() in self.domains:
            return False
        return self.relay or any(not (isinstance(r.uri, SipURI) and self.is_me(r.uri))
                                 for r in req.routes)

    def refuses(self, req: Request) -> bool:
        """RFC 3327 §5.2: a relayed REGISTER to answer 421 (``Require: path``): the UA's
        first hop (us) needs a Path the UA did not say it supports, and it is no outbound
        REGISTER (RFC 5626 §5.1 adds the Path regardless)."""
        return (self.strict and len(req.vias) == 1
                and "path" not in option_tags(req, "Supported")
                and not any(outbound_contact(req, c) for c in req.contacts))

    def with_path(self, req: Request, incoming: Peer, out: str, extra: list[tuple[str, str]]
                  ) -> tuple[list[tuple[str, str]], list[str]]:
        """``extra`` and the Require option tags of a relayed REGISTER's copy going out over
        ``out``: our Path value in front of the others when we are the UA's first hop, and
        ``path`` required when the UA supports it (RFC 3327 §5.2)."""
        info = self.transports.info(out)
        if len(req.vias) != 1 or info is None:
            return extra, req.require
        token = self.tokens.make(Flow(incoming.transport, incoming.host, incoming.port,
                                      incoming.conn_id, self.node_id))
        rr = info.record_route.uri
        assert isinstance(rr, SipURI)
        params = dict(rr.params)
        if any(outbound_contact(req, c) for c in req.contacts):
            params["ob"] = None
        path = str(NameAddr(SipURI("sip", rr.host, user=token, port=rr.port, params=params)))
        first = next((i for i, (name, _) in enumerate(extra) if name.lower() == "path"),
                     len(extra))
        require = req.require
        if "path" in option_tags(req, "Supported") and "path" not in require:
            require = [*require, "path"]
        return [*extra[:first], ("Path", path), *extra[first:]], require

    def route(self, req: Request, incoming: Peer) -> Peer | int | None:
        """Where a request whose top Route carries our flow token goes: the flow's peer, or
        the status to answer (430, 403); None when it has no such Route or is outgoing."""
        if not req.routes:
            return None
        uri = req.routes[0].uri
        if not isinstance(uri, SipURI) or not (uri.user or "").startswith(TOKEN_PREFIX) \
                or not self.is_me(uri):
            return None
        flow = self.tokens.read(uri.user)
        if flow is None:
            return FORBIDDEN
        if self._same(flow, incoming):
            return None  # §5.3.1: outgoing, from the UA over its flow
        return self._usable(flow) or FLOW_FAILED

    def _same(self, flow: Flow, peer: Peer) -> bool:
        if flow.transport != peer.transport:
            return False
        if self.transports.reliable(flow.transport):
            return flow.conn_id == peer.conn_id
        return (flow.host, flow.port) == (peer.host, peer.port)

    def _usable(self, flow: Flow) -> Peer | None:
        if flow.transport not in self.transports:
            return None
        if not self.transports.reliable(flow.transport):
            # The 5-tuple: back to the source, from the socket it came to (conn_id is a
            # worker's slot tag, signaling/transports/udp.py).
            if not self.flows.alive(flow.host, flow.port):
                return None
            return Peer(flow.transport, flow.host, flow.port, flow.conn_id)
        if flow.conn_id is None:
            return None
        if flow.node != self.node_id:
            held = self.reaches is not None and self.reaches(flow.node)
        else:
            held = self.transports.holds(flow.transport, flow.conn_id)
        # Over the flow only (host and port empty): never a new connection (§5.3.1).
        return Peer(flow.transport, "", 0, flow.conn_id) if held else None
