"""Tests of protocols.sip.builders: responses to requests and stateless error answers."""

from __future__ import annotations

import pytest

from protocols.sip.builders import REASONS, error_response, make_response, reason_phrase
from protocols.sip.errors import RemoteProtocolError
from protocols.sip.message import Request, Response, SipURI
from protocols.sip.parser import MAX_MESSAGE_SIZE, parse_message
from protocols.sip.serializer import serialize

from .conftest import torture

INVITE = (
    b"INVITE sip:bob@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP p1.example.com;branch=z9hG4bKp1\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKu1;received=192.0.2.1\r\n"
    b"Max-Forwards: 69\r\nRecord-Route: <sip:p1.example.com;lr>\r\n"
    b"From: Alice <sip:alice@example.com>;tag=a1\r\nTo: Bob <sip:bob@example.com>\r\n"
    b"Call-ID: c1@pc33\r\nCSeq: 101 INVITE\r\nTimestamp: 54.2\r\n"
    b"Contact: <sip:alice@192.0.2.1>\r\nContent-Length: 0\r\n\r\n"
)


def invite() -> Request:
    m = parse_message(INVITE)
    assert isinstance(m, Request)
    return m


def rejected(data: bytes) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as info:
        parse_message(data)
    return info.value


# --- make_response --------------------------------------------------------------------------------


def test_make_response_copies_what_8_2_6_2_requires() -> None:
    req = invite()
    r = make_response(req, 200, to_tag="b9")
    assert (r.status, r.reason) == (200, "OK")
    assert r.vias == req.vias and r.vias is not req.vias  # a list of its own
    assert (r.from_, r.call_id, r.cseq) == (req.from_, req.call_id, req.cseq)
    assert r.to.tag == "b9" and r.to.uri == req.to.uri and r.to.display == "Bob"
    assert req.to.tag is None  # the request is untouched
    assert r.record_routes == [] and r.contacts == [] and r.max_forwards is None
    wire = serialize(r)
    assert b"To: Bob <sip:bob@example.com>;tag=b9\r\n" in wire
    assert parse_message(wire) == r


def test_make_response_keeps_an_existing_tag_and_never_tags_100() -> None:
    req = invite()
    req.to = req.to.with_param("tag", "old")
    assert make_response(req, 486, to_tag="new").to.tag == "old"
    trying = make_response(invite(), 100, to_tag="x")
    assert trying.to.tag is None and trying.reason == "Trying"
    assert trying.extra == [("Timestamp", "54.2")]  # §8.2.6.1
    assert make_response(invite(), 180, to_tag="x").extra == []


def test_make_response_reason_and_extra() -> None:
    r = make_response(invite(), 503, "Overloaded", extra=[("Retry-After", "5")])
    assert (r.reason, r.extra) == ("Overloaded", [("Retry-After", "5")])
    assert r.header("retry-after") == "5"


@pytest.mark.parametrize(
    ("status", "phrase"),
    [(200, "OK"), (404, "Not Found"), (513, "Message Too Large"), (299, "OK"),
     (499, "Bad Request"), (555, "Server Internal Error"), (699, "Busy Everywhere"),
     (799, "Unknown")],
)
def test_reason_phrase(status: int, phrase: str) -> None:
    assert reason_phrase(status) == phrase


def test_reasons_table() -> None:
    assert all(100 <= k <= 699 and v for k, v in REASONS.items())


# --- error_response -------------------------------------------------------------------------------


def answer(err: RemoteProtocolError, tag: str = "t1") -> Response:
    wire = error_response(err, tag)
    assert wire is not None
    r = parse_message(wire)
    assert isinstance(r, Response)
    return r


def test_error_response_copies_via_from_to_call_id_cseq_and_tags_to() -> None:
    err = rejected(torture("mismatch01"))
    r = answer(err, "z9")
    assert (r.status, r.reason) == (400, err.reason)
    assert [v.host for v in r.vias] == ["host.example.com"]
    assert r.from_.tag == "34525" and r.to.tag == "z9"
    assert (r.call_id, r.cseq.seq, r.cseq.method) == ("mismatch01.dj0234sxdfl3", 8, "INVITE")
    assert r.body == b"" and r.extra == []


def test_error_response_keeps_every_via_in_order() -> None:
    data = INVITE.replace(b"CSeq: 101 INVITE", b"CSeq: 101 BYE")
    r = answer(rejected(data))
    assert [v.branch for v in r.vias] == ["z9hG4bKp1", "z9hG4bKu1"]
    assert r.vias[1].params["received"] == "192.0.2.1"


def test_error_response_does_not_retag_a_tagged_to() -> None:
    data = INVITE.replace(b"To: Bob <sip:bob@example.com>", b"To: <sip:b@x>;TAG=keep")
    r = answer(rejected(data.replace(b"Max-Forwards: 69", b"Max-Forwards: 700")))
    assert r.to.params == {"TAG": "keep"}


def test_error_response_tags_a_to_whose_uri_has_a_tag_parameter() -> None:
    data = INVITE.replace(b"To: Bob <sip:bob@example.com>", b"To: <sip:b@x;tag=uri-param>")
    r = answer(rejected(data.replace(b"Max-Forwards: 69", b"Max-Forwards: 700")), "hdr")
    assert r.to.tag == "hdr" and isinstance(r.to.uri, SipURI)
    assert r.to.uri.params == {"tag": "uri-param"}
    data = INVITE.replace(b"To: Bob <sip:bob@example.com>", b"To: sip:b@x;tag=addr-spec")
    r = answer(rejected(data.replace(b"Max-Forwards: 69", b"Max-Forwards: 700")), "hdr")
    assert r.to.tag == "addr-spec"


def test_error_response_normalizes_compact_names_and_answers_505() -> None:
    r = answer(rejected(torture("badvers")))
    assert (r.status, r.reason) == (505, "Version Not Supported")
    data = (b"OPTIONS sip:a@b SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9hG4bKc\r\nf: <sip:a@b>;tag=1\r\n"
            b"t: <sip:b@b>\r\ni: cid\r\nCSeq: 1 INVITE\r\n\r\n")
    r = answer(rejected(data))
    assert (r.vias[0].host, r.from_.tag, r.call_id, r.to.tag) == ("h", "1", "cid", "t1")


def test_error_response_answers_with_the_first_of_duplicated_headers() -> None:
    r = answer(rejected(torture("multi01")))
    assert r.call_id == "multi01.98asdh@192.0.2.1" and r.cseq.seq == 5
    assert r.from_.tag == "3413415"


def test_error_response_carries_extra_headers() -> None:
    err = rejected(torture("mismatch01"))
    err.extra_headers = [("Unsupported", "foo")]
    assert answer(err).header("Unsupported") == "foo"


def test_error_response_to_an_oversized_request_is_513() -> None:
    big = INVITE.replace(b"Content-Length: 0\r\n\r\n", b"\r\n") + b"x" * MAX_MESSAGE_SIZE
    r = answer(rejected(big))
    assert (r.status, r.call_id) == (513, "c1@pc33")


def test_error_response_discards() -> None:
    # No Via: nowhere to send the answer (§18.2.2).
    no_via = b"OPTIONS sip:a@b SIP/2.0\r\nCSeq: 1 OPTIONS\r\nCall-ID: x\r\n\r\n"
    assert error_response(rejected(no_via), "t") is None
    # Responses are never answered (§18.1.2), nor are discards (ncl) or unknown kinds.
    for name in ("bigcode", "scalarlg", "ncl"):
        assert error_response(rejected(torture(name)), "t") is None
    assert error_response(RemoteProtocolError("x", 400), "t") is None  # is_request unknown
    assert error_response(RemoteProtocolError("x", 400, is_request=False), "t") is None


def test_error_response_skips_values_with_line_breaks() -> None:
    err = RemoteProtocolError("Bad", 400, is_request=True, headers=[
        ("Via", "SIP/2.0/UDP h;branch=z9hG4bK1"), ("From", "<sip:a@b>;tag=1\r\nX: injected"),
        ("To", "<sip:b@b>"), ("Call-ID", "c"), ("CSeq", "1 OPTIONS")])
    wire = error_response(err, "t")
    assert wire is not None and b"injected" not in wire and b"From:" not in wire
