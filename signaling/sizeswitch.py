"""The transport switch for large requests (RFC 3261 §18.1.1), for the proxy.

- A request bound for UDP that is larger than 1300 octets (the path MTU being unknown) MUST go
  over a congestion-controlled transport: over TCP, to the same address (a UA listens for TCP
  on its UDP port, §18.2.1), with a TCP Via, when this node runs TCP.  Without TCP it goes over
  UDP as it is (nothing else could carry it).
- "If the attempt to establish the connection generates either an ICMP Protocol Not Supported,
  or results in a TCP reset, the element SHOULD retry the request, using UDP": a branch moved
  to TCP keeps the copy made for UDP, and when its connection is refused (the transport
  remembers, ``StreamTransport.was_refused``) that copy replaces it.  A connection that times
  out is not a refusal: the host is unreachable and UDP would fare no better, so the branch
  fails (§17.1.4) as any other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from protocols.sip.message import Request
from protocols.sip.serializer import serialize
from signaling.transports.base import Peer, Transports
from signaling.transports.tcp import StreamTransport

if TYPE_CHECKING:
    from signaling.proxy_context import Branch

__all__ = ["UDP_SIZE_LIMIT", "over_tcp", "udp_retry"]

#: Largest request sent over UDP when the path MTU is unknown (§18.1.1).
UDP_SIZE_LIMIT = 1300


def over_tcp(copy: Request, peer: Peer, transports: Transports,
             wire: bytes | None = None) -> tuple[Peer | None, bytes | None]:
    """The TCP peer to send ``copy`` to instead of ``peer`` (UDP) for its size, or None; and
    the wire form of ``copy`` when it stays where it is (``wire``, its form edited from the
    received bytes, when the caller has it; else serialized to tell: the client transaction
    sends those bytes.  TCP is on by default, so every request forwarded over UDP is measured,
    and serializing it twice cost 3.6 us per INVITE, timeit)."""
    if peer.transport != "udp" or "tcp" not in transports:
        return None, wire
    if wire is None:
        wire = serialize(copy)
    if len(wire) <= UDP_SIZE_LIMIT:
        return None, wire
    return peer._replace(transport="tcp"), None


def udp_retry(branch: Branch, transports: Transports) -> tuple[Request, Peer] | None:
    """The UDP copy to retry a failed branch with: one moved to TCP for its size whose
    connection was refused, not yet answered nor cancelled; else None."""
    tcp = transports.get("tcp")
    if branch.udp is None or branch.ctx.done or branch.final is not None or branch.cancelled:
        return None
    if not isinstance(tcp, StreamTransport):
        return None
    return branch.udp if tcp.was_refused(branch.peer.host, branch.peer.port) else None
