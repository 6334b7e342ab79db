"""Typed Diameter errors, split by whose fault they are (the h11 model).

``RemoteProtocolError`` means the peer sent something we must reject.  It carries the whole
answer the I/O layer needs (RFC 6733 §7): the Result-Code, whether the answer sets the E bit
(protocol errors, §7.1.3, are the 3xxx class), the encoded offending AVPs to wrap in Failed-AVP
(§7.5) and whether the connection must be closed afterwards (a framing error leaves the byte
stream unsynchronised, so nothing after it can be trusted).

``LocalProtocolError`` means our own code asked for something the protocol does not allow; the
state-machine errors derive from it because feeding a machine an input its table does not list
is a bug on the calling side.
"""

from __future__ import annotations

__all__ = [
    "DiameterError",
    "FramingError",
    "LocalProtocolError",
    "PeerStateError",
    "RemoteProtocolError",
    "SessionStateError",
    "WatchdogStateError",
]


class DiameterError(Exception):
    """Base class of every error this package raises on purpose."""


class RemoteProtocolError(DiameterError):
    """The peer sent something we must reject; carries the answer (RFC 6733 §7)."""

    def __init__(
        self,
        reason: str,
        result_code: int,
        *,
        failed_avps: tuple[bytes, ...] = (),
        fatal: bool = False,
    ) -> None:
        super().__init__(f"{result_code} {reason}")
        self.reason = reason
        self.result_code = result_code
        # Encoded AVPs (header + data + padding) to place inside Failed-AVP (§7.5).
        self.failed_avps = failed_avps
        # True when the connection must be closed after the answer is sent.
        self.fatal = fatal

    @property
    def error_bit(self) -> bool:
        """Protocol errors (3xxx) are answered with the E bit set (§7.1.3)."""
        return 3000 <= self.result_code < 4000


class FramingError(RemoteProtocolError):
    """The byte stream cannot be framed (bad version or length): always fatal.

    ``header`` holds the first 20 bytes of the broken message when they were received, so an
    answer can still be addressed (hop-by-hop and end-to-end identifiers, §3); ``None`` when
    fewer bytes arrived.
    """

    def __init__(self, reason: str, result_code: int, header: bytes | None) -> None:
        super().__init__(reason, result_code, fatal=True)
        self.header = header
        # Complete messages that preceded the fault in the same read, in order.
        self.before: list[bytes] = []


class LocalProtocolError(DiameterError):
    """Our code asked for something the protocol does not allow."""


class PeerStateError(LocalProtocolError):
    """An input the peer state machine (RFC 6733 §5.6) does not accept in its state."""

    def __init__(self, state: object, event: object) -> None:
        super().__init__(f"peer state {state} does not accept {event}")
        self.state = state
        self.event = event


class WatchdogStateError(LocalProtocolError):
    """An input the watchdog machine (RFC 3539 §3.4.1) does not accept in its state."""

    def __init__(self, state: object, event: object) -> None:
        super().__init__(f"watchdog state {state} does not accept {event}")
        self.state = state
        self.event = event


class SessionStateError(RemoteProtocolError):
    """A Credit-Control request the session machine (RFC 4006 §7) has no row for.

    Unlike the peer machine this is the client's fault (e.g. an update for a session that is
    not open), so it carries the Result-Code to answer with.
    """

    def __init__(self, state: object, event: object, result_code: int) -> None:
        super().__init__(f"session state {state} does not accept {event}", result_code)
        self.state = state
        self.event = event
