"""Tests of protocols.sip.errors: who is at fault, and the answer each error carries."""

from __future__ import annotations

import pytest

from protocols.sip.errors import (
    LocalProtocolError,
    RemoteProtocolError,
    SipError,
    TransactionError,
)
from protocols.sip.parser import parse_message


def test_remote_error_defaults_to_400() -> None:
    err = RemoteProtocolError("Malformed thing")
    assert (err.status, err.reason, err.is_request) == (400, "Malformed thing", None)
    assert err.headers == [] and err.extra_headers == []
    assert str(err) == "400 Malformed thing"


def test_remote_error_with_an_answer_or_a_discard() -> None:
    err = RemoteProtocolError("Bad Extension", 420, is_request=True,
                              headers=[("Via", "SIP/2.0/UDP h")],
                              extra_headers=[("Unsupported", "foo")])
    assert (err.status, err.is_request) == (420, True)
    assert err.headers == [("Via", "SIP/2.0/UDP h")]
    assert err.extra_headers == [("Unsupported", "foo")]
    discard = RemoteProtocolError("garbage", None)
    assert discard.status is None and str(discard) == "discard: garbage"


def test_lists_are_not_shared_between_errors() -> None:
    a, b = RemoteProtocolError("a"), RemoteProtocolError("b")
    a.headers.append(("X", "1"))
    assert b.headers == []


def test_hierarchy() -> None:
    assert issubclass(RemoteProtocolError, SipError) and issubclass(LocalProtocolError, SipError)
    assert issubclass(TransactionError, LocalProtocolError)
    assert not issubclass(RemoteProtocolError, LocalProtocolError)
    with pytest.raises(SipError):
        raise TransactionError("no such input in this state")


def test_parser_errors_keep_str_and_answer_in_step() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_message(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h:99999\r\n\r\n")
    err = info.value
    assert err.status is None and str(err) == f"discard: {err.reason}"
    assert "Via" in err.reason
