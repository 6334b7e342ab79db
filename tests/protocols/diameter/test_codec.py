"""Header and AVP wire codec (RFC 6733 §3, §4.1)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.diameter.codec import (
    Avp,
    Message,
    decode_avps,
    decode_message,
    encode_avp,
    leading_session_id,
)
from protocols.diameter.constants import AVP_FLAG_M, AVP_FLAG_V, FLAG_P, FLAG_R, ResultCode
from protocols.diameter.errors import RemoteProtocolError


def avps(depth: int = 0) -> st.SearchStrategy[Avp]:
    vendor = st.integers(1, 2**32 - 1)
    base = st.builds(
        lambda code, flags, data: Avp(code, flags & ~AVP_FLAG_V, data, 0),
        st.integers(0, 2**32 - 1), st.integers(0, 255), st.binary(max_size=40),
    )
    vendor_avp = st.builds(
        lambda code, flags, data, v: Avp(code, flags | AVP_FLAG_V, data, v),
        st.integers(0, 2**32 - 1), st.integers(0, 255), st.binary(max_size=40), vendor,
    )
    leaf = st.one_of(base, vendor_avp)
    if depth >= 2:
        return leaf
    grouped = st.builds(
        lambda code, children: Avp(code, AVP_FLAG_M, b"".join(c.encode() for c in children)),
        st.integers(0, 2**32 - 1), st.lists(avps(depth + 1), max_size=4),
    )
    return st.one_of(leaf, grouped)


messages = st.builds(
    Message,
    st.integers(0, 2**24 - 1), st.integers(0, 255), st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.lists(avps(), max_size=8),
)


@given(messages)
def test_message_round_trip(msg: Message) -> None:
    wire = msg.encode()
    assert len(wire) % 4 == 0
    assert decode_message(wire) == msg


@given(avps())
def test_avp_round_trip_and_padding(avp: Avp) -> None:
    wire = avp.encode()
    assert len(wire) % 4 == 0
    assert decode_avps(wire) == [avp]


@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_typed_errors(raw: bytes) -> None:
    for parse in (decode_avps, decode_message):
        try:
            parse(raw)
        except RemoteProtocolError as exc:
            assert exc.result_code in (ResultCode.DIAMETER_INVALID_AVP_LENGTH,
                                       ResultCode.DIAMETER_INVALID_MESSAGE_LENGTH)


def test_header_layout() -> None:
    msg = Message(272, FLAG_R | FLAG_P, 4, 0x11223344, 0x55667788, [Avp(263, AVP_FLAG_M, b"s")])
    wire = msg.encode()
    assert wire[:4] == bytes([1, 0, 0, 32])
    assert wire[4:8] == bytes([0xC0, 0, 1, 16])
    assert struct.unpack("!III", wire[8:20]) == (4, 0x11223344, 0x55667788)
    # AVP: code 263, flags M, length 9 (excludes padding), data "s" + 3 bytes padding.
    assert wire[20:] == struct.pack("!II", 263, (0x40 << 24) | 9) + b"s\0\0\0"


def test_vendor_avp_layout() -> None:
    wire = encode_avp(1, AVP_FLAG_V | AVP_FLAG_M, b"ab", 10415)
    assert wire == struct.pack("!III", 1, (0xC0 << 24) | 14, 10415) + b"ab\0\0"


def test_avp_overrunning_message_is_5014_with_padded_header() -> None:
    bad = struct.pack("!II", 264, (0x40 << 24) | 100) + b"abcd"
    with pytest.raises(RemoteProtocolError) as info:
        decode_avps(bad)
    assert info.value.result_code == ResultCode.DIAMETER_INVALID_AVP_LENGTH
    assert info.value.failed_avps == (bad[:8],)


def test_truncated_avp_header_is_zero_padded() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode_avps(b"\0\0\x01\x08")
    assert info.value.failed_avps == (b"\0\0\x01\x08\0\0\0\0",)


def test_message_accessors() -> None:
    msg = Message(280, FLAG_R, 0, 1, 2, [Avp(264, 0x40, b"a"), Avp(264, 0x40, b"b")])
    assert msg.is_request and not msg.is_error and not msg.is_proxiable
    assert not msg.is_retransmission
    found = msg.find(264)
    assert found is not None and found.data == b"a"
    assert [a.data for a in msg.find_all(264)] == [b"a", b"b"]
    assert msg.find(1) is None


def test_leading_session_id_survives_broken_later_avps() -> None:
    good = Message(272, FLAG_R, 4, 1, 1, [Avp(263, AVP_FLAG_M, b"sess;1")]).encode()
    broken = good + struct.pack("!II", 1, (AVP_FLAG_M << 24) | 99)
    sid = leading_session_id(broken)
    assert sid is not None and sid.data == b"sess;1"
    assert leading_session_id(Message(272, FLAG_R, 4, 1, 1, [Avp(1, 0, b"x")]).encode()) is None
    assert leading_session_id(good[:24]) is None


@given(st.binary(min_size=20, max_size=80))
def test_leading_session_id_never_raises(raw: bytes) -> None:
    leading_session_id(raw)
