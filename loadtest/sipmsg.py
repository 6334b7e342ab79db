"""Pre-rendered SIP requests and the cheap response scan of the injector's hot path.

At 30,000 transactions per second the injector has ~30 µs per transaction for everything, so the
requests a UA sends again and again (REGISTER, OPTIONS) are rendered once per UA into three byte
pieces around the two fields that change (branch and CSeq number), and a response is matched to
its transaction by slicing the fixed-length branch out of the top Via, not by a full parse.
Everything rarer (INVITE dialogs, requests reaching our UAS) goes through the project's own
parser and serializer (``protocols.sip``): one codec, two uses.  Requests within a dialog keep
a byte template too, but what goes into it (Request-URI, Route, To, CSeq) is decided by the
project's one dialog model (``protocols.sip.dialog``): one set of §12 rules for the proxy and
the injector.  The tests parse every template
with that parser, so the templates cannot drift from what the codec accepts.

Branches are ``z9hG4bK`` (RFC 3261 §8.1.1.7 magic cookie) + ``st`` + an 8-hex run id + a 10-hex
counter: fixed length, unique per run and across concurrent runs with overwhelming odds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from protocols.sip.dialog import Dialog

__all__ = [
    "BRANCH_LEN",
    "BRANCH_PREFIX",
    "INVITE_CSEQ",
    "SDP_OFFER",
    "BranchFactory",
    "DialogParts",
    "Identity",
    "UaTemplates",
    "dialog_parts",
    "render_ack",
    "render_in_dialog",
    "render_invite",
    "retry_after",
    "scan_response",
]

BRANCH_PREFIX = b"z9hG4bKst"
#: prefix + 8 hex run id + 10 hex counter.
BRANCH_LEN = len(BRANCH_PREFIX) + 8 + 10
_BRANCH_PARAM = b"branch=" + BRANCH_PREFIX
_BRANCH_END = frozenset(b";, \t\r\n")
#: Retry-After longer than this is treated as this: RFC 3261 §20.33 allows any delta-seconds, but a
#: storm run must not park a UA for days.  An hour covers every real overload answer.
MAX_RETRY_AFTER_S = 3600
#: The CSeq number of every INVITE we send: each call is a new dialog (§8.1.1.5).
INVITE_CSEQ = 1

#: A minimal audio offer (RFC 4566); port 9 is the discard port, no media is ever sent.
SDP_OFFER = (
    b"v=0\r\no=storm 1 1 IN IP4 0.0.0.0\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n"
    b"m=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


class BranchFactory:
    """Fixed-length unique branches: run id from os.urandom, then a counter."""

    __slots__ = ("_n", "_prefix")

    def __init__(self) -> None:
        self._prefix = BRANCH_PREFIX + os.urandom(4).hex().encode()
        self._n = 0

    def __call__(self) -> bytes:
        self._n += 1
        return self._prefix + b"%010x" % (self._n & 0xFFFFFFFFFF)


@dataclass(frozen=True, slots=True)
class Identity:
    """Where a UA is and how it talks: the parts every request of it carries."""

    user: bytes
    domain: bytes
    via_transport: bytes  # b"UDP" or b"WS" (RFC 7118 §5.2)
    via_host: bytes  # "ip:port", or a random ".invalid" name on WebSocket (RFC 7118 §5.2)
    contact: bytes  # the URI inside <>, e.g. sip:alice@127.0.0.1:40001

    @property
    def aor(self) -> bytes:
        return b"sip:" + self.user + b"@" + self.domain


class UaTemplates:
    """REGISTER and OPTIONS of one UA as (head, middle, tail) around branch and CSeq number."""

    __slots__ = ("options", "register_parts")

    def __init__(self, ident: Identity, call_id: bytes, from_tag: bytes, expires: int) -> None:
        aor = ident.aor
        via = b"Via: SIP/2.0/" + ident.via_transport + b" " + ident.via_host + b";branch="
        common = b";rport\r\nMax-Forwards: 70\r\nFrom: <" + aor + b">;tag=" + from_tag + b"\r\n"
        # RFC 3261 §10.2: a UA uses the same Call-ID for all registrations to one registrar and
        # increments CSeq; To and From carry the address of record.
        self.register_parts = (
            b"REGISTER sip:" + ident.domain + b" SIP/2.0\r\n" + via,
            common + b"To: <" + aor + b">\r\nCall-ID: " + call_id + b"\r\nCSeq: ",
            b" REGISTER\r\nContact: <" + ident.contact + b">\r\nExpires: %d\r\n" % expires
            + b"User-Agent: storm\r\nContent-Length: 0\r\n\r\n",
        )
        self.options = (
            b"OPTIONS sip:" + ident.domain + b" SIP/2.0\r\n" + via,
            common + b"To: <sip:" + ident.domain + b">\r\nCall-ID: ",
            b" OPTIONS\r\nAccept: application/sdp\r\nUser-Agent: storm\r\n"
            b"Content-Length: 0\r\n\r\n",
        )

    def register(self, branch: bytes, cseq: int) -> bytes:
        a, b, c = self.register_parts
        return a + branch + b + b"%d" % cseq + c

    def options_request(self, branch: bytes, call_id: bytes) -> bytes:
        # Each OPTIONS ping is its own out-of-dialog request: new Call-ID, CSeq 1 (§11.1).
        a, b, c = self.options
        return a + branch + b + call_id + b"\r\nCSeq: 1" + c


def render_invite(
    ident: Identity, branch: bytes, ruri: bytes, to: bytes, call_id: bytes, from_tag: bytes,
    cseq: int = INVITE_CSEQ,
) -> bytes:
    return (
        b"INVITE %s SIP/2.0\r\nVia: SIP/2.0/%s %s;branch=%s;rport\r\nMax-Forwards: 70\r\n"
        b"From: <%s>;tag=%s\r\nTo: %s\r\nCall-ID: %s\r\nCSeq: %d INVITE\r\nContact: <%s>\r\n"
        b"User-Agent: storm\r\nContent-Type: application/sdp\r\nContent-Length: %d\r\n\r\n%s"
        % (ruri, ident.via_transport, ident.via_host, branch, ident.aor, from_tag, to, call_id,
           cseq, ident.contact, len(SDP_OFFER), SDP_OFFER)
    )


def _in_dialog(
    method: bytes, ident: Identity, branch: bytes, ruri: bytes, routes: list[bytes], to: bytes,
    call_id: bytes, from_tag: bytes, cseq: int,
) -> bytes:
    route = b"".join(b"Route: " + r + b"\r\n" for r in routes)
    return (
        b"%s %s SIP/2.0\r\nVia: SIP/2.0/%s %s;branch=%s;rport\r\nMax-Forwards: 70\r\n%s"
        b"From: <%s>;tag=%s\r\nTo: %s\r\nCall-ID: %s\r\nCSeq: %d %s\r\n"
        b"User-Agent: storm\r\nContent-Length: 0\r\n\r\n"
        % (method, ruri, ident.via_transport, ident.via_host, branch, route, ident.aor, from_tag,
           to, call_id, cseq, method)
    )


def render_ack(
    ident: Identity, branch: bytes, ruri: bytes, to: bytes, call_id: bytes, from_tag: bytes,
    cseq: int = INVITE_CSEQ,
) -> bytes:
    """ACK of a non-2xx (§17.1.1.3): the INVITE's branch, Request-URI, CSeq number and (no)
    Route; ``to`` is the response's To, tag included."""
    return _in_dialog(b"ACK", ident, branch, ruri, [], to, call_id, from_tag, cseq)


#: A dialog's requests as (after the method, before the branch; after the branch, before the
#: CSeq number): ``dialog_parts``.
DialogParts = tuple[bytes, bytes]
_IN_DIALOG_TAIL = b"\r\nUser-Agent: storm\r\nContent-Length: 0\r\n\r\n"


def dialog_parts(ident: Identity, dialog: Dialog) -> DialogParts:
    """Everything of a request within ``dialog`` (§12.2.1.1) but method, branch and CSeq
    number.  Request-URI and Route are the model's ``request_target()`` (the remote target
    and the route set, or the strict router's URI with the target last); To, Call-ID and the
    From tag are the dialog id's."""
    uri, routes = dialog.request_target()
    route = b"".join(b"Route: " + str(r).encode() + b"\r\n" for r in routes)
    return (
        b" " + str(uri).encode() + b" SIP/2.0\r\nVia: SIP/2.0/" + ident.via_transport + b" "
        + ident.via_host + b";branch=",
        b";rport\r\nMax-Forwards: 70\r\n" + route + b"From: <" + ident.aor + b">;tag="
        + dialog.id.local_tag.encode() + b"\r\nTo: " + str(dialog.remote).encode()
        + b"\r\nCall-ID: " + dialog.id.call_id.encode() + b"\r\nCSeq: ",
    )


def render_in_dialog(method: bytes, parts: DialogParts, branch: bytes, cseq: int) -> bytes:
    """A request within a dialog: the ACK of its 2xx (§13.2.2.4, a transaction of its own) or
    the BYE (§15.1.1), from the dialog's ``parts``."""
    a, b = parts
    return method + a + branch + b + b"%d " % cseq + method + _IN_DIALOG_TAIL


def scan_response(data: bytes) -> tuple[int, bytes] | None:
    """(status, our branch) of a response, or None when it is not a response to us.

    Only our own Via is left on a response that reaches us (§18.1.2), and our branches have a
    fixed length, so a slice finds it.  A malformed status line gives None: a counted drop.
    """
    if data[:8] != b"SIP/2.0 ":
        return None
    i = data.find(_BRANCH_PARAM, 12)
    if i < 0:
        return None
    i += 7
    end = i + BRANCH_LEN
    if len(data) <= end or data[end] not in _BRANCH_END:
        return None
    code = data[8:11]
    if not code.isdigit() or data[11:12] != b" ":
        return None
    return int(code), data[i:end]


def retry_after(values: list[str]) -> float | None:
    """Seconds of the first Retry-After value (§20.33: delta-seconds, comment and params)."""
    for value in values:
        head = value.split(";", 1)[0].split("(", 1)[0].strip()
        if head.isdigit():
            return float(min(int(head), MAX_RETRY_AFTER_S))
    return None
