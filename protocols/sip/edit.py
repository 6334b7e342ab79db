"""Relaying a response by editing its received bytes (RFC 3261 §16.7 step 9).

A proxy relays a response with one change: its own Via, the top one, removed.  Rebuilding the
message for that (a copy of the parsed object without the Via, then ``serialize``) costs about
as much as parsing it; cutting the Via out of the received bytes costs a few slices
(callgrind: ~7,000 instructions against ~63,000 for a 200 with SDP).

Where the top Via is comes from the parser: the C fast path records its offsets while it reads
the lines anyway (``Message.wire``: the bytes and a ``Layout``, indexed by the ``L_*``
constants below, the order ``_speedups.c`` writes them in); finding it again here would take a
regex scan of the head that costs a third of the rebuild.  A response parsed by parser.py
alone has no layout and is rebuilt.

A forwarded request (§16.6) is edited the same way: our Via inserted above the first Via line
(with the top Via's text as it is now: the receive path stamps ``received``/``rport`` on it,
§18.2.1), Max-Forwards decremented in place (or one inserted, step 3), our Record-Route values
inserted above the first Record-Route line (without one, above Max-Forwards, where the
serializer writes them, else below our Via: only their order among themselves counts,
§7.3.1), the Request-URI replaced (step 6), our one Route value cut out
(§16.4, the first value of the first Route line).  A session before this one measured a
splice no cheaper than ``serialize`` for an INVITE when the offsets were found in Python
(~36,000 against ~33,000 instructions); the C parser now notes them while it reads the lines
(``Layout``), and ``forwarded_request`` returns None, and the caller rebuilds, where the edit
would not read back as the rebuild: more than one Route value popped (RFC 5658's two, or
values of several lines), no layout (a request parser.py parsed alone, CRLF-led, without
Content-Length).

The result reads back as the message ``serialize`` writes for the copy without the Via (same
typed fields, same raw texts), byte for byte when the received one was in the serializer's
order, for a response.  A forwarded request reads back as the rebuilt one field by field
(raw texts included), but its lines stay where the sender put them: our Via on top, our
Record-Route above the received ones (or Max-Forwards), so it is the rebuild byte for byte
when the received request was in the serializer's order and had a Max-Forwards.
``forwarded_response`` returns None, and the caller rebuilds, when the response has no layout
(see ``_speedups.c``: no Content-Length, CRLFs before the start line, anything outside its
subset) or its top Via is no longer the text in the bytes (changed in place).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .message import NameAddr, Request, Response, Via

_Forward = Callable[[tuple[bytes, tuple[int, ...]], int, str, str, int, str | None, str | None,
                     bytes], bytes | None]
_forward: _Forward | None
try:
    from ._speedups import forward as _forward
except ImportError:  # not built: no message has a layout then (only it writes them)
    _forward = None

__all__ = ["Layout", "forwarded_request", "forwarded_response"]

#: Offsets into the received bytes (``_speedups.c`` ``L_*``, same order).
Layout = tuple[int, ...]
L_HEAD_END = 0  # the CRLFCRLF ending the header section
L_VIA_LINE = 1  # the first Via line's start
L_VIA_VALUE = 2  # its first value's start
L_VIA_ITEM_END = 3  # that value's end
L_VIA_CUT_END = 4  # the next value's start in that line, or past the line's CRLF
L_URI = 5  # the Request-URI's start (requests; -1 for a response)
L_URI_END = 6  # its end
L_MF_VALUE = 7  # the Max-Forwards value's start, -1 without one
L_MF_END = 8  # its end
L_ROUTE_LINE = 9  # the first Route line's start (-1 without Route), then as the L_VIA_* four
L_ROUTE_VALUE = 10
L_ROUTE_ITEM_END = 11
L_ROUTE_CUT_END = 12
L_RR_LINE = 13  # the first Record-Route line's start, -1 without one
L_ROUTES = 14  # how many Route values the request had (a count, not an offset)
L_MF_LINE = 15  # the Max-Forwards line's start



def forwarded_response(resp: Response) -> bytes | None:
    """``resp``'s received bytes without the top Via (§16.7 step 9), or None."""
    wire = resp.wire
    if wire is None:
        return None
    data, at = wire
    start, end = at[L_VIA_VALUE], at[L_VIA_CUT_END]
    raw = resp.vias[0].raw
    if raw is not None and data[start : at[L_VIA_ITEM_END]] != raw.encode(
            "utf-8", "surrogateescape"):
        return None  # a top Via changed in place since: not the one in the bytes
    if data[end - 2 : end] == b"\r\n":
        start = at[L_VIA_LINE]  # the value was alone in its line: the line goes
    # The body as parsed: octets past Content-Length in a datagram are dropped (§18.3).
    return b"".join((data[:start], data[end : at[L_HEAD_END] + 4], resp.body))


def _text(value: Via | NameAddr) -> str:
    raw = value.raw
    return str(value) if raw is None else raw


def forwarded_request(req: Request, via: Via, max_forwards: int,
                      record_routes: Sequence[NameAddr] = (), uri: str | None = None
                      ) -> bytes | None:
    """``req``'s received bytes as a proxy forwards them (§16.6): ``via`` above its Vias,
    Max-Forwards ``max_forwards``, ``record_routes`` above its Record-Routes, the Request-URI
    ``uri`` (None: unchanged), the Route values the proxy popped from ``req.routes`` since it
    was parsed (§16.4; one at most) cut out.  None when the bytes cannot be edited so: the
    caller serializes its copy.  The splice is ``_speedups.forward`` (_speedups_edit.c: in
    Python it cost more than ``serialize``); a request has a layout only when that module
    parsed it, so it is there."""
    wire = req.wire
    if wire is None or _forward is None:
        return None
    rr = "".join([f"Record-Route: {_text(r)}\r\n" for r in record_routes]) \
        if record_routes else None
    return _forward(wire, len(req.routes), _text(via), _text(req.vias[0]), max_forwards, rr,
                    uri, req.body)

