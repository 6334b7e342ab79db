"""Dialog state (RFC 3261 §12, §13.2.2.4, §15), built from parsed wire messages."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.sip.builders import make_response
from protocols.sip.dialog import (
    MAX_CSEQ,
    Dialog,
    DialogError,
    DialogId,
    DialogInput,
    DialogState,
)
from protocols.sip.errors import RemoteProtocolError
from protocols.sip.message import NameAddr, Request, Response, SipURI, Via
from protocols.sip.parser import parse_message
from protocols.sip.serializer import serialize

INVITE = (
    "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP p1.example.com;branch=z9hG4bKp1\r\n"
    "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKuac\r\n"
    "Max-Forwards: 69\r\n"
    "Record-Route: <sip:p2.example.com;lr>\r\n"
    "Record-Route: <sip:p1.example.com;lr>\r\n"
    "To: Bob <sip:bob@biloxi.example.com>\r\n"
    "From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
    "Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    "CSeq: 314159 INVITE\r\n"
    "Contact: <sip:alice@pc33.atlanta.example.com>\r\n"
    "Content-Length: 0\r\n\r\n"
)


def parse_request(text: str) -> Request:
    msg = parse_message(text.encode())
    assert isinstance(msg, Request)
    return msg


def reply(req: Request, status: int, *, tag: str | None = "a6c85cf", contact: str | None =
          "sip:bob@192.0.2.4", record_route: list[str] | None = None) -> Response:
    """A response as the UAS would send it, parsed back from its wire form."""
    resp = make_response(req, status, to_tag=tag)
    resp.record_routes = list(req.record_routes) if record_route is None else [
        NameAddr(SipURI("sip", h, params={"lr": None})) for h in record_route]
    if contact is not None:
        resp.contacts = [NameAddr(SipURI("sip", contact.split("@")[1], user="bob"))]
    parsed = parse_message(serialize(resp))
    assert isinstance(parsed, Response)
    return parsed


def uac_dialog(status: int = 200) -> tuple[Request, Dialog]:
    """A UAC's dialog from ``status``; from a 2xx, confirmed by the ACK it sent."""
    req = parse_request(INVITE)
    dlg = Dialog.as_uac(req, reply(req, status))
    if status >= 200:
        dlg.on_ack()
    return req, dlg


def hosts(routes: list[NameAddr]) -> list[str]:
    return [r.uri.host for r in routes if isinstance(r.uri, SipURI)]


# ---------------------------------------------------------------------------------------------
# Creation (§12.1.1, §12.1.2).


def test_uac_dialog_from_2xx_waits_for_its_ack() -> None:
    req = parse_request(INVITE)
    dlg = Dialog.as_uac(req, reply(req, 200))
    assert dlg.state is DialogState.WAIT_ACK and dlg.is_uac  # §13.2.2.4: the ACK is due
    assert dlg.on_ack() is DialogState.CONFIRMED
    assert dlg.id == DialogId("a84b4c76e66710@pc33.atlanta.example.com", "1928301774", "a6c85cf")
    # §12.1.2: Record-Route reversed.
    assert hosts(dlg.route_set) == ["p1.example.com", "p2.example.com"]
    assert str(dlg.remote_target) == "sip:bob@192.0.2.4"
    assert (dlg.local_seq, dlg.remote_seq) == (314159, None)
    assert dlg.local.tag == "1928301774" and dlg.remote.tag == "a6c85cf"
    assert not dlg.secure


def test_uac_dialog_from_the_parts_of_a_request_equals_the_one_from_the_request() -> None:
    # A UA that renders its requests from templates (the injector) gives the parts instead.
    req = parse_request(INVITE)
    for status in (180, 200):
        resp = reply(req, status)
        whole = Dialog.as_uac(req, resp)
        parts = Dialog.as_uac_of(req.from_, req.uri, req.cseq.seq, resp)
        assert [getattr(parts, a) for a in Dialog.__slots__] == [
            getattr(whole, a) for a in Dialog.__slots__]
    no_contact = reply(req, 180, contact=None)
    assert Dialog.as_uac_of(req.from_, req.uri, 1, no_contact).remote_target is req.uri
    with pytest.raises(DialogError):
        Dialog.as_uac_of(req.from_, req.uri, 1, reply(req, 486))


def test_uas_dialog_from_request_and_our_response() -> None:
    req = parse_request(INVITE)
    dlg = Dialog.as_uas(req, make_response(req, 180, to_tag="uas-tag"))
    assert dlg.state is DialogState.EARLY and not dlg.is_uac
    assert dlg.id == DialogId(req.call_id, "uas-tag", "1928301774")
    # §12.1.1: Record-Route in order.
    assert hosts(dlg.route_set) == ["p2.example.com", "p1.example.com"]
    assert str(dlg.remote_target) == "sip:alice@pc33.atlanta.example.com"
    assert (dlg.local_seq, dlg.remote_seq) == (None, 314159)
    # The UAC sees the same dialog with the tags swapped.
    uac_side = DialogId.of_incoming_response(make_response(req, 180, to_tag="uas-tag"))
    assert uac_side == DialogId(dlg.id.call_id, dlg.id.remote_tag, dlg.id.local_tag)


def test_id_of_incoming_request_matches_uas_dialog() -> None:
    req = parse_request(INVITE)
    dlg = Dialog.as_uas(req, make_response(req, 200, to_tag="u"))
    _, uac = uac_dialog()
    bye = uac.build_request("BYE", via=VIA)
    bye.to = bye.to.with_param("tag", "u")
    assert DialogId.of_incoming_request(bye) == dlg.id
    assert "Dialog WAIT_ACK" in repr(dlg)


def test_secure_flag_needs_tls_and_sips() -> None:
    req = parse_request(INVITE.replace("INVITE sip:bob", "INVITE sips:bob"))
    assert Dialog.as_uac(req, reply(req, 200), over_tls=True).secure
    assert not Dialog.as_uac(req, reply(req, 200), over_tls=False).secure
    plain = parse_request(INVITE)
    assert not Dialog.as_uas(plain, make_response(plain, 200, to_tag="t"), over_tls=True).secure
    assert Dialog.as_uas(req, make_response(req, 200, to_tag="t"), over_tls=True).secure


@pytest.mark.parametrize("status", [100, 300, 486, 603])
def test_no_dialog_from_100_or_final_failures(status: int) -> None:
    req = parse_request(INVITE)
    with pytest.raises(DialogError):
        Dialog.as_uac(req, reply(req, status))
    with pytest.raises(DialogError):
        Dialog.as_uas(req, make_response(req, status, to_tag="t"))


def test_no_early_dialog_without_to_tag() -> None:
    req = parse_request(INVITE)
    with pytest.raises(DialogError):
        Dialog.as_uac(req, reply(req, 180, tag=None))
    with pytest.raises(DialogError):
        Dialog.as_uas(req, make_response(req, 200))
    # An RFC 2543 2xx without tag still makes a dialog, with an empty remote tag.
    assert Dialog.as_uac(req, reply(req, 200, tag=None)).id.remote_tag == ""


def test_uas_needs_contact() -> None:
    req = parse_request(INVITE.replace("Contact: <sip:alice@pc33.atlanta.example.com>\r\n", ""))
    with pytest.raises(RemoteProtocolError) as err:
        Dialog.as_uas(req, make_response(req, 200, to_tag="t"))
    assert err.value.status == 400


def test_provisional_without_contact_targets_request_uri() -> None:
    req = parse_request(INVITE)
    dlg = Dialog.as_uac(req, reply(req, 180, contact=None))
    assert dlg.remote_target == req.uri


# ---------------------------------------------------------------------------------------------
# Transitions.

S, I = DialogState, DialogInput  # noqa: E741 - short names, one row per transition
EXPECTED: dict[tuple[DialogState, DialogInput], DialogState] = {
    (S.INITIAL, I.PROVISIONAL): S.EARLY,
    (S.INITIAL, I.SUCCESS): S.WAIT_ACK,
    (S.INITIAL, I.FAILURE): S.TERMINATED,
    (S.INITIAL, I.TIMEOUT): S.TERMINATED,
    (S.EARLY, I.PROVISIONAL): S.EARLY,
    (S.EARLY, I.SUCCESS): S.WAIT_ACK,
    (S.EARLY, I.FAILURE): S.TERMINATED,
    (S.EARLY, I.TARGET_REFRESH): S.EARLY,
    (S.EARLY, I.BYE): S.TERMINATED,
    (S.EARLY, I.GONE): S.TERMINATED,
    (S.EARLY, I.TIMEOUT): S.TERMINATED,
    (S.WAIT_ACK, I.PROVISIONAL): S.WAIT_ACK,
    (S.WAIT_ACK, I.SUCCESS): S.WAIT_ACK,
    (S.WAIT_ACK, I.FAILURE): S.WAIT_ACK,
    (S.WAIT_ACK, I.ACK): S.CONFIRMED,
    (S.WAIT_ACK, I.BYE): S.TERMINATED,
    (S.WAIT_ACK, I.GONE): S.TERMINATED,
    (S.WAIT_ACK, I.TIMEOUT): S.TERMINATED,
    (S.CONFIRMED, I.PROVISIONAL): S.CONFIRMED,
    (S.CONFIRMED, I.SUCCESS): S.CONFIRMED,
    (S.CONFIRMED, I.FAILURE): S.CONFIRMED,
    (S.CONFIRMED, I.ACK): S.CONFIRMED,
    (S.CONFIRMED, I.TARGET_REFRESH): S.CONFIRMED,
    (S.CONFIRMED, I.BYE): S.TERMINATED,
    (S.CONFIRMED, I.GONE): S.TERMINATED,
    (S.CONFIRMED, I.TIMEOUT): S.TERMINATED,
    **{(S.TERMINATED, i): S.TERMINATED for i in DialogInput if i is not I.TARGET_REFRESH},
}


def test_table_is_the_documented_one() -> None:
    assert {k: v[1] for k, v in Dialog.TABLE.items()} == EXPECTED


def dialog_in(state: DialogState) -> Dialog:
    req = parse_request(INVITE)
    dlg = Dialog.as_uac(req, reply(req, 180 if state <= DialogState.EARLY else 200))
    if state is DialogState.INITIAL:
        dlg.state = state  # a proxy's record starts there; no UA dialog does
    if state >= DialogState.CONFIRMED:
        dlg.on_ack()
    if state is DialogState.TERMINATED:
        dlg.on_bye()
    assert dlg.state is state
    return dlg


def test_every_state_input_pair() -> None:
    for state in DialogState:
        for inp in DialogInput:
            dlg = dialog_in(state)
            if (state, inp) in EXPECTED:
                assert dlg.handle(inp) is EXPECTED[(state, inp)]
                assert dlg.state is EXPECTED[(state, inp)]
            else:
                with pytest.raises(DialogError):
                    dlg.handle(inp)
                assert dlg.state is state


def test_early_dialog_confirmed_recomputes_routes_and_target() -> None:
    req = parse_request(INVITE)
    dlg = Dialog.as_uac(req, reply(req, 180, record_route=["early.example.com"]))
    assert hosts(dlg.route_set) == ["early.example.com"]
    dlg.on_response(reply(req, 183, contact="sip:bob@192.0.2.9"))
    assert str(dlg.remote_target) == "sip:bob@192.0.2.9"
    ok = reply(req, 200, record_route=["a.example.com", "b.example.com"])
    assert dlg.on_response(ok) is DialogState.WAIT_ACK
    # §13.2.2.4: the 2xx recomputes the route set; reversed for the UAC.
    assert hosts(dlg.route_set) == ["b.example.com", "a.example.com"]
    assert str(dlg.remote_target) == "sip:bob@192.0.2.4"
    # Once confirmed the route set never changes (§12.2), even if a 2xx says otherwise.
    dlg.on_response(reply(req, 200, record_route=["x.example.com"]))
    assert hosts(dlg.route_set) == ["b.example.com", "a.example.com"]


def test_early_dialog_ends_on_failure() -> None:
    req = parse_request(INVITE)
    dlg = Dialog.as_uac(req, reply(req, 180))
    assert dlg.on_response(reply(req, 486)) is DialogState.TERMINATED
    assert dlg.terminated
    assert dlg.on_response(reply(req, 200)) is DialogState.TERMINATED  # a late 2xx: absorbed


def test_uas_side_transitions() -> None:
    req = parse_request(INVITE)
    dlg = Dialog.as_uas(req, make_response(req, 180, to_tag="u"))
    assert dlg.on_response_sent(make_response(req, 200, to_tag="u")) is DialogState.WAIT_ACK
    assert dlg.on_ack() is DialogState.CONFIRMED  # §13.3.1.4: the 2xx's retransmissions stop
    assert hosts(dlg.route_set) == ["p2.example.com", "p1.example.com"]  # unchanged
    reinvite = parse_request(
        INVITE.replace("CSeq: 314159", "CSeq: 314160")
        .replace("Contact: <sip:alice@pc33.atlanta.example.com>",
                 "Contact: <sip:alice@198.51.100.7:5070>"))
    assert dlg.check_remote_cseq(reinvite) is None
    dlg.refresh_target(reinvite)
    assert str(dlg.remote_target) == "sip:alice@198.51.100.7:5070"
    assert dlg.on_bye() is DialogState.TERMINATED


def test_in_dialog_responses() -> None:
    _, dlg = uac_dialog()
    reinvite = dlg.build_request("INVITE", via=Via("UDP", "pc33", None, {"branch": "z9hG4bK2"}),
                                 contact=NameAddr(SipURI("sip", "pc33", user="alice")))
    refreshed = make_response(reinvite, 200)
    refreshed.contacts = [NameAddr(SipURI("sip", "192.0.2.99", user="bob"))]
    refreshed.record_routes = [NameAddr(SipURI("sip", "evil.example.com"))]
    dlg.on_in_dialog_response(refreshed)
    assert str(dlg.remote_target) == "sip:bob@192.0.2.99"
    assert hosts(dlg.route_set) == ["p1.example.com", "p2.example.com"]  # not a route refresh
    info = dlg.build_request("INFO", via=Via("UDP", "pc33", None, {"branch": "z9hG4bK3"}))
    assert dlg.on_in_dialog_response(make_response(info, 200)) is DialogState.CONFIRMED
    assert dlg.on_in_dialog_response(make_response(info, 500)) is DialogState.CONFIRMED
    bye = dlg.build_request("BYE", via=Via("UDP", "pc33", None, {"branch": "z9hG4bK4"}))
    assert dlg.on_in_dialog_response(make_response(bye, 200)) is DialogState.TERMINATED


@pytest.mark.parametrize("status", [408, 481])
def test_408_481_end_the_dialog(status: int) -> None:
    _, dlg = uac_dialog()
    info = dlg.build_request("INFO", via=Via("UDP", "pc33", None, {"branch": "z9hG4bK5"}))
    assert dlg.on_in_dialog_response(make_response(info, status)) is DialogState.TERMINATED


# ---------------------------------------------------------------------------------------------
# CSeq (§12.2.1.1, §12.2.2).


def test_local_cseq_increments() -> None:
    _, dlg = uac_dialog()
    assert dlg.next_local_cseq() == 314160
    assert dlg.next_local_cseq() == 314161
    req = parse_request(INVITE)
    uas = Dialog.as_uas(req, make_response(req, 200, to_tag="u"))
    assert uas.next_local_cseq(initial=7) == 7 and uas.next_local_cseq() == 8
    uas.local_seq = MAX_CSEQ
    with pytest.raises(DialogError):
        uas.next_local_cseq()
    assert uas.local_seq == MAX_CSEQ


def with_cseq(seq: int, method: str = "INFO") -> Request:
    return parse_request(INVITE.replace("INVITE sip:", f"{method} sip:")
                         .replace("CSeq: 314159 INVITE", f"CSeq: {seq} {method}"))


def test_remote_cseq_ordering() -> None:
    _, dlg = uac_dialog()  # UAC: remote sequence number empty
    assert dlg.check_remote_cseq(with_cseq(10)) is None and dlg.remote_seq == 10
    assert dlg.check_remote_cseq(with_cseq(9)) == 500  # out of order
    assert dlg.remote_seq == 10
    assert dlg.check_remote_cseq(with_cseq(10)) is None  # not lower: accepted
    assert dlg.check_remote_cseq(with_cseq(11)) is None and dlg.remote_seq == 11
    # ACK and CANCEL carry an older number and are never rejected nor counted.
    assert dlg.check_remote_cseq(with_cseq(3, "ACK")) is None
    assert dlg.check_remote_cseq(with_cseq(3, "CANCEL")) is None
    assert dlg.remote_seq == 11


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 2**31 - 1), max_size=30))
def test_remote_cseq_never_goes_down(seqs: list[int]) -> None:
    _, dlg = uac_dialog()
    high: int | None = None
    for seq in seqs:
        verdict = dlg.check_remote_cseq(with_cseq(seq))
        if high is not None and seq < high:
            assert verdict == 500
        else:
            assert verdict is None
            high = seq
        assert dlg.remote_seq == high


# ---------------------------------------------------------------------------------------------
# Building in-dialog requests (§12.2.1.1).

VIA = Via("UDP", "pc33.atlanta.example.com", None, {"branch": "z9hG4bKnew"})


def test_build_request_loose_routing() -> None:
    _, dlg = uac_dialog()
    bye = dlg.build_request("BYE", via=VIA)
    assert bye.uri == dlg.remote_target
    assert hosts(bye.routes) == ["p1.example.com", "p2.example.com"]
    assert bye.from_.tag == "1928301774" and bye.to.tag == "a6c85cf"
    assert bye.call_id == dlg.id.call_id and bye.cseq.seq == 314160
    assert bye.cseq.method == "BYE" and bye.vias == [VIA] and bye.max_forwards == 70
    # It is a well-formed message on the wire.
    back = parse_message(serialize(bye))
    assert isinstance(back, Request) and back.to.tag == "a6c85cf"
    assert hosts(back.routes) == ["p1.example.com", "p2.example.com"]


def test_build_request_without_route_set() -> None:
    req = parse_request(INVITE)
    dlg = Dialog.as_uac(req, reply(req, 200, record_route=[]))
    bye = dlg.build_request("BYE", via=VIA)
    assert bye.uri == dlg.remote_target and bye.routes == []


def test_build_request_strict_router() -> None:
    req = parse_request(INVITE)
    resp = reply(req, 200, record_route=[])
    strict = parse_message(
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\n"
        b"Record-Route: <sip:loose.example.com;lr>\r\n"
        b"Record-Route: <sip:strict.example.com;method=INVITE;maddr=10.1.1.1>\r\n"
        b"To: <sip:bob@biloxi.example.com>;tag=s\r\nFrom: <sip:alice@a>;tag=1928301774\r\n"
        b"Call-ID: c\r\nCSeq: 1 INVITE\r\nContact: <sip:bob@192.0.2.4>\r\n"
        b"Content-Length: 0\r\n\r\n")
    assert isinstance(strict, Response)
    resp.record_routes = strict.record_routes
    dlg = Dialog.as_uac(req, resp)
    assert hosts(dlg.route_set) == ["strict.example.com", "loose.example.com"]
    info = dlg.build_request("INFO", via=VIA)
    # The strict router's URI is the Request-URI, without the method parameter (§19.1.1) ...
    assert isinstance(info.uri, SipURI) and info.uri.host == "strict.example.com"
    assert dict(info.uri.params) == {"maddr": "10.1.1.1"}
    # ... and the remote target goes last in Route.
    assert [str(r.uri) for r in info.routes] == ["sip:loose.example.com;lr", "sip:bob@192.0.2.4"]
    assert isinstance(parse_message(serialize(info)), Request)


def test_tel_route_used_as_is() -> None:
    """A non-SIP first route cannot be loose-routed; it is used as the Request-URI as is."""
    _, dlg = uac_dialog()
    tel = parse_message(
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\n"
        b"Record-Route: <tel:+15551234567>\r\n"
        b"To: <sip:bob@b>;tag=s\r\nFrom: <sip:alice@a>;tag=f\r\n"
        b"Call-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")
    assert isinstance(tel, Response)
    dlg.route_set = list(tel.record_routes)
    uri, routes = dlg.request_target()
    assert str(uri) == "tel:+15551234567" and [r.uri for r in routes] == [dlg.remote_target]
    dlg.route_set = [NameAddr(SipURI("sip", "strict.example.com"))]
    uri, _ = dlg.request_target()
    assert uri == SipURI("sip", "strict.example.com")


def test_ack_and_cancel_need_their_seq() -> None:
    _, dlg = uac_dialog()
    with pytest.raises(DialogError):
        dlg.build_request("ACK", via=VIA)
    ack = dlg.build_request("ACK", via=VIA, seq=314159)
    assert ack.cseq.seq == 314159 and dlg.local_seq == 314159  # not incremented
    dlg.on_bye()
    with pytest.raises(DialogError):
        dlg.build_request("INFO", via=VIA)


# ---------------------------------------------------------------------------------------------
# Random runs: Terminated is absorbing; confirmed route sets never change.


@settings(max_examples=300, deadline=None)
@given(st.booleans(), st.lists(st.tuples(st.sampled_from(list(DialogInput)),
                                         st.sampled_from([None, "rr", "contact"])),
                               max_size=25))
def test_random_inputs_keep_invariants(early: bool,
                                       steps: list[tuple[DialogInput, str | None]]) -> None:
    req = parse_request(INVITE)
    dlg = Dialog.as_uac(req, reply(req, 180 if early else 200))
    frozen = (DialogState.WAIT_ACK, DialogState.CONFIRMED, DialogState.TERMINATED)
    for n, (inp, what) in enumerate(steps):
        state, routes = dlg.state, list(dlg.route_set)
        msg = None if what is None else reply(
            req, 200, record_route=[f"r{n}.example.com"], contact=f"sip:bob@10.0.0.{n}")
        try:
            dlg.handle(inp, msg)
        except DialogError:
            assert (state, inp) not in Dialog.TABLE and dlg.state is state
            continue
        if state is DialogState.TERMINATED:
            assert dlg.state is DialogState.TERMINATED  # absorbing
        if state in frozen:  # §12.2: once a 2xx came, the route set never changes
            assert dlg.route_set == routes
