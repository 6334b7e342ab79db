"""Value codecs of every RFC 6733 §4.2/§4.3 data format."""

from __future__ import annotations

import ipaddress
import math
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.diameter.constants import ResultCode
from protocols.diameter.datatypes import (
    NTP_UNIX_OFFSET,
    AvpType,
    AvpValueError,
    OtherAddress,
    decode_value,
    encode_value,
)

_TEXT = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=40)
_IDENT = st.from_regex(r"[a-z0-9][a-z0-9.\-]{0,30}", fullmatch=True)

VALUES: dict[AvpType, st.SearchStrategy[Any]] = {
    AvpType.OCTET_STRING: st.binary(max_size=64),
    AvpType.INTEGER32: st.integers(-(2**31), 2**31 - 1),
    AvpType.INTEGER64: st.integers(-(2**63), 2**63 - 1),
    AvpType.UNSIGNED32: st.integers(0, 2**32 - 1),
    AvpType.UNSIGNED64: st.integers(0, 2**64 - 1),
    AvpType.FLOAT32: st.floats(width=32, allow_nan=False),
    AvpType.FLOAT64: st.floats(allow_nan=False),
    AvpType.ADDRESS: st.one_of(
        st.ip_addresses(v=4), st.ip_addresses(v=6),
        st.builds(OtherAddress, st.integers(3, 65535), st.binary(max_size=20)),
    ),
    AvpType.TIME: st.integers(0, 2**32 - 1),
    AvpType.UTF8STRING: _TEXT,
    AvpType.DIAMETER_IDENTITY: _IDENT,
    AvpType.DIAMETER_URI: _IDENT.map(lambda h: f"aaa://{h}:3868;transport=tcp"),
    AvpType.ENUMERATED: st.integers(-(2**31), 2**31 - 1),
    AvpType.IP_FILTER_RULE: st.just("permit in ip from any to any"),
    AvpType.GROUPED: st.binary(max_size=32),
}


def test_every_type_has_a_strategy() -> None:
    assert set(VALUES) == set(AvpType)


@pytest.mark.parametrize("avp_type", list(AvpType))
@given(data=st.data())
def test_round_trip(avp_type: AvpType, data: st.DataObject) -> None:
    value = data.draw(VALUES[avp_type])
    assert decode_value(avp_type, encode_value(avp_type, value)) == value


@pytest.mark.parametrize("avp_type", list(AvpType))
@given(raw=st.binary(max_size=40))
def test_arbitrary_data_decodes_or_raises_typed_error(avp_type: AvpType, raw: bytes) -> None:
    try:
        decode_value(avp_type, raw)
    except AvpValueError as exc:
        assert exc.result_code in (ResultCode.DIAMETER_INVALID_AVP_LENGTH,
                                   ResultCode.DIAMETER_INVALID_AVP_VALUE)


def test_time_is_ntp_seconds() -> None:
    # §4.3.1: seconds since 1900-01-01; UNIX 0 is NTP 2208988800.
    assert encode_value(AvpType.TIME, 0) == struct.pack("!I", NTP_UNIX_OFFSET)
    # After the 2036 wrap the small NTP values map to the next era.
    assert decode_value(AvpType.TIME, struct.pack("!I", 0)) == 2**32 - NTP_UNIX_OFFSET


def test_address_wire_format() -> None:
    assert encode_value(AvpType.ADDRESS, ipaddress.IPv4Address("10.0.0.1")) == b"\0\x01\n\0\0\x01"
    with pytest.raises(AvpValueError) as info:
        decode_value(AvpType.ADDRESS, b"\0\x01\n\0")
    assert info.value.result_code == ResultCode.DIAMETER_INVALID_AVP_LENGTH


def test_fixed_size_mismatch_is_5014() -> None:
    with pytest.raises(AvpValueError) as info:
        decode_value(AvpType.UNSIGNED32, b"\0\0\0")
    assert info.value.result_code == ResultCode.DIAMETER_INVALID_AVP_LENGTH


@pytest.mark.parametrize("avp_type, raw", [
    (AvpType.UTF8STRING, b"\xff\xfe"),
    (AvpType.DIAMETER_IDENTITY, "hôte".encode()),
    (AvpType.DIAMETER_URI, b"http://example.com"),
])
def test_bad_text_is_5004(avp_type: AvpType, raw: bytes) -> None:
    with pytest.raises(AvpValueError) as info:
        decode_value(avp_type, raw)
    assert info.value.result_code == ResultCode.DIAMETER_INVALID_AVP_VALUE


def test_float_nan_survives() -> None:
    assert math.isnan(decode_value(AvpType.FLOAT64, encode_value(AvpType.FLOAT64, math.nan)))
