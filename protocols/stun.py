"""STUN (RFC 5389) as SIP Outbound uses it: Binding requests on the SIP UDP port as keep-alives
(RFC 5626 §3.5.2, §8), answered with the source address the server saw (XOR-MAPPED-ADDRESS).

Sans-I/O: bytes in, bytes out.  ``answer`` turns one datagram into the bytes to send back (a
success or an error response) or None when the datagram is to be dropped (not a STUN Binding
request, or not a valid one: §7.3 says such a request is silently discarded).  ``parse`` and
``binding_request`` are the client side, for the tests and for anyone probing the server.

What a keep-alive needs and no more: no authentication (RFC 5626 §8 uses none), no ALTERNATE-
SERVER, no classic RFC 3489 requests (no magic cookie: dropped, §6 tells them apart this way).
A request naming a comprehension-required attribute we do not know gets a 420 listing it
(§7.3.1); FINGERPRINT is checked when present and echoed in the answer (§7.3, §15.5).
"""

from __future__ import annotations

import binascii
import ipaddress
import os
import struct
from typing import NamedTuple

__all__ = [
    "BINDING_ERROR",
    "BINDING_REQUEST",
    "BINDING_SUCCESS",
    "MAGIC_COOKIE",
    "StunMessage",
    "answer",
    "binding_request",
    "is_stun",
    "mapped_address",
    "parse",
]

BINDING_REQUEST = 0x0001
BINDING_SUCCESS = 0x0101
BINDING_ERROR = 0x0111
MAGIC_COOKIE = 0x2112A442
HEADER = struct.Struct(">HHI12s")
_ATTR = struct.Struct(">HH")
XOR_MAPPED_ADDRESS = 0x0020
ERROR_CODE = 0x0009
UNKNOWN_ATTRIBUTES = 0x000A
SOFTWARE = 0x8022
FINGERPRINT = 0x8028
_FINGERPRINT_XOR = 0x5354554E
#: Largest request answered: a keep-alive is 20 bytes, 28 with FINGERPRINT; 512 leaves room for
#: a SOFTWARE attribute and anything else a client adds, while an answer stays small (no
#: amplification: the answer is never larger than ~60 bytes, see ``answer``).
MAX_REQUEST = 512


class StunMessage(NamedTuple):
    """A decoded STUN message: its type, transaction id and attributes (type, value)."""

    type: int
    transaction_id: bytes
    attributes: tuple[tuple[int, bytes], ...]


def is_stun(data: bytes) -> bool:
    """§6: the first two bits are zero and the magic cookie is in place.  A SIP message starts
    with a letter (a method or ``SIP/2.0``), so the two never collide (RFC 5626 §8)."""
    return len(data) >= HEADER.size and data[0] < 0x40 and \
        data[4:8] == b"\x21\x12\xa4\x42"


def parse(data: bytes) -> StunMessage | None:
    """The message, or None when it is not well-formed STUN (§6, §15: lengths, padding,
    FINGERPRINT)."""
    if not is_stun(data):
        return None
    kind, length, _cookie, txid = HEADER.unpack_from(data)
    if length % 4 or HEADER.size + length != len(data):
        return None
    attrs: list[tuple[int, bytes]] = []
    pos = HEADER.size
    while pos < len(data):
        if pos + _ATTR.size > len(data):
            return None
        atype, alen = _ATTR.unpack_from(data, pos)
        start = pos + _ATTR.size
        end = start + alen
        if end > len(data):
            return None
        value = data[start:end]
        # §15.5: FINGERPRINT is the last attribute, the CRC-32 of everything before it, XORed.
        if atype == FINGERPRINT and (end + (-alen % 4) != len(data) or alen != 4
                                     or struct.unpack(">I", value)[0] != _crc(data[:pos])):
            return None
        attrs.append((atype, value))
        pos = end + (-alen % 4)
    return StunMessage(kind, txid, tuple(attrs))


def answer(data: bytes, host: str, port: int) -> bytes | None:
    """The answer to a Binding request from ``host``:``port`` (§7.3), or None to drop it."""
    if len(data) > MAX_REQUEST:
        return None
    msg = parse(data)
    if msg is None or msg.type != BINDING_REQUEST:
        return None  # §7.3: responses and indications need no answer; garbage none either
    fingerprint = any(t == FINGERPRINT for t, _ in msg.attributes)
    unknown = [t for t, _ in msg.attributes if t < 0x8000]
    if unknown:
        # §7.3.1: comprehension-required attributes we do not understand (we use no
        # authentication, so USERNAME and MESSAGE-INTEGRITY are among them).
        listed = b"".join(struct.pack(">H", t) for t in unknown[:8])
        attrs = [(ERROR_CODE, struct.pack(">HBB", 0, 4, 20) + b"Unknown Attribute"),
                 (UNKNOWN_ATTRIBUTES, listed)]
        return _encode(BINDING_ERROR, msg.transaction_id, attrs, fingerprint)
    try:
        mapped = _xor_address(host, port, msg.transaction_id)
    except ValueError:
        return None
    return _encode(BINDING_SUCCESS, msg.transaction_id, [(XOR_MAPPED_ADDRESS, mapped)],
                   fingerprint)


def binding_request(transaction_id: bytes | None = None, *, fingerprint: bool = False) -> bytes:
    """A Binding request (§7.1): what a keep-alive sends."""
    return _encode(BINDING_REQUEST, transaction_id or os.urandom(12), [], fingerprint)


def mapped_address(msg: StunMessage) -> tuple[str, int] | None:
    """The XOR-MAPPED-ADDRESS of a success response (§15.2), decoded."""
    for atype, value in msg.attributes:
        if atype != XOR_MAPPED_ADDRESS or len(value) < 8:
            continue
        family = value[1]
        port = struct.unpack_from(">H", value, 2)[0] ^ (MAGIC_COOKIE >> 16)
        mask = struct.pack(">I", MAGIC_COOKIE) + msg.transaction_id
        raw = value[4:]
        if (family, len(raw)) not in ((1, 4), (2, 16)):
            return None
        addr = bytes(a ^ b for a, b in zip(raw, mask, strict=False))
        return str(ipaddress.ip_address(addr)), port
    return None


def _xor_address(host: str, port: int, txid: bytes) -> bytes:
    """§15.2: the port XORed with the cookie's high half, the address with the cookie (and,
    for IPv6, the transaction id)."""
    addr = ipaddress.ip_address(host.split("%", 1)[0])
    packed = addr.packed
    mask = struct.pack(">I", MAGIC_COOKIE) + txid
    xored = bytes(a ^ b for a, b in zip(packed, mask, strict=False))
    family = 1 if addr.version == 4 else 2
    return struct.pack(">BBH", 0, family, port ^ (MAGIC_COOKIE >> 16)) + xored


def _encode(kind: int, txid: bytes, attrs: list[tuple[int, bytes]], fingerprint: bool) -> bytes:
    body = b"".join(_ATTR.pack(t, len(v)) + v + b"\x00" * (-len(v) % 4) for t, v in attrs)
    if not fingerprint:
        return HEADER.pack(kind, len(body), MAGIC_COOKIE, txid) + body
    # §15.5: the length counts the FINGERPRINT (8 bytes) before the CRC is computed.
    head = HEADER.pack(kind, len(body) + 8, MAGIC_COOKIE, txid) + body
    return head + _ATTR.pack(FINGERPRINT, 4) + struct.pack(">I", _crc(head))


def _crc(data: bytes) -> int:
    return (binascii.crc32(data) & 0xFFFFFFFF) ^ _FINGERPRINT_XOR
