"""Pre-rendered requests parse with the project's parser; the hot-path scan agrees with it."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from loadtest.sipmsg import (
    BRANCH_LEN,
    MAX_RETRY_AFTER_S,
    BranchFactory,
    Identity,
    UaTemplates,
    _in_dialog,
    dialog_parts,
    render_ack,
    render_in_dialog,
    render_invite,
    retry_after,
    scan_response,
)
from protocols.sip.builders import make_response
from protocols.sip.dialog import Dialog
from protocols.sip.message import Request, Response
from protocols.sip.parser import parse_message
from protocols.sip.serializer import serialize

UDP = Identity(b"alice", b"example.com", b"UDP", b"127.0.0.1:40000", b"sip:alice@127.0.0.1:40000")
WS = Identity(b"bob", b"example.com", b"WS", b"st00001.invalid",
              b"sip:bob@st00001.invalid;transport=ws")


def _req(data: bytes) -> Request:
    msg = parse_message(data)
    assert isinstance(msg, Request)
    return msg


def test_branches_are_unique_fixed_length_and_rfc3261_cookies() -> None:
    f = BranchFactory()
    seen = {f() for _ in range(10_000)}
    assert len(seen) == 10_000
    assert all(len(b) == BRANCH_LEN and b.startswith(b"z9hG4bK") for b in seen)
    assert BranchFactory()() not in seen  # another run: another run id


def test_register_template_parses_and_carries_the_registration() -> None:
    for ident in (UDP, WS):
        tpl = UaTemplates(ident, b"call-1@storm", b"ftag", 3600)
        br = BranchFactory()()
        req = _req(tpl.register(br, 7))
        assert req.method == "REGISTER" and str(req.uri) == "sip:example.com"
        assert req.vias[0].branch == br.decode()
        assert req.vias[0].transport == ident.via_transport.decode()
        aor = "sip:" + ident.user.decode() + "@example.com"
        assert str(req.to.uri) == str(req.from_.uri) == aor
        assert req.from_.tag == "ftag" and req.to.tag is None
        assert req.call_id == "call-1@storm" and (req.cseq.seq, req.cseq.method) == (7, "REGISTER")
        assert str(req.contacts[0].uri) == ident.contact.decode()
        assert req.expires == 3600 and req.max_forwards == 70


def test_options_invite_ack_bye_parse() -> None:
    tpl = UaTemplates(UDP, b"c@s", b"ft", 60)
    req = _req(tpl.options_request(b"z9hG4bKstaaaaaaaa0000000001", b"ping-1@storm"))
    assert req.method == "OPTIONS" and req.call_id == "ping-1@storm" and req.cseq.seq == 1
    inv = _req(render_invite(UDP, b"z9hG4bKx1", b"sip:bob@example.com",
                             b"<sip:bob@example.com>", b"call@storm", b"tag1"))
    assert inv.method == "INVITE" and inv.content_type == "application/sdp" and inv.body
    assert str(inv.to.uri) == "sip:bob@example.com" and inv.to.tag is None
    assert inv.cseq.seq == 1 and inv.from_.tag == "tag1" and inv.call_id == "call@storm"
    # §17.1.1.3: the ACK of a non-2xx goes on the INVITE's branch and Request-URI, no Route.
    ack = _req(render_ack(UDP, b"z9hG4bKx1", b"sip:bob@example.com",
                          b"<sip:bob@example.com>;tag=tt", b"call@storm", b"tag1"))
    assert ack.method == "ACK" and ack.to.tag == "tt" and (ack.cseq.seq, ack.cseq.method) == (
        1, "ACK")
    assert str(ack.uri) == "sip:bob@example.com" and ack.routes == []
    assert ack.vias[0].branch == "z9hG4bKx1"


def _dialog(record_routes: str) -> Dialog:
    """The dialog a 2xx with these Record-Route values gives the caller of render_invite."""
    inv = _req(render_invite(UDP, b"z9hG4bKx1", b"sip:bob@example.com",
                             b"<sip:bob@example.com>", b"call@storm", b"tag1"))
    ok = make_response(inv, 200, to_tag="tt")
    ok.contacts = [_req(render_invite(WS, b"z9hG4bKx9", b"sip:x@y", b"<sip:x@y>", b"c",
                                      b"t")).contacts[0]]
    wire = serialize(ok).replace(b"\r\n\r\n", b"\r\n" + record_routes.encode() + b"\r\n\r\n")
    resp = parse_message(wire)
    assert isinstance(resp, Response)
    return Dialog.as_uac(inv, resp)


def test_in_dialog_requests_take_uri_and_route_from_the_dialog_model() -> None:
    d = _dialog("Record-Route: <sip:p2.example.com;lr>, <sip:p1.example.com;lr>")
    wire = render_in_dialog(b"BYE", dialog_parts(UDP, d), b"z9hG4bKx3", 2)
    bye = _req(wire)
    assert bye.method == "BYE" and (bye.cseq.seq, bye.cseq.method) == (2, "BYE")
    # §12.1.2: Record-Route reversed; the remote target (the 2xx's Contact) is the URI.
    assert str(bye.uri) == "sip:bob@st00001.invalid;transport=ws"
    assert [str(r) for r in bye.routes] == ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
    assert bye.to.tag == "tt" and bye.from_.tag == "tag1" and bye.call_id == "call@storm"
    # The parts rendered once per dialog give the bytes the generic template gives.
    assert wire == _in_dialog(b"BYE", UDP, b"z9hG4bKx3", b"sip:bob@st00001.invalid;transport=ws",
                              [b"<sip:p1.example.com;lr>", b"<sip:p2.example.com;lr>"],
                              b"<sip:bob@example.com>;tag=tt", b"call@storm", b"tag1", 2)
    # A strict router (RFC 2543, no lr) first: its URI is the Request-URI, the target last.
    d = _dialog("Record-Route: <sip:p2.example.com;lr>, <sip:strict.example.com>")
    ack = _req(render_in_dialog(b"ACK", dialog_parts(UDP, d), b"z9hG4bKx4", 1))
    assert str(ack.uri) == "sip:strict.example.com"
    assert [str(r.uri) for r in ack.routes] == ["sip:p2.example.com;lr",
                                                "sip:bob@st00001.invalid;transport=ws"]


def test_scan_response_agrees_with_the_parser() -> None:
    br = BranchFactory()()
    req = _req(UaTemplates(UDP, b"c@s", b"ft", 60).register(br, 1))
    for status in (100, 180, 200, 404, 503, 699):
        wire = serialize(make_response(req, status, to_tag="x"))
        assert scan_response(wire) == (status, br)
    assert scan_response(UaTemplates(UDP, b"c@s", b"ft", 60).register(br, 1)) is None
    other = serialize(make_response(_req(render_invite(
        UDP, b"z9hG4bKforeign", b"sip:b@x", b"<sip:b@x>", b"c", b"t")), 200))
    assert scan_response(other) is None  # not one of our branches
    assert scan_response(b"SIP/2.0 2x0 OK\r\nVia: x;branch=" + br + b"\r\n\r\n") is None


@given(st.binary(max_size=400))
def test_scan_response_never_raises(data: bytes) -> None:
    r = scan_response(b"SIP/2.0 " + data)
    assert r is None or 0 <= r[0] <= 999


def test_retry_after_values() -> None:
    assert retry_after(["120"]) == 120.0
    assert retry_after(["18000;duration=3600"]) == MAX_RETRY_AFTER_S
    assert retry_after([" 5 (I'm in a meeting)"]) == 5.0
    assert retry_after(["soon", "7"]) == 7.0
    assert retry_after([]) is None
