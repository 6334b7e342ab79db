"""AVP data formats (RFC 6733 §4.2 basic, §4.3 derived) and their value codecs.

Each type maps a Python value to the AVP's data field and back.  Decoding failures are
``AvpValueError`` carrying the Result-Code the RFC prescribes: a data field of the wrong size for
a fixed-size type is DIAMETER_INVALID_AVP_LENGTH (5014, §7.1.5); content that has the right size
but is not a legal value is DIAMETER_INVALID_AVP_VALUE (5004).
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from protocols.diameter.constants import ResultCode
from protocols.diameter.fastenum import FastEnum

__all__ = [
    "NTP_UNIX_OFFSET",
    "AddressValue",
    "AvpType",
    "AvpValueError",
    "OtherAddress",
    "decode_value",
    "decoder",
    "encode_value",
]

# Seconds from the NTP epoch (1900-01-01) to the UNIX epoch (1970-01-01): Time is NTP (§4.3.1).
NTP_UNIX_OFFSET = 2_208_988_800
# Time is a 32-bit NTP seconds count that wraps in 2036 (§4.3.1); values below the UNIX epoch
# offset are read as the next era so every 32-bit value has exactly one UNIX time.
_TWO_32 = 1 << 32

# IANA address families used by the Address type (§4.3.1).
_AF_IPV4 = 1
_AF_IPV6 = 2


class AvpType(FastEnum):
    """The data formats of RFC 6733 §4.2 and §4.3."""

    OCTET_STRING = "OctetString"
    INTEGER32 = "Integer32"
    INTEGER64 = "Integer64"
    UNSIGNED32 = "Unsigned32"
    UNSIGNED64 = "Unsigned64"
    FLOAT32 = "Float32"
    FLOAT64 = "Float64"
    GROUPED = "Grouped"
    ADDRESS = "Address"
    TIME = "Time"
    UTF8STRING = "UTF8String"
    DIAMETER_IDENTITY = "DiameterIdentity"
    DIAMETER_URI = "DiameterURI"
    ENUMERATED = "Enumerated"
    IP_FILTER_RULE = "IPFilterRule"


@dataclass(frozen=True, slots=True)
class OtherAddress:
    """An Address whose family is neither IPv4 nor IPv6 (e.g. E.164, family 8)."""

    family: int
    data: bytes


AddressValue = ipaddress.IPv4Address | ipaddress.IPv6Address | OtherAddress


class AvpValueError(Exception):
    """An AVP data field that cannot be decoded as its type; carries 5004 or 5014."""

    def __init__(self, reason: str, result_code: int) -> None:
        super().__init__(reason)
        self.result_code = result_code


_FIXED: dict[AvpType, struct.Struct] = {
    AvpType.INTEGER32: struct.Struct("!i"),
    AvpType.INTEGER64: struct.Struct("!q"),
    AvpType.UNSIGNED32: struct.Struct("!I"),
    AvpType.UNSIGNED64: struct.Struct("!Q"),
    AvpType.FLOAT32: struct.Struct("!f"),
    AvpType.FLOAT64: struct.Struct("!d"),
    AvpType.ENUMERATED: struct.Struct("!i"),
    AvpType.TIME: struct.Struct("!I"),
}
_U16 = struct.Struct("!H")
_BAD_LENGTH = ResultCode.DIAMETER_INVALID_AVP_LENGTH
_BAD_VALUE = ResultCode.DIAMETER_INVALID_AVP_VALUE


def encode_value(avp_type: AvpType, value: Any) -> bytes:
    """The data field for ``value``; Grouped takes already-encoded AVP bytes."""
    if avp_type is AvpType.TIME:
        return _FIXED[AvpType.TIME].pack((int(value) + NTP_UNIX_OFFSET) % _TWO_32)
    fixed = _FIXED.get(avp_type)
    if fixed is not None:
        return fixed.pack(value)
    if avp_type is AvpType.ADDRESS:
        return _encode_address(value)
    if avp_type in _TEXT_TYPES:
        return str(value).encode("utf-8")
    return bytes(value)


def decoder(avp_type: AvpType) -> Callable[[bytes], Any]:
    """A decoding function specialised for one type (the validator's per-AVP hot path)."""
    fixed = _FIXED.get(avp_type)
    if avp_type is AvpType.UTF8STRING:
        return _decode_utf8
    if avp_type is AvpType.DIAMETER_IDENTITY:
        return _decode_identity
    if fixed is None or avp_type is AvpType.TIME:
        return lambda data: decode_value(avp_type, data)
    size, unpack, name = fixed.size, fixed.unpack, avp_type.value

    def decode_fixed(data: bytes) -> Any:
        if len(data) != size:
            raise AvpValueError(f"{name} needs {size} bytes, got {len(data)}", _BAD_LENGTH)
        return unpack(data)[0]

    return decode_fixed


def decode_value(avp_type: AvpType, data: bytes) -> Any:
    """The Python value of a data field; raises ``AvpValueError``."""
    fixed = _FIXED.get(avp_type)
    if fixed is not None:
        if len(data) != fixed.size:
            raise AvpValueError(
                f"{avp_type.value} needs {fixed.size} bytes, got {len(data)}",
                ResultCode.DIAMETER_INVALID_AVP_LENGTH,
            )
        value = fixed.unpack(data)[0]
        if avp_type is AvpType.TIME:
            return _ntp_to_unix(value)
        return value
    if avp_type is AvpType.ADDRESS:
        return _decode_address(data)
    if avp_type in _TEXT_TYPES:
        return _decode_text(avp_type, data)
    return bytes(data)


def _decode_utf8(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise AvpValueError("UTF8String is not valid text", _BAD_VALUE) from None


def _decode_identity(data: bytes) -> str:
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        raise AvpValueError("DiameterIdentity is not valid text", _BAD_VALUE) from None


def _ntp_to_unix(ntp: int) -> int:
    if ntp >= NTP_UNIX_OFFSET:
        return ntp - NTP_UNIX_OFFSET
    return ntp + _TWO_32 - NTP_UNIX_OFFSET


def _encode_address(value: AddressValue) -> bytes:
    if isinstance(value, ipaddress.IPv4Address):
        return _U16.pack(_AF_IPV4) + value.packed
    if isinstance(value, ipaddress.IPv6Address):
        return _U16.pack(_AF_IPV6) + value.packed
    return _U16.pack(value.family) + value.data


def _decode_address(data: bytes) -> AddressValue:
    if len(data) < 2:
        raise AvpValueError("Address shorter than its family", _BAD_LENGTH)
    family = _U16.unpack_from(data)[0]
    body = bytes(data[2:])
    if family == _AF_IPV4:
        if len(body) != 4:
            raise AvpValueError("IPv4 Address needs 4 bytes", _BAD_LENGTH)
        return ipaddress.IPv4Address(body)
    if family == _AF_IPV6:
        if len(body) != 16:
            raise AvpValueError("IPv6 Address needs 16 bytes", _BAD_LENGTH)
        return ipaddress.IPv6Address(body)
    return OtherAddress(family, body)


def _decode_text(avp_type: AvpType, data: bytes) -> str:
    try:
        text = bytes(data).decode("ascii" if avp_type is AvpType.DIAMETER_IDENTITY else "utf-8")
    except UnicodeDecodeError:
        raise AvpValueError(
            f"{avp_type.value} is not valid text", ResultCode.DIAMETER_INVALID_AVP_VALUE
        ) from None
    if avp_type is AvpType.DIAMETER_URI and not text.startswith(("aaa://", "aaas://")):
        # §4.3.1: the only schemes are "aaa" and "aaas".
        raise AvpValueError("DiameterURI needs aaa:// or aaas://", _BAD_VALUE)
    return text


# DiameterIdentity is ASCII (§4.3.1, an FQDN); IPFilterRule is an ASCII rule (§4.3.1) kept as text.
_TEXT_TYPES = frozenset(
    {AvpType.UTF8STRING, AvpType.DIAMETER_IDENTITY, AvpType.DIAMETER_URI, AvpType.IP_FILTER_RULE}
)
