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

Requests are not edited: forwarding one inserts a Via and a Record-Route, rewrites the
Request-URI and Max-Forwards and may drop Route lines, and splicing that many edits in Python
measured no cheaper than ``serialize`` (~36,000 against ~33,000 instructions for an INVITE).

The result reads back as the message ``serialize`` writes for the copy without the Via (same
typed fields, same raw texts), byte for byte when the received one was in the serializer's
order.  ``forwarded_response`` returns None, and the caller rebuilds, when the response has no
layout (see ``_speedups.c``: no Content-Length, CRLFs before the start line, anything outside
its subset) or its top Via is no longer the text in the bytes (changed in place).
"""

from __future__ import annotations

from .message import Response

__all__ = ["Layout", "forwarded_response"]

#: Offsets into the received bytes (``_speedups.c`` ``L_*``, same order).
Layout = tuple[int, ...]
L_HEAD_END = 0  # the CRLFCRLF ending the header section
L_VIA_LINE = 1  # the first Via line's start
L_VIA_VALUE = 2  # its first value's start
L_VIA_ITEM_END = 3  # that value's end
L_VIA_CUT_END = 4  # the next value's start in that line, or past the line's CRLF


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
