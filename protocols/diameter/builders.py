"""Answer and request builders (RFC 6733 §6.2, §7).

An answer copies the request's command code, application id, hop-by-hop and end-to-end
identifiers and P bit, clears R and T (§6.2), puts Session-Id first when the request had one
(§8.8: it MUST follow the header), adds Result-Code, Origin-Host and Origin-Realm, and echoes
Proxy-Info AVPs in order (§6.2 step 4).  Protocol errors (3xxx) set the E bit (§7.1.3) and use
the generic answer-message layout of §7.2; Failed-AVP (§7.5) wraps the offending AVPs.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from protocols.diameter.codec import Avp, Message, decode_header, encode_avp
from protocols.diameter.constants import (
    AVP_FLAG_M,
    FLAG_E,
    FLAG_P,
    FLAG_R,
    AvpCode,
)
from protocols.diameter.errors import RemoteProtocolError

__all__ = [
    "LocalIdentity",
    "answer",
    "answer_from_header",
    "encode_unsigned32",
    "error_answer",
    "request",
    "result_code_avp",
]

_U32 = struct.Struct("!I")


@dataclass(slots=True)
class LocalIdentity:
    """Our Origin-Host and Origin-Realm, encoded once for every answer we build."""

    origin_host: str
    origin_realm: str
    origin_avps: list[Avp] = field(init=False)

    def __post_init__(self) -> None:
        self.origin_avps = [
            Avp(AvpCode.ORIGIN_HOST, AVP_FLAG_M, self.origin_host.encode("ascii")),
            Avp(AvpCode.ORIGIN_REALM, AVP_FLAG_M, self.origin_realm.encode("ascii")),
        ]


_RESULT_CACHE: dict[int, Avp] = {}
# Plain ints for the per-answer path (an IntEnum member read costs ~50 ns).
_SESSION_ID = int(AvpCode.SESSION_ID)
_PROXY_INFO = int(AvpCode.PROXY_INFO)


def result_code_avp(code: int) -> Avp:
    avp = _RESULT_CACHE.get(code)
    if avp is None:
        avp = _RESULT_CACHE[code] = Avp(AvpCode.RESULT_CODE, AVP_FLAG_M, _U32.pack(code))
    return avp


def answer(
    req: Message,
    result_code: int,
    identity: LocalIdentity,
    avps: Sequence[Avp] = (),
    *,
    error_bit: bool = False,
    error_message: str | None = None,
    failed_avps: Sequence[bytes] = (),
) -> Message:
    """The answer to ``req``: Session-Id, Result-Code, Origin-Host/Realm, ``avps``, extras."""
    out: list[Avp] = []
    first = req.avps[0] if req.avps else None
    if first is not None and first.code == _SESSION_ID and first.vendor_id == 0:
        out.append(first)
    else:
        sid = req.find(_SESSION_ID)
        if sid is not None:
            out.append(sid)
    out.append(result_code_avp(result_code))
    out.extend(identity.origin_avps)
    out.extend(avps)
    if error_message is not None:
        # Error-Message MUST NOT have the M bit (RFC 6733 §7.3).
        out.append(Avp(AvpCode.ERROR_MESSAGE, 0, error_message.encode("utf-8")))
    if failed_avps:
        out.append(Avp(AvpCode.FAILED_AVP, AVP_FLAG_M, b"".join(failed_avps)))
    out.extend([a for a in req.avps if a.code == _PROXY_INFO and not a.vendor_id])
    flags = (req.flags & FLAG_P) | (FLAG_E if error_bit else 0)
    return Message(
        req.command_code, flags, req.application_id, req.hop_by_hop, req.end_to_end, out
    )


def error_answer(req: Message, exc: RemoteProtocolError, identity: LocalIdentity) -> Message:
    """The answer an error prescribes: E bit for 3xxx (§7.1.3), Failed-AVP (§7.5)."""
    return answer(
        req, exc.result_code, identity,
        error_bit=exc.error_bit, error_message=exc.reason, failed_avps=exc.failed_avps,
    )


def answer_from_header(
    header: bytes, exc: RemoteProtocolError, identity: LocalIdentity
) -> Message | None:
    """An error answer when only the 20-byte header could be read (a framing error).

    Returns ``None`` when the header is not a request's: answers are never answered (§6.2).
    """
    _version, _length, flags, code, app, hbh, e2e = decode_header(header)
    if not flags & FLAG_R:
        return None
    req = Message(code, flags & FLAG_P, app, hbh, e2e, [])
    return error_answer(req, exc, identity)


def request(
    command_code: int,
    application_id: int,
    hop_by_hop: int,
    end_to_end: int,
    avps: list[Avp],
    *,
    proxiable: bool = False,
) -> Message:
    flags = FLAG_R | (FLAG_P if proxiable else 0)
    return Message(command_code, flags, application_id, hop_by_hop, end_to_end, avps)


def encode_unsigned32(code: int, value: int, flags: int = AVP_FLAG_M) -> bytes:
    return encode_avp(code, flags, _U32.pack(value))
