"""Which peers this node talks to (RFC 6733 §5.3: unknown peers refused, 3010).

Diameter has no authentication of its own below TLS: a peer is whoever its CER says it is.
What the node can check is that the (Origin-Host, Origin-Realm, source address) of a CER
matches what the operator configured, and refuse anything else with a CEA carrying
DIAMETER_UNKNOWN_PEER (3010, §5.3, §7.1.3) before any peer state exists.

One entry per ``--diameter-allow``, ``WHO[@ADDRESS[/PREFIX]]`` where WHO is an Origin-Host,
``realm:REALM`` (any Origin-Host of that Origin-Realm), ``*`` (any), and the word ``any``
alone admits every peer (a lab setting).  A named Origin-Host belongs to its entries: once any
entry names it, only those entries admit it, so ``pcef1@10.0.0.5`` beside ``*@10.0.0.0/24``
still refuses "pcef1" from 10.0.0.9.  Pinning names to addresses is what keeps an impostor
from taking a real peer's name (the node keeps the first connection of a name and refuses
later ones, RFC 6733 §5.6 R-Reject; with the name pinned, the impostor is refused at CER).

Without any entry the node admits peers connecting from loopback addresses and the peers it
is configured to connect to (``--diameter-peer``, pinned to their address when it is an IP
literal): a production default that fails closed, while a node on one machine (the
embedded default, its tests, the storm injector) keeps working.

Connections from addresses named in an entry (or a ``--diameter-peer`` address) may use the
slots reserved below the connection bound (``signaling.diameter.node``).  Sans-I/O: addresses
come in as text, nothing is resolved.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["AllowedPeer", "PeerPolicy", "parse_allowed_peer"]

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class AllowedPeer:
    """One entry; ``None`` fields match anything."""

    origin_host: str | None = None
    origin_realm: str | None = None
    network: _Network | None = None

    def matches(self, host: str, realm: str, address: _Address | None) -> bool:
        if self.origin_host is not None and host.lower() != self.origin_host:
            return False
        if self.origin_realm is not None and realm.lower() != self.origin_realm:
            return False
        return self.network is None or (address is not None and address in self.network)


def parse_allowed_peer(text: str) -> AllowedPeer:
    """``WHO[@ADDRESS[/PREFIX]]``; raises ValueError with a one-line reason."""
    who, at, where = text.strip().partition("@")
    network: _Network | None = None
    if at:
        try:
            network = ipaddress.ip_network(where.strip(), strict=False)
        except ValueError:
            raise ValueError(f"expected ORIGIN-HOST[@ADDRESS[/PREFIX]], got {text!r}") from None
    who = who.strip().lower()
    if who == "any" and not at:
        return AllowedPeer()
    if who.startswith("realm:") and len(who) > len("realm:"):
        return AllowedPeer(origin_realm=who[len("realm:"):], network=network)
    if who == "*":
        return AllowedPeer(network=network)
    if not who or not who.replace("-", "").replace(".", "").replace("_", "").isalnum():
        raise ValueError(f"expected ORIGIN-HOST[@ADDRESS[/PREFIX]], got {text!r}")
    return AllowedPeer(origin_host=who, network=network)


_LOOPBACK = (AllowedPeer(network=ipaddress.ip_network("127.0.0.0/8")),
             AllowedPeer(network=ipaddress.ip_network("::1/128")))


class PeerPolicy:
    """The configured entries, plus the ``--diameter-peer`` peers, checked at each CER."""

    def __init__(self, allowed: Iterable[AllowedPeer] | None,
                 connect_peers: Iterable[tuple[str, str, int]] = ()) -> None:
        entries = list(_LOOPBACK if allowed is None else allowed)
        for host, address, _port in connect_peers:
            entries.append(AllowedPeer(origin_host=host.lower(), network=_host_network(address)))
        self.entries = tuple(entries)
        self._named: dict[str, list[AllowedPeer]] = {}
        for e in self.entries:
            if e.origin_host is not None:
                self._named.setdefault(e.origin_host, []).append(e)
        self._others = tuple(e for e in self.entries if e.origin_host is None)
        self._networks = tuple(e.network for e in self.entries if e.network is not None)

    def admits(self, host: str, realm: str, address: str) -> bool:
        """May a peer with this CER identity, connecting from ``address``, be a peer?"""
        ip = _parse_ip(address)
        named = self._named.get(host.lower())
        candidates = named if named is not None else self._others
        return any(e.matches(host, realm, ip) for e in candidates)

    def known_address(self, address: str) -> bool:
        """Is ``address`` named by an entry (so its connections may use reserved slots)?"""
        ip = _parse_ip(address)
        return ip is not None and any(ip in n for n in self._networks)


def _parse_ip(address: str) -> _Address | None:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _host_network(address: str) -> _Network | None:
    """A ``--diameter-peer`` address pins its name when it is an IP literal (a DNS name may
    resolve to several addresses that change; the name then stays unpinned)."""
    ip = _parse_ip(address)
    return ipaddress.ip_network(ip) if ip is not None else None
