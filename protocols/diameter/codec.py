"""Diameter message and AVP wire codec (RFC 6733 §3, §4.1).

Decoding is deliberately shallow: a message becomes a header plus a list of raw ``Avp`` values
(code, flags, vendor id, data bytes); typed values are decoded on demand through the dictionary
(``protocols.diameter.dictionary``).  That keeps the hot path, which reads a handful of AVPs of a
Credit-Control request, from decoding AVPs nobody looks at, and makes ``decode(encode(m)) == m``
exact for any message, known AVPs or not.

Malformed AVP framing raises ``RemoteProtocolError`` with DIAMETER_INVALID_AVP_LENGTH (5014)
and the offending AVP header for Failed-AVP, as §7.1.5 describes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

from protocols.diameter.constants import (
    AVP_FLAG_V,
    FLAG_E,
    FLAG_P,
    FLAG_R,
    FLAG_T,
    HEADER_LENGTH,
    VERSION,
    ResultCode,
)
from protocols.diameter.errors import RemoteProtocolError

__all__ = [
    "Avp",
    "Message",
    "decode_avps",
    "decode_header",
    "decode_message",
    "encode_avp",
    "encode_avps",
    "leading_session_id",
]

_HEADER = struct.Struct("!IIIII")
_AVP_HEADER = struct.Struct("!II")
_AVP_VENDOR_HEADER = struct.Struct("!III")
# AVP header sizes without and with the Vendor-ID field (§4.1).
_AVP_MIN = 8
_AVP_VENDOR_MIN = 12
_PAD = (b"", b"\0\0\0", b"\0\0", b"\0")
_SESSION_ID = 263  # RFC 6733 §8.8


@dataclass(slots=True)
class Avp:
    """One AVP as it is on the wire, data without padding (§4.1).

    Treat an ``Avp`` as a value: build a new one instead of changing its fields, because its
    wire form and its children are computed once and cached (answers reuse the same
    Result-Code, Origin-Host and Origin-Realm objects for every message).
    """

    code: int
    flags: int
    data: bytes
    vendor_id: int = 0
    _wire: bytes | None = field(default=None, init=False, compare=False, repr=False)
    _children: list[Avp] | None = field(default=None, init=False, compare=False, repr=False)

    @property
    def mandatory(self) -> bool:
        return bool(self.flags & 0x40)

    def encode(self) -> bytes:
        wire = self._wire
        if wire is None:
            wire = self._wire = encode_avp(self.code, self.flags, self.data, self.vendor_id)
        return wire

    def children(self) -> list[Avp]:
        """The AVPs inside a Grouped AVP (§4.4); the list is shared, do not modify it."""
        kids = self._children
        if kids is None:
            kids = self._children = decode_avps(self.data)
        return kids


def encode_avp(code: int, flags: int, data: bytes, vendor_id: int = 0) -> bytes:
    """Header + data + padding to a 32-bit boundary; the length excludes padding (§4.1)."""
    pad = _PAD[len(data) & 3]
    if flags & AVP_FLAG_V:
        return _AVP_VENDOR_HEADER.pack(
            code, (flags << 24) | (len(data) + _AVP_VENDOR_MIN), vendor_id
        ) + data + pad
    return _AVP_HEADER.pack(code, (flags << 24) | (len(data) + _AVP_MIN)) + data + pad


def encode_avps(avps: list[Avp]) -> bytes:
    return b"".join([a._wire or a.encode() for a in avps])


def decode_avps(buf: bytes, start: int = 0, end: int | None = None) -> list[Avp]:
    """Split ``buf[start:end]`` into AVPs; a length that does not fit raises 5014."""
    stop = len(buf) if end is None else end
    out: list[Avp] = []
    append = out.append
    unpack = _AVP_HEADER.unpack_from
    pos = start
    while pos < stop:
        if stop - pos < _AVP_MIN:
            raise _bad_avp_length(buf[pos:stop])
        code, flags_len = unpack(buf, pos)
        flags = flags_len >> 24
        length = flags_len & 0xFFFFFF
        if flags & AVP_FLAG_V:
            if length < _AVP_VENDOR_MIN or pos + length > stop:
                raise _bad_avp_length(buf[pos : min(pos + _AVP_VENDOR_MIN, stop)])
            vendor = _AVP_HEADER.unpack_from(buf, pos + 4)[1]
            data = buf[pos + _AVP_VENDOR_MIN : pos + length]
        else:
            if length < _AVP_MIN or pos + length > stop:
                raise _bad_avp_length(buf[pos : pos + _AVP_MIN])
            vendor = 0
            data = buf[pos + _AVP_MIN : pos + length]
        append(Avp(code, flags, data, vendor))
        pos += (length + 3) & ~3
    return out


def _bad_avp_length(header: bytes) -> RemoteProtocolError:
    # §7.1.5: when the header cannot be trusted, send it back padded with zeroes to the minimum
    # header length with the original length field, which is what identifies the fault.
    minimum = _AVP_VENDOR_MIN if len(header) >= 5 and header[4] & AVP_FLAG_V else _AVP_MIN
    offending = bytes(header[:minimum]).ljust(minimum, b"\0")
    return RemoteProtocolError(
        "AVP length does not fit the message",
        ResultCode.DIAMETER_INVALID_AVP_LENGTH,
        failed_avps=(offending,),
    )


@dataclass(slots=True)
class Message:
    """A Diameter message: header fields plus raw AVPs (§3)."""

    command_code: int
    flags: int
    application_id: int
    hop_by_hop: int
    end_to_end: int
    avps: list[Avp] = field(default_factory=list)
    version: int = VERSION

    @property
    def is_request(self) -> bool:
        return bool(self.flags & FLAG_R)

    @property
    def is_proxiable(self) -> bool:
        return bool(self.flags & FLAG_P)

    @property
    def is_error(self) -> bool:
        return bool(self.flags & FLAG_E)

    @property
    def is_retransmission(self) -> bool:
        return bool(self.flags & FLAG_T)

    def find(self, code: int, vendor_id: int = 0) -> Avp | None:
        """The first top-level AVP with this code and vendor."""
        for avp in self.avps:
            if avp.code == code and avp.vendor_id == vendor_id:
                return avp
        return None

    def find_all(self, code: int, vendor_id: int = 0) -> Iterator[Avp]:
        return (a for a in self.avps if a.code == code and a.vendor_id == vendor_id)

    def encode(self) -> bytes:
        body = encode_avps(self.avps)
        length = HEADER_LENGTH + len(body)
        return _HEADER.pack(
            (self.version << 24) | length,
            (self.flags << 24) | self.command_code,
            self.application_id,
            self.hop_by_hop,
            self.end_to_end,
        ) + body


def leading_session_id(data: bytes) -> Avp | None:
    """The Session-Id of a message whose later AVPs may be broken (§8.8: it comes first), so
    an error answer can still echo it; None when the first AVP is not a readable Session-Id."""
    if len(data) < HEADER_LENGTH + _AVP_MIN:
        return None
    code, flags_len = _AVP_HEADER.unpack_from(data, HEADER_LENGTH)
    length = flags_len & 0xFFFFFF
    if code != _SESSION_ID or flags_len >> 24 & AVP_FLAG_V or not (
            _AVP_MIN <= length <= len(data) - HEADER_LENGTH):
        return None
    return Avp(code, flags_len >> 24, data[HEADER_LENGTH + _AVP_MIN : HEADER_LENGTH + length])


def decode_header(data: bytes) -> tuple[int, int, int, int, int, int, int]:
    """(version, length, flags, command code, application id, hop-by-hop, end-to-end)."""
    vl, fc, app, hbh, e2e = _HEADER.unpack_from(data)
    return vl >> 24, vl & 0xFFFFFF, fc >> 24, fc & 0xFFFFFF, app, hbh, e2e


def decode_message(data: bytes) -> Message:
    """Decode one framed message (the framer has checked version and length)."""
    if len(data) < HEADER_LENGTH:
        raise RemoteProtocolError(
            "message shorter than its header", ResultCode.DIAMETER_INVALID_MESSAGE_LENGTH,
            fatal=True,
        )
    version, length, flags, code, app, hbh, e2e = decode_header(data)
    if length != len(data):
        raise RemoteProtocolError(
            "message length does not match its data", ResultCode.DIAMETER_INVALID_MESSAGE_LENGTH,
            fatal=True,
        )
    return Message(code, flags, app, hbh, e2e, decode_avps(data, HEADER_LENGTH), version)
