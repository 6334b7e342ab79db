"""Each RFC 6733 §7 error a request can earn, with its Failed-AVP."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.diameter.codec import Avp, Message, decode_avps
from protocols.diameter.constants import (
    AVP_FLAG_M,
    FLAG_E,
    FLAG_P,
    FLAG_R,
    AvpCode,
    ResultCode,
)
from protocols.diameter.errors import RemoteProtocolError
from protocols.diameter.validation import MAX_GROUP_DEPTH, validate_request
from tests.protocols.diameter.factory import DICT, ccr, cer, without

APPS = frozenset({4})


def _code(msg: Message) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as info:
        validate_request(msg, DICT, APPS)
    return info.value


def test_valid_requests_pass() -> None:
    assert validate_request(ccr(), DICT, APPS).name == "Credit-Control"
    assert validate_request(cer(), DICT, APPS).name == "Capabilities-Exchange"


def test_3001_unknown_command() -> None:
    msg = ccr()
    msg.command_code = 999
    err = _code(msg)
    assert err.result_code == ResultCode.DIAMETER_COMMAND_UNSUPPORTED and err.error_bit


def test_3001_command_outside_its_application() -> None:
    msg = cer()
    msg.command_code = 272  # CCR in the common application
    assert _code(msg).result_code == ResultCode.DIAMETER_COMMAND_UNSUPPORTED


def test_3007_unsupported_application() -> None:
    msg = ccr()
    msg.application_id = 16777238
    err = _code(msg)
    assert err.result_code == ResultCode.DIAMETER_APPLICATION_UNSUPPORTED and err.error_bit


@pytest.mark.parametrize("flags", [FLAG_R | FLAG_P | FLAG_E])
def test_3008_error_bit_on_request(flags: int) -> None:
    msg = ccr()
    msg.flags = flags
    assert _code(msg).result_code == ResultCode.DIAMETER_INVALID_HDR_BITS


def test_3008_proxiable_cer() -> None:
    msg = cer()
    msg.flags = FLAG_R | FLAG_P
    assert _code(msg).result_code == ResultCode.DIAMETER_INVALID_HDR_BITS


def test_3009_reserved_avp_bits() -> None:
    bad = Avp(AvpCode.SERVICE_CONTEXT_ID, AVP_FLAG_M | 0x01, b"x")
    err = _code(ccr(extra=[bad]))
    assert err.result_code == ResultCode.DIAMETER_INVALID_AVP_BITS
    assert err.failed_avps == (bad.encode(),)


def test_3009_m_bit_on_product_name() -> None:
    msg = cer()
    msg.avps = [Avp(a.code, a.flags | AVP_FLAG_M, a.data) if a.code == 269 else a
                for a in msg.avps]
    assert _code(msg).result_code == ResultCode.DIAMETER_INVALID_AVP_BITS


def test_5001_unknown_mandatory_avp_and_unknown_optional_is_ignored() -> None:
    validate_request(ccr(extra=[Avp(99999, 0, b"ok")]), DICT, APPS)
    bad = Avp(99999, AVP_FLAG_M, b"boom")
    err = _code(ccr(extra=[bad]))
    assert err.result_code == ResultCode.DIAMETER_AVP_UNSUPPORTED
    assert err.failed_avps == (bad.encode(),) and not err.error_bit


def test_5001_inside_a_group() -> None:
    inner = Avp(99999, AVP_FLAG_M, b"x")
    group = Avp(AvpCode.REQUESTED_SERVICE_UNIT, AVP_FLAG_M, inner.encode())
    err = _code(ccr(extra=[group]))
    assert err.result_code == ResultCode.DIAMETER_AVP_UNSUPPORTED
    assert err.failed_avps == (inner.encode(),)


def test_5004_bad_enumerated_value() -> None:
    msg = ccr(rtype=9)
    err = _code(msg)
    assert err.result_code == ResultCode.DIAMETER_INVALID_AVP_VALUE
    assert decode_avps(err.failed_avps[0])[0].code == AvpCode.CC_REQUEST_TYPE


def test_5004_nested_too_deep() -> None:
    avp = Avp(AvpCode.CC_TIME, AVP_FLAG_M, struct.pack("!I", 1))
    for _ in range(MAX_GROUP_DEPTH + 1):
        avp = Avp(AvpCode.REQUESTED_SERVICE_UNIT, AVP_FLAG_M, avp.encode())
    assert _code(ccr(extra=[avp])).result_code == ResultCode.DIAMETER_INVALID_AVP_VALUE


def test_5005_missing_avp_with_zeroed_example() -> None:
    err = _code(without(ccr(), AvpCode.CC_REQUEST_NUMBER))
    assert err.result_code == ResultCode.DIAMETER_MISSING_AVP
    example = decode_avps(err.failed_avps[0])[0]
    assert example.code == AvpCode.CC_REQUEST_NUMBER and example.data == bytes(4)


def test_5014_wrong_size_fixed_avp() -> None:
    bad = Avp(AvpCode.CC_REQUEST_NUMBER, AVP_FLAG_M, b"\0\0\0\0\0")
    msg = without(ccr(), AvpCode.CC_REQUEST_NUMBER)
    msg.avps.append(bad)
    err = _code(msg)
    assert err.result_code == ResultCode.DIAMETER_INVALID_AVP_LENGTH
    assert err.failed_avps == (bad.encode(),)


def test_5014_group_with_broken_child_length() -> None:
    broken = struct.pack("!II", AvpCode.CC_TIME, (0x40 << 24) | 60) + b"\0\0\0\0"
    group = Avp(AvpCode.USED_SERVICE_UNIT, AVP_FLAG_M, broken)
    err = _code(ccr(extra=[group]))
    assert err.result_code == ResultCode.DIAMETER_INVALID_AVP_LENGTH


@given(st.lists(st.builds(Avp, st.integers(0, 600), st.integers(0, 255),
                          st.binary(max_size=12)), max_size=10))
def test_arbitrary_avps_raise_only_remote_errors(extra: list[Avp]) -> None:
    try:
        validate_request(ccr(extra=extra), DICT, APPS)
    except RemoteProtocolError as exc:
        assert 3000 <= exc.result_code < 6000
