"""Typed SIP errors, split by whose fault they are (the h11 model).

``RemoteProtocolError`` is raised for bytes a peer sent that cannot be accepted; it carries the
answer: ``status``/``reason`` of the response to send (RFC 3261 §8.2, §16.3, §21), or ``status``
``None`` when the only correct action is a counted discard (a broken response, §18.1.2, or a
datagram too broken to answer).  ``headers`` holds the raw header values that could be read so
the I/O layer can copy Via, From, To, Call-ID and CSeq into a stateless error response (§8.2.6.2).

``LocalProtocolError`` means our own code misused the API (a bug on this side).
"""

from __future__ import annotations

__all__ = ["LocalProtocolError", "RemoteProtocolError", "SipError", "TransactionError"]


class SipError(Exception):
    """Base class of every error this package raises on purpose."""


class RemoteProtocolError(SipError):
    """The peer sent something we must reject; carries the answer."""

    def __init__(
        self,
        reason: str,
        status: int | None = 400,
        *,
        is_request: bool | None = None,
        headers: list[tuple[str, str]] | None = None,
        extra_headers: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(f"{status} {reason}" if status else f"discard: {reason}")
        self.status = status
        self.reason = reason
        self.is_request = is_request
        self.headers: list[tuple[str, str]] = headers or []
        # Headers the answer must carry, e.g. Unsupported for 420 (RFC 3261 §8.2.2.3).
        self.extra_headers: list[tuple[str, str]] = extra_headers or []


class LocalProtocolError(SipError):
    """Our code asked for something the protocol does not allow."""


class TransactionError(LocalProtocolError):
    """An input a transaction state machine does not accept in its current state."""
