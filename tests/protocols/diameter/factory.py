"""Message factories shared by the Diameter tests (real encodings, no mocks)."""

from __future__ import annotations

import ipaddress

from protocols.diameter.capabilities import Capabilities, build_cer
from protocols.diameter.codec import Avp, Message
from protocols.diameter.constants import FLAG_P, FLAG_R, CCRequestType
from protocols.diameter.dictionary import base_dictionary

DICT = base_dictionary()


def caps(host: str = "client.test", apps: frozenset[int] = frozenset({4})) -> Capabilities:
    return Capabilities(
        origin_host=host, origin_realm="test",
        host_ip_addresses=(ipaddress.IPv4Address("127.0.0.1"),),
        vendor_id=0, product_name="factory", auth_application_ids=apps,
    )


def cer(host: str = "client.test", apps: frozenset[int] = frozenset({4}), hbh: int = 1) -> Message:
    return build_cer(caps(host, apps), hbh, hbh)


def ccr(
    session: str = "client.test;1;1",
    rtype: int = CCRequestType.INITIAL_REQUEST,
    number: int = 0,
    *,
    hbh: int = 10,
    requested: int | None = None,
    used: int | None = None,
    extra: list[Avp] | None = None,
) -> Message:
    d = DICT
    avps = [
        d.make("Session-Id", session),
        d.make("Origin-Host", "client.test"),
        d.make("Origin-Realm", "test"),
        d.make("Destination-Realm", "server.test"),
        d.make("Auth-Application-Id", 4),
        d.make("Service-Context-Id", "32251@3gpp.org"),
        d.make("CC-Request-Type", rtype),
        d.make("CC-Request-Number", number),
    ]
    if requested is not None:
        avps.append(d.make("Requested-Service-Unit", [d.make("CC-Time", requested)]))
    if used is not None:
        avps.append(d.make("Used-Service-Unit", [d.make("CC-Time", used)]))
    avps.extend(extra or [])
    return Message(272, FLAG_R | FLAG_P, 4, hbh, hbh, avps)


def without(msg: Message, code: int) -> Message:
    return Message(msg.command_code, msg.flags, msg.application_id, msg.hop_by_hop,
                   msg.end_to_end, [a for a in msg.avps if a.code != code])
