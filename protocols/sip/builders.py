"""Building responses (RFC 3261 §8.2.6, §16.7) and stateless error answers.

``error_response`` answers a request the parser rejected, from the raw header text it could
read: Via, From, To, Call-ID and CSeq are copied as written (§8.2.6.2), a To tag is added when
the request had none, and a request that did not even carry a Via cannot be answered at all
(there is nowhere to send it, §18.2.2), so it yields ``None``: a counted discard.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from .errors import RemoteProtocolError
from .message import Request, Response

__all__ = ["REASONS", "error_response", "make_response", "reason_phrase"]

#: Default reason phrases (§21).
REASONS: dict[int, str] = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 200: "OK", 202: "Accepted", 300: "Multiple Choices",
    301: "Moved Permanently", 302: "Moved Temporarily", 305: "Use Proxy",
    380: "Alternative Service", 400: "Bad Request", 401: "Unauthorized",
    402: "Payment Required", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    406: "Not Acceptable", 407: "Proxy Authentication Required", 408: "Request Timeout",
    410: "Gone", 413: "Request Entity Too Large", 414: "Request-URI Too Long",
    415: "Unsupported Media Type", 416: "Unsupported URI Scheme", 420: "Bad Extension",
    421: "Extension Required", 423: "Interval Too Brief", 430: "Flow Failed",
    439: "First Hop Lacks Outbound Support", 480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist", 482: "Loop Detected", 483: "Too Many Hops",
    484: "Address Incomplete", 485: "Ambiguous", 486: "Busy Here", 487: "Request Terminated",
    488: "Not Acceptable Here", 491: "Request Pending", 493: "Undecipherable",
    500: "Server Internal Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Server Time-out", 505: "Version Not Supported",
    513: "Message Too Large", 600: "Busy Everywhere", 603: "Decline",
    604: "Does Not Exist Anywhere", 606: "Not Acceptable",
}


def reason_phrase(status: int) -> str:
    return REASONS.get(status) or REASONS.get(status // 100 * 100, "Unknown")


def make_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    extra: Iterable[tuple[str, str]] = (),
) -> Response:
    """A response to ``request`` (§8.2.6.2): Via, From, Call-ID, CSeq copied; To copied and
    given ``to_tag`` when it has none (never for 100, §8.2.6.1)."""
    to = request.to
    if to_tag is not None and status > 100 and to.tag is None:
        to = to.with_param("tag", to_tag)
    extra_list = list(extra)
    if status == 100:
        ts = request.header("Timestamp")
        if ts is not None:
            extra_list.append(("Timestamp", ts))  # §8.2.6.1
    return Response(
        status=status,
        reason=reason if reason is not None else reason_phrase(status),
        vias=list(request.vias),
        from_=request.from_,
        to=to,
        call_id=request.call_id,
        cseq=request.cseq,
        extra=extra_list,
    )


_COPY = {"via": "Via", "v": "Via", "from": "From", "f": "From", "to": "To", "t": "To",
         "call-id": "Call-ID", "i": "Call-ID", "cseq": "CSeq"}
_HAS_TAG = re.compile(r";[ \t]*tag[ \t]*=", re.I)


def _header_params(value: str) -> str:
    """The part of a name-addr where header parameters live: after the URI's ">" (a ";tag="
    inside <...> is a URI parameter, §20.10); the whole value in the addr-spec form."""
    return value[value.rfind(">") + 1 :] if "<" in value else value


def error_response(err: RemoteProtocolError, to_tag: str) -> bytes | None:
    """Wire bytes of the stateless answer to a rejected request, or None: discard."""
    if err.status is None or not err.is_request:
        return None
    lines = [f"SIP/2.0 {err.status} {err.reason}"]
    seen: set[str] = set()
    for name, value in err.headers:
        canon = _COPY.get(name.lower())
        if canon is None or "\r" in value or "\n" in value:
            continue
        if canon != "Via" and canon in seen:
            continue  # a duplicated single header (multi01): answer with the first
        seen.add(canon)
        if canon == "To" and not _HAS_TAG.search(_header_params(value)):
            value = f"{value};tag={to_tag}"
        lines.append(f"{canon}: {value}")
    if "Via" not in seen:
        return None
    lines.extend(f"{k}: {v}" for k, v in err.extra_headers)
    lines.append("Content-Length: 0\r\n\r\n")
    return "\r\n".join(lines).encode("utf-8", "surrogateescape")
