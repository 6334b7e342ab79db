"""SIP message serializer (RFC 3261 §7).

Typed headers are written first, in the order a reader wants them (Via first, so a stateless
element finds it without scanning), then the untyped ones in their original order; §7.3.1 only
requires the relative order of same-named headers to be kept.  Content-Length is always
computed from the body, never copied, so a relayed message can never lie about its framing.
Values parsed off the wire are written from their ``raw`` text (see ``message``), so relaying
costs string joins, not re-rendering.
"""

from __future__ import annotations

from .message import Message, NameAddr, Request, Response

__all__ = ["serialize", "start_line"]


def start_line(msg: Request | Response) -> str:
    if isinstance(msg, Request):
        uri = msg.uri
        return f"{msg.method} {uri if uri.raw is None else uri.raw} SIP/2.0"
    return f"SIP/2.0 {msg.status} {msg.reason}"


def _addr_lines(out: list[str], name: str, values: list[NameAddr]) -> None:
    # ``.raw`` read here rather than through __str__: one Python call less per value, on the
    # path of every relayed message.
    out.extend([f"{name}: {v if v.raw is None else v.raw}" for v in values])


def serialize(msg: Request | Response) -> bytes:
    """The wire form of ``msg``."""
    out = [start_line(msg)]
    out.extend([f"Via: {v if v.raw is None else v.raw}" for v in msg.vias])
    _typed_headers(out, msg)
    out.extend([f"{k}: {v}" for k, v in msg.extra])
    if msg.content_type is not None:
        out.append(f"Content-Type: {msg.content_type}")
    out.append(f"Content-Length: {len(msg.body)}\r\n\r\n")
    head = "\r\n".join(out).encode("utf-8", "surrogateescape")
    return head + msg.body if msg.body else head


def _typed_headers(out: list[str], msg: Message) -> None:
    if msg.routes:
        _addr_lines(out, "Route", msg.routes)
    if msg.record_routes:
        _addr_lines(out, "Record-Route", msg.record_routes)
    if msg.max_forwards is not None:
        out.append(f"Max-Forwards: {msg.max_forwards}")
    fr, to, cseq = msg.from_, msg.to, msg.cseq
    out.append(f"From: {fr if fr.raw is None else fr.raw}")
    out.append(f"To: {to if to.raw is None else to.raw}")
    out.append(f"Call-ID: {msg.call_id}")
    out.append(f"CSeq: {cseq.seq} {cseq.method}")
    if msg.contact_star:
        out.append("Contact: *")
    if msg.contacts:
        _addr_lines(out, "Contact", msg.contacts)
    if msg.expires is not None:
        out.append(f"Expires: {msg.expires}")
    if msg.require:
        out.append(f"Require: {', '.join(msg.require)}")
    if msg.proxy_require:
        out.append(f"Proxy-Require: {', '.join(msg.proxy_require)}")
