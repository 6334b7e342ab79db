"""Tests of protocols.sip.parser: RFC 4475 conformance, every parser branch, limits, framing.

RFC 4475 policy (the torture tests let a server choose in a few places; the parser's module
docstring states the same choices):

* lwsstart, trws (extra whitespace in the request line): rejected with 400;
* escruri (headers in the Request-URI): rejected with 400, never turned into headers;
* baddate (a non-GMT Date): accepted, Date is kept verbatim and never interpreted;
* mismatch02 (unknown method + CSeq mismatch): 400, the answer RFC 4475 accepts;
* ncl (negative Content-Length): the datagram is discarded (status None); on a stream the
  framer raises and the transport closes the connection;
* mcl01 (two Content-Length values): 400 on a datagram, an error (close) on a stream;
* clerr (Content-Length past the end): 400 on a datagram; on a stream the framer waits for
  the rest (the transport's idle timeout closes it);
* badbranch (``branch=z9hG4bK`` alone): accepted; the transaction layer matches it;
* scalar02's Contact ``;expires=280297596632815``: kept as text, the registrar clamps it.

Application-layer rows (416 for unkscm/novelsc, 420 for bext01, 483 for zeromf, 415 for invut,
406 for sdp01, 401 for regaut01, the unksm2 AOR check, bcast's broadcast Via) are answered by
the server, not the parser: here the parser must accept them and expose the fields the server
decides on.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from protocols.sip import parser
from protocols.sip.builders import error_response
from protocols.sip.errors import RemoteProtocolError
from protocols.sip.message import (
    AbsoluteURI,
    CSeq,
    NameAddr,
    Request,
    Response,
    SipURI,
    TelURI,
    Via,
)
from protocols.sip.parser import (
    CACHED_VALUE_MAX,
    MAX_HEADER_LINE,
    MAX_HEADERS,
    MAX_MESSAGE_SIZE,
    MAX_VIAS,
    VALUE_CACHE_SIZE,
    _na_cache,
    _parse_name_addr,
    _slow_via_list,
    _via_cache,
    parse_message,
    parse_name_addr,
    parse_name_addr_list,
    parse_via_list,
    split_list,
)
from protocols.sip.serializer import serialize
from protocols.sip.uri import MAX_URI_LENGTH, aor_of, uri_equal

from .conftest import RFC4475_DIR, messages, name_addrs, torture, torture_corpus, vias

# --- helpers --------------------------------------------------------------------------------------

BASE = (
    "OPTIONS sip:bob@example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds\r\n"
    "From: Alice <sip:alice@example.com>;tag=1928301774\r\n"
    "To: Bob <sip:bob@example.com>\r\n"
    "Call-ID: a84b4c76e66710@pc33.example.com\r\n"
    "CSeq: 314159 OPTIONS\r\n"
    "Max-Forwards: 70\r\n"
)


def msg(*headers: str, start: str | None = None, base: str = BASE, body: bytes = b"") -> bytes:
    """BASE (optionally with another start line) plus ``headers``, a blank line and ``body``."""
    head = base if start is None else start + "\r\n" + base.split("\r\n", 1)[1]
    return (head + "".join(h + "\r\n" for h in headers) + "\r\n").encode() + body


def req(data: bytes, *, stream: bool = False) -> Request:
    m = parse_message(data, stream=stream)
    assert isinstance(m, Request)
    return m


def resp(data: bytes) -> Response:
    m = parse_message(data)
    assert isinstance(m, Response)
    return m


def rejected(data: bytes, *, stream: bool = False) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as info:
        parse_message(data, stream=stream)
    return info.value


def replace(data: bytes, old: bytes, new: bytes) -> bytes:
    assert old in data, old
    return data.replace(old, new, 1)


# --- RFC 4475 §3.1.1: valid messages ------------------------------------------------------------


def _wsinv(m: Request) -> None:
    assert m.method == "INVITE"
    assert isinstance(m.uri, SipURI)
    assert (m.uri.user, m.uri.host) == ("vivekg", "chair-dnrc.example.com")
    assert m.uri.params == {"unknownparam": None}
    assert m.to.tag == "1918181833n" and m.to.display is None
    assert m.to.uri == SipURI("sip", "chair-dnrc.example.com", "vivekg")
    assert m.from_.display == '"J Rosenberg \\\\\\""'
    assert m.from_.tag == "98asjd8"
    assert m.max_forwards == 68
    assert m.call_id == "wsinv.ndaksdj@192.0.2.1"
    assert m.cseq == CSeq(9, "INVITE")
    assert [(v.transport, v.host, v.branch) for v in m.vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert all(v.protocol == "SIP/2.0" and v.port is None for v in m.vias)
    route = m.routes[0]
    assert len(m.routes) == 1 and isinstance(route.uri, SipURI) and route.uri.lr
    assert route.uri.params == {"lr": None, "unknownwith": "value", "unknown-no-value": None}
    (contact,) = m.contacts
    assert contact.display == '"Quoted string \\"\\""'
    assert contact.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    assert contact.uri == SipURI("sip", "example.com", "jdrosen")
    assert m.content_type == "application/sdp"
    assert m.extra == [
        ("Subject", ""),
        ("NewFangledHeader", "newfangled value continued newfangled value"),
        ("UnknownHeaderWithUnusualValue", ";;,,;;,;"),
    ]
    assert len(m.body) == 150 and m.body.startswith(b"v=0\r\n")


def _intmeth(m: Request) -> None:
    method = "!interesting-Method0123456789_*+`.%indeed'~"
    assert m.method == method and m.cseq == CSeq(139122385, method)
    assert isinstance(m.uri, SipURI)
    assert m.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert m.uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert m.uri.host == "example.com"
    assert m.vias[0].branch == "z9hG4bK-.!%66*_+`'~"  # % kept as written, never unescaped
    assert m.to.display == '"BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f"'  # quoted-pairs, NUL included
    assert isinstance(m.to.uri, SipURI)
    assert m.to.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert m.from_.display == "token1~` token2'+_ token3*%!.-"
    assert m.from_.params == {"fromParam''~+*_!.-%": '"работающий"', "tag": "_token~1'+`*%!-."}
    assert m.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert m.max_forwards == 255
    assert m.extra == [("extensionHeader-!.%*+_`'~", "\ufeff大停電")]
    assert m.body == b""


def _esc01(m: Request) -> None:
    assert isinstance(m.uri, SipURI) and m.uri.user == "sips%3Auser%40example.com"
    assert m.uri.host == "example.net"
    assert isinstance(m.to.uri, SipURI) and m.to.uri.user == "%75se%72"  # kept as written
    assert uri_equal(m.to.uri, SipURI("sip", "example.com", "user"))  # equal once unescaped
    assert aor_of(m.to.uri) == "sip:user@example.com"
    assert isinstance(m.from_.uri, SipURI) and m.from_.uri.user == "I%20have%20spaces"
    contact = m.contacts[0].uri
    assert isinstance(contact, SipURI) and contact.user == "cal%6Cer"
    assert contact.params == {"%6C%72": None, "n%61me": "v%61lue%25%34%31"}
    assert m.call_id == "esc01.239409asdfakjkn23onasd0-3234"  # compact i
    assert m.content_type == "application/sdp"  # compact C (upper case)
    assert m.max_forwards == 87 and len(m.body) == 150


def _escnull(m: Request) -> None:
    assert m.method == "REGISTER"
    assert isinstance(m.to.uri, SipURI) and m.to.uri.user == "null-%00-null"
    assert isinstance(m.from_.uri, SipURI) and m.from_.uri.user == "null-%00-null"
    first, second = (c.uri for c in m.contacts)
    assert isinstance(first, SipURI) and isinstance(second, SipURI)
    assert (first.user, second.user) == ("%00", "%00%00")
    assert not uri_equal(first, second)  # never truncated at NUL: two distinct contacts
    assert aor_of(first) != aor_of(second)
    assert aor_of(m.to.uri) == "sip:null-%00-null@example.com"
    assert m.body == b""


def _esc02(m: Request) -> None:
    assert m.method == "RE%47IST%45R" and m.cseq.method == "RE%47IST%45R"
    assert m.to.display == '"%Z%45"' and m.from_.display == '"%Z%45"'
    assert m.vias[0].branch == "z9hG4bK209%fzsnel234"
    assert [str(c.uri) for c in m.contacts] == ["sip:alias1@host1.example.com",
                                                "sip:alias3@host3.example.com"]
    # "C%6Fntact" is not Contact: an unknown header kept verbatim.
    assert m.extra == [("C%6Fntact", "<sip:alias2@host2.example.com>")]
    assert m.header("c%6fntact") == "<sip:alias2@host2.example.com>"


def _lwsdisp(m: Request) -> None:
    assert m.from_.display == "caller" and m.from_.tag == "323"
    assert isinstance(m.from_.uri, SipURI) and m.from_.uri.user == "caller"
    assert m.to.display is None and m.method == "OPTIONS"


def _longreq(m: Request) -> None:
    assert m.to.display is not None and m.to.display.startswith('"I have a user name of ext')
    assert isinstance(m.to.uri, SipURI) and m.to.uri.port == 6000
    assert m.to.uri.params["unknownparam1"] == "very" + "long" * 20 + "value"
    assert m.from_.tag is not None and len(m.from_.tag) > 150
    assert m.call_id.startswith("longreq.one") and m.call_id.endswith("longcallid")
    assert len(m.vias) == 34
    assert [v.host for v in m.vias[:33]] == [f"sip{i}.example.com" for i in range(33, 0, -1)]
    last = m.vias[-1]
    assert last.host == "host.example.com" and last.params["received"] == "192.0.2.5"
    assert last.branch is not None and last.branch.endswith("longbranchvalue")
    assert isinstance(m.contacts[0].uri, SipURI)
    assert m.contacts[0].uri.user == "amazinglylongcallername" * 5
    name = "Unknown-" + "Long" * 20 + "-Name"
    value = m.header(name)
    assert value is not None and value.startswith("unknown-" + "long" * 20 + "-value;")
    assert m.max_forwards == 70 and len(m.body) == 150


def _dblreq(m: Request) -> None:
    assert m.method == "REGISTER" and m.cseq == CSeq(8, "REGISTER")
    assert m.call_id == "dblreq.0ha0isndaksdj99sdfafnl3lk233412"  # compact "I"
    assert m.body == b""  # the INVITE after Content-Length 0 is ignored
    assert str(m.contacts[0].uri) == "sip:j.user@host.example.com"
    assert m.max_forwards == 8


def _semiuri(m: Request) -> None:
    assert isinstance(m.uri, SipURI)
    assert (m.uri.user, m.uri.host, m.uri.params) == ("user;par=u%40example.net",
                                                      "example.com", {})
    assert m.header("Accept") == ("application/sdp, application/pkcs7-mime, multipart/mixed, "
                                  "multipart/signed, message/sip, message/sipfrag")


def _transports(m: Request) -> None:
    assert [(v.transport, v.host) for v in m.vias] == [
        ("UDP", "t1.example.com"), ("SCTP", "t2.example.com"), ("TLS", "t3.example.com"),
        ("UNKNOWN", "t4.example.com"), ("TCP", "t5.example.com"),
    ]
    assert [v.branch for v in m.vias] == ["z9hG4bKkdjuw", "z9hG4bKklasjdhf", "z9hG4bK2980unddj",
                                          "z9hG4bKasd0f3en", "z9hG4bK0a9idfnee"]
    assert m.call_id == "transports.kijh4akdnaqjkwendsasfdj"


def _mpart01(m: Request) -> None:
    data = torture("mpart01")
    assert m.method == "MESSAGE"
    assert len(m.body) == 553 and m.body == data[-553:]
    assert b"\x00" in m.body and m.body.endswith(b"--7a9cbec02ceef655--\r\n")
    assert m.content_type == "multipart/mixed;boundary=7a9cbec02ceef655"
    top = m.vias[0]
    assert (top.host, top.port) == ("127.0.0.1", 5070) and top.params["rport"] is None
    assert isinstance(m.routes[0].uri, SipURI) and m.routes[0].uri.port == 5080
    assert m.header("Content-Transfer-Encoding") == "binary"
    assert m.header("Date") == "Sat, 15 Oct 2005 04:44:56 GMT"


def _unreason(m: Response) -> None:
    assert m.status == 200
    assert m.reason == "= 2**3 * 5**2 но сто девяносто девять - простое"
    assert len(m.body) == 154 and m.cseq == CSeq(35, "INVITE")
    assert m.to.tag == "2229" and m.from_.tag == "11141343"


def _noreason(m: Response) -> None:
    assert (m.status, m.reason) == (100, "")
    assert m.to.tag == "902jndnke3" and m.body == b""


VALID: dict[str, Callable[[Request], None] | Callable[[Response], None]] = {
    "wsinv": _wsinv, "intmeth": _intmeth, "esc01": _esc01, "escnull": _escnull, "esc02": _esc02,
    "lwsdisp": _lwsdisp, "longreq": _longreq, "dblreq": _dblreq, "semiuri": _semiuri,
    "transports": _transports, "mpart01": _mpart01, "unreason": _unreason,
    "noreason": _noreason,
}


# --- RFC 4475 §3.2 - §3.4: accepted by the parser, decided by the server --------------------------


def _unkscm(m: Request) -> None:
    assert isinstance(m.uri, AbsoluteURI)  # the server answers 416
    assert (m.uri.scheme, m.uri.opaque) == ("nobodyknowsthisscheme", "totallyopaquecontent")
    assert str(m.uri) == "nobodyKnowsThisScheme:totallyopaquecontent"


def _novelsc(m: Request) -> None:
    assert isinstance(m.uri, AbsoluteURI)
    assert (m.uri.scheme, m.uri.opaque) == ("soap.beep", "//192.0.2.103:3002")


def _unksm2(m: Request) -> None:
    assert isinstance(m.to.uri, AbsoluteURI) and m.to.uri.scheme == "isbn"
    assert isinstance(m.from_.uri, AbsoluteURI) and m.from_.uri.scheme == "http"
    assert m.from_.tag == "3234233"
    assert isinstance(m.contacts[0].uri, AbsoluteURI)
    assert str(m.contacts[0].uri) == "name:John_Smith"
    assert not aor_of(m.to.uri).startswith("sip")  # the registrar rejects a non-SIP AOR


def _bext01(m: Request) -> None:
    assert m.require == ["nothingSupportsThis", "nothingSupportsThisEither"]
    assert m.proxy_require == ["noProxiesSupportThis", "norDoAnyProxiesSupportThis"]
    assert m.vias[0].transport == "TLS"


def _invut(m: Request) -> None:
    assert m.content_type == "application/unknownformat" and len(m.body) == 40


def _regaut01(m: Request) -> None:
    assert m.header("authorization") == "NoOneKnowsThisScheme opaque-data=here"
    assert m.body == b""  # "Content-Length:0" without a space


def _bcast(m: Response) -> None:
    assert m.status == 200 and [v.host for v in m.vias] == ["192.0.2.198", "255.255.255.255"]


def _zeromf(m: Request) -> None:
    assert m.max_forwards == 0 and m.method == "OPTIONS"


def _cparam01(m: Request) -> None:
    (c,) = m.contacts
    assert isinstance(c.uri, SipURI) and c.uri.user == "+19725552222"
    assert c.uri.params == {} and c.params == {"unknownparam": None}  # a contact parameter


def _cparam02(m: Request) -> None:
    (c,) = m.contacts
    assert isinstance(c.uri, SipURI)
    assert c.uri.params == {"unknownparam": None} and c.params == {}  # a URI parameter
    assert str(c.uri) == "sip:+19725552222@gw1.example.net;unknownparam"


def _regescrt(m: Request) -> None:
    (c,) = m.contacts  # compact "M"
    assert isinstance(c.uri, SipURI) and c.uri.headers == "Route=%3Csip:sip.example.com%3E"
    assert str(c.uri) == "sip:user@example.com?Route=%3Csip:sip.example.com%3E"
    assert m.routes == []  # the escaped Route stays in the URI, never becomes a header


def _sdp01(m: Request) -> None:
    assert m.header("Accept") == "text/nobodyKnowsThis"
    assert m.content_type == "application/sdp" and len(m.body) == 150


def _inv2543(m: Request) -> None:
    data = torture("inv2543")
    assert m.vias[0].branch is None and m.vias[0].host == "iftgw.example.com"
    assert m.max_forwards is None and m.from_.tag is None
    assert m.body == data[data.index(b"\r\n\r\n") + 4 :]  # no Content-Length: to the end
    rr = m.record_routes[0].uri
    assert isinstance(rr, SipURI) and rr.params == {"maddr": "ss1.example.com"}
    # addr-spec form: ";user=phone" belongs to the header, not the URI (§20.10).
    assert m.to.params == {"user": "phone"} and isinstance(m.to.uri, SipURI)
    assert isinstance(m.from_.uri, SipURI) and m.from_.uri.params == {"user": "phone"}


def _baddate(m: Request) -> None:
    assert m.header("Date") == "Fri, 01 Jan 2010 16:00:00 EST"  # policy: ignored, kept


def _badbranch(m: Request) -> None:
    assert m.vias[0].branch == "z9hG4bK"  # policy: the transaction layer matches it


ACCEPTED: dict[str, Callable[[Request], None] | Callable[[Response], None]] = {
    "unkscm": _unkscm, "novelsc": _novelsc, "unksm2": _unksm2, "bext01": _bext01,
    "invut": _invut, "regaut01": _regaut01, "bcast": _bcast, "zeromf": _zeromf,
    "cparam01": _cparam01, "cparam02": _cparam02, "regescrt": _regescrt, "sdp01": _sdp01,
    "inv2543": _inv2543, "baddate": _baddate, "badbranch": _badbranch,
}

# --- RFC 4475 §3.1.2, §3.3: rejected --------------------------------------------------------------

#: name -> (status, a word the reason must contain).  None: discard, never answered.
INVALID: dict[str, tuple[int | None, str]] = {
    "badinv01": (400, "Via"),
    "clerr": (400, "Content-Length"),
    "ncl": (None, "Content-Length"),
    "scalar02": (400, "CSeq"),
    "scalarlg": (None, "CSeq"),
    "quotbal": (400, "To"),
    "ltgtruri": (400, "Request-URI"),
    "lwsruri": (400, "Request-Line"),
    "lwsstart": (400, "Request-Line"),  # policy: may reject
    "trws": (400, "Request-Line"),  # policy: may reject
    "escruri": (400, "Request-URI"),
    "regbadct": (400, "Contact"),
    "badaspec": (400, "To"),
    "baddn": (400, "From"),
    "badvers": (505, "Version"),
    "mismatch01": (400, "CSeq"),
    "mismatch02": (400, "CSeq"),  # policy: 400 rather than 501
    "bigcode": (None, "Status"),
    "insuf": (400, "Missing"),
    "multi01": (400, "Duplicate"),
    "mcl01": (400, "Content-Length"),
}


def test_corpus_is_present_and_every_file_has_an_expectation() -> None:
    corpus = torture_corpus()
    assert len(corpus) == 49, f"expected the 49 RFC 4475 messages in {RFC4475_DIR}"
    tables = [set(VALID), set(ACCEPTED), set(INVALID)]
    assert set().union(*tables) == set(corpus)
    assert sum(map(len, tables)) == len(corpus)  # no file in two tables
    index = (RFC4475_DIR / "INDEX.md").read_text()
    for name in corpus:
        assert f"| {name} |" in index


@pytest.mark.parametrize("name", sorted(VALID))
def test_rfc4475_valid(name: str) -> None:
    m = parse_message(torture(name))
    VALID[name](m)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_rfc4475_accepted_for_the_server(name: str) -> None:
    m = parse_message(torture(name))
    ACCEPTED[name](m)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", sorted(INVALID))
def test_rfc4475_invalid(name: str) -> None:
    data = torture(name)
    status, word = INVALID[name]
    err = rejected(data)
    assert err.status == status, err
    assert word in err.reason, err.reason
    assert err.is_request == (not data.startswith(b"SIP/"))
    if status is None:
        assert error_response(err, "t1") is None  # discard


@pytest.mark.parametrize("name", sorted(set(VALID) | set(ACCEPTED)))
def test_rfc4475_accepted_messages_survive_a_round_trip(name: str) -> None:
    m = parse_message(torture(name))
    again = parse_message(serialize(m))
    assert again == m
    assert serialize(again) == serialize(m)


def test_scalar02_each_bad_value_is_rejected_on_its_own() -> None:
    data = torture("scalar02")
    data = replace(data, b"36893488147419103232", b"1")
    assert "Max-Forwards" in rejected(data).reason
    data = replace(data, b"Max-Forwards: 300", b"Max-Forwards: 70")
    assert "Expires" in rejected(data).reason
    data = replace(data, b"Expires: 1" + b"0" * 100, b"Expires: 3600")
    m = req(data)  # what is left is valid; the huge contact expires is the registrar's
    assert m.contacts[0].params == {"expires": "280297596632815"}


def test_insuf_names_a_missing_header_and_can_still_be_answered() -> None:
    err = rejected(torture("insuf"))
    answer = error_response(err, "t")
    assert answer is not None and answer.startswith(b"SIP/2.0 400 ")
    assert b"Via: SIP/2.0/UDP 192.0.2.95;branch=z9hG4bKkdj.insuf" in answer


def test_reasons_name_the_header_even_after_the_first_error() -> None:
    # baddn: From is broken, yet To, Call-ID and CSeq (after it) reach the error answer.
    err = rejected(torture("baddn"))
    names = [n for n, _ in err.headers]
    assert names == ["Via", "Max-Forwards", "From", "To", "Call-ID", "Accept", "CSeq", "l"]
    answer = error_response(err, "x")
    assert answer is not None
    assert b"Call-ID: baddn.31415@c.example.com" in answer and b"CSeq: 3923239 OPTIONS" in answer


# --- start lines --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "status", "word"),
    [
        ("OPTIONS sip:bob@example.com SIP/2.0 ", 400, "Request-Line"),
        ("OPTIONS  sip:bob@example.com SIP/2.0", 400, "Request-Line"),
        ("OPTIONS sip:bob@example.com", 400, "Request-Line"),
        ("OPTIONS sip:bob@example.com SIP/3.0", 505, "Version"),
        ("OPTIONS sip:bob@example.com SIP/2.0x", 400, "Request-Line"),
        ("OPTIONS sip:bob@example.com sip/2.0", 400, "Request-Line"),
        ("OPT(IONS sip:bob@example.com SIP/2.0", 400, "method"),
        ("OPTIONS <sip:bob@example.com> SIP/2.0", 400, "angle"),
        ("OPTIONS sip:bob@example.com:65536 SIP/2.0", 400, "Request-URI"),
        ("OPTIONS sip:bob@exa_mple.com SIP/2.0", 400, "Request-URI"),
        ("OPTIONS sip:bob@example.com?Subject=x SIP/2.0", 400, "Request-URI"),
        ("OPTIONS nocolon SIP/2.0", 400, "Request-URI"),
    ],
)
def test_bad_request_lines(start: str, status: int, word: str) -> None:
    err = rejected(msg(start=start))
    assert (err.status, err.is_request) == (status, True)
    assert word in err.reason


def test_request_uri_headers_are_rejected_even_when_the_uri_was_cached() -> None:
    req(msg("Contact: <sip:bob@example.com?Subject=x>"))  # cached as a Contact URI
    err = rejected(msg(start="OPTIONS sip:bob@example.com?Subject=x SIP/2.0"))
    assert err.status == 400 and "Request-URI" in err.reason


@pytest.mark.parametrize(
    "start",
    ["SIP/2.0 20 OK", "SIP/2.0 2000 OK", "SIP/2.0 099 Low", "SIP/2.0 700 High",
     "SIP/2.0 \uff12\uff10\uff10 OK", "SIP/2.0 \u00b2\u00b2\u00b2 OK", "SIP/2.1 200 OK", "SIP/2.0"],
)
def test_bad_status_lines_are_discarded(start: str) -> None:
    err = rejected(msg(start=start))
    assert err.status is None and err.is_request is False
    assert error_response(err, "t") is None


def test_status_line_reason_is_kept_as_written() -> None:
    m = resp(msg(start="SIP/2.0 486 Busy  Here, really "))
    assert (m.status, m.reason) == (486, "Busy  Here, really ")


def test_leading_crlfs_are_ignored() -> None:
    assert req(b"\r\n\r\n" + msg()).method == "OPTIONS"


# --- header section -----------------------------------------------------------------------------


def test_folding_joins_continuation_lines_with_one_space() -> None:
    m = req(msg("Subject: first\r\n  second \r\n\tthird", "Contact:\r\n <sip:a@b>\r\n ;q=0.5"))
    assert m.header("Subject") == "first second third"
    assert m.contacts[0].params == {"q": "0.5"}
    assert str(m.contacts[0]) == "<sip:a@b> ;q=0.5"


def test_folded_typed_headers() -> None:
    m = req(msg(start="OPTIONS sip:bob@example.com SIP/2.0",
                base=BASE.replace("CSeq: 314159 OPTIONS", "CSeq: 314159\r\n\tOPTIONS")))
    assert m.cseq == CSeq(314159, "OPTIONS")


@pytest.mark.parametrize(
    "data",
    [b"OPTIONS sip:a@b SIP/2.0\r\n Via: x\r\n\r\n", b"OPTIONS sip:a@b\r\n SIP/2.0\r\n\r\n"],
)
def test_continuation_of_the_start_line_is_rejected(data: bytes) -> None:
    assert "Continuation" in rejected(data).reason


@pytest.mark.parametrize("bad", ["X: a\nb", "X: a\rb", "X: a\r", "Via: SIP/2.0/UDP h\n;x=1"])
def test_bare_cr_or_lf_in_the_header_section_is_rejected(bad: str) -> None:
    err = rejected(msg(bad))
    assert err.status == 400 and "Bare CR or LF" in err.reason


def test_compact_forms() -> None:
    data = (
        b"INVITE sip:bob@example.com SIP/2.0\r\n"
        b"v: SIP/2.0/UDP h1;branch=z9hG4bK1\r\nV: SIP/2.0/TCP h2;branch=z9hG4bK2\r\n"
        b"f: <sip:a@example.com>;tag=1\r\nt: <sip:b@example.com>\r\ni: cid\r\n"
        b"CSeq: 1 INVITE\r\nm: <sip:a@192.0.2.1>\r\nc: application/sdp\r\n"
        b"s: subject\r\nk: timer\r\no: presence\r\nr: <sip:c@example.com>\r\n"
        b"b: <sip:d@example.com>\r\nu: dialog\r\nx: 1800\r\na: *;audio\r\nj: *;video\r\n"
        b"d: proxy\r\ny: sig\r\nn: <https://x>\r\ne: gzip\r\nQ: unknown compact\r\n"
        b"l: 4\r\n\r\nbody"
    )
    m = req(data)
    assert [v.host for v in m.vias] == ["h1", "h2"]
    assert (m.from_.tag, str(m.to.uri), m.call_id) == ("1", "sip:b@example.com", "cid")
    assert str(m.contacts[0].uri) == "sip:a@192.0.2.1"
    assert m.content_type == "application/sdp" and m.body == b"body"
    assert [k for k, _ in m.extra] == [
        "Subject", "Supported", "Event", "Refer-To", "Referred-By", "Allow-Events",
        "Session-Expires", "Accept-Contact", "Reject-Contact", "Request-Disposition",
        "Identity", "Identity-Info", "Content-Encoding", "Q",
    ]


def test_header_names_are_case_insensitive_and_may_have_trailing_whitespace() -> None:
    data = (
        b"OPTIONS sip:bob@example.com SIP/2.0\r\nVIA: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
        b"fRoM\t: <sip:a@b>;tag=1\r\nto  :<sip:b@b>\r\ncall-id:x\r\ncseq : 2 OPTIONS\r\n"
        b"MAX-FORWARDS: 1\r\nrecord-route: <sip:p;lr>\r\nROUTE: <sip:q;lr>\r\nexpires: 5\r\n"
        b"require: a\r\nPROXY-require: b\r\nContent-type: text/plain\r\n\r\n"
    )
    m = req(data)
    assert (m.vias[0].host, m.from_.tag, m.call_id, m.cseq.seq, m.max_forwards) == (
        "h", "1", "x", 2, 1)
    assert [str(r.uri) for r in m.record_routes] == ["sip:p;lr"]
    assert [str(r.uri) for r in m.routes] == ["sip:q;lr"]
    assert (m.expires, m.require, m.proxy_require) == (5, ["a"], ["b"])
    assert m.content_type == "text/plain" and m.extra == []


@pytest.mark.parametrize("line", ["Bad Name: x", "NoColon", ": empty name", "Ü: x", "a(b: c"])
def test_malformed_header_lines(line: str) -> None:
    err = rejected(msg(line))
    assert err.status == 400 and "header line" in err.reason


def test_unknown_headers_keep_order_and_text() -> None:
    m = req(msg("X-B: 2", "X-A:  1  ", "X-B: 3,4", "User-Agent: ua/1"))
    assert m.extra == [("X-B", "2"), ("X-A", "1"), ("X-B", "3,4"), ("User-Agent", "ua/1")]
    assert m.headers("x-b") == ["2", "3,4"] and m.header("x-c") is None


@pytest.mark.parametrize("missing", ["Via", "From", "To", "Call-ID", "CSeq"])
def test_missing_mandatory_headers(missing: str) -> None:
    base = "".join(line + "\r\n" for line in BASE.split("\r\n")
                   if line and not line.startswith(missing + ":"))
    err = rejected(msg(base=base))
    assert err.status == 400 and err.reason == f"Missing {missing} header"


@pytest.mark.parametrize(
    "dup",
    ["From: <sip:x@y>;tag=2", "To: <sip:x@y>", "Call-ID: other", "CSeq: 1 OPTIONS",
     "Max-Forwards: 9", "Expires: 1", "Content-Length: 0\r\nl: 0", "Content-Type: a/b\r\nc: a/b"],
)
def test_duplicate_single_value_headers(dup: str) -> None:
    err = rejected(msg(dup, "Expires: 1" if dup.startswith("Expires") else "X: y"))
    assert err.status == 400 and "Duplicate" in err.reason


# --- typed header values ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seq", "method"),
    [("1 OPTIONS", 1, "OPTIONS"), ("4294967295 OPTIONS", 2**32 - 1, "OPTIONS"),
     ("  7\t OPTIONS ", 7, "OPTIONS"), ("007 OPTIONS", 7, "OPTIONS")],
)
def test_cseq_forms(value: str, seq: int, method: str) -> None:
    base = BASE.replace("CSeq: 314159 OPTIONS", f"CSeq:{value}")
    assert req(msg(base=base)).cseq == CSeq(seq, method)


@pytest.mark.parametrize(
    "value", ["4294967296 OPTIONS", "12345678901 OPTIONS", "-1 OPTIONS", "x OPTIONS", "1",
              "1 OPT IONS", "\u0661 OPTIONS", "\u00b2 OPTIONS", "1 OPT(ONS"],
)
def test_bad_cseq(value: str) -> None:
    base = BASE.replace("CSeq: 314159 OPTIONS", f"CSeq: {value}")
    err = rejected(msg(base=base))
    assert err.status == 400 and "CSeq" in err.reason


@pytest.mark.parametrize(("value", "ok"), [("0", True), ("255", True), ("256", False),
                                           ("-1", False), ("1.0", False), ("\u00b2", False),
                                           ("\u0661", False), ("", False), ("0x10", False)])
def test_max_forwards_bounds(value: str, ok: bool) -> None:
    data = msg(base=BASE.replace("Max-Forwards: 70", f"Max-Forwards: {value}"))
    if ok:
        assert req(data).max_forwards == int(value)
    else:
        err = rejected(data)
        assert err.status == 400 and "Max-Forwards" in err.reason


@pytest.mark.parametrize(("value", "ok"), [("0", True), ("4294967295", True),
                                           ("4294967296", False), ("99999999999", False),
                                           ("1e3", False), ("\u00b2", False)])
def test_expires_bounds(value: str, ok: bool) -> None:
    data = msg(f"Expires: {value}")
    if ok:
        assert req(data).expires == int(value)
    else:
        assert "Expires" in rejected(data).reason


@pytest.mark.parametrize("value", ["", "a b", "a\tb"])
def test_bad_call_id(value: str) -> None:
    data = msg(base=BASE.replace("Call-ID: a84b4c76e66710@pc33.example.com", f"Call-ID: {value}"))
    assert "Call-ID" in rejected(data).reason


def test_require_and_proxy_require_token_lists() -> None:
    m = req(msg("Require: 100rel , timer", "Require: path", "Proxy-Require: sec-agree"))
    assert m.require == ["100rel", "timer", "path"] and m.proxy_require == ["sec-agree"]
    for bad in ("Require: a b", "Require: a,,b", "Proxy-Require: <x>", "Require:"):
        assert "Require" in rejected(msg(bad)).reason


def test_content_length_forms() -> None:
    body = b"0123456789"
    assert req(msg("Content-Length: 4", body=body)).body == b"0123"  # extra octets ignored
    assert req(msg("l:10", body=body)).body == body
    assert req(msg(body=body)).body == body  # datagram without Content-Length: to the end
    err = rejected(msg("Content-Length: 11", body=body))
    assert err.status == 400 and "Content-Length" in err.reason
    for bad in ("-1", "1.5", "\u00b2", "12345678901", ""):
        err = rejected(msg(f"Content-Length: {bad}"))
        assert err.status is None and err.is_request  # discard: nothing frames it
    err = rejected(msg(), stream=True)
    assert err.status == 400 and "Content-Length" in err.reason


# --- Via ------------------------------------------------------------------------------------------


def test_via_forms() -> None:
    (v,) = parse_via_list("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKx;rport;received=192.0.2.9")
    assert (v.transport, v.host, v.port, v.protocol) == ("UDP", "192.0.2.1", 5060, "SIP/2.0")
    assert v.params == {"branch": "z9hG4bKx", "rport": None, "received": "192.0.2.9"}
    (v,) = parse_via_list("SIP/2.0/ws df7jal23ls0d.invalid;branch=z9hG4bKy")
    assert v.transport == "WS" and v.port is None
    (v,) = parse_via_list("SIP/2.0/TCP [2001:db8::1]:5070;branch=z9hG4bKz;received=2001:db8::9")
    assert (v.host, v.port, v.params["received"]) == ("[2001:db8::1]", 5070, "2001:db8::9")
    (v,) = parse_via_list('SIP / 2.0 / UDP host : 5 ; branch = "q;,\\"x" ; ttl=3')
    assert (v.host, v.port, v.params) == ("host", 5, {"branch": '"q;,\\"x"', "ttl": "3"})
    vias = parse_via_list("SIP/2.0/UDP a;branch=1 ,SIP/2.0/TCP b:1, SIP/2.0/TLS [::1]")
    assert [(x.transport, x.host, x.port) for x in vias] == [
        ("UDP", "a", None), ("TCP", "b", 1), ("TLS", "[::1]", None)]
    assert [str(x) for x in vias] == ["SIP/2.0/UDP a;branch=1", "SIP/2.0/TCP b:1",
                                      "SIP/2.0/TLS [::1]"]


@pytest.mark.parametrize(
    "value",
    ["SIP/2.0/UDP", "SIP/2.0/UDP h:65536", "SIP/2.0/UDP h:123456", "SIP/2.0/UDP h;;x",
     "SIP/2.0/UDP h : 70000", "SIP / 2.0 / UDP h;=x", "SIP/2.0/UDP h;a b",
     "SIP/2.0/UDP h;branch=1,", "SIP/2.0/UDP h,,SIP/2.0/UDP g", "HTTP/1.1/TCP h", "SIP/2.0 h",
     "SIP/2.0/UDP h:\u00b2", "SIP/2.0/UDP h;a=\"unterminated", "SIP/2.0/UDP [::1",
     "SIP/2.0/UDP h x"],
)
def test_bad_vias(value: str) -> None:
    with pytest.raises(RemoteProtocolError):
        parse_via_list(value)
    err = rejected(msg(f"Via: {value}"))
    assert err.status == 400 and "Via" in err.reason


def test_via_count_limit() -> None:
    ok = [f"Via: SIP/2.0/UDP p{i}.example.com;branch=z9hG4bK{i}" for i in range(MAX_VIAS - 1)]
    assert len(req(msg(*ok)).vias) == MAX_VIAS
    err = rejected(msg(*ok, "Via: SIP/2.0/UDP a, SIP/2.0/UDP b"))
    assert err.status == 400 and "Via" in err.reason


def test_a_version_other_than_2_0_in_via_is_kept() -> None:
    (v,) = parse_via_list("SIP/2.1/UDP h")
    assert v.protocol == "SIP/2.1"


# --- name-addr, addr-spec and lists ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "display", "uri", "params"),
    [
        ("<sip:a@b>", None, "sip:a@b", {}),
        ("Alice <sip:alice@example.com>;tag=9", "Alice", "sip:alice@example.com", {"tag": "9"}),
        ("A  B\t<sip:a@b>", "A  B", "sip:a@b", {}),
        ('"Doe, John <x>" <sip:j@x>;q=0.1', '"Doe, John <x>"', "sip:j@x", {"q": "0.1"}),
        ('"a \\" b"<sip:a@b>', '"a \\" b"', "sip:a@b", {}),
        ('""  <sip:a@b>', '""', "sip:a@b", {}),
        ("<sip:a@b;lr>;x;y=\"1 2\"", None, "sip:a@b;lr", {"x": None, "y": '"1 2"'}),
        ("<sip:a@b> ; tag = x", None, "sip:a@b", {"tag": "x"}),
        ("sip:a@b;tag=1;user=phone", None, "sip:a@b", {"tag": "1", "user": "phone"}),
        ("sip:a@b ;tag=1", None, "sip:a@b", {"tag": "1"}),
        ("<tel:+1-201-555-0123;phone-context=x>", None, "tel:+1-201-555-0123;phone-context=x",
         {}),
        ("T <SIPS:A@B:5061>", "T", "SIPS:A@B:5061", {}),
        ("<urn:service:sos>", None, "urn:service:sos", {}),
        ("<sip:[2001:db8::1]:5070;transport=tcp>", None, "sip:[2001:db8::1]:5070;transport=tcp",
         {}),
        ("  <sip:a@b>  ", None, "sip:a@b", {}),
    ],
)
def test_name_addr_forms(value: str, display: str | None, uri: str,
                         params: dict[str, str | None]) -> None:
    na = parse_name_addr(value)
    assert (na.display, str(na.uri), dict(na.params)) == (display, uri, params)
    assert str(na) == value.strip()


def test_uri_components_in_name_addr() -> None:
    na = parse_name_addr("<sips:u:pw@[2001:db8::1]:5061;transport=tls;lr?X=1&Y=%20>;tag=t")
    u = na.uri
    assert isinstance(u, SipURI)
    assert (u.scheme, u.user, u.password, u.host, u.port) == ("sips", "u", "pw",
                                                              "[2001:db8::1]", 5061)
    assert (u.params, u.headers, u.transport, u.lr) == ({"transport": "tls", "lr": None},
                                                       "X=1&Y=%20", "TLS", True)
    tel = parse_name_addr("<tel:+358-555-1234567;postd=pp22>").uri
    assert tel == TelURI("+358-555-1234567", {"postd": "pp22"})


@pytest.mark.parametrize(
    "value",
    ['"unterminated <sip:a@b>', "<sip:a@b", "sip:a@b>", "< sip:a@b>", "<sip:a @b>", "<>",
     "A, B <sip:a@b>", "A <sip:a@b> junk", "<sip:a@b>;", "<sip:a@b>;;", "<sip:a@b>;=x",
     "sip:a@b?x=y", '"a" b <sip:a@b>', "<sip:a@b:99999>", "<sip:a@b><sip:c@d>", "",
     "<sip:a@" + "b" * MAX_URI_LENGTH + ">", "\"x\" sip:a@b", "<sip:a@b>;t=\"x"],
)
def test_bad_name_addrs(value: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_name_addr(value)
    assert info.value.status == 400


def test_lists_respect_quotes_and_angle_brackets() -> None:
    value = '"Doe, J" <sip:j,1@x;a=1>;q=0.5, <sip:k@y> ,sip:l@z;expires=60'
    assert split_list(value) == ['"Doe, J" <sip:j,1@x;a=1>;q=0.5', "<sip:k@y>",
                                 "sip:l@z;expires=60"]
    contacts = parse_name_addr_list(value)
    assert [str(c.uri) for c in contacts] == ["sip:j,1@x;a=1", "sip:k@y", "sip:l@z"]
    assert [c.params for c in contacts] == [{"q": "0.5"}, {}, {"expires": "60"}]
    m = req(msg(f"Contact: {value}", "Route: <sip:p1;lr>,<sip:p2;lr>", "Route: <sip:p3;lr>",
                "Record-Route: <sip:r1;lr>, <sip:r2;lr>"))
    assert len(m.contacts) == 3
    assert [str(r.uri) for r in m.routes] == ["sip:p1;lr", "sip:p2;lr", "sip:p3;lr"]
    assert [str(r.uri) for r in m.record_routes] == ["sip:r1;lr", "sip:r2;lr"]


@pytest.mark.parametrize(
    "value", ['"a, <sip:a@b>', "<sip:a@b>,,<sip:c@d>", "<sip:a@b>,", ",<sip:a@b>",
              "<sip:a@b,<sip:c@d>"],
)
def test_bad_lists(value: str) -> None:
    err = rejected(msg(f"Contact: {value}"))
    assert err.status == 400 and "Contact" in err.reason


def test_contact_star() -> None:
    m = req(msg("Contact: *", "Expires: 0"))
    assert m.contact_star and m.contacts == []
    assert not req(msg()).contact_star
    assert "Contact" in rejected(msg("Contact: *, <sip:a@b>")).reason


def test_ipv6_hosts_everywhere() -> None:
    m = req(msg(start="OPTIONS sip:bob@[2001:db8::2]:5070;transport=tcp SIP/2.0",
                base=BASE.replace("192.0.2.1:5060", "[2001:db8::1]:5060")))
    assert isinstance(m.uri, SipURI) and (m.uri.host, m.uri.port) == ("[2001:db8::2]", 5070)
    assert m.vias[0].sent_by == ("[2001:db8::1]", 5060)


@pytest.mark.parametrize("port", ["0", "5060", "65535"])
def test_ports_in_range(port: str) -> None:
    m = req(msg(f"Contact: <sip:a@b:{port}>", start=f"OPTIONS sip:b@c:{port} SIP/2.0"))
    assert isinstance(m.uri, SipURI) and m.uri.port == int(port)


@pytest.mark.parametrize("where", ["start", "Contact", "Route", "Via", "To"])
def test_ports_out_of_range(where: str) -> None:
    if where == "start":
        data = msg(start="OPTIONS sip:b@c:65536 SIP/2.0")
    elif where == "Via":
        data = msg(base=BASE.replace("192.0.2.1:5060", "192.0.2.1:65536"))
    elif where == "To":
        data = msg(base=BASE.replace("To: Bob <sip:bob@example.com>", "To: sip:b@c:99999"))
    else:
        data = msg(f"{where}: <sip:a@b:70000>")
    err = rejected(data)
    assert err.status == 400


# --- limits ---------------------------------------------------------------------------------------


def test_message_size_limit_answers_513_with_the_headers() -> None:
    body = b"x" * (MAX_MESSAGE_SIZE - len(msg()) + 1)
    err = rejected(msg(body=body))
    assert (err.status, err.is_request) == (513, True)
    answer = error_response(err, "t")
    assert answer is not None and answer.startswith(b"SIP/2.0 513 Message Too Large\r\n")
    assert b"Call-ID: a84b4c76e66710@pc33.example.com" in answer
    exact = msg(body=body[:-1])
    assert len(exact) == MAX_MESSAGE_SIZE and len(req(exact).body) == len(body) - 1


def test_oversized_response_is_discarded() -> None:
    err = rejected(msg(start="SIP/2.0 200 OK", body=b"x" * MAX_MESSAGE_SIZE))
    assert err.status is None and err.is_request is False


def test_header_count_limit() -> None:
    fixed = BASE.count("\r\n") - 1  # header lines in BASE (the start line is not one)
    assert len(req(msg(*["X: y"] * (MAX_HEADERS - fixed))).extra) == MAX_HEADERS - fixed
    err = rejected(msg(*["X: y"] * (MAX_HEADERS - fixed + 1)))
    assert err.status == 400 and "Too many header" in err.reason


def test_header_line_limit() -> None:
    assert req(msg("X: " + "a" * (MAX_HEADER_LINE - 3))).extra[0][1] == "a" * (
        MAX_HEADER_LINE - 3)
    err = rejected(msg("X: " + "a" * (MAX_HEADER_LINE - 2)))
    assert err.status == 400 and "too long" in err.reason
    # A 60 KB line is rejected (and read once: the size and line checks are linear).
    err = rejected(msg("X: " + "a" * 60_000))
    assert err.status == 400 and "too long" in err.reason
    # Folded lines are measured after unfolding.
    folded = "X: " + "\r\n ".join(["a" * 1000] * 20)
    assert "too long" in rejected(msg(folded)).reason


def test_uri_length_limit() -> None:
    host = "h" * (MAX_URI_LENGTH - len("sip:a@"))
    assert req(msg(start=f"OPTIONS sip:a@{host} SIP/2.0")).uri == SipURI("sip", host, "a")
    err = rejected(msg(start=f"OPTIONS sip:a@{host}h SIP/2.0"))
    assert (err.status, err.reason) == (414, "Request-URI Too Long")
    err = rejected(msg(f"Contact: <sip:a@{host}h>"))
    assert err.status == 400 and "URI too long" in err.reason
    err = rejected(msg(f"Contact: sip:a@{host}h"))
    assert err.status == 400


#: Inputs built to make a backtracking regex or a quadratic loop blow up; each must simply be
#: processed (accepted or rejected).  No timing assertion: the Hypothesis corpus below and the
#: benchmarks cover speed; these make sure the shapes are exercised on every run.
ADVERSARIAL = [
    "X: a" + " " * 30_000 + "b\r\n c",  # a fold after a long run of spaces
    "From: a" + " " * 15_000 + 'a"<',  # display name scan with no URI
    "Contact: " + '"' * 15_000,
    "Contact: " + "<" * 15_000,
    "Contact: " + '<"' * 7_000,
    "Contact: <sip:a@b>" + ";a" * 7_000,
    "Contact: <sip:a@b>" + ';a="' * 3_000,
    "Contact: <sip:a@b>" + " ;" * 7_000,
    "Via: SIP/2.0/UDP h" + ";" * 15_000,
    "Via: SIP/2.0/UDP h" + " " * 15_000 + "x",
    "Via: " + "SIP/2.0/UDP h," * 1_000,
    "Route: " + "<sip:a@b>," * 1_400,
    "To: sip:" + "a" * 4_000 + "@",
    "To: <sip:" + "%" * 4_000 + ">",
    "To: <sip:" + "a;" * 2_000 + ">",
    "CSeq: " + "1" * 15_000 + " OPTIONS",
    "Require: " + "a," * 7_000 + "b",
    "X: " + "\r\n " * 15_000,
]


@pytest.mark.parametrize("line", ADVERSARIAL, ids=range(len(ADVERSARIAL)))
def test_adversarial_inputs_are_processed(line: str) -> None:
    try:
        parse_message(msg(line))
    except RemoteProtocolError as err:
        assert err.status in (400, 414, 513)


def test_many_keepalive_crlfs_before_a_message() -> None:
    assert req(b"\r\n" * 30_000 + msg()).method == "OPTIONS"


# --- caches ---------------------------------------------------------------------------------------


def test_parses_share_values_but_never_lists() -> None:
    data = msg("Route: <sip:p;lr>", "Contact: <sip:c@d>")
    a, b = req(data), req(data)
    assert a == b and a.vias is not b.vias and a.routes is not b.routes
    a.vias[0] = a.vias[0].with_param("received", "192.0.2.99")
    a.routes.append(parse_name_addr("<sip:x;lr>"))
    c = req(data)
    assert c == b and "received" not in c.vias[0].params and len(c.routes) == 1


def test_value_caches_are_bounded() -> None:
    for i in range(VALUE_CACHE_SIZE + 10):
        parse_name_addr(f"<sip:u{i}@example.com>;tag={i}")
        parse_via_list(f"SIP/2.0/UDP h;branch=z9hG4bK{i}")
    assert len(_na_cache) <= VALUE_CACHE_SIZE and len(_via_cache) <= VALUE_CACHE_SIZE
    long_value = "<sip:a@b>;x=" + "y" * CACHED_VALUE_MAX
    parse_name_addr(long_value)
    assert long_value not in _na_cache


def test_errors_are_not_cached() -> None:
    for _ in range(2):
        with pytest.raises(RemoteProtocolError):
            parse_name_addr("<sip:a@b:99999>")
        with pytest.raises(RemoteProtocolError):
            parse_via_list("SIP/2.0/UDP h:99999")


# --- error details --------------------------------------------------------------------------------


def test_error_carries_every_header_and_the_kind() -> None:
    data = msg("Contact: <sip:a@b", "X-After: 1")
    err = rejected(data)
    assert err.is_request is True and "Contact" in err.reason
    assert ("X-After", "1") in err.headers and ("CSeq", "314159 OPTIONS") in err.headers
    assert str(err) == f"400 {err.reason}"


def test_response_errors_are_always_discards() -> None:
    err = rejected(msg("Contact: <sip:a@b", start="SIP/2.0 200 OK"))
    assert err.status is None and err.is_request is False and "Contact" in err.reason
    assert str(err).startswith("discard: ")


def test_incomplete_header_section() -> None:
    err = rejected(msg()[:-2])
    assert err.status == 400 and err.is_request is True
    assert ("Call-ID", "a84b4c76e66710@pc33.example.com") in err.headers
    assert rejected(b"").status == 400
    assert rejected(b"SIP/2.0 200 OK\r\n").status is None


# --- Hypothesis -----------------------------------------------------------------------------------

_SETTINGS = settings(max_examples=150, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(messages, st.booleans())
def test_parse_serialize_round_trip(m: Request | Response, stream: bool) -> None:
    wire = serialize(m)
    parsed = parse_message(wire, stream=stream)
    assert parsed == m
    assert serialize(parsed) == wire  # raw forms re-serialize identically


def _check_only_protocol_errors(data: bytes, stream: bool) -> None:
    try:
        m = parse_message(data, stream=stream)
    except RemoteProtocolError as err:
        if err.is_request:
            assert err.status is None or (isinstance(err.status, int)
                                          and 400 <= err.status <= 599)
        else:
            assert err.is_request is False and err.status is None
        assert isinstance(err.reason, str) and err.reason
        error_response(err, "t")  # never raises either
    else:
        serialize(m)  # whatever was accepted can be written back


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.booleans())
@example(b"\r\n\r\n", False)
@example(b"INVITE sip:a@b SIP/2.0\r\n\r\n", True)
def test_arbitrary_bytes_raise_only_protocol_errors(data: bytes, stream: bool) -> None:
    _check_only_protocol_errors(data, stream)


_CORPUS = list(torture_corpus().values())
_INSERTS = [b";", b",", b'"', b"<", b">", b"\r\n", b"\r\n ", b" ", b"\t", b":", b"%", b"%0",
            b"[", b"]", b"@", b"\\", b"SIP/2.0", b"\x80", b"\x00", b";;;;;;;;", b'""""""',
            "\u00b2".encode(), "\u0661".encode(), b"\r", b"\n", b"99999999999", b"-1", b"*"]


@st.composite
def mutated_torture(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(_CORPUS)))
    for _ in range(draw(st.integers(1, 6))):
        i = draw(st.integers(0, max(len(data) - 1, 0)))
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "repeat"]))
        if op == "flip" and data:
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[i:i] = draw(st.sampled_from(_INSERTS)) * draw(st.sampled_from([1, 2, 50]))
        elif op == "delete":
            del data[i : i + draw(st.integers(1, 16))]
        elif op == "truncate":
            del data[i:]
        else:
            j = draw(st.integers(i, min(len(data), i + 80)))
            data[j:j] = data[i:j] * draw(st.integers(1, 4))
    return bytes(data)


@settings(max_examples=400, deadline=None)
@given(mutated_torture(), st.booleans())
def test_mutated_torture_messages_raise_only_protocol_errors(data: bytes, stream: bool) -> None:
    _check_only_protocol_errors(data, stream)


_CHUNKS = st.sampled_from([";", ",", '"', "<", ">", " ", "\t", "\r\n ", ":", "=", "%", "a",
                           "\\", "sip:", "@", "[", "]", "?", "&"])


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(["Via: SIP/2.0/UDP h", "From: ", "To: a", "Contact: <sip:a@b>",
                        "Route: ", "CSeq: 1", "X: ", "Require: "]),
       st.lists(st.tuples(_CHUNKS, st.integers(1, 2_000)), min_size=1, max_size=4))
def test_adversarial_repetitions_raise_only_protocol_errors(
        prefix: str, parts: list[tuple[str, int]]) -> None:
    line = prefix + "".join(chunk * n for chunk, n in parts)
    _check_only_protocol_errors(msg(line), False)


@_SETTINGS
@given(name_addrs)
def test_name_addr_fast_path_builds_what_the_grammar_builds(na: NameAddr) -> None:
    text = str(na)
    _na_cache.clear()
    fast = parse_name_addr(text)
    slow = _parse_name_addr(text)
    assert fast == slow == na and str(fast) == str(slow) == text


@_SETTINGS
@given(vias)
def test_via_fast_path_builds_what_the_grammar_builds(via: Via) -> None:
    text = str(via)
    _via_cache.clear()
    assert parse_via_list(text) == _slow_via_list(text) == [via]


def test_name_addr_fast_and_general_paths_agree() -> None:
    """The fast regex path must build what the general grammar builds."""
    for text in ["Alice <sip:alice@example.com>;tag=9", '"A" <sips:a:p@[::1]:5;x=1?h=v>;q=1',
                 "<sip:p.example.com;lr>", "A B <sip:a@b>", "<sip:%61@b;m%61=1>;tag=x"]:
        _na_cache.clear()
        fast = parse_name_addr(text)
        slow = _parse_name_addr(text)
        assert fast == slow and str(fast) == str(slow) == text
        assert isinstance(fast, NameAddr)


# --- the C fast path switch -----------------------------------------------------------------


def test_the_fast_path_is_built_and_in_use() -> None:
    """The test command requires the extension (SIGNALING_REQUIRE_SPEEDUPS=1): without it
    the differential tests of test_speedups.py would compare nothing."""
    assert parser.ACCELERATED and parser.fast_parse is not None
    data = msg()
    fast = parser.fast_parse(data, False)
    assert fast is not None and parse_message(data) == fast


def test_pure_python_on_request() -> None:
    try:
        assert parser.set_fast_path(False) is False
        assert parser.fast_parse is None and not parser.ACCELERATED
        data = msg()
        assert parse_message(data) == parser.parse_message_pure(data)
    finally:
        assert parser.set_fast_path(True) is True
    assert parser.ACCELERATED and parser.fast_parse is not None


def test_a_model_change_unknown_to_the_fast_path_switches_it_off(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The C code stores fields by slot offset, bypassing __init__: if the model gains a
    field it does not know, it must not build objects missing that field."""
    from protocols.sip import _speedups

    assert parser._load_fast_parse() is not None
    monkeypatch.setitem(_speedups.FIELDS, "Via", ("transport", "host"))
    assert parser._load_fast_parse() is None


def test_the_fast_path_rejects_what_is_not_bytes() -> None:
    assert parser.fast_parse is not None
    for bad in (msg().decode(), bytearray(msg()), memoryview(msg()), None):
        with pytest.raises(TypeError):
            parser.fast_parse(bad, False)  # type: ignore[arg-type]
