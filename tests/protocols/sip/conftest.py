"""Shared Hypothesis strategies and corpus helpers for the SIP codec tests.

The strategies build *valid* messages in code (RFC 3261 §25 grammar, every component drawn from
its own character set) so ``parse_message(serialize(m)) == m`` can be checked; the corpus
helpers read the RFC 4475 torture messages in place from ``../shared`` (never copied).
"""

from __future__ import annotations

import string
from pathlib import Path

from hypothesis import strategies as st

from protocols.sip.message import (
    URI,
    AbsoluteURI,
    CSeq,
    NameAddr,
    ParamDict,
    Request,
    Response,
    SipURI,
    TelURI,
    Via,
)

__all__ = [
    "RFC4475_DIR",
    "absolute_uris",
    "display_names",
    "header_params",
    "hosts",
    "messages",
    "name_addrs",
    "requests",
    "responses",
    "sip_uris",
    "tel_uris",
    "tokens",
    "torture",
    "torture_corpus",
    "vias",
]


def _find_rfc4475() -> Path:
    """The shared corpus, located from this file (repo root's sibling ``shared``)."""
    for parent in Path(__file__).resolve().parents:
        candidate = parent.parent / "shared" / "conformance" / "sip" / "rfc4475"
        if (parent / "pyproject.toml").exists():
            return candidate
    raise AssertionError("repository root (pyproject.toml) not found above " + __file__)


#: Where the RFC 4475 torture messages live; the conformance tests fail loudly if absent.
RFC4475_DIR = _find_rfc4475()


def torture(name: str) -> bytes:
    """One RFC 4475 message by file stem; a missing file is a test failure, not a skip."""
    path = RFC4475_DIR / f"{name}.dat"
    assert path.is_file(), f"RFC 4475 corpus file missing: {path}"
    return path.read_bytes()


def torture_corpus() -> dict[str, bytes]:
    assert RFC4475_DIR.is_dir(), f"RFC 4475 corpus missing: {RFC4475_DIR}"
    return {p.stem: p.read_bytes() for p in sorted(RFC4475_DIR.glob("*.dat"))}


# --- character sets (RFC 3261 §25.1) ----------------------------------------------------------

TOKEN_CHARS = string.ascii_letters + string.digits + "-.!%*_+`'~"
_ALNUM = string.ascii_letters + string.digits
_UNRESERVED = _ALNUM + "-_.!~*'()"
_USER_CHARS = _UNRESERVED + "&=+$,;?/"
_PASSWORD_CHARS = _UNRESERVED + "&=+$,"
_PARAM_CHARS = _UNRESERVED + "[]/:&+$"
_HEADER_CHARS = _UNRESERVED + "[]/?:+$"
_WORD_CHARS = _ALNUM + "-.!%*_+`'~()<>:\\\"/[]?{}"
# Header names that the parser decodes into typed fields, with their compact forms: an
# "extra" header must not use one, or it would round-trip into the typed field instead.
_TYPED = {
    "via", "v", "from", "f", "to", "t", "call-id", "i", "cseq", "max-forwards", "expires",
    "content-length", "l", "content-type", "c", "route", "record-route", "contact", "m",
    "require", "proxy-require",
}

tokens = st.text(TOKEN_CHARS, min_size=1, max_size=10)
_escapes = st.sampled_from(["%41", "%2f", "%00", "%3A", "%25", "%e2%82%ac"])


def _escaped(chars: str, min_size: int = 1) -> st.SearchStrategy[str]:
    part = st.one_of(st.text(chars, min_size=1, max_size=6), _escapes)
    return st.lists(part, min_size=min_size, max_size=4).map("".join)


_label = st.from_regex(r"[a-z0-9]([a-z0-9\-]{0,6}[a-z0-9])?", fullmatch=True)
_domain = st.lists(_label, min_size=1, max_size=4).map(".".join)
_ipv4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
_ipv6 = st.sampled_from(["[::1]", "[2001:db8::10]", "[fe80::1:2:3:4]",
                         "[2001:DB8:0:0:8:800:200C:417A]", "[::ffff:192.0.2.1]"])
hosts = st.one_of(_domain, _ipv4, _ipv6)
ports = st.none() | st.integers(0, 65535)


def _params(name: st.SearchStrategy[str], value: st.SearchStrategy[str]) -> st.SearchStrategy[
        ParamDict]:
    return st.dictionaries(name, st.none() | value, max_size=4)


_quoted = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters='"\\'),
    max_size=8,
).map(lambda s: f'"{s}"')
#: Header parameters (generic-param): token name, token / host / quoted-string value.
header_params = _params(tokens, st.one_of(tokens, _ipv4, _quoted))
_uri_params = _params(_escaped(_PARAM_CHARS), _escaped(_PARAM_CHARS))
_uri_headers = st.lists(
    st.tuples(_escaped(_HEADER_CHARS), _escaped(_HEADER_CHARS, 0)).map("=".join),
    min_size=1, max_size=3,
).map("&".join)


@st.composite
def sip_uris(draw: st.DrawFn, *, allow_headers: bool = True) -> SipURI:
    user = draw(st.none() | _escaped(_USER_CHARS))
    password = draw(st.none() | _escaped(_PASSWORD_CHARS, 0)) if user is not None else None
    headers = draw(st.none() | _uri_headers) if allow_headers else None
    return SipURI(
        scheme=draw(st.sampled_from(["sip", "sips"])),
        host=draw(hosts),
        user=user,
        password=password,
        port=draw(ports),
        params=draw(_uri_params),
        headers=headers,
    )


tel_uris = st.builds(
    TelURI,
    number=st.text("0123456789-.()+*#", min_size=1, max_size=12),
    params=_uri_params,
)
absolute_uris = st.builds(
    AbsoluteURI,
    scheme=st.from_regex(r"[a-z][a-z0-9+.\-]{0,8}", fullmatch=True).filter(
        lambda s: s not in ("sip", "sips", "tel")
    ),
    opaque=st.text(_ALNUM + "/:.-_~!$&'()*+,;=?@%", max_size=16),
)


def any_uris(*, allow_headers: bool = True) -> st.SearchStrategy[URI]:
    return st.one_of(sip_uris(allow_headers=allow_headers), tel_uris, absolute_uris)


_display_tokens = st.lists(tokens, min_size=1, max_size=3).map(" ".join)
_display_quoted = st.lists(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters='"\\')
    | st.sampled_from(['\\"', "\\\\", "<", ">", ",", ";", " "]),
    max_size=10,
).map(lambda s: '"' + "".join(s) + '"')
display_names = st.none() | _display_tokens | _display_quoted

name_addrs = st.builds(NameAddr, uri=any_uris(), display=display_names, params=header_params)
vias = st.builds(
    Via,
    transport=st.sampled_from(["UDP", "TCP", "TLS", "SCTP", "WS", "WSS", "X-NEW"]),
    host=hosts,
    port=ports,
    params=header_params,
)
_call_ids = st.tuples(
    st.text(_WORD_CHARS, min_size=1, max_size=16), st.none() | st.text(_WORD_CHARS, min_size=1,
                                                                         max_size=12)
).map(lambda t: t[0] if t[1] is None else f"{t[0]}@{t[1]}")
_extra_names = tokens.filter(lambda n: n.lower() not in _TYPED and len(n) > 1)
_extra_values = st.text(
    st.characters(blacklist_categories=("Cs", "Cc")), max_size=20
).map(lambda s: s.strip(" \t"))
_content_types = st.none() | st.tuples(tokens, tokens, st.none() | tokens).map(
    lambda t: f"{t[0]}/{t[1]}" + ("" if t[2] is None else f";charset={t[2]}")
)


@st.composite
def _common(draw: st.DrawFn, method: str) -> dict[str, object]:
    star = draw(st.booleans())
    return {
        "vias": draw(st.lists(vias, min_size=1, max_size=4)),
        "from_": draw(name_addrs),
        "to": draw(name_addrs),
        "call_id": draw(_call_ids),
        "cseq": CSeq(draw(st.integers(0, 2**32 - 1)), method),
        "max_forwards": draw(st.none() | st.integers(0, 255)),
        "routes": draw(st.lists(name_addrs, max_size=3)),
        "record_routes": draw(st.lists(name_addrs, max_size=3)),
        "contacts": draw(st.lists(name_addrs, max_size=3)),
        "contact_star": star,
        "expires": draw(st.none() | st.integers(0, 2**32 - 1)),
        "require": draw(st.lists(tokens, max_size=3)),
        "proxy_require": draw(st.lists(tokens, max_size=3)),
        "content_type": draw(_content_types),
        "extra": draw(st.lists(st.tuples(_extra_names, _extra_values), max_size=4)),
        "body": draw(st.binary(max_size=64)),
    }


@st.composite
def requests(draw: st.DrawFn) -> Request:
    method = draw(st.sampled_from(["INVITE", "ACK", "BYE", "REGISTER", "OPTIONS"]) | tokens)
    fields = draw(_common(method))
    return Request(method=method, uri=draw(any_uris(allow_headers=False)), **fields)  # type: ignore[arg-type]


@st.composite
def responses(draw: st.DrawFn) -> Response:
    fields = draw(_common(draw(st.sampled_from(["INVITE", "BYE"]) | tokens)))
    reason = draw(st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=20))
    return Response(status=draw(st.integers(100, 699)), reason=reason, **fields)  # type: ignore[arg-type]


messages = st.one_of(requests(), responses())
