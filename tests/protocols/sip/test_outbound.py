"""protocols/sip/outbound.py: who registers a flow (RFC 5626 §6) and who is behind NAT."""

from __future__ import annotations

from protocols.sip.message import Request, Via
from protocols.sip.outbound import (
    behind_nat,
    has_ob,
    instance_urn,
    is_private,
    option_tags,
    outbound_contact,
)
from protocols.sip.parser import parse_message, parse_name_addr
from protocols.sip.uri import parse_uri

URN = "urn:uuid:00000000-0000-1000-8000-000A95A0E128"


def _register(contact: str, supported: str | None) -> Request:
    sup = f"Supported: {supported}\r\n" if supported is not None else ""
    data = (f"REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5;branch=z9hG4bK1\r\n"
            f"From: <sip:a@example.com>;tag=1\r\nTo: <sip:a@example.com>\r\nCall-ID: c\r\n"
            f"CSeq: 1 REGISTER\r\nContact: {contact}\r\n{sup}Content-Length: 0\r\n\r\n").encode()
    req = parse_message(data)
    assert isinstance(req, Request)
    return req


def test_outbound_needs_the_option_tag_an_instance_and_a_reg_id() -> None:
    contact = f'<sip:a@10.0.0.5>;+sip.instance="<{URN}>";reg-id=1'
    for supported, expected in (("path, outbound", True), ("path", False), (None, False)):
        req = _register(contact, supported)
        assert outbound_contact(req, req.contacts[0]) is expected
    for bad in ('<sip:a@10.0.0.5>;reg-id=1', f'<sip:a@10.0.0.5>;+sip.instance="<{URN}>"',
                f'<sip:a@10.0.0.5>;+sip.instance="<{URN}>";reg-id=x'):
        req = _register(bad, "outbound")
        assert not outbound_contact(req, req.contacts[0])


def test_option_tags_and_instance_urn() -> None:
    req = _register("<sip:a@h>", "Path ,GRUU")
    assert option_tags(req, "Supported") == {"path", "gruu"}
    assert instance_urn(f'"<{URN}>"') == URN
    assert instance_urn(f"<{URN}>") == URN
    assert instance_urn('""') is None and instance_urn(None) is None


def test_ob_on_the_first_path_value() -> None:
    assert has_ob(parse_name_addr("<sip:edge.example.net;lr;ob>"))
    assert not has_ob(parse_name_addr("<sip:edge.example.net;lr>"))


def test_private_ranges() -> None:
    for host in ("10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.20", "100.64.0.1",
                 "169.254.1.1", "[fd00::1]", "fe80::1"):
        assert is_private(host), host
    for host in ("127.0.0.1", "172.32.0.1", "192.0.2.1", "8.8.8.8", "2001:db8::1",
                 "example.com"):
        assert not is_private(host), host


def _via(host: str, port: int | None) -> Via:
    return Via("UDP", host, port, {"branch": "z9hG4bK1", "rport": None})


def test_behind_nat_rule() -> None:
    src = ("127.0.0.1", 40000)
    # 1. a private Contact, whatever the Via says
    assert behind_nat(parse_uri("sip:a@192.168.1.20:5060"), _via("127.0.0.1", 40000), src)
    # ... unless it is the source itself (a UA on the same private network as us)
    assert not behind_nat(parse_uri("sip:a@10.0.0.9:5060"), _via("10.0.0.9", 5060),
                          ("10.0.0.9", 5060))
    # 2. the UA registered the address a NAT rewrote: Via sent-by = Contact != source
    assert behind_nat(parse_uri("sip:a@203.0.113.5:5062"), _via("203.0.113.5", 5062), src)
    assert behind_nat(parse_uri("sip:a@203.0.113.5"), _via("203.0.113.5", None), src)
    # the same host, another port: a helper of the UA registering it, not a NAT
    assert not behind_nat(parse_uri("sip:a@127.0.0.1:5062"), _via("127.0.0.1", 5062), src)
    # the UA knows its address: Via = source
    assert not behind_nat(parse_uri("sip:a@127.0.0.1:40000"), _via("127.0.0.1", 40000), src)
    # a registration on behalf of another device (Contact names another public address)
    assert not behind_nat(parse_uri("sip:a@198.51.100.7"), _via("203.0.113.5", 5060), src)
    # names and non-SIP Contacts are reached as registered
    assert not behind_nat(parse_uri("sip:a@phone.example.com"), _via("203.0.113.5", 5060), src)
    assert not behind_nat(parse_uri("tel:+15551234"), _via("203.0.113.5", 5060), src)
