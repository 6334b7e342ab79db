"""What a compacted transaction keeps of a response it sent: a summary, not a message.

A transaction that has sent its final response only needs that response's wire form (to answer
retransmissions, §17.2.1 / §17.2.2) and a few facts about it: the status (is the request
answered?), the CSeq method (for counters) and the To tag (the RFC 2543 ACK match, §17.2.3).
Holding the parsed ``Response`` for the 32 s of Timer G/H, J or L costs kilobytes per
transaction; a ``ResponseSummary`` is one small object, and its type says what it is, so no
reader mistakes it for a message.  A TU that writes a response straight to bytes (the
registrar's 200) hands the transaction a summary and the bytes, never building the Response.
"""

from __future__ import annotations

from dataclasses import dataclass

from .message import Response

__all__ = ["ResponseSummary", "response_summary"]


@dataclass(frozen=True, slots=True)
class ResponseSummary:
    """Status, reason, CSeq method and To tag of a response whose bytes are kept elsewhere."""

    status: int
    reason: str
    method: str
    to_tag: str | None = None

    @classmethod
    def of(cls, response: Response) -> ResponseSummary:
        return cls(response.status, response.reason, response.cseq.method, response.to.tag)


_shared: dict[tuple[int, str, str], ResponseSummary] = {}
#: Distinct shared summaries kept; past it, a fresh one each (bounded).
_MAX_SHARED = 256


def response_summary(status: int, reason: str, method: str) -> ResponseSummary:
    """A shared summary without a To tag (one per status, reason and method): what a TU that
    writes a non-INVITE final response as bytes hands to ``send_response``."""
    key = (status, reason, method)
    summary = _shared.get(key)
    if summary is None:
        summary = ResponseSummary(status, reason, method)
        if len(_shared) < _MAX_SHARED:
            _shared[key] = summary
    return summary
