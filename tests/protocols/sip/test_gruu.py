"""protocols/sip/gruu.py: public and temporary GRUUs made and read without state (RFC 5627)."""

from __future__ import annotations

from protocols.sip.gruu import TEMP_PREFIX, GruuCodec, GruuTarget, call_digest, escape_gr, pub_gruu
from protocols.sip.message import SipURI
from protocols.sip.uri import parse_uri

URN = "urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6"
AOR = "sip:alice@example.com"


def test_pub_gruu_is_the_aor_with_the_instance_and_routes_back() -> None:
    gruu = pub_gruu(AOR, URN)
    assert gruu == f"{AOR};gr={URN}"  # RFC 5627's own example form
    uri = parse_uri(gruu)
    assert isinstance(uri, SipURI)
    assert GruuCodec(b"k" * 32).target(uri, AOR) == GruuTarget(AOR, URN)


def test_instance_characters_outside_paramchar_are_escaped() -> None:
    assert escape_gr("urn:x;y=z") == "urn:x%3By%3Dz"
    uri = parse_uri(pub_gruu(AOR, "urn:x;y=z"))
    assert isinstance(uri, SipURI)
    assert GruuCodec(b"k" * 32).target(uri, AOR) == GruuTarget(AOR, "urn:x;y=z")


def test_temp_gruu_hides_the_aor_and_opens_with_the_key() -> None:
    codec = GruuCodec(b"k" * 32)
    text = codec.temp_gruu(AOR, URN, "call-1@host", "example.com")
    assert "alice" not in text and URN not in text
    assert text != codec.temp_gruu(AOR, URN, "call-1@host", "example.com")  # fresh each time
    uri = parse_uri(text)
    assert isinstance(uri, SipURI) and uri.params == {"gr": None}
    assert uri.user is not None and uri.user.startswith(TEMP_PREFIX)
    assert codec.target(uri, "ignored") == GruuTarget(AOR, URN, call_digest("call-1@host"))
    assert GruuCodec(b"o" * 32).target(uri, "ignored") is None  # another server's key


def test_forged_or_damaged_temp_gruus_do_not_open() -> None:
    codec = GruuCodec(b"k" * 32)
    uri = parse_uri(codec.temp_gruu(AOR, URN, "c", "example.com"))
    assert isinstance(uri, SipURI) and uri.user is not None
    token = uri.user[len(TEMP_PREFIX):]
    flipped = token[:-3] + ("a" if token[-3] != "a" else "b") + token[-2:]
    for user in (TEMP_PREFIX + flipped, TEMP_PREFIX + "short", TEMP_PREFIX + "!!!!",
                 "alice"):
        assert codec.target(SipURI("sip", "example.com", user=user, params={"gr": None}),
                            AOR) is None
    assert codec.target(SipURI("sip", "example.com", user="alice"), AOR) is None  # no gr
