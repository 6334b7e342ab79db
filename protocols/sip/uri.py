"""URI parsing and comparison (RFC 3261 §19.1, RFC 3966 tel, RFC 3986 absoluteURI).

Components are stored exactly as written, escapes included (RFC 4475 §3.1.1.3: no recursive
unescaping); ``unescape`` is applied once, only where §19.1.4 compares URIs.
"""

from __future__ import annotations

import re

from .errors import RemoteProtocolError
from .message import URI, AbsoluteURI, ParamDict, Params, SipURI, TelURI

__all__ = [
    "CACHED_URI_MAX",
    "MAX_URI_LENGTH",
    "SIP_HOSTPART_PATTERN",
    "SIP_URI_PATTERN",
    "URI_CACHE_SIZE",
    "aor_of",
    "parse_params",
    "parse_uri",
    "unescape",
    "uri_equal",
]

#: Longest URI accepted (§21.4.12 414 for a Request-URI).  4 KiB is an order of magnitude above
#: the longest URI RFC 4475's longreq carries, and bounds the per-URI work.
MAX_URI_LENGTH = 4096

_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")
# paramchar = param-unreserved / unreserved / escaped (§25.1)
_PARAM_RE = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()\[\]/:&+$]|%[0-9A-Fa-f]{2})+")
_TEL_RE = re.compile(r"[0-9A-Fa-f*#+\-.()pwPW]+")
_OPAQUE_RE = re.compile(r"[^\s<>\"]*")
_ESC_RE = re.compile(r"%([0-9A-Fa-f]{2})")


def _bad(what: str) -> RemoteProtocolError:
    return RemoteProtocolError(f"Malformed {what}")


#: Parsed URIs by text.  The same URIs recur on every message of a call and across calls to the
#: same users, proxies and gateways; parsed values are immutable, so they are shared.  8192
#: entries hold several seconds of distinct URIs at thousands of calls per second; when full
#: the oldest half is dropped (insertion order), so hostile input cannot grow it.
URI_CACHE_SIZE = 8192
#: URIs longer than this are parsed every time, never cached, so the cache holds at most
#: 8192 x 256 characters (~2 MB plus the parsed values) whatever peers send.
CACHED_URI_MAX = 256
_uri_cache: dict[str, URI] = {}


def _evict() -> None:
    """Keep the newest half (dicts keep insertion order); C-level calls, no per-key loop."""
    newest = list(_uri_cache.items())[URI_CACHE_SIZE // 2 :]
    _uri_cache.clear()
    _uri_cache.update(newest)


def parse_uri(text: str, *, request_uri: bool = False) -> URI:
    """Parse one URI.  ``request_uri`` forbids the headers component (§19.1.1 table)."""
    uri = _uri_cache.get(text)
    if uri is None:
        uri = _parse_uri(text, request_uri)
        if len(text) <= CACHED_URI_MAX:
            if len(_uri_cache) >= URI_CACHE_SIZE:
                _evict()
            _uri_cache[text] = uri
    elif request_uri and isinstance(uri, SipURI) and uri.headers is not None:
        raise RemoteProtocolError("Headers not allowed in Request-URI")
    return uri


def _parse_uri(text: str, request_uri: bool) -> URI:
    if len(text) > MAX_URI_LENGTH:
        raise RemoteProtocolError("Request-URI Too Long" if request_uri else "URI too long",
                                  414 if request_uri else 400)
    if text.startswith("sip:"):
        return _parse_sip("sip", 4, text, request_uri)
    scheme, colon, rest = text.partition(":")
    if not colon or _SCHEME_RE.fullmatch(scheme) is None:
        raise _bad("URI")
    low = scheme.lower()
    if low == "sip" or low == "sips":
        return _parse_sip(low, len(scheme) + 1, text, request_uri)
    if low == "tel":
        return _parse_tel(rest, text)
    if _OPAQUE_RE.fullmatch(rest) is None:
        raise _bad("URI")
    return AbsoluteURI(low, rest, raw=text)


# The whole SIP URI after "scheme:" in one regex (one C-level scan instead of several):
# userinfo, host, port, parameters and headers, each with its §25.1 character set.  Groups:
# user, password, host, port, parameters (with their leading ";"), headers.  The parser embeds
# it in its name-addr regex.
#
# Each run of "character or %HH escape" is written unrolled, ``[c]*(?:%HH[c]*)*``: a "%" can
# only start an escape, so the text splits one way only and a failed match backtracks
# linearly, and the plain characters are consumed by one fast class loop.  A URI without "@"
# has no userinfo: ``SIP_HOSTPART_PATTERN`` (same groups, the first two never set) spares the
# user-part scan over host and parameters that could never end at an "@".
_ESC = r"%[0-9A-Fa-f]{2}"


def _run(chars: str, *, empty: bool = False) -> str:
    """One or more (or zero or more) of ``chars`` or escapes, unrolled."""
    tail = rf"[{chars}]*(?:{_ESC}[{chars}]*)*"
    return tail if empty else rf"(?:[{chars}]|{_ESC}){tail}"


_USER_CHARS = r"A-Za-z0-9\-_.!~*'()&=+$,;?/"  # unreserved, user-unreserved
_PASSWORD_CHARS = r"A-Za-z0-9\-_.!~*'()&=+$,"
_PARAM_CHARS = r"A-Za-z0-9\-_.!~*'()\[\]/:&+$"  # paramchar: param-unreserved, unreserved
_HEADER_CHARS = r"A-Za-z0-9\-_.!~*'()\[\]/?:+$&="  # hname/hvalue chars and the separators
_HOSTPORT = (
    r"([A-Za-z0-9](?:[A-Za-z0-9\-.]*[A-Za-z0-9.])?|\[[0-9A-Fa-f:.]+\])"
    r"(?::([0-9]{1,5}))?"
    rf"((?:;{_run(_PARAM_CHARS)}(?:={_run(_PARAM_CHARS)})?)*)"
    rf"(?:\?({_run(_HEADER_CHARS, empty=True)}))?"
)
SIP_URI_PATTERN = (
    rf"(?:({_run(_USER_CHARS)})(?::({_run(_PASSWORD_CHARS, empty=True)}))?@)?" + _HOSTPORT
)
SIP_HOSTPART_PATTERN = r"(?:(?!)()())?" + _HOSTPORT
_SIP_URI_FULLMATCH = re.compile(SIP_URI_PATTERN).fullmatch
_SIP_HOSTPART_FULLMATCH = re.compile(SIP_HOSTPART_PATTERN).fullmatch


def _parse_sip(scheme: str, pos: int, text: str, request_uri: bool) -> SipURI:
    """``text[pos:]`` is everything after ``scheme:``."""
    m = (_SIP_URI_FULLMATCH if "@" in text else _SIP_HOSTPART_FULLMATCH)(text, pos)
    if m is None:
        raise _bad("SIP URI")
    user, password, host, port, ptext, headers = m.groups()
    if headers is not None and request_uri:
        # §19.1.1: headers are not allowed in a Request-URI; a proxy must never turn them
        # into real headers (RFC 4475 §3.1.2.15 escruri).
        raise RemoteProtocolError("Headers not allowed in Request-URI")
    portn = None
    if port is not None:
        portn = int(port)
        if portn > 65535:
            raise _bad("port")
    params: ParamDict = {}
    if ptext:
        for item in ptext[1:].split(";"):
            name, eq, value = item.partition("=")
            params[name] = value if eq else None
    return SipURI(scheme, host, user, password, portn, params, headers, text)


def _parse_uri_params(text: str) -> Params:
    params: ParamDict = {}
    for item in text.split(";"):
        name, eq, value = item.partition("=")
        if _PARAM_RE.fullmatch(name) is None or (eq and _PARAM_RE.fullmatch(value) is None):
            raise _bad("URI parameter")
        params[name] = value if eq else None
    return params


def _parse_tel(rest: str, text: str) -> TelURI:
    number, _, ptext = rest.partition(";")
    if _TEL_RE.fullmatch(number) is None:
        raise _bad("tel URI")
    return TelURI(number, _parse_uri_params(ptext) if ptext else {}, raw=text)


# Header parameters (§25.1 generic-param): a token name, optionally "=" token / host /
# quoted-string, with LWS allowed around ";" and "=" (RFC 4475 wsinv).
_GEN_PARAM_RE = re.compile(
    r"[ \t]*;[ \t]*([A-Za-z0-9\-.!%*_+`'~]+)"
    r"(?:[ \t]*=[ \t]*(\"(?:[^\"\\]|\\.)*\"|[A-Za-z0-9\-.!%*_+`'~:\[\]]+))?[ \t]*",
    re.S,
)


_SIMPLE_PARAMS_RE = re.compile(
    r"(?:;[A-Za-z0-9\-.!%*_+`'~]+(?:=[A-Za-z0-9\-.!%*_+`'~:\[\]]+)?)+"
)


def parse_params(text: str) -> Params:
    """Header parameters: ``;a=b;c`` with optional LWS; anything else is a 400."""
    params: ParamDict = {}
    if _SIMPLE_PARAMS_RE.fullmatch(text) is not None:
        # Fast path: no whitespace, no quoted values.
        for item in text[1:].split(";"):
            name, eq, value = item.partition("=")
            params[name] = value if eq else None
        return params
    pos, end = 0, len(text)
    while pos < end:
        m = _GEN_PARAM_RE.match(text, pos)
        if m is None:
            raise _bad("header parameters")
        params[m.group(1)] = m.group(2)
        pos = m.end()
    return params


def unescape(text: str) -> str:
    """Decode %HH escapes once (§19.1.4), keeping the result as text (latin-1 for bytes)."""
    if "%" not in text:
        return text
    return _ESC_RE.sub(lambda m: chr(int(m.group(1), 16)), text)


def _cmp_params(a: Params, b: Params) -> bool:
    # §19.1.4: user, ttl, method, maddr and transport must match if present in either;
    # other parameters must match only when present in both.  Names and values compare
    # case-insensitively, escapes decoded.
    la = {unescape(k).lower(): unescape(v or "").lower() for k, v in a.items()}
    lb = {unescape(k).lower(): unescape(v or "").lower() for k, v in b.items()}
    for k in ("user", "ttl", "method", "maddr", "transport"):
        if la.get(k) != lb.get(k):
            return False
    return all(lb[k] == v for k, v in la.items() if k in lb)


def _headers_key(headers: str | None) -> list[tuple[str, str]]:
    """§19.1.4: every header component must be in both URIs, in any order; header names are
    case-insensitive (§7.3.1), values compare as unescaped text."""
    if not headers:
        return []
    pairs = []
    for item in headers.split("&"):
        name, _, value = item.partition("=")
        pairs.append((unescape(name).lower(), unescape(value)))
    return sorted(pairs)


#: RFC 3966 §5.1.1 visual-separator characters, dropped before comparing tel numbers.
_VISUAL_SEPARATORS = str.maketrans("", "", "-.()")


def _cmp_tel_params(a: Params, b: Params) -> bool:
    # RFC 3966 §4: parameters compare case-insensitively and must all be present in both.
    return ({unescape(k).lower(): unescape(v or "").lower() for k, v in a.items()}
            == {unescape(k).lower(): unescape(v or "").lower() for k, v in b.items()})


def uri_equal(a: URI, b: URI) -> bool:
    """URI equivalence per §19.1.4 (SIP), RFC 3966 §4 (tel, simplified), else exact."""
    if isinstance(a, SipURI) and isinstance(b, SipURI):
        return (
            a.scheme == b.scheme
            and unescape(a.user or "") == unescape(b.user or "")
            and unescape(a.password or "") == unescape(b.password or "")
            and a.host.lower() == b.host.lower()
            and a.port == b.port
            and _cmp_params(a.params, b.params)
            and _headers_key(a.headers) == _headers_key(b.headers)
        )
    if isinstance(a, TelURI) and isinstance(b, TelURI):
        # RFC 3966 §4: visual separators are ignored, parameters compare as in SIP.
        return (a.number.translate(_VISUAL_SEPARATORS) == b.number.translate(_VISUAL_SEPARATORS)
                and _cmp_tel_params(a.params, b.params))
    return str(a).lower() == str(b).lower()


def aor_of(uri: URI) -> str:
    """The canonical address-of-record of a To URI (§10.3 step 5): scheme, user, host only.

    The user part is unescaped once and re-escaped canonically so ``%75ser`` and ``user`` name
    one AOR, while a NUL stays a distinct ``%00`` (RFC 4475 escnull: never truncate).
    """
    if isinstance(uri, SipURI):
        user = uri.user
        host = uri.host.lower()
        if user is None:
            return f"{uri.scheme}:{host}"
        if "%" in user:  # unescape's own test, without the call for the usual user part
            user = unescape(user)
        return f"{uri.scheme}:{_canonical_escape(user)}@{host}"
    return str(uri)


#: The user part's characters that stay unescaped in an AOR (RFC 3261 §25.1 unreserved and
#: user-unreserved).
_SAFE_USER = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!~*'()&=+$,;?/"
)


def _canonical_escape(text: str) -> str:
    # A set test, not a regex: every REGISTER's AOR comes here, and the regex engine's call
    # was ~1.3k of its instructions (bench_auth_legs, PLAIN).
    if _SAFE_USER.issuperset(text):  # nothing to escape: the usual user part
        return text
    return "".join(c if c in _SAFE_USER else f"%{ord(c):02X}" for c in text)
