"""SIP message parser (RFC 3261 §7, §18.3, §20, §25) for datagrams and framed stream messages.

Design: one pass splits the header section into (name, value) pairs, then a dispatch table
decodes the headers a proxy, registrar and transaction layer read into typed fields; every other
header stays verbatim.  Every rejection is a ``RemoteProtocolError`` carrying its answer.

Limits are named constants checked before the work they bound, so a hostile message costs time
linear in its size: the size cap is checked first, every later step is a bounded number of
linear scans (``str.split``, ``str.find``, regexes without nested quantifiers over one line).

Policies where RFC 4475 lets the server choose (documented beside the conformance tests too):
- extra whitespace in the request line (lwsstart, trws): rejected, 400;
- headers in the Request-URI (escruri): rejected, 400;
- a CSeq method that differs from the request method (mismatch01/02): 400;
- a Content-Length that is not a non-negative integer (ncl): the datagram is discarded, because
  nothing in it can be trusted to frame an answer; two Content-Length headers (mcl01): 400;
- a Date header in any form (baddate): ignored, it is never interpreted.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .errors import RemoteProtocolError
from .message import URI, CSeq, NameAddr, Request, Response, Via
from .uri import parse_params, parse_uri

__all__ = [
    "MAX_HEADERS",
    "MAX_HEADER_LINE",
    "MAX_MESSAGE_SIZE",
    "MAX_VIAS",
    "StreamFramer",
    "parse_message",
    "parse_name_addr",
    "parse_name_addr_list",
    "parse_via_list",
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

_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_VERSION_RE = re.compile(r"SIP/\d+\.\d+")
_FOLD_RE = re.compile(r"[ \t]*\r\n[ \t]+")
_CSEQ_RE = re.compile(r"[ \t]*(\d+)[ \t]+([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*")
_VIA_RE = re.compile(
    r"[ \t]*([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*/[ \t]*([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*/[ \t]*"
    r"([A-Za-z0-9\-.!%*_+`'~]+)[ \t]+"
    r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.]+)(?:[ \t]*:[ \t]*(\d{1,5}))?"
    r"((?:[ \t]*;[ \t]*[^;,\s=\"]*(?:[ \t]*=[ \t]*(?:\"(?:[^\"\\]|\\.)*\"|[^;,\s\"]*))?)*)[ \t]*",
    re.S,
)
_NAME_ADDR_RE = re.compile(
    r"[ \t]*(?:(\"(?:[^\"\\]|\\.)*\")|([^<\"]*?))[ \t]*<([^<>\s]*)>(.*)", re.S
)
_HOST_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9\-.]*[A-Za-z0-9.])?")
_DISPLAY_TOKENS_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+(?:[ \t]+[A-Za-z0-9\-.!%*_+`'~]+)*")
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


def _bad(reason: str, status: int | None = 400) -> RemoteProtocolError:
    return RemoteProtocolError(reason, status)


# --- header value parsers ---------------------------------------------------------------------


def split_list(value: str) -> list[str]:
    """Split a comma-separated header value, respecting quoted strings and <URIs> (§7.3.1)."""
    if '"' not in value and "<" not in value:
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


def parse_via_list(value: str) -> list[Via]:
    """One Via header value, possibly several comma-separated via-parms (§20.42)."""
    if value.startswith("SIP/2.0/") and "," not in value and '"' not in value:
        via = _fast_via(value)
        if via is not None:
            return [via]
    return _slow_via_list(value)


def _fast_via(value: str) -> Via | None:
    """The common single-value form ``SIP/2.0/UDP host:port;params``, or None."""
    sp = value.find(" ", 8)
    transport = value[8:sp]
    rest = value[sp + 1 :]
    if sp < 0 or " " in rest or "\t" in rest or "\t" in transport or rest.startswith("["):
        return None
    hostport, semi, ptext = rest.partition(";")
    host, colon, port = hostport.partition(":")
    if _TOKEN_RE.fullmatch(transport) is None or _HOST_RE.fullmatch(host) is None:
        return None
    portn = None
    if colon:
        if not port.isdigit() or len(port) > 5 or int(port) > 65535:
            raise _bad("Malformed Via port")
        portn = int(port)
    params = parse_params(semi + ptext) if semi else {}
    if "" in params:
        raise _bad("Malformed Via header")
    return Via(transport.upper(), host, portn, params, "SIP/2.0", value)


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
        params = parse_params(ptext) if ptext else {}
        if "" in params:
            raise _bad("Malformed Via header")
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
    text = value.strip(" \t")
    lt = text.find("<")
    if lt >= 0 and '"' not in text:
        # Fast path, the common form: tokens <uri>;params
        gt = text.find(">", lt)
        uri_text = text[lt + 1 : gt]
        if gt < 0 or not uri_text or " " in uri_text or "\t" in uri_text or "<" in uri_text:
            raise _bad("Malformed name-addr")  # RFC 4475 badaspec
        display: str | None = text[:lt].rstrip(" \t") or None
        if display is not None and _DISPLAY_TOKENS_RE.fullmatch(display) is None:
            # An unquoted display name is a list of tokens (RFC 4475 baddn, lwsdisp).
            raise _bad("Malformed display name")
        ptext = text[gt + 1 :]
        uri = parse_uri(uri_text)
    elif lt >= 0:
        m = _NAME_ADDR_RE.fullmatch(text)
        if m is None:
            raise _bad("Malformed name-addr")  # quotbal
        quoted, tokens, uri_text, ptext = m.groups()
        display = quoted
        if tokens:
            if _DISPLAY_TOKENS_RE.fullmatch(tokens) is None:
                raise _bad("Malformed display name")
            display = tokens
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
    params = parse_params(ptext) if ptext else {}
    return NameAddr(uri, display, params, text)


def parse_name_addr_list(value: str) -> list[NameAddr]:
    return [parse_name_addr(item) for item in split_list(value)]


def _parse_uint(value: str, what: str, limit: int = MAX_UINT32) -> int:
    v = value.strip(" \t")
    # Bound the digit count before int() so a huge number costs nothing (scalar02).
    if not v.isdigit() or len(v) > 10 or int(v) > limit:
        raise _bad(f"Malformed {what}")
    return int(v)


# --- header dispatch ----------------------------------------------------------------------------

_Fields = dict[str, Any]


def _h_via(f: _Fields, v: str) -> None:
    f["vias"].extend(parse_via_list(v))


def _single(key: str, parse: Callable[[str], Any], label: str) -> Callable[[_Fields, str], None]:
    def handler(f: _Fields, v: str) -> None:
        if key in f:
            raise _bad(f"Duplicate {label} header")  # RFC 4475 multi01
        f[key] = parse(v)

    return handler


def _list(key: str) -> Callable[[_Fields, str], None]:
    def handler(f: _Fields, v: str) -> None:
        f.setdefault(key, []).extend(parse_name_addr_list(v))

    return handler


def _h_contact(f: _Fields, v: str) -> None:
    if v.strip(" \t") == "*":
        f["contact_star"] = True
    else:
        f.setdefault("contacts", []).extend(parse_name_addr_list(v))


def _tokens(key: str) -> Callable[[_Fields, str], None]:
    def handler(f: _Fields, v: str) -> None:
        toks = [t.strip(" \t") for t in v.split(",")]
        if any(_TOKEN_RE.fullmatch(t) is None for t in toks):
            raise _bad(f"Malformed {key} header")
        f.setdefault(key, []).extend(toks)

    return handler


def _parse_cseq(v: str) -> CSeq:
    num, sp, method = v.partition(" ")
    if sp and num.isdigit() and len(num) <= 10 and _TOKEN_RE.fullmatch(method) is not None:
        seq = int(num)
        if seq > MAX_UINT32:
            raise _bad("Malformed CSeq header")  # scalar02, scalarlg
        return CSeq(seq, method)
    m = _CSEQ_RE.fullmatch(v)
    if m is None or len(m.group(1)) > 10 or int(m.group(1)) > MAX_UINT32:
        raise _bad("Malformed CSeq header")
    return CSeq(int(m.group(1)), m.group(2))


def _parse_call_id(v: str) -> str:
    v = v.strip(" \t")
    if not v or " " in v or "\t" in v:
        raise _bad("Malformed Call-ID header")
    return v


def _parse_content_length(v: str) -> int:
    v = v.strip(" \t")
    if not v.isdigit() or len(v) > 10:
        # Nothing frames this message: discard (RFC 4475 ncl).
        raise _bad("Malformed Content-Length", None)
    return int(v)


_HANDLERS: dict[str, Callable[[_Fields, str], None]] = {
    "via": _h_via,
    "from": _single("from_", parse_name_addr, "From"),
    "to": _single("to", parse_name_addr, "To"),
    "call-id": _single("call_id", _parse_call_id, "Call-ID"),
    "cseq": _single("cseq", _parse_cseq, "CSeq"),
    "max-forwards": _single(
        "max_forwards", lambda v: _parse_uint(v, "Max-Forwards", 255), "Max-Forwards"
    ),
    "expires": _single("expires", lambda v: _parse_uint(v, "Expires"), "Expires"),
    "content-length": _single("content_length", _parse_content_length, "Content-Length"),
    "content-type": _single("content_type", lambda v: v.strip(" \t"), "Content-Type"),
    "route": _list("routes"),
    "record-route": _list("record_routes"),
    "contact": _h_contact,
    "require": _tokens("require"),
    "proxy-require": _tokens("proxy_require"),
}
# The spellings seen on nearly every message, looked up before any case folding.
_HANDLERS_EXACT = {
    name: _HANDLERS[_COMPACT.get(name.lower(), name.lower())]
    for name in ("Via", "From", "To", "Call-ID", "CSeq", "Max-Forwards", "Expires",
                 "Content-Length", "Content-Type", "Route", "Record-Route", "Contact",
                 "Require", "Proxy-Require", "v", "f", "t", "i", "m", "l", "c", "Call-Id")
}


# --- message ------------------------------------------------------------------------------------


def _split_head(data: bytes) -> tuple[str, list[str], int]:
    """Start line, header lines (unfolded) and the offset of the body."""
    start = 0
    # §7.5: CRLFs before the start line are ignored (stream keepalives, RFC 5626 §4.4.1).
    while data.startswith(b"\r\n", start):
        start += 2
    end = data.find(b"\r\n\r\n", start)
    if end < 0:
        raise _bad("Incomplete header section")
    head = data[start:end].decode("utf-8", "surrogateescape")
    if "\n " in head or "\n\t" in head:
        head = _FOLD_RE.sub(" ", head)  # §7.3.1 line folding
    lines = head.split("\r\n")
    if len(lines) > MAX_HEADERS + 1:
        raise _bad("Too many header lines")
    if len(head) > MAX_HEADER_LINE and max(map(len, lines)) > MAX_HEADER_LINE:
        raise _bad("Header line too long")
    return lines[0], lines[1:], end + 4


def _decode_headers(lines: list[str], raw: list[tuple[str, str]]) -> _Fields:
    """Split header lines into ``raw`` (kept for error answers) and decode the typed ones;
    the others go to ``extra`` verbatim."""
    f: _Fields = {"vias": [], "extra": []}
    extra = f["extra"]
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon:
            raise _bad("Malformed header line")
        value = value.strip(" \t")
        raw.append((name, value))
        handler = _HANDLERS_EXACT.get(name)
        if handler is None:
            name = name.rstrip(" \t")
            if _TOKEN_RE.fullmatch(name) is None:
                raise _bad("Malformed header line")
            key = name.lower()
            key = _COMPACT.get(key, key)
            handler = _HANDLERS.get(key)
            if handler is None:
                extra.append((_CANONICAL.get(key, name) if len(name) == 1 else name, value))
                continue
        handler(f, value)
    if len(f["vias"]) > MAX_VIAS:
        raise _bad("Too many Via headers")
    return f


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
    if _TOKEN_RE.fullmatch(method) is None:
        raise _bad("Malformed method")
    if uri_text.startswith("<"):
        raise _bad("Request-URI in angle brackets")  # ltgtruri
    return method, parse_uri(uri_text, request_uri=True)


def _parse_status_line(line: str) -> tuple[int, str]:
    version, _, rest = line.partition(" ")
    code, _, reason = rest.partition(" ")
    if version != "SIP/2.0" or len(code) != 3 or not code.isdigit():
        raise _bad("Malformed Status-Line", None)  # bigcode: responses are never answered
    status = int(code)
    if not 100 <= status <= 699:
        raise _bad("Status code out of range", None)
    return status, reason


def parse_message(data: bytes, *, stream: bool = False) -> Request | Response:
    """Parse one message.  ``stream``: the bytes came from a framed stream (Content-Length
    mandatory); otherwise a datagram or WebSocket message (body runs to the end if absent)."""
    if len(data) > MAX_MESSAGE_SIZE:
        raise RemoteProtocolError("Message Too Large", 513)
    first, lines, offset = _split_head(data)
    is_response = first.startswith("SIP/")
    raw: list[tuple[str, str]] = []
    try:
        if is_response:
            return _response(first, lines, raw, data, offset, stream)
        return _request(first, lines, raw, data, offset, stream)
    except RemoteProtocolError as exc:
        exc.is_request = not is_response
        exc.headers = raw
        if is_response:
            exc.status = None  # §18.1.2: a broken response is discarded, never answered
        raise


def _request(first: str, lines: list[str], raw: list[tuple[str, str]], data: bytes,
             offset: int, stream: bool) -> Request:
    f = _decode_headers(lines, raw)
    method, uri = _parse_request_line(first)
    _check_mandatory(f)
    if f["cseq"].method != method:
        raise _bad("CSeq method does not match the request method")  # mismatch01/02
    body = _body(data, offset, f, stream)
    return Request(method=method, uri=uri, body=body, **f)


def _response(first: str, lines: list[str], raw: list[tuple[str, str]], data: bytes,
               offset: int, stream: bool) -> Response:
    f = _decode_headers(lines, raw)
    status, reason = _parse_status_line(first)
    _check_mandatory(f)
    body = _body(data, offset, f, stream)
    return Response(status=status, reason=reason, body=body, **f)


# --- stream framing -----------------------------------------------------------------------------

_CL_RE = re.compile(rb"(?im)^(?:content-length|l)[ \t]*:[ \t]*(\d{1,10})[ \t]*\r?$")


class StreamFramer:
    """Splits a byte stream into messages by Content-Length (§18.3).

    The buffer never holds more than ``MAX_MESSAGE_SIZE`` octets plus one read: a peer that
    sends more without completing a message gets a ``RemoteProtocolError`` and the transport
    closes the connection (RFC 4475 ncl/mcl01 on streams: close).
    """

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out: list[bytes] = []
        while True:
            msg = self._next()
            if msg is None:
                return out
            out.append(msg)

    def _next(self) -> bytes | None:
        buf = self._buf
        while buf.startswith(b"\r\n"):
            del buf[:2]  # keepalive CRLFs between messages (RFC 5626 §3.5.1)
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_MESSAGE_SIZE:
                raise RemoteProtocolError("Message Too Large", 513)
            return None
        lengths = _CL_RE.findall(bytes(buf[:end + 2]))
        if len(lengths) != 1:
            raise RemoteProtocolError("Missing or repeated Content-Length on a stream", None)
        total = end + 4 + int(lengths[0])
        if total > MAX_MESSAGE_SIZE:
            raise RemoteProtocolError("Message Too Large", 513)
        if len(buf) < total:
            return None
        msg = bytes(buf[:total])
        del buf[:total]
        return msg

    @property
    def buffered(self) -> int:
        return len(self._buf)
