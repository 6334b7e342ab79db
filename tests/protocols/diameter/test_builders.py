"""Answers: header copy, Session-Id first, E bit, Failed-AVP, Proxy-Info echo."""

from __future__ import annotations

from protocols.diameter.builders import (
    LocalIdentity,
    answer,
    answer_from_header,
    error_answer,
    request,
)
from protocols.diameter.codec import Avp, decode_avps, decode_message
from protocols.diameter.constants import FLAG_E, FLAG_P, FLAG_R, AvpCode, ResultCode
from protocols.diameter.errors import FramingError, RemoteProtocolError
from tests.protocols.diameter.factory import DICT, ccr

ME = LocalIdentity("server.test", "test")


def test_answer_copies_header_and_puts_session_id_first() -> None:
    req = ccr(hbh=77)
    req.avps.insert(0, req.avps.pop(3))  # Session-Id not first in the request
    req.avps.append(DICT.make("Proxy-Info", [DICT.make("Proxy-Host", "p"),
                                             DICT.make("Proxy-State", b"s")]))
    ans = decode_message(answer(req, ResultCode.DIAMETER_SUCCESS, ME).encode())
    assert (ans.command_code, ans.application_id, ans.hop_by_hop, ans.end_to_end) == (
        272, 4, 77, 77)
    assert ans.flags == FLAG_P  # R cleared, P kept, no E
    assert [a.code for a in ans.avps] == [263, 268, 264, 296, 284]
    assert DICT.value(ans.avps[1]) == 2001
    assert DICT.value(ans.avps[2]) == "server.test"


def test_protocol_error_sets_e_bit_and_failed_avp() -> None:
    bad = Avp(99999, 0x40, b"x")
    exc = RemoteProtocolError("boom", ResultCode.DIAMETER_COMMAND_UNSUPPORTED,
                              failed_avps=(bad.encode(),))
    ans = error_answer(ccr(), exc, ME)
    assert ans.flags & FLAG_E and not ans.flags & FLAG_R
    failed = ans.find(AvpCode.FAILED_AVP)
    assert failed is not None and decode_avps(failed.data) == [bad]
    msg = ans.find(AvpCode.ERROR_MESSAGE)
    assert msg is not None and msg.flags == 0


def test_permanent_failure_has_no_e_bit() -> None:
    exc = RemoteProtocolError("missing", ResultCode.DIAMETER_MISSING_AVP)
    assert not error_answer(ccr(), exc, ME).flags & FLAG_E


def test_answer_from_header_only_for_requests() -> None:
    wire = ccr(hbh=5).encode()
    exc = FramingError("bad", ResultCode.DIAMETER_UNSUPPORTED_VERSION, wire[:20])
    ans = answer_from_header(wire[:20], exc, ME)
    assert ans is not None and ans.hop_by_hop == 5 and ans.command_code == 272
    assert ans.find(AvpCode.SESSION_ID) is None
    answer_wire = answer(ccr(), 2001, ME).encode()
    assert answer_from_header(answer_wire[:20], exc, ME) is None


def test_request_builder() -> None:
    req = request(280, 0, 1, 2, list(ME.origin_avps))
    assert req.flags == FLAG_R and req.is_request
    assert request(272, 4, 1, 2, [], proxiable=True).flags == FLAG_R | FLAG_P
