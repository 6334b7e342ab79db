"""Rules of SIP Outbound (RFC 5626) and of reaching clients behind NAT without it: pure
functions of a REGISTER and the address it came from, no state.

Outbound (§6, registrar): a Contact with ``+sip.instance`` and ``reg-id`` in a REGISTER that
says ``Supported: outbound`` names a *flow*: the connection or UDP 5-tuple it came over (or,
through an edge proxy, the edge's own flow, named by the first Path value carrying ``ob``).  A
binding is then identified by (instance, reg-id), not by its Contact URI, so a new REGISTER on
the same reg-id replaces the flow; one instance may hold several flows (several reg-ids).

NAT without Outbound (the role of Kamailio's nathelper ``fix_nated_register``): see
``behind_nat`` for the rule that decides it.
"""

from __future__ import annotations

import ipaddress

from protocols.sip.message import URI, NameAddr, Request, SipURI, Via

__all__ = [
    "FLOW_TIMER",
    "behind_nat",
    "has_ob",
    "instance_urn",
    "is_private",
    "option_tags",
    "outbound_contact",
]

#: Seconds between keep-alives the registrar asks for in Flow-Timer (§5.4, §4.4.1: the UA
#: sends one every 80-100% of it).  120 s is the RFC's recommended value for connection
#: flows and under the 2-minute UDP binding lifetime RFC 4787 REQ-5 asks NATs to keep.
FLOW_TIMER = 120

#: Address ranges a Contact cannot be reached at from outside the UA's own network: private
#: (RFC 1918), shared CGN space (RFC 6598), link-local (RFC 3927, RFC 4291), unique local
#: (RFC 4193).  Loopback is not among them: a UA on this host is reachable there.
_PRIVATE = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16",
    "fc00::/7", "fe80::/10"))


def option_tags(req: Request, header: str) -> set[str]:
    """The option tags of a Supported or Require header field, lower case (§20.37, §20.32)."""
    return {t.strip().lower() for v in req.headers(header) for t in v.split(",") if t.strip()}


def instance_urn(value: str | None) -> str | None:
    """The URN of a ``+sip.instance`` value (RFC 5626 §4.1: ``"<urn:...>"``), None if absent
    or empty."""
    if value is None:
        return None
    urn = value.strip().strip('"').strip()
    if urn.startswith("<") and urn.endswith(">"):
        urn = urn[1:-1]
    return urn or None


def outbound_contact(req: Request, contact: NameAddr) -> bool:
    """§6: this Contact registers a flow: the REGISTER supports outbound and the Contact has
    both ``+sip.instance`` and a numeric ``reg-id``.  Otherwise reg-id is ignored (§6: "the
    registrar MUST ignore the reg-id parameter" without the option tag)."""
    reg_id = contact.params.get("reg-id")
    return bool(reg_id and reg_id.isascii() and reg_id.isdigit()
                and instance_urn(contact.params.get("+sip.instance"))
                and "outbound" in option_tags(req, "Supported"))


def has_ob(path_value: NameAddr) -> bool:
    """§5.1: the edge proxy that added this Path value supports outbound (its URI has ``ob``)."""
    uri = path_value.uri
    return isinstance(uri, SipURI) and "ob" in uri.params


def is_private(host: str) -> bool:
    """True for an IP address in a range no one outside the UA's network can reach."""
    parts = host.split(".")
    if len(parts) == 4:
        # IPv4 by hand: ipaddress costs ~8 µs a call, and this runs for every UDP REGISTER
        # whose Contact is not its source (bench_instructions REGISTER).
        if not all(p.isdigit() and len(p) <= 3 for p in parts):
            return False
        a, b = int(parts[0]), int(parts[1])
        return (a == 10 or (a == 172 and 16 <= b <= 31) or (a == 192 and b == 168)
                or (a == 100 and 64 <= b <= 127) or (a == 169 and b == 254))
    if ":" not in host:
        return False  # a host name
    try:
        addr = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return any(addr in net for net in _PRIVATE if net.version == addr.version)


def behind_nat(contact: URI, via: Via, source: tuple[str, int]) -> bool:
    """Whether a REGISTER's Contact is unreachable and its binding must be reached at the
    address the REGISTER came from (``source``) instead.

    The rule (Kamailio's ``nat_uac_test`` 1 + 2 + 16, stated here):

    1. the Contact's host is a private address (``is_private``) that is not the source itself;
    2. or the UA does not know its public address: the top Via's sent-by host differs from
       the source address (when RFC 3261 §18.2.1 adds ``received``) AND the Contact names that
       same sent-by address, i.e. the UA registered itself at the address a NAT rewrote.  A
       Contact naming another address (a registration made on behalf of another device,
       §10.2) is left alone, and so is a REGISTER sent from another port of the Contact's own
       host (a port alone differing is a helper process of the UA, not a NAT, which rewrites
       the address).

    Only IP Contacts are judged: a host name is resolved and reached as registered.
    """
    if not isinstance(contact, SipURI):
        return False
    host = contact.host.strip("[]").lower()
    reach = (host, contact.port or 5060)
    if reach == source:
        return False  # registered from its own Contact: the usual case, decided at once
    if is_private(host):
        return host != source[0]
    sent_by = (via.host.strip("[]").lower(), via.port or 5060)
    return reach == sent_by and sent_by[0] != source[0]
