"""Capabilities exchange content (RFC 6733 §5.3): what a CER/CEA says and how two nodes agree.

``Capabilities`` is one side's advertisement.  ``negotiate`` intersects the applications; the
relay id 0xffffffff on either side matches every application (§2.4, §5.3).  An empty
intersection is DIAMETER_NO_COMMON_APPLICATION (5010), after which the CEA is sent and the
connection SHOULD be dropped (§5.3).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field

from protocols.diameter.builders import LocalIdentity, answer, request
from protocols.diameter.codec import Avp, Message, encode_avp
from protocols.diameter.constants import (
    AVP_FLAG_M,
    RELAY_APPLICATION_ID,
    AvpCode,
    CommandCode,
    ResultCode,
)
from protocols.diameter.datatypes import (
    AddressValue,
    AvpType,
    AvpValueError,
    decode_value,
    encode_value,
)
from protocols.diameter.errors import RemoteProtocolError

__all__ = ["Capabilities", "build_cea", "build_cer", "negotiate", "parse_capabilities"]

_U32 = struct.Struct("!I")


@dataclass(frozen=True, slots=True)
class Capabilities:
    """One node's CER/CEA content (RFC 6733 §5.3.1, §5.3.2)."""

    origin_host: str
    origin_realm: str
    host_ip_addresses: tuple[AddressValue, ...] = (ipaddress.IPv4Address("127.0.0.1"),)
    vendor_id: int = 0
    product_name: str = "signaling"
    auth_application_ids: frozenset[int] = frozenset()
    acct_application_ids: frozenset[int] = frozenset()
    # (vendor id, application id, True for auth / False for acct) from
    # Vendor-Specific-Application-Id groups (§6.11).
    vendor_specific_applications: tuple[tuple[int, int, bool], ...] = ()
    supported_vendor_ids: frozenset[int] = frozenset()
    firmware_revision: int | None = None
    origin_state_id: int | None = None
    identity: LocalIdentity = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "identity", LocalIdentity(self.origin_host, self.origin_realm))

    @property
    def applications(self) -> frozenset[int]:
        vsa = {app for _vendor, app, _auth in self.vendor_specific_applications}
        return self.auth_application_ids | self.acct_application_ids | vsa

    def avps(self) -> list[Avp]:
        """The capability AVPs after Origin-Host/Realm, in the §5.3.1 order."""
        out = [Avp(AvpCode.HOST_IP_ADDRESS, AVP_FLAG_M, encode_value(AvpType.ADDRESS, a))
               for a in self.host_ip_addresses]
        out.append(_u32(AvpCode.VENDOR_ID, self.vendor_id))
        # Product-Name and Firmware-Revision MUST NOT carry the M bit (§4.5 table).
        out.append(Avp(AvpCode.PRODUCT_NAME, 0, self.product_name.encode("utf-8")))
        if self.origin_state_id is not None:
            out.append(_u32(AvpCode.ORIGIN_STATE_ID, self.origin_state_id))
        out.extend(_u32(AvpCode.SUPPORTED_VENDOR_ID, v) for v in sorted(self.supported_vendor_ids))
        out.extend(_u32(AvpCode.AUTH_APPLICATION_ID, a) for a in sorted(self.auth_application_ids))
        out.extend(_u32(AvpCode.ACCT_APPLICATION_ID, a) for a in sorted(self.acct_application_ids))
        for vendor, app, auth in self.vendor_specific_applications:
            code = AvpCode.AUTH_APPLICATION_ID if auth else AvpCode.ACCT_APPLICATION_ID
            data = encode_avp(AvpCode.VENDOR_ID, AVP_FLAG_M, _U32.pack(vendor)) + encode_avp(
                code, AVP_FLAG_M, _U32.pack(app))
            out.append(Avp(AvpCode.VENDOR_SPECIFIC_APPLICATION_ID, AVP_FLAG_M, data))
        if self.firmware_revision is not None:
            out.append(Avp(AvpCode.FIRMWARE_REVISION, 0, _U32.pack(self.firmware_revision)))
        return out


def _u32(code: int, value: int) -> Avp:
    return Avp(code, AVP_FLAG_M, _U32.pack(value))


def parse_capabilities(msg: Message) -> Capabilities:
    """Read a (validated) CER or CEA; a value that cannot be read raises 5004/5014."""
    try:
        return _parse(msg)
    except AvpValueError as exc:
        raise RemoteProtocolError(str(exc), exc.result_code) from None


def _parse(msg: Message) -> Capabilities:
    def text(code: int) -> str:
        avp = msg.find(code)
        if avp is None:
            raise RemoteProtocolError(f"missing AVP {code}", ResultCode.DIAMETER_MISSING_AVP)
        value: str = decode_value(AvpType.DIAMETER_IDENTITY if code != AvpCode.PRODUCT_NAME
                                  else AvpType.UTF8STRING, avp.data)
        return value

    def u32s(code: int) -> frozenset[int]:
        return frozenset(decode_value(AvpType.UNSIGNED32, a.data) for a in msg.find_all(code))

    vsa: list[tuple[int, int, bool]] = []
    for group in msg.find_all(AvpCode.VENDOR_SPECIFIC_APPLICATION_ID):
        vendor, app, auth = 0, None, True
        for child in group.children():
            if child.code == AvpCode.VENDOR_ID:
                vendor = decode_value(AvpType.UNSIGNED32, child.data)
            elif child.code in (AvpCode.AUTH_APPLICATION_ID, AvpCode.ACCT_APPLICATION_ID):
                app = decode_value(AvpType.UNSIGNED32, child.data)
                auth = child.code == AvpCode.AUTH_APPLICATION_ID
        if app is not None:
            vsa.append((vendor, app, auth))
    vendor_avp = msg.find(AvpCode.VENDOR_ID)
    fw = msg.find(AvpCode.FIRMWARE_REVISION)
    osi = msg.find(AvpCode.ORIGIN_STATE_ID)
    return Capabilities(
        origin_host=text(AvpCode.ORIGIN_HOST),
        origin_realm=text(AvpCode.ORIGIN_REALM),
        host_ip_addresses=tuple(decode_value(AvpType.ADDRESS, a.data)
                                for a in msg.find_all(AvpCode.HOST_IP_ADDRESS)),
        vendor_id=decode_value(AvpType.UNSIGNED32, vendor_avp.data) if vendor_avp else 0,
        product_name=text(AvpCode.PRODUCT_NAME),
        auth_application_ids=u32s(AvpCode.AUTH_APPLICATION_ID),
        acct_application_ids=u32s(AvpCode.ACCT_APPLICATION_ID),
        vendor_specific_applications=tuple(vsa),
        supported_vendor_ids=u32s(AvpCode.SUPPORTED_VENDOR_ID),
        firmware_revision=decode_value(AvpType.UNSIGNED32, fw.data) if fw else None,
        origin_state_id=decode_value(AvpType.UNSIGNED32, osi.data) if osi else None,
    )


def negotiate(local: Capabilities, remote: Capabilities) -> frozenset[int]:
    """The applications both sides support; raises 5010 when there is none (§5.3)."""
    mine, theirs = local.applications, remote.applications
    if RELAY_APPLICATION_ID in theirs:
        common = mine
    elif RELAY_APPLICATION_ID in mine:
        common = theirs
    else:
        common = mine & theirs
    if not common:
        raise RemoteProtocolError(
            "no common application", ResultCode.DIAMETER_NO_COMMON_APPLICATION
        )
    return frozenset(common)


def build_cer(local: Capabilities, hop_by_hop: int, end_to_end: int) -> Message:
    avps = [*local.identity.origin_avps, *local.avps()]
    return request(CommandCode.CAPABILITIES_EXCHANGE, 0, hop_by_hop, end_to_end, avps)


def build_cea(cer: Message, result_code: int, local: Capabilities,
              error_message: str | None = None) -> Message:
    """CEA (§5.3.2); also carries our capabilities when refusing, so the peer can log them."""
    return answer(cer, result_code, local.identity, local.avps(), error_message=error_message)
