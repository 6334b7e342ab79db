"""SIP message parser (RFC 3261 §7, §18.3, §20, §25) for datagrams and framed stream messages.

Design: one pass splits the header section into (name, value) pairs, then a dispatch table
decodes the headers a proxy, registrar and transaction layer read into typed fields; every other
header stays verbatim.  Every rejection is a ``RemoteProtocolError`` carrying its answer.

Speed: the common forms (``SIP/2.0/UDP host:port;params`` Vias, ``Name <sip:...>;params``
name-addrs) are decoded by one anchored regex each, one C-level scan, and fall back to the
general grammar when that regex does not match, so the fast path never decides acceptance on
its own.  Parsed name-addrs and Vias are cached by their text (bounded, see
``VALUE_CACHE_SIZE``): Route and Record-Route values recur on every call through the same
proxies, and From, To and Via values recur on every message of a transaction or dialog.
Cached values are shared; they are values and are never mutated (see ``message``).
Decoding is eager on purpose: a message that parsed is valid in every typed header, so code
reading ``contacts`` or the lower Vias later can never meet a parse error of its own (lazy
fields would only pay for the headers nobody reads, and each reader would need an error path).

Limits are named constants checked before the work they bound, so a hostile message costs time
linear in its size: the size cap is checked first, every later step is a bounded number of
linear scans (``str.split``, ``str.find``, regexes whose repeated parts cannot match the same
text two ways, over one header line).  Numbers are ASCII digits only (``str.isdigit`` alone
would let "²" through to ``int``).

What the error carries: ``RemoteProtocolError.is_request`` from the start line and ``headers``,
the raw (name, value) pairs of the whole header section (read again, linearly, only when a
message is rejected), so the I/O layer can copy Via, From, To, Call-ID and CSeq into its answer
(§8.2.6.2) even when the broken header came first, and even for a message past
``MAX_MESSAGE_SIZE`` (its first 64 KB are read for the 513 answer).  A rejected response always
has status ``None`` (§18.1.2: discard).  The reason names the header that was wrong.

Policies where RFC 4475 lets the server choose (documented beside the conformance tests too):
- extra whitespace in the request line (lwsstart, trws): rejected, 400;
- headers in the Request-URI (escruri): rejected, 400;
- a CSeq method that differs from the request method (mismatch01/02): 400 (mismatch02 has an
  unknown method too; 400 is the answer RFC 4475 accepts, 501 needs a parse we refused);
- a Content-Length that is not a non-negative integer (ncl): the datagram is discarded, because
  nothing in it can be trusted to frame an answer; two Content-Length headers (mcl01): 400;
- a Date header in any form (baddate): ignored, it is never interpreted;
- a bare CR or LF inside the header section: 400, so a relayed header can never be split into
  two by a more lenient parser downstream;
- ``;expires=`` values of Contact and header parameters in general are kept as text: the
  registrar bounds them (scalar02's 280297596632815 is clamped there, not rejected here).
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Callable
from typing import Any

from .errors import RemoteProtocolError
from .message import URI, CSeq, NameAddr, ParamDict, Params, Request, Response, SipURI, Via
from .uri import (
    MAX_URI_LENGTH,
    SIP_HOSTPART_PATTERN,
    SIP_URI_PATTERN,
    parse_params,
    parse_uri,
)

__all__ = [
    "ACCELERATED",
    "MAX_HEADERS",
    "MAX_HEADER_LINE",
    "MAX_MESSAGE_SIZE",
    "MAX_VIAS",
    "VALUE_CACHE_SIZE",
    "fast_parse",
    "parse_message",
    "parse_message_pure",
    "parse_name_addr",
    "parse_name_addr_list",
    "parse_via_list",
    "salvage_headers",
    "set_fast_path",
    "split_list",
]

#: Largest message accepted, in octets.  65,535 covers the largest UDP payload (65,507 over IPv4)
#: and is far above any real SIP request; WebSocket and stream messages use the same cap so one
#: peer can never make the server buffer more than this per message (513 past it, §21.5.14).
MAX_MESSAGE_SIZE = 65_535
#: Header lines after unfolding.  Real messages carry 10-40; 256 leaves room for long Record-Route
#: and extension lists while bounding the per-message object count.
MAX_HEADERS = 256
#: Longest header line after unfolding; RFC 4475 longreq's longest is under 600 octets.
MAX_HEADER_LINE = 16_384
#: Via values per message.  Max-Forwards starts at 70 (§8.1.1.6), so a legitimate request
#: never crosses more than 70 proxies, each adding one Via.
MAX_VIAS = 70
#: Largest 32-bit unsigned value: the bound of CSeq numbers and Expires (§8.1.1.5, §20.19).
MAX_UINT32 = 2**32 - 1
#: Parsed name-addr and Via values kept per cache.  1024 entries of at most
#: ``CACHED_VALUE_MAX`` characters bound each cache to about 1 MB with the parsed objects,
#: while holding the Route and Record-Route values of every proxy in the path and the From,
#: To and Via texts of the transactions of the last fraction of a second (a response repeats
#: its request's Vias, From and To within milliseconds).  When full the oldest half is dropped
#: (insertion order), so hostile input cannot grow it.
VALUE_CACHE_SIZE = 1024
#: Longer values are parsed every time, never cached: it bounds the cache's memory, and such
#: values are rare enough that caching them would gain nothing.
CACHED_VALUE_MAX = 256

_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
# A header parameter without whitespace or quotes: token name, token / host value.
_SIMPLE_PARAMS = rf"((?:;{_TOKEN}(?:=[A-Za-z0-9\-.!%*_+`'~:\[\]]+)?)*)"
_TOKEN_RE = re.compile(_TOKEN)
_FOLD_SEARCH = re.compile(r"\n[ \t]").search
_VERSION_RE = re.compile(r"SIP/[0-9]+\.[0-9]+")
_CSEQ_RE = re.compile(rf"[ \t]*([0-9]+)[ \t]+({_TOKEN})[ \t]*")
# The common Via: one value, no LWS inside, simple parameters (§20.42).
_VIA_FAST_FULLMATCH = re.compile(
    rf"SIP/2\.0/({_TOKEN})[ \t]+(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.]+)(?::([0-9]{{1,5}}))?"
    + _SIMPLE_PARAMS
).fullmatch
_VIA_RE = re.compile(
    rf"[ \t]*({_TOKEN})[ \t]*/[ \t]*({_TOKEN})[ \t]*/[ \t]*({_TOKEN})[ \t]+"
    r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.]+)(?:[ \t]*:[ \t]*([0-9]{1,5}))?"
    r"((?:[ \t]*;[ \t]*[^;,\s=\"]*(?:[ \t]*=[ \t]*(?:\"(?:[^\"\\]|\\.)*\"|[^;,\s\"]*))?)*)[ \t]*",
    re.S,
)
# The common name-addr: token or quoted display name, a sip/sips URI in <>, simple header
# parameters.  Groups: 1 tokens, 2 quoted, 3 URI text, 4 scheme, 5-10 the URI's components.
_NAME_ADDR_FAST = (
    rf"(?:({_TOKEN}(?:[ \t]+{_TOKEN})*)[ \t]*|(\"(?:[^\"\\]|\\.)*\")[ \t]*)?"
    r"<((sips?):{})>" + _SIMPLE_PARAMS
)
_NAME_ADDR_USER_FULLMATCH = re.compile(
    _NAME_ADDR_FAST.replace("{}", SIP_URI_PATTERN), re.S).fullmatch
# The same without a userinfo part, for values without "@" (Route, Record-Route).
_NAME_ADDR_HOST_FULLMATCH = re.compile(
    _NAME_ADDR_FAST.replace("{}", SIP_HOSTPART_PATTERN), re.S).fullmatch
# The general name-addr.  The display part is either a quoted-string or a run without "<" and
# '"': neither can end in two places, so a failed match costs one scan (no backtracking).
_NAME_ADDR_RE = re.compile(
    r"(?:(\"(?:[^\"\\]|\\.)*\")[ \t]*|([^<\"]*))<([^<>\s]*)>(.*)", re.S
)
_HOST_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9\-.]*[A-Za-z0-9.])?")
_DISPLAY_TOKENS_RE = re.compile(rf"{_TOKEN}(?:[ \t]+{_TOKEN})*")
_LIST_ITEM_RE = re.compile(r"(?:[^,\"<]+|\"(?:[^\"\\]|\\.)*\"|<[^>]*>)*", re.S)

# Compact forms (§7.3.3, RFC 3265, RFC 3515, RFC 4028, RFC 3841).
_COMPACT = {
    "i": "call-id", "m": "contact", "e": "content-encoding", "l": "content-length",
    "c": "content-type", "f": "from", "s": "subject", "k": "supported", "t": "to",
    "v": "via", "o": "event", "r": "refer-to", "b": "referred-by", "u": "allow-events",
    "x": "session-expires", "a": "accept-contact", "j": "reject-contact",
    "d": "request-disposition", "y": "identity", "n": "identity-info",
}
_CANONICAL = {
    "content-encoding": "Content-Encoding", "subject": "Subject", "supported": "Supported",
    "event": "Event", "refer-to": "Refer-To", "referred-by": "Referred-By",
    "allow-events": "Allow-Events", "session-expires": "Session-Expires",
    "accept-contact": "Accept-Contact", "reject-contact": "Reject-Contact",
    "request-disposition": "Request-Disposition", "identity": "Identity",
    "identity-info": "Identity-Info",
}
# Canonical names of the typed headers, for error reasons.
_LABELS = {
    "via": "Via", "from": "From", "to": "To", "call-id": "Call-ID", "cseq": "CSeq",
    "max-forwards": "Max-Forwards", "expires": "Expires", "content-length": "Content-Length",
    "content-type": "Content-Type", "route": "Route", "record-route": "Record-Route",
    "contact": "Contact", "require": "Require", "proxy-require": "Proxy-Require",
}
# Methods that need no token check (the token regex runs for the others).
_METHODS = frozenset({
    "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "SUBSCRIBE", "NOTIFY",
    "PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE",
})


def _bad(reason: str, status: int | None = 400) -> RemoteProtocolError:
    return RemoteProtocolError(reason, status)


def _digits(text: str) -> bool:
    """ASCII digits only: ``int`` accepts other Unicode digits, the grammar does not (§25.1)."""
    return text.isdigit() and text.isascii()


# Parsed name-addrs and Via tuples by text (see ``VALUE_CACHE_SIZE``).
_na_cache: dict[str, NameAddr] = {}
_via_cache: dict[str, tuple[Via, ...]] = {}


def _evict(cache: dict[str, Any]) -> None:
    """Keep the newest half of a full cache (dicts keep insertion order), in C-level calls."""
    newest = list(cache.items())[VALUE_CACHE_SIZE // 2 :]
    cache.clear()
    cache.update(newest)


# --- header value parsers ---------------------------------------------------------------------


def split_list(value: str) -> list[str]:
    """Split a comma-separated header value, respecting quoted strings and <URIs> (§7.3.1)."""
    if "," not in value:
        items = [value]
    elif '"' not in value and "<" not in value:
        items = value.split(",")
    else:
        items = []
        pos, end = 0, len(value)
        while True:
            m = _LIST_ITEM_RE.match(value, pos)
            assert m is not None  # the pattern matches the empty string
            items.append(m.group())
            pos = m.end()
            if pos >= end:
                break
            if value[pos] != ",":
                raise _bad("Unbalanced quote or angle bracket")
            pos += 1
    out = [i.strip(" \t") for i in items]
    if "" in out:
        raise _bad("Empty element in header list")
    return out


def _simple_params(text: str) -> ParamDict:
    """``;a=b;c`` already matched by ``_SIMPLE_PARAMS``: split, no checks left to do."""
    if text.find(";", 1) < 0:  # one parameter (;tag=, ;lr): the common case
        name, eq, value = text[1:].partition("=")
        return {name: value if eq else None}
    params: ParamDict = {}
    for item in text[1:].split(";"):
        name, eq, value = item.partition("=")
        params[name] = value if eq else None
    return params


def parse_via_list(value: str) -> list[Via]:
    """One Via header value, possibly several comma-separated via-parms (§20.42)."""
    cached = _via_cache.get(value)
    if cached is not None:
        return [*cached]  # a fresh list: the receive path replaces the top Via in place
    m = _VIA_FAST_FULLMATCH(value)
    if m is None:
        vias = _slow_via_list(value)
    else:
        transport, host, port, ptext = m.groups()
        portn = None
        if port is not None:
            portn = int(port)
            if portn > 65535:
                raise _bad("Malformed Via port")
        params = _simple_params(ptext) if ptext else {}
        vias = [Via(transport.upper(), host, portn, params, "SIP/2.0", value)]
    if len(value) <= CACHED_VALUE_MAX:
        if len(_via_cache) >= VALUE_CACHE_SIZE:
            _evict(_via_cache)
        _via_cache[value] = (*vias,)
    return vias


def _slow_via_list(value: str) -> list[Via]:
    vias = []
    pos, end = 0, len(value)
    while True:
        m = _VIA_RE.match(value, pos)
        if m is None:
            raise _bad("Malformed Via header")
        name, version, transport, host, port, ptext = m.groups()
        if name.upper() != "SIP":
            raise _bad("Malformed Via header")
        params = parse_params(ptext) if ptext else {}  # a 400 unless every name is a token
        portn = int(port) if port is not None else None
        if portn is not None and portn > 65535:
            raise _bad("Malformed Via port")
        raw = value[pos : m.end()].strip(" \t")
        vias.append(Via(transport.upper(), host, portn, params, f"SIP/{version}", raw))
        pos = m.end()
        if pos >= end:
            return vias
        if value[pos] != ",":
            raise _bad("Malformed Via header")
        pos += 1


def parse_name_addr(value: str) -> NameAddr:
    """From/To/Contact/Route value: name-addr or addr-spec, then header params (§20.10)."""
    na = _na_cache.get(value)
    if na is not None:
        return na
    m = (_NAME_ADDR_USER_FULLMATCH if "@" in value else _NAME_ADDR_HOST_FULLMATCH)(value)
    if m is None:
        na = _parse_name_addr(value.strip(" \t"))
    else:
        tokens, quoted, uri_text, scheme, user, password, host, port, uptext, uheaders, ptext = (
            m.groups()
        )
        portn = None
        if port is not None:
            portn = int(port)
            if portn > 65535:
                raise _bad("Malformed port")
        if len(uri_text) > MAX_URI_LENGTH:
            raise _bad("URI too long")
        uri = SipURI(scheme, host, user, password, portn,
                     _simple_params(uptext) if uptext else {}, uheaders, uri_text)
        na = NameAddr(uri, tokens or quoted, _simple_params(ptext) if ptext else {}, value)
    if len(value) <= CACHED_VALUE_MAX:
        if len(_na_cache) >= VALUE_CACHE_SIZE:
            _evict(_na_cache)
        _na_cache[value] = na
    return na


def _parse_name_addr(text: str) -> NameAddr:
    """The general grammar: quoted display names with any content, LWS, quoted parameter
    values, tel: and other URIs, and the addr-spec form."""
    display: str | None
    if "<" in text:
        m = _NAME_ADDR_RE.fullmatch(text)
        if m is None:
            raise _bad("Malformed name-addr")  # quotbal, badaspec
        quoted, tokens, uri_text, ptext = m.groups()
        display = quoted
        if tokens is not None:
            tokens = tokens.rstrip(" \t")
            if tokens and _DISPLAY_TOKENS_RE.fullmatch(tokens) is None:
                # An unquoted display name is a list of tokens (RFC 4475 baddn, lwsdisp).
                raise _bad("Malformed display name")
            display = tokens or None
        if not uri_text:
            raise _bad("Malformed name-addr")
        uri = parse_uri(uri_text)
    else:
        # addr-spec form: every ";" starts a header parameter, and a URI that needs ",", "?"
        # or ";" of its own must be in <> (§20.10), so "?" here is an error (regbadct).
        uri_text, semi, rest = text.partition(";")
        uri_text = uri_text.rstrip(" \t")
        if not uri_text or "?" in uri_text or '"' in uri_text:
            raise _bad("Malformed addr-spec")
        uri = parse_uri(uri_text)
        display = None
        ptext = semi + rest
    params: Params = parse_params(ptext) if ptext else {}
    return NameAddr(uri, display, params, text)


def parse_name_addr_list(value: str) -> list[NameAddr]:
    return [parse_name_addr(item) for item in split_list(value)]


def _parse_uint(value: str, what: str, limit: int = MAX_UINT32) -> int:
    # Bound the digit count before int() so a huge number costs nothing (scalar02).
    if value.isdigit() and value.isascii() and len(value) <= 10:
        n = int(value)
        if n <= limit:
            return n
    raise _bad(f"Malformed {what}")


# --- header dispatch ----------------------------------------------------------------------------

_Fields = dict[str, Any]


def _h_via(f: _Fields, v: str) -> None:
    f["vias"].extend(parse_via_list(v))


def _h_from(f: _Fields, v: str) -> None:
    if "from_" in f:
        raise _bad("Duplicate From header")  # RFC 4475 multi01
    f["from_"] = parse_name_addr(v)


def _h_to(f: _Fields, v: str) -> None:
    if "to" in f:
        raise _bad("Duplicate To header")
    f["to"] = parse_name_addr(v)


def _h_call_id(f: _Fields, v: str) -> None:
    if "call_id" in f:
        raise _bad("Duplicate Call-ID header")
    if not v or " " in v or "\t" in v:
        raise _bad("Malformed Call-ID header")
    f["call_id"] = v


def _h_cseq(f: _Fields, v: str) -> None:
    if "cseq" in f:
        raise _bad("Duplicate CSeq header")
    f["cseq"] = _parse_cseq(v)


def _parse_cseq(v: str) -> CSeq:
    num, sp, method = v.partition(" ")
    if sp and num.isdigit() and num.isascii() and len(num) <= 10 and (
        method in _METHODS or _TOKEN_RE.fullmatch(method) is not None
    ):
        seq = int(num)
        if seq > MAX_UINT32:
            raise _bad("Malformed CSeq header")  # scalar02, scalarlg
        return CSeq(seq, method)
    m = _CSEQ_RE.fullmatch(v)
    if m is None or len(m.group(1)) > 10 or int(m.group(1)) > MAX_UINT32:
        raise _bad("Malformed CSeq header")
    return CSeq(int(m.group(1)), m.group(2))


def _h_max_forwards(f: _Fields, v: str) -> None:
    if "max_forwards" in f:
        raise _bad("Duplicate Max-Forwards header")
    f["max_forwards"] = _parse_uint(v, "Max-Forwards", 255)


def _h_expires(f: _Fields, v: str) -> None:
    if "expires" in f:
        raise _bad("Duplicate Expires header")
    f["expires"] = _parse_uint(v, "Expires")


def _h_content_length(f: _Fields, v: str) -> None:
    if "content_length" in f:
        raise _bad("Duplicate Content-Length header")  # mcl01
    if not (v.isdigit() and v.isascii()) or len(v) > 10:
        # Nothing frames this message: discard (RFC 4475 ncl).
        raise _bad("Malformed Content-Length", None)
    f["content_length"] = int(v)


def _h_content_type(f: _Fields, v: str) -> None:
    if "content_type" in f:
        raise _bad("Duplicate Content-Type header")
    f["content_type"] = v


def _h_route(f: _Fields, v: str) -> None:
    routes = f.setdefault("routes", [])
    if "," in v:
        routes.extend(parse_name_addr_list(v))
    else:
        routes.append(parse_name_addr(v))  # one value, the common case: no list split


def _h_record_route(f: _Fields, v: str) -> None:
    rr = f.setdefault("record_routes", [])
    if "," in v:
        rr.extend(parse_name_addr_list(v))
    else:
        rr.append(parse_name_addr(v))


def _h_contact(f: _Fields, v: str) -> None:
    if v == "*":
        f["contact_star"] = True  # §10.2.2; the registrar checks the rest of §10.3 step 6
        return
    contacts = f.setdefault("contacts", [])
    if "," in v:
        contacts.extend(parse_name_addr_list(v))
    else:
        contacts.append(parse_name_addr(v))


def _tokens(key: str) -> Callable[[_Fields, str], None]:
    def handler(f: _Fields, v: str) -> None:
        toks = [t.strip(" \t") for t in v.split(",")]
        if any(_TOKEN_RE.fullmatch(t) is None for t in toks):
            raise _bad(f"Malformed {_LABELS[key.replace('_', '-')]} header")
        f.setdefault(key, []).extend(toks)

    return handler


_HANDLERS: dict[str, Callable[[_Fields, str], None]] = {
    "via": _h_via,
    "from": _h_from,
    "to": _h_to,
    "call-id": _h_call_id,
    "cseq": _h_cseq,
    "max-forwards": _h_max_forwards,
    "expires": _h_expires,
    "content-length": _h_content_length,
    "content-type": _h_content_type,
    "route": _h_route,
    "record-route": _h_record_route,
    "contact": _h_contact,
    "require": _tokens("require"),
    "proxy-require": _tokens("proxy_require"),
}


def _h_extra(f: _Fields, v: str) -> None:  # pragma: no cover - a marker, never called
    raise AssertionError("untyped headers are appended by the loop")


# Spellings seen on nearly every message, looked up before any case folding or name check:
# the typed headers (canonical, lower case and compact) and the common untyped ones.
_EXACT: dict[str, Callable[[_Fields, str], None]] = {}
for _name in ("Via", "From", "To", "Call-ID", "CSeq", "Max-Forwards", "Expires",
              "Content-Length", "Content-Type", "Route", "Record-Route", "Contact", "Require",
              "Proxy-Require", "Call-Id", "Cseq"):
    _EXACT[_name] = _EXACT[_name.lower()] = _HANDLERS[_name.lower()]
for _name in "vftimlc":
    _EXACT[_name] = _EXACT[_name.upper()] = _HANDLERS[_COMPACT[_name]]
for _name in ("User-Agent", "Allow", "Supported", "Server", "Accept", "Accept-Encoding",
              "Accept-Language", "Date", "Authorization", "WWW-Authenticate",
              "Proxy-Authorization", "Proxy-Authenticate", "Event", "Subscription-State",
              "Allow-Events", "Timestamp", "Retry-After", "Warning", "Organization", "Subject",
              "Session-Expires", "Min-SE", "Min-Expires", "P-Asserted-Identity",
              "P-Preferred-Identity", "Privacy", "Reason", "Content-Disposition",
              "Content-Encoding", "Content-Language", "MIME-Version", "Alert-Info", "Call-Info",
              "Error-Info", "In-Reply-To", "Priority", "Reply-To", "Unsupported", "Path",
              "RSeq", "RAck", "Refer-To", "Referred-By", "Replaces", "Identity"):
    _EXACT[_name] = _h_extra
del _name


def _resolve(name: str) -> tuple[str, Callable[[_Fields, str], None] | None]:
    """An uncommon spelling: check it is a token (§25.1), fold case and compact forms.
    Returns the name to keep for an untyped header and the handler of a typed one."""
    name = name.rstrip(" \t")
    if _TOKEN_RE.fullmatch(name) is None:
        raise _bad("Malformed header line")
    key = name.lower()
    key = _COMPACT.get(key, key)
    handler = _HANDLERS.get(key)
    if handler is None and len(name) == 1:
        name = _CANONICAL.get(key, name)
    return name, handler


def _decode_headers(lines: list[str]) -> _Fields:
    """Decode the typed header lines into fields; the others go to ``extra`` verbatim."""
    extra: list[tuple[str, str]] = []
    f: _Fields = {"vias": [], "extra": extra}
    exact = _EXACT.get
    name = ""
    try:
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon:
                raise _bad("Malformed header line")
            value = value.strip(" \t")
            handler = exact(name)
            if handler is None:
                name, handler = _resolve(name)
                if handler is None:
                    extra.append((name, value))
                    continue
            elif handler is _h_extra:
                extra.append((name, value))
                continue
            handler(f, value)
    except RemoteProtocolError as exc:
        _name_header(exc, name)
        raise
    if len(f["vias"]) > MAX_VIAS:
        raise _bad("Too many Via headers")
    return f


def _name_header(exc: RemoteProtocolError, name: str) -> None:
    """Say which header was wrong, when the reason does not already."""
    key = name.strip(" \t").lower()
    label = _LABELS.get(_COMPACT.get(key, key))
    if label is not None and label not in exc.reason:
        _set_answer(exc, exc.status, f"{exc.reason} in {label} header")


# --- message ------------------------------------------------------------------------------------


def _unfold(lines: list[str]) -> list[str]:
    """§7.3.1 line folding: a line starting with SP or HT continues the previous one, and the
    fold (with the whitespace around it) becomes one SP.  Linear: pieces are joined once."""
    groups: list[list[str]] = []
    for line in lines:
        if line[:1] in (" ", "\t") and line:
            if len(groups) < 2:
                raise _bad("Continuation line before the first header")
            groups[-1].append(line.strip(" \t"))
        else:
            groups.append([line])
    return [
        g[0] if len(g) == 1 else " ".join([g[0].rstrip(" \t"), *[p for p in g[1:] if p]])
        for g in groups
    ]


def _split_head(data: bytes) -> tuple[list[str], int]:
    """Start line and header lines (unfolded), and the offset of the body."""
    start = 0
    # §7.5: CRLFs before the start line are ignored (stream keepalives, RFC 5626 §4.4.1).
    while data.startswith(b"\r\n", start):
        start += 2
    end = data.find(b"\r\n\r\n", start)
    if end < 0:
        raise _bad("Incomplete header section")
    head = data[start:end].decode("utf-8", "surrogateescape")
    lines = head.split("\r\n")
    n = len(lines) - 1
    if head.count("\n") != n or head.count("\r") != n:
        raise _bad("Bare CR or LF in the header section")
    if _FOLD_SEARCH(head) is not None:
        lines = _unfold(lines)
    if len(lines) > MAX_HEADERS + 1:
        raise _bad("Too many header lines")
    if len(head) > MAX_HEADER_LINE and max(map(len, lines)) > MAX_HEADER_LINE:
        raise _bad("Header line too long")
    return lines, end + 4


def _body(data: bytes, offset: int, f: _Fields, stream: bool) -> bytes:
    cl = f.pop("content_length", None)
    if cl is None:
        if stream:
            raise _bad("Missing Content-Length on a stream transport")  # §18.3
        return data[offset:]  # §18.3: a datagram's body runs to its end
    if len(data) - offset < cl:
        raise _bad("Content-Length larger than the body")  # RFC 4475 clerr
    # Octets past Content-Length in a datagram are ignored (§18.3, RFC 4475 dblreq).
    return data[offset : offset + cl]


_MANDATORY = (("vias", "Via"), ("from_", "From"), ("to", "To"), ("call_id", "Call-ID"),
              ("cseq", "CSeq"))


def _check_mandatory(f: _Fields) -> None:
    if f["vias"] and "from_" in f and "to" in f and "call_id" in f and "cseq" in f:
        return  # the common case, without the loop
    for key, label in _MANDATORY:
        if not f.get(key):
            raise _bad(f"Missing {label} header")  # §8.1.1, RFC 4475 insuf


def _parse_request_line(line: str) -> tuple[str, URI]:
    parts = line.split(" ")
    if len(parts) != 3:
        raise _bad("Malformed Request-Line")  # lwsruri, lwsstart, trws, bad SP counts
    method, uri_text, version = parts
    if version != "SIP/2.0":
        if _VERSION_RE.fullmatch(version):
            raise _bad("Version Not Supported", 505)  # §8.2.1 badvers
        raise _bad("Malformed Request-Line")
    if method not in _METHODS and _TOKEN_RE.fullmatch(method) is None:
        raise _bad("Malformed method in Request-Line")
    if uri_text.startswith("<"):
        raise _bad("Request-URI in angle brackets")  # ltgtruri
    try:
        return method, parse_uri(uri_text, request_uri=True)
    except RemoteProtocolError as exc:
        if "Request-URI" not in exc.reason:
            _set_answer(exc, exc.status, f"{exc.reason} in Request-URI")
        raise


def _parse_status_line(line: str) -> tuple[int, str]:
    version, _, rest = line.partition(" ")
    code, _, reason = rest.partition(" ")
    if version != "SIP/2.0" or len(code) != 3 or not _digits(code):
        raise _bad("Malformed Status-Line", None)  # bigcode: responses are never answered
    status = int(code)
    if not 100 <= status <= 699:
        raise _bad("Status code out of range", None)
    return status, reason


def parse_message(data: bytes, *, stream: bool = False) -> Request | Response:
    """Parse one message.  ``stream``: the bytes came from a framed stream (Content-Length
    mandatory); otherwise a datagram or WebSocket message (body runs to the end if absent).

    The C fast path (``fast_parse``) takes the common clean shapes; whatever it declines,
    valid or not, is parsed here in Python, the only judge of errors (see ``_speedups.c``)."""
    if fast_parse is not None:
        msg = fast_parse(data, stream)
        if msg is not None:
            return msg
    return parse_message_pure(data, stream=stream)


def parse_message_pure(data: bytes, *, stream: bool = False) -> Request | Response:
    """``parse_message`` without the C fast path: the reference the fast path is tested
    against, and what runs when the extension is not built."""
    try:
        if len(data) > MAX_MESSAGE_SIZE:
            raise RemoteProtocolError("Message Too Large", 513)
        lines, offset = _split_head(data)
        first = lines[0]
        if first.startswith("SIP/"):
            return _response(first, lines, data, offset, stream)
        return _request(first, lines, data, offset, stream)
    except RemoteProtocolError as exc:
        exc.is_request, exc.headers = salvage_headers(data)
        if not exc.is_request:
            # §18.1.2: a broken response is discarded, never answered.
            _set_answer(exc, None, exc.reason)
        raise


def _set_answer(exc: RemoteProtocolError, status: int | None, reason: str) -> None:
    """Change an error's answer, keeping its message (``str(exc)``) in step."""
    exc.status, exc.reason = status, reason
    exc.args = (f"{status} {reason}" if status else f"discard: {reason}",)


def salvage_headers(data: bytes) -> tuple[bool, list[tuple[str, str]]]:
    """The kind and raw headers of a rejected message, read leniently for its error answer.
    Linear and bounded: at most ``MAX_MESSAGE_SIZE`` octets and ``MAX_HEADERS`` lines are
    read, values longer than ``MAX_HEADER_LINE`` are left out."""
    text = data[:MAX_MESSAGE_SIZE].decode("utf-8", "surrogateescape").lstrip("\r\n")
    end = text.find("\r\n\r\n")
    lines = (text if end < 0 else text[:end]).split("\r\n")
    with contextlib.suppress(RemoteProtocolError):  # else keep the physical lines
        lines = _unfold(lines)
    headers = []
    for line in lines[1 : MAX_HEADERS + 1]:
        name, colon, value = line.partition(":")
        if colon and len(line) <= MAX_HEADER_LINE:
            headers.append((name.strip(" \t"), value.strip(" \t")))
    return not lines[0].startswith("SIP/"), headers


def _request(first: str, lines: list[str], data: bytes, offset: int, stream: bool) -> Request:
    f = _decode_headers(lines)
    method, uri = _parse_request_line(first)
    _check_mandatory(f)
    if f["cseq"].method != method:
        raise _bad("CSeq method does not match the request method")  # mismatch01/02
    body = _body(data, offset, f, stream)
    return Request(method=method, uri=uri, body=body, **f)


def _response(first: str, lines: list[str], data: bytes, offset: int,
              stream: bool) -> Response:
    f = _decode_headers(lines)
    status, reason = _parse_status_line(first)
    _check_mandatory(f)
    body = _body(data, offset, f, stream)
    return Response(status=status, reason=reason, body=body, **f)


# --- the C fast path ---------------------------------------------------------------------------

FastParse = Callable[[bytes, bool], Request | Response | None]


def _load_fast_parse() -> FastParse | None:
    """The compiled fast path, set up with this module's limits and the model classes, or
    None when it is not built."""
    try:
        from . import _speedups
    except ImportError:
        return None
    classes = (SipURI, NameAddr, Via, CSeq, Request, Response)
    for cls in classes:
        # The C side stores exactly these fields, bypassing __init__: a model change that
        # it does not know about must switch it off, not build half-initialised objects.
        names = tuple(f.name for f in dataclasses.fields(cls))
        if names != _speedups.FIELDS[cls.__name__] or hasattr(cls, "__post_init__"):
            return None
    _speedups.setup(*classes, (MAX_MESSAGE_SIZE, MAX_HEADERS, MAX_HEADER_LINE, MAX_VIAS,
                               MAX_URI_LENGTH))
    return _speedups.parse


#: The C fast path, or None (pure Python only).
fast_parse: FastParse | None = _load_fast_parse()
#: Whether the C fast path is in use, for the server's start-up log.
ACCELERATED = fast_parse is not None


def set_fast_path(enabled: bool) -> bool:
    """Use the C fast path or not (the server's ``--sip-parser``); returns whether it is in
    use, which is False when it was asked for but is not built."""
    global fast_parse, ACCELERATED
    fast_parse = _load_fast_parse() if enabled else None
    ACCELERATED = fast_parse is not None
    return ACCELERATED
