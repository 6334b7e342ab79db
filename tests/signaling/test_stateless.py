"""signaling/stateless.py: answers written straight to bytes are byte-identical to
``serialize(make_response(...))`` for every To form, Via list and extra header set, and carry
the same To tag for a retransmission (RFC 3261 §8.2.6.2)."""

from __future__ import annotations

import pytest

from protocols.sip.builders import make_response
from protocols.sip.message import CSeq, NameAddr, Request, Response, SipURI, Via
from protocols.sip.parser import parse_message
from protocols.sip.serializer import serialize
from signaling.sipcore import Peer
from signaling.stateless import stateless_answer, stateless_tag, stateless_tail
from tests.signaling.inproc import UdpPeer, running_server

_TO_FORMS = [
    "<sip:bob@example.com>",
    '"Bob \\"B\\"" <sip:bob@example.com;user=phone>',
    "sip:bob@example.com",
    "Bob <sip:bob@example.com>;tag=in-dialog",
    "<sip:bob@example.com>;foo=bar",
    "<sip:bob@example.com>;TAG=upper",
    "<sip:bob@example.com>;tag",
    "<sip:bob@example.com;tag=in-uri>",
]
_EXTRAS: list[list[tuple[str, str]]] = [
    [], [("Retry-After", "7")], [("Allow", "INVITE, ACK"), ("Accept", "application/sdp")],
    [("Unsupported", "foo, bar")],
]


def _parsed(to: str, *, vias: str = "Via: SIP/2.0/UDP 10.9.9.9:5062;branch=z9hG4bKv1",
            from_: bytes = b"From: <sip:alice@example.com>;tag=a1") -> Request:
    data = (b"OPTIONS sip:example.com SIP/2.0\r\n" + vias.encode() + b"\r\nMax-Forwards: 70\r\n"
            + from_ + b"\r\nTo: " + to.encode() + b"\r\nCall-ID: eq-1\r\nCSeq: 7 OPTIONS\r\n"
            b"Route: <sip:proxy.example.com;lr>\r\nContact: <sip:alice@10.9.9.9>\r\n"
            b"Require: path\r\nSubject: kept out of answers\r\nContent-Length: 0\r\n\r\n")
    msg = parse_message(data)
    assert isinstance(msg, Request)
    return msg


def _requests() -> list[Request]:
    reqs = [_parsed(to) for to in _TO_FORMS]
    reqs.append(_parsed("<sip:bob@example.com>", vias=(
        "v: SIP/2.0/UDP 10.9.9.9:5062;branch=z9hG4bKv2;rport, SIP/2.0/TCP proxy.example.com"
        ";branch=z9hG4bKv3;received=10.0.0.7\r\nVia: SIP/2.0/UDP [2001:db8::1]:5060"
        ";branch=z9hG4bKv4")))
    reqs.append(_parsed("<sip:bob@example.com>", from_=b'From: "\xff\xfe" <sip:a@b>;tag=x'))
    # A Via rebuilt by the receive path (received + rport) has no wire text to copy.
    stamped = _parsed("<sip:bob@example.com>")
    stamped.vias[0] = stamped.vias[0].with_param("received", "192.0.2.1")
    reqs.append(stamped)
    # Built in code, not parsed: nothing has a raw text to copy.
    reqs.append(Request(method="OPTIONS", uri=SipURI("sip", "example.com"),
                        vias=[Via("UDP", "10.1.1.1", 5060, {"branch": "z9hG4bKc"})],
                        from_=NameAddr(SipURI("sip", "example.com", user="a"), "A",
                                       {"tag": "f"}),
                        to=NameAddr(SipURI("sip", "example.com", user="b")), call_id="c",
                        cseq=CSeq(1, "OPTIONS")))
    return reqs


def test_stateless_answer_is_byte_identical_to_the_general_builder() -> None:
    for req in _requests():
        for status, reason in ((200, None), (404, None), (420, None), (481, None),
                               (503, None), (603, "Go Away"), (699, None), (400, "")):
            for extra in _EXTRAS:
                general = serialize(make_response(req, status, reason,
                                                  to_tag=stateless_tag(req),
                                                  extra=extra))
                fast = stateless_answer(req, status, reason, stateless_tail(extra))
                assert fast == general, (str(req.to), status, extra)


def test_a_100_written_as_bytes_is_byte_identical_to_the_general_builder() -> None:
    # The 100 to every INVITE (SipCore._trying) takes the byte path: no To tag, and the
    # request's Timestamp copied (§8.2.6.1), as make_response writes it.
    timed = _parsed("<sip:bob@example.com>")
    timed.extra.append(("Timestamp", "54.0 0.1"))
    for req in [*_requests(), timed]:
        ts = req.header("Timestamp")
        tail = stateless_tail([] if ts is None else [("Timestamp", ts)])
        assert stateless_answer(req, 100, None, tail) == serialize(make_response(req, 100)), \
            str(req.to)


def test_stateless_answer_tag_is_stable_across_retransmissions() -> None:
    # §8.2.6.2: a retransmission must get the same To tag, a different request another one.
    first = stateless_answer(_parsed("<sip:bob@example.com>"), 200, None, stateless_tail([]))
    again = stateless_answer(_parsed("<sip:bob@example.com>"), 200, None, stateless_tail([]))
    other = stateless_answer(_parsed("<sip:bob@example.com>", vias="Via: SIP/2.0/UDP "
                                     "10.9.9.9:5062;branch=z9hG4bKother"),
                             200, None, stateless_tail([]))
    tag = parse_message(first).to.tag
    assert tag and tag == parse_message(again).to.tag
    assert parse_message(other).to.tag not in (None, tag)


async def test_stateless_100_keeps_the_general_builder() -> None:
    # §8.2.6.1: a 100 carries no To tag and copies Timestamp; the fast path is not for it.
    async with running_server() as srv:
        assert srv.udp_address is not None
        peer = await UdpPeer.open()
        srv.core.send_stateless(_parsed("<sip:bob@example.com>"),
                                Peer("udp", "127.0.0.1", peer.port), 100)
        trying = await peer.recv()
        assert isinstance(trying, Response) and trying.status == 100
        assert trying.to.tag is None
        assert srv.core.c_resp_out.get("OPTIONS", "1xx", "udp") == 1
        peer.close()


def test_stateless_tag_reads_parameters_in_any_case() -> None:
    # §7.3.1: parameter names are case-insensitive, so ;BRANCH= and ;TAG= name the same
    # transaction as ;branch= and ;tag=, and must get the same tag; a branchless RFC 2543 Via
    # still gets one.
    lower = _parsed("<sip:b@x>")
    upper = _parsed("<sip:b@x>", vias="Via: SIP/2.0/UDP 10.9.9.9:5062;BRANCH=z9hG4bKv1",
                    from_=b"From: <sip:alice@example.com>;TAG=a1")
    assert stateless_tag(upper) == stateless_tag(lower)
    other_from = _parsed("<sip:b@x>", from_=b"From: <sip:alice@example.com>;tag=a2")
    assert stateless_tag(other_from) != stateless_tag(lower)
    branchless = _parsed("<sip:b@x>", vias="Via: SIP/2.0/UDP 10.9.9.9:5062")
    assert stateless_tag(branchless) != stateless_tag(lower)


@pytest.mark.parametrize(("vias", "from_"), [
    ("Via: SIP/2.0/UDP 10.9.9.9:5062;branch=z9hG4bKv1", b"From: <sip:a@example.com>;tag=a1"),
    ("Via: SIP/2.0/UDP 10.9.9.9:5062;BRANCH=z9hG4bKv1", b"From: <sip:a@example.com>;TaG=a1"),
    ("Via: SIP/2.0/UDP 10.9.9.9:5062", b"From: <sip:a@example.com>"),
    ("Via: SIP/2.0/UDP 10.9.9.9:5062;branch", b"From: <sip:a@example.com>;tag"),
])
def test_stateless_tag_is_the_hash_of_what_the_properties_read(vias: str, from_: bytes) -> None:
    # stateless_tag reads Via.branch and NameAddr.tag spelled out (a hot path): pinned here
    # to what the properties give, so the two cannot drift apart.
    req = _parsed("<sip:b@x>", vias=vias, from_=from_)
    expected = hash((req.call_id, req.from_.tag, req.vias[0].branch or "")) & 0xFFFFFFFF
    assert stateless_tag(req) == format(expected, "x")
