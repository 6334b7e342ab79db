"""Where a request goes next (RFC 3261 §16.5, §16.6 steps 6-7, §18.1.1, RFC 3327, RFC 5626):
the peer for a registered binding, a remaining Route, or a routable Request-URI.

A hop's transport is the one its URI asks for (``Transports.for_uri``: ``transport=``, and TLS
for ``sips:``); its port the URI's, else 5060 (5061 over TLS, §19.1.2).  Only IP addresses are
routed without DNS; a name is resolved with ``getaddrinfo`` (no NAPTR/SRV, RFC 3263).
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import socket
from collections.abc import Callable

from protocols.sip.message import URI, NameAddr, Request, SipURI
from protocols.sip.parser import parse_name_addr
from protocols.sip.uri import parse_uri
from signaling.registry.base import Binding
from signaling.transports.base import Peer, Transports

__all__ = ["Hops", "Target", "default_port", "is_ip"]


@dataclasses.dataclass(frozen=True, slots=True)
class Target:
    """Where one branch goes: the Request-URI it carries and the peer that receives it."""

    uri: URI
    peer: Peer
    #: Route values put in front of the request's own (a binding's Path, RFC 3327 §5.3).
    routes: tuple[NameAddr, ...] = ()
    #: The other usable flows of this target's instance, in order: the next is tried when
    #: this one fails (RFC 5626 §5.3, ``signaling.flows.next_flow``).
    fallback: tuple[Target, ...] = ()


class Hops:
    """Next hops over the transports of one node (``node_id`` owns its connections)."""

    def __init__(self, transports: Transports, node_id: str,
                 is_me: Callable[[SipURI], bool],
                 reaches: Callable[[str], bool] | None = None) -> None:
        self.transports = transports
        self.node_id = node_id
        self.is_me = is_me
        #: Another node whose connections this one can use: a sibling worker of a
        #: multi-process server (``signaling.siblings``); None for a single process.
        self.reaches = reaches

    async def binding_target(self, b: Binding) -> Target | None:
        uri = parse_uri(b.contact)
        path = tuple(map(parse_name_addr, b.path))  # checked by the registrar
        if b.reach_source and b.transport == "udp" and not path:
            # Behind NAT (protocols.sip.outbound.behind_nat): to the address the REGISTER came
            # from, from the socket it came to; the Request-URI stays the Contact.
            host, _, port = b.source.rpartition(":")
            if host:
                return Target(uri, Peer("udp", host, int(port), b.connection_id))
        if b.connection_id is not None:
            # Registered over a connection (RFC 7118 §5, RFC 5626 §5.3 flows): reached over
            # that same connection, to the UA or to the edge proxy of its Path.
            elsewhere = b.node not in (None, self.node_id) and (
                self.reaches is None or not self.reaches(b.node))
            if elsewhere or b.transport not in self.transports:
                return None  # held by another node's connection: not reachable from here
            # TCP and TLS also try the Contact's address when the connection is gone (see
            # transports/tcp.py); a WebSocket client's Contact is never reachable (.invalid).
            flow = Peer(b.transport, "", 0, b.connection_id)
            if not path and isinstance(uri, SipURI) and is_ip(uri.host) \
                    and self.transports.for_uri(uri) == b.transport:
                flow = flow._replace(host=uri.host.strip("[]"),
                                     port=uri.port or default_port(uri))
            return Target(uri, flow, path)
        if path:
            # RFC 3327 §5.3: the Path is a preloaded route; its first value is the next hop.
            first = path[0].uri
            hop = await self.resolve(first) if isinstance(first, SipURI) else None
            return Target(uri, hop, path) if hop is not None else None
        if isinstance(uri, SipURI) and is_ip(uri.host):
            name = self.transports.for_uri(uri)
            if name is None:
                return None
            return Target(uri, Peer(name, uri.host.strip("[]"), uri.port or default_port(uri)))
        host, _, port = b.source.rpartition(":")
        return Target(uri, Peer(b.transport, host, int(port))) if host else None

    def route_target(self, req: Request) -> Target | None:
        """Next hop from the remaining Route (§16.12) or a routable Request-URI."""
        uri = req.routes[0].uri if req.routes else req.uri
        if not isinstance(uri, SipURI) or not is_ip(uri.host) or self.is_me(uri):
            return None
        name = self.transports.for_uri(uri)
        if name is None:
            return None  # a transport this node does not run
        return Target(req.uri, Peer(name, uri.host.strip("[]"), uri.port or default_port(uri)))

    async def resolve(self, uri: SipURI) -> Peer | None:
        name = self.transports.for_uri(uri)
        if name is None:
            return None
        port = uri.port or default_port(uri)
        if is_ip(uri.host):
            return Peer(name, uri.host.strip("[]"), port)
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(uri.host, port)
        except OSError:
            return None
        return Peer(name, str(infos[0][4][0]), int(infos[0][4][1])) if infos else None


def default_port(uri: SipURI) -> int:
    """5061 for sips: and transport=tls, else 5060 (§19.1.2, RFC 5630)."""
    if uri.scheme == "sips":
        return 5061
    transport = uri.params.get("transport") if uri.params else None
    return 5061 if transport is not None and transport.lower() == "tls" else 5060


def is_ip(host: str) -> bool:
    # Asked for every INVITE's binding and every Route: an IPv4 address, the common case, is
    # told by inet_pton (one C call) rather than ipaddress's parser (~2% of a call's CPU under
    # py-spy); anything else takes the general parser.
    try:
        socket.inet_pton(socket.AF_INET, host)
    except OSError:
        pass
    else:
        return True
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True
