"""CER/CEA content and application negotiation (RFC 6733 §5.3)."""

from __future__ import annotations

import ipaddress

import pytest

from protocols.diameter.capabilities import (
    Capabilities,
    build_cea,
    build_cer,
    negotiate,
    parse_capabilities,
)
from protocols.diameter.codec import decode_message
from protocols.diameter.constants import RELAY_APPLICATION_ID, AvpCode, ResultCode
from protocols.diameter.errors import RemoteProtocolError
from protocols.diameter.validation import validate_request
from tests.protocols.diameter.factory import DICT, caps, cer, without

FULL = Capabilities(
    origin_host="a.test", origin_realm="test",
    host_ip_addresses=(ipaddress.IPv4Address("127.0.0.1"), ipaddress.IPv6Address("::1")),
    vendor_id=10415, product_name="p", auth_application_ids=frozenset({4}),
    acct_application_ids=frozenset({3}),
    vendor_specific_applications=((10415, 16777238, True), (10415, 16777239, False)),
    supported_vendor_ids=frozenset({10415}), firmware_revision=7, origin_state_id=9,
)


def test_cer_round_trip_and_valid() -> None:
    wire = build_cer(FULL, 1, 2).encode()
    msg = decode_message(wire)
    validate_request(msg, DICT, {4})
    assert parse_capabilities(msg) == FULL
    assert FULL.applications == {3, 4, 16777238, 16777239}


def test_negotiation() -> None:
    assert negotiate(caps(apps=frozenset({4})), caps(apps=frozenset({4, 3}))) == {4}
    assert negotiate(caps(apps=frozenset({4})), caps(apps=frozenset({RELAY_APPLICATION_ID}))) \
        == {4}
    with pytest.raises(RemoteProtocolError) as info:
        negotiate(caps(apps=frozenset({4})), caps(apps=frozenset({16777238})))
    assert info.value.result_code == ResultCode.DIAMETER_NO_COMMON_APPLICATION


def test_cea_answers_the_cer() -> None:
    req = cer(hbh=42)
    cea = build_cea(req, ResultCode.DIAMETER_NO_COMMON_APPLICATION, FULL)
    assert cea.hop_by_hop == 42 and not cea.is_request
    rc = cea.find(AvpCode.RESULT_CODE)
    assert rc is not None and DICT.value(rc) == 5010
    assert parse_capabilities(cea).origin_host == "a.test"


def test_parse_missing_identity_is_5005() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_capabilities(without(cer(), AvpCode.ORIGIN_HOST))
    assert info.value.result_code == ResultCode.DIAMETER_MISSING_AVP
