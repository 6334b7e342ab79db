"""protocols/stun.py: Binding requests answered with the address seen (RFC 5389, RFC 5626 §8)."""

from __future__ import annotations

import binascii
import struct

from protocols import stun


def test_binding_request_gets_its_source_address_xored() -> None:
    txid = bytes(range(12))
    req = stun.binding_request(txid)
    assert len(req) == 20 and stun.is_stun(req)
    answer = stun.answer(req, "192.0.2.1", 32853)
    assert answer is not None
    msg = stun.parse(answer)
    assert msg is not None
    assert (msg.type, msg.transaction_id) == (stun.BINDING_SUCCESS, txid)
    assert stun.mapped_address(msg) == ("192.0.2.1", 32853)
    # §15.2 by hand: port XOR 0x2112, address XOR the cookie.
    value = dict(msg.attributes)[stun.XOR_MAPPED_ADDRESS]
    assert value[:4] == struct.pack(">BBH", 0, 1, 32853 ^ 0x2112)
    assert value[4:] == bytes(a ^ b for a, b in zip(bytes([192, 0, 2, 1]),
                                                   b"\x21\x12\xa4\x42", strict=True))


def test_ipv6_source_is_xored_with_cookie_and_transaction_id() -> None:
    req = stun.binding_request()
    answer = stun.answer(req, "2001:db8::1", 5060)
    assert answer is not None
    msg = stun.parse(answer)
    assert msg is not None and stun.mapped_address(msg) == ("2001:db8::1", 5060)


def test_fingerprint_is_checked_and_echoed() -> None:
    req = stun.binding_request(fingerprint=True)
    assert len(req) == 28
    answer = stun.answer(req, "127.0.0.1", 5060)
    assert answer is not None
    msg = stun.parse(answer)
    assert msg is not None and msg.attributes[-1][0] == stun.FINGERPRINT
    crc = (binascii.crc32(answer[:-8]) & 0xFFFFFFFF) ^ 0x5354554E
    assert answer[-4:] == struct.pack(">I", crc)
    corrupted = req[:-1] + bytes([req[-1] ^ 1])
    assert stun.answer(corrupted, "127.0.0.1", 5060) is None


def test_unknown_comprehension_required_attribute_gets_420() -> None:
    txid = b"x" * 12
    attr = struct.pack(">HH", 0x0006, 4) + b"user"  # USERNAME: we use no authentication
    req = struct.pack(">HHI12s", stun.BINDING_REQUEST, len(attr), stun.MAGIC_COOKIE, txid) + attr
    answer = stun.answer(req, "127.0.0.1", 5060)
    assert answer is not None
    msg = stun.parse(answer)
    assert msg is not None and msg.type == stun.BINDING_ERROR
    attrs = dict(msg.attributes)
    assert attrs[stun.ERROR_CODE][2:4] == bytes([4, 20])
    assert attrs[stun.UNKNOWN_ATTRIBUTES][:2] == b"\x00\x06"


def test_optional_unknown_attribute_is_ignored() -> None:
    attr = struct.pack(">HH", stun.SOFTWARE, 3) + b"abc\x00"
    req = struct.pack(">HHI12s", stun.BINDING_REQUEST, len(attr), stun.MAGIC_COOKIE,
                      b"y" * 12) + attr
    answer = stun.answer(req, "127.0.0.1", 5060)
    assert answer is not None
    msg = stun.parse(answer)
    assert msg is not None and msg.type == stun.BINDING_SUCCESS


def test_what_is_not_a_valid_request_is_dropped() -> None:
    good = stun.binding_request()
    no_cookie = good[:4] + b"\x00\x00\x00\x00" + good[8:]   # classic RFC 3489
    assert stun.answer(no_cookie, "127.0.0.1", 1) is None
    assert stun.answer(good[:19], "127.0.0.1", 1) is None
    bad_length = good[:2] + b"\x00\x04" + good[4:]
    assert stun.answer(bad_length, "127.0.0.1", 1) is None
    response = stun.answer(good, "127.0.0.1", 1)
    assert response is not None and stun.answer(response, "127.0.0.1", 1) is None
    assert stun.answer(b"\r\n\r\n", "127.0.0.1", 1) is None
    assert stun.answer(b"OPTIONS sip:x SIP/2.0\r\n", "127.0.0.1", 1) is None
    huge = struct.pack(">HHI12s", 1, 600, stun.MAGIC_COOKIE, b"z" * 12) + b"\x00" * 600
    assert stun.answer(huge, "127.0.0.1", 1) is None
    truncated_attr = struct.pack(">HHI12s", 1, 4, stun.MAGIC_COOKIE, b"z" * 12) + \
        struct.pack(">HH", 0x8022, 8)
    assert stun.answer(truncated_attr, "127.0.0.1", 1) is None
