"""Tests of protocols.sip.message: value rendering, accessors and equality."""

from __future__ import annotations

import dataclasses

from protocols.sip.message import (
    AbsoluteURI,
    CSeq,
    NameAddr,
    Request,
    Response,
    SipURI,
    TelURI,
    Via,
    has_param,
    param,
    render_params,
)
from protocols.sip.parser import parse_message, parse_name_addr, parse_via_list
from protocols.sip.uri import parse_uri


def test_render_params() -> None:
    assert render_params({}) == ""
    assert render_params({"lr": None, "tag": "x", "q": '"a b"'}) == ';lr;tag=x;q="a b"'


def test_sip_uri_rendering_and_properties() -> None:
    u = SipURI("sips", "example.com", "u", "p", 5061, {"transport": "tcp", "lr": None}, "a=b")
    assert str(u) == "sips:u:p@example.com:5061;transport=tcp;lr?a=b"
    assert u.transport == "TCP" and u.lr
    assert SipURI("sip", "h").transport == "UDP" and not SipURI("sip", "h").lr
    assert SipURI("sips", "h").transport == "TLS"
    assert str(SipURI("sip", "h", "u", "")) == "sip:u:@h"


def test_raw_text_wins_and_is_not_compared() -> None:
    parsed = parse_uri("SIP:U@H;Lr")
    built = SipURI("sip", "H", "U", params={"Lr": None})
    assert parsed == built and str(parsed) == "SIP:U@H;Lr" and str(built) == "sip:U@H;Lr"


def test_tel_and_absolute_uris() -> None:
    assert str(TelURI("+1-555", {"ext": "1"})) == "tel:+1-555;ext=1" and TelURI.scheme == "tel"
    assert str(AbsoluteURI("urn", "service:sos")) == "urn:service:sos"


def test_name_addr() -> None:
    na = NameAddr(SipURI("sip", "b", "a"), '"A"', {"tag": "1", "x": None})
    assert str(na) == '"A" <sip:a@b>;tag=1;x' and na.tag == "1"
    assert str(NameAddr(TelURI("+1"))) == "<tel:+1>" and NameAddr(TelURI("+1")).tag is None
    parsed = parse_name_addr("A <sip:a@b>")
    tagged = parsed.with_param("tag", "t")
    assert str(tagged) == "A <sip:a@b>;tag=t" and tagged.tag == "t"
    assert parsed.tag is None and str(parsed) == "A <sip:a@b>"  # the original is unchanged
    assert tagged.with_param("tag", "u").params == {"tag": "u"}


def test_via() -> None:
    v = Via("UDP", "Host.Example.com", 5060, {"branch": "z9hG4bK1", "rport": None})
    assert str(v) == "SIP/2.0/UDP Host.Example.com:5060;branch=z9hG4bK1;rport"
    assert v.branch == "z9hG4bK1" and v.sent_by == ("host.example.com", 5060)
    assert Via("TCP", "h").branch is None and str(Via("TCP", "h")) == "SIP/2.0/TCP h"
    (parsed,) = parse_via_list("SIP/2.0/UDP h;branch=z9hG4bK1;rport")
    stamped = parsed.with_param("rport", "5062").with_param("received", "192.0.2.9")
    assert str(stamped) == "SIP/2.0/UDP h;branch=z9hG4bK1;rport=5062;received=192.0.2.9"
    assert parsed.params == {"branch": "z9hG4bK1", "rport": None}


def test_cseq() -> None:
    assert str(CSeq(1, "INVITE")) == "1 INVITE" and CSeq(1, "A") != CSeq(2, "A")


def test_message_accessors() -> None:
    m = parse_message(
        b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nFrom: <sip:a@b>;tag=1\r\n"
        b"To: <sip:b@b>\r\nCall-ID: c\r\nCSeq: 2 OPTIONS\r\nX-A: 1\r\nx-a: 2\r\n"
        b"Accept: a/b\r\n\r\n"
    )
    assert isinstance(m, Request) and m.is_request and m.transaction_method == "OPTIONS"
    assert m.header("X-A") == "1" and m.header("ACCEPT") == "a/b" and m.header("Via") is None
    assert m.headers("x-A") == ["1", "2"] and m.headers("nothing") == []
    r = Response(status=200, reason="OK", vias=m.vias, from_=m.from_, to=m.to, call_id="c",
                 cseq=m.cseq)
    assert not r.is_request and r.transaction_method == "OPTIONS"
    assert (r.routes, r.contacts, r.extra, r.body, r.contact_star) == ([], [], [], b"", False)
    assert r.routes is not Response(status=200, reason="OK", vias=[], from_=m.from_, to=m.to,
                                    call_id="c", cseq=m.cseq).routes


def test_equality_is_by_value_and_kind() -> None:
    a = parse_message(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h\r\nFrom: <sip:a@b>\r\n"
                      b"To: <sip:b@b>\r\nCall-ID: c\r\nCSeq: 1 BYE\r\n\r\n")
    built = Response(status=200, reason="OK", vias=[Via("UDP", "h")],
                     from_=NameAddr(SipURI("sip", "b", "a")), to=NameAddr(SipURI("sip", "b", "b")),
                     call_id="c", cseq=CSeq(1, "BYE"))
    assert a == built
    built.reason = "Fine"
    assert a != built


def test_parameter_names_are_case_insensitive() -> None:
    """§7.3.1 / §19.1.4: ``;Tag=``, ``;BRANCH=``, ``;Transport=``, ``;LR`` mean the same."""
    assert parse_name_addr("<sip:a@b>;Tag=x").tag == "x"
    assert parse_via_list("SIP/2.0/UDP h;BRANCH=z9hG4bKq")[0].branch == "z9hG4bKq"
    u = parse_uri("sip:h;Transport=tcp;LR")
    assert isinstance(u, SipURI) and u.transport == "TCP" and u.lr
    assert param({"a": None}, "a") is None and param({}, "a") is None
    assert param({"tag": "exact", "TAG": "other"}, "tag") == "exact"
    assert has_param({"Lr": None}, "lr") and not has_param({"x": "lr"}, "lr")


def test_tag_and_branch_read_as_param_does() -> None:
    """``NameAddr.tag`` and ``Via.branch`` take ``param``'s answer for every spelling and for
    a parameter without a value (they skip calling it only in its usual cases)."""
    for params in ({}, {"tag": "x"}, {"Tag": "y"}, {"tag": None}, {"q": "1"}, {"TAG": None},
                   {"tag": "x", "TAG": "z"}, {"x": "1", "tAg": "w"}):
        assert NameAddr(SipURI("sip", "h"), None, params).tag == param(params, "tag")
        renamed = {k.replace("tag", "branch").replace("Tag", "Branch").replace("TAG", "BRANCH")
                   .replace("tAg", "bRanch"): v for k, v in params.items()}
        assert Via("UDP", "h", None, renamed).branch == param(renamed, "branch")


def test_forwarded_copy_is_dataclasses_replace() -> None:
    """``Request.forwarded`` spells out the copy ``dataclasses.replace`` makes: every field
    given is taken, every other one shared.  Each field holds an object of its own, so a
    field added to ``Message`` and not copied by ``forwarded`` fails here."""
    req = parse_message(b"INVITE sip:bob@example.com SIP/2.0\r\n"
                        b"Via: SIP/2.0/UDP a.example.com;branch=z9hG4bK1\r\n"
                        b"From: <sip:alice@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\n"
                        b"Call-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")
    assert isinstance(req, Request)
    for f in dataclasses.fields(Request):
        if f.init:
            setattr(req, f.name, object())
    changed = {"uri": object(), "vias": object(), "record_routes": object(),
               "routes": object(), "max_forwards": object(), "extra": object(),
               "require": object()}
    copy = req.forwarded(**changed)  # type: ignore[arg-type]
    expected = dataclasses.replace(req, **changed)  # type: ignore[arg-type]
    assert copy is not req
    for f in dataclasses.fields(Request):
        assert getattr(copy, f.name) is getattr(expected, f.name), f.name


def test_with_rport_keeps_the_text_when_a_bare_rport_ends_it() -> None:
    """RFC 3581 §4: received and rport's value set; the text kept, the values appended, only
    when a bare rport ends it, and in every case it reads back as the fields."""
    for text, kept in (("SIP/2.0/UDP 10.0.0.9:5070;branch=z9hG4bKr1;rport", True),
                       ("SIP/2.0/UDP 10.0.0.9:5070;rport;branch=z9hG4bKr2", False),
                       ("SIP/2.0/UDP 10.0.0.9;received=10.1.1.1;rport", False)):
        (via,) = parse_via_list(text)
        stamped = via.with_rport("192.0.2.1", 5071)
        assert (stamped.raw is not None) == kept
        assert str(stamped) == str(dataclasses.replace(stamped, raw=None))
        assert parse_via_list(str(stamped)) == [stamped]
        assert stamped.params["received"] == "192.0.2.1" and stamped.params["rport"] == "5071"
