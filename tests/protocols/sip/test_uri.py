"""Tests of protocols.sip.uri: URI parsing, parameters, escapes, §19.1.4 comparison, AORs."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.sip.errors import RemoteProtocolError
from protocols.sip.message import URI, AbsoluteURI, SipURI, TelURI
from protocols.sip.uri import (
    CACHED_URI_MAX,
    MAX_URI_LENGTH,
    URI_CACHE_SIZE,
    _uri_cache,
    aor_of,
    parse_params,
    parse_uri,
    unescape,
    uri_equal,
)

from .conftest import absolute_uris, sip_uris, tel_uris

# --- parse_uri ------------------------------------------------------------------------------------


def test_sip_uri_components() -> None:
    u = parse_uri("sips:alice:secr%65t@Example.COM:5061;transport=tls;lr;maddr=x?h=1&j=%20")
    assert u == SipURI("sips", "Example.COM", "alice", "secr%65t", 5061,
                       {"transport": "tls", "lr": None, "maddr": "x"}, "h=1&j=%20")
    assert isinstance(u, SipURI) and u.transport == "TLS" and u.lr
    assert str(u) == "sips:alice:secr%65t@Example.COM:5061;transport=tls;lr;maddr=x?h=1&j=%20"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sip:example.com", SipURI("sip", "example.com")),
        ("SIP:Bob@Example.com", SipURI("sip", "Example.com", "Bob")),
        ("sIpS:h", SipURI("sips", "h")),
        ("sip:192.0.2.1:0", SipURI("sip", "192.0.2.1", port=0)),
        ("sip:[2001:db8::1]", SipURI("sip", "[2001:db8::1]")),
        ("sip:u@[::ffff:192.0.2.1]:65535", SipURI("sip", "[::ffff:192.0.2.1]", "u", port=65535)),
        ("sip:user;par=u%40example.net@example.com",
         SipURI("sip", "example.com", "user;par=u%40example.net")),
        ("sip:a:@h", SipURI("sip", "h", "a", "")),
        ("sip:h.;x", SipURI("sip", "h.", params={"x": None})),
        ("sip:h?", SipURI("sip", "h", headers="")),
        ("tel:+1-201-555-0123", TelURI("+1-201-555-0123")),
        ("TEL:911;phone-context=+1", TelURI("911", {"phone-context": "+1"})),
        ("mailto:a@b", AbsoluteURI("mailto", "a@b")),
        ("urn:service:sos", AbsoluteURI("urn", "service:sos")),
        ("X-Y.z+1:", AbsoluteURI("x-y.z+1", "")),
    ],
)
def test_uri_forms(text: str, expected: URI) -> None:
    u = parse_uri(text)
    assert u == expected
    assert str(u) == text  # the raw text is what is written back


@pytest.mark.parametrize(
    "text",
    ["", "sip:", "sip:@h", "sip:a@", "sip:a b@h", "sip:h:", "sip:h:65536", "sip:h:123456",
     "sip:h:\u00b2", "sip:-h", "sip:h_h", "sip:[::1", "sip:h;", "sip:h;;x", "sip:h;=1",
     "sip:h;a=", "sip:h;a b", "sip:a%2@h", "sip:a%zz@h", "sip:h?a b", "sip:h#f", "nocolon",
     "1sip:h", ":opaque", "http://a b", "mailto:<x>", 'x:"', "tel:", "tel:abc xyz",
     "tel:1;=x", "tel:1;a b", "sip:h\x00"],
)
def test_bad_uris(text: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_uri(text)
    assert info.value.status == 400


def test_request_uri_rules() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_uri("sip:a@b?Route=%3Csip:x%3E", request_uri=True)
    assert info.value.reason == "Headers not allowed in Request-URI"
    # Cached from an earlier non-Request-URI parse: still rejected.
    parse_uri("sip:c@d?x=1")
    with pytest.raises(RemoteProtocolError):
        parse_uri("sip:c@d?x=1", request_uri=True)
    long_uri = "sip:a@" + "h" * MAX_URI_LENGTH
    with pytest.raises(RemoteProtocolError) as info:
        parse_uri(long_uri, request_uri=True)
    assert (info.value.status, info.value.reason) == (414, "Request-URI Too Long")
    with pytest.raises(RemoteProtocolError) as info:
        parse_uri(long_uri)
    assert info.value.status == 400


def test_uri_cache_is_bounded_and_skips_long_uris() -> None:
    for i in range(URI_CACHE_SIZE + 10):
        parse_uri(f"sip:u{i}@cache.example.com")
    assert len(_uri_cache) <= URI_CACHE_SIZE
    long_uri = "sip:" + "a" * CACHED_URI_MAX + "@h"
    assert parse_uri(long_uri) == SipURI("sip", "h", "a" * CACHED_URI_MAX)
    assert long_uri not in _uri_cache


def test_cached_uris_are_shared_values() -> None:
    assert parse_uri("sip:shared@example.com") is parse_uri("sip:shared@example.com")


@settings(max_examples=200, deadline=None)
@given(st.one_of(sip_uris(), tel_uris, absolute_uris))
def test_generated_uris_round_trip(u: URI) -> None:
    text = str(u)
    parsed = parse_uri(text)
    assert parsed == u and str(parsed) == text
    assert uri_equal(parsed, u) and uri_equal(u, parsed)


# --- header parameters ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (";tag=1", {"tag": "1"}),
        (";lr", {"lr": None}),
        (";a=1;b;c=x.y", {"a": "1", "b": None, "c": "x.y"}),
        (" ; a = 1 ;\tb", {"a": "1", "b": None}),
        (';q="a;b,\\"c"', {"q": '"a;b,\\"c"'}),
        (";received=2001:db8::1;x=[::1]", {"received": "2001:db8::1", "x": "[::1]"}),
        ("", {}),
    ],
)
def test_parse_params(text: str, expected: dict[str, str | None]) -> None:
    assert dict(parse_params(text)) == expected


@pytest.mark.parametrize("text", [";", ";;", "tag=1", ";a=", ";a b", ';a="x', ";a=<x>", ";=1",
                                  ";a=1 junk"])
def test_bad_params(text: str) -> None:
    with pytest.raises(RemoteProtocolError):
        parse_params(text)


def test_parse_params_with_many_separators_is_processed() -> None:
    assert len(parse_params(";a" * 10_000)) == 1
    with pytest.raises(RemoteProtocolError):
        parse_params(";" * 20_000)
    with pytest.raises(RemoteProtocolError):
        parse_params(';a="' * 5_000 + "x")


# --- escapes --------------------------------------------------------------------------------------


def test_unescape_decodes_once() -> None:
    assert unescape("%75se%72") == "user"
    assert unescape("%2541") == "%41"  # never twice (RFC 4475 esc01)
    assert unescape("%00") == "\x00"
    assert unescape("100%") == "100%" and unescape("%zz") == "%zz"
    assert unescape("plain") == "plain"


# --- §19.1.4 comparison ---------------------------------------------------------------------------

#: RFC 3261 §19.1.4: "The URIs within each of the following sets are equivalent".
EQUAL = [
    ("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com;security=on"),
    ("sip:carol@chicago.com;newparam=5", "sip:carol@chicago.com;security=on"),
    ("sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
     "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com"),
    ("sip:alice@atlanta.com?subject=project%20x&priority=urgent",
     "sip:alice@atlanta.com?priority=urgent&subject=project%20x"),
    # Beyond the RFC's list: escaped parameter names and header names in another case.
    ("sip:a@b;%6Cr", "sip:a@b;lr"),
    ("sip:a@b?Subject=x", "sip:a@b?subject=x"),
]
#: RFC 3261 §19.1.4: "The URIs within each of the following sets are not equivalent".
UNEQUAL = [
    ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP"),
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com:6000;transport=tcp"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com?Subject=next%20meeting"),
    ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),
    # "equality is not transitive" (§19.1.4).
    ("sip:carol@chicago.com;security=on", "sip:carol@chicago.com;security=off"),
    # Beyond the RFC's list.
    ("sip:a@b", "sips:a@b"),
    ("sip:b", "sip:a@b"),
    ("sip:a:x@b", "sip:a:y@b"),
    ("sip:a@b;user=phone", "sip:a@b"),
    ("sip:a@b;maddr=x", "sip:a@b;maddr=y"),
    ("sip:a@b;ttl=1", "sip:a@b"),
    ("sip:a@b;method=INVITE", "sip:a@b"),
    ("sip:a@b?x=1", "sip:a@b?x=1&y=2"),
    ("sip:%00@b", "sip:%00%00@b"),
]


@pytest.mark.parametrize(("a", "b"), EQUAL)
def test_rfc3261_equal_uris(a: str, b: str) -> None:
    assert uri_equal(parse_uri(a), parse_uri(b))
    assert uri_equal(parse_uri(b), parse_uri(a))


@pytest.mark.parametrize(("a", "b"), UNEQUAL)
def test_rfc3261_unequal_uris(a: str, b: str) -> None:
    assert not uri_equal(parse_uri(a), parse_uri(b))
    assert not uri_equal(parse_uri(b), parse_uri(a))


def test_tel_and_other_schemes() -> None:
    assert uri_equal(parse_uri("tel:+1-201-555-0123"), parse_uri("tel:+1.201.(555)0123"))
    assert uri_equal(parse_uri("tel:7042;Phone-Context=Example.com"),
                     parse_uri("tel:7042;phone-context=example.com"))
    assert not uri_equal(parse_uri("tel:7042;phone-context=a.com"), parse_uri("tel:7042"))
    assert not uri_equal(parse_uri("tel:+1"), parse_uri("tel:+2"))
    assert uri_equal(parse_uri("URN:Service:SOS"), parse_uri("urn:service:sos"))
    assert not uri_equal(parse_uri("sip:a@b"), parse_uri("tel:+1"))
    assert not uri_equal(parse_uri("tel:+1"), parse_uri("urn:x"))


# --- address-of-record ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "aor"),
    [
        ("sip:%75ser@Example.COM:5060;transport=udp?x=1", "sip:user@example.com"),
        ("sips:Bob@Biloxi.com", "sips:Bob@biloxi.com"),  # the user part keeps its case
        ("sip:Example.com", "sip:example.com"),
        ("sip:null-%00-null@example.com", "sip:null-%00-null@example.com"),  # NUL kept
        ("sip:a%2540b@h", "sip:a%2540b@h"),  # unescaped once, re-escaped: same AOR
        ("sip:%61%20b@h", "sip:a%20b@h"),
        ("tel:+1-201-555-0123", "tel:+1-201-555-0123"),
        ("isbn:2983792873", "isbn:2983792873"),
    ],
)
def test_aor_of(text: str, aor: str) -> None:
    assert aor_of(parse_uri(text)) == aor


@settings(max_examples=200, deadline=None)
@given(sip_uris())
def test_equal_uris_have_the_same_aor(u: SipURI) -> None:
    """Escaping every letter and digit of the user part (where it has no escapes of its own)
    and changing the host's case gives a §19.1.4-equal URI naming the same AOR."""
    user = u.user
    escaped = None
    if user is not None and "%" not in user:
        escaped = "".join(f"%{ord(c):02x}" if c.isalnum() else c for c in user)
    other = SipURI(u.scheme, u.host.upper(), escaped if escaped is not None else user,
                   u.password, u.port, u.params, u.headers)
    assert uri_equal(u, other) and uri_equal(other, u)
    assert aor_of(u) == aor_of(other)
