"""The vocabulary of the SIP transaction machines, sans-I/O (RFC 3261 §17, RFC 6026): their
states, inputs and actions, and the events they hand to the I/O layer.

Kept apart from the machines (transaction.py) so that the tables there read as tables, and so
that a reader of the events needs nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from .message import Request, Response
from .summary import ResponseSummary

__all__ = [
    "Action",
    "Event",
    "Input",
    "PassToTU",
    "SendMessage",
    "State",
    "TimerCFired",
    "TransactionTerminated",
    "TransactionTimedOut",
    "TransportFailed",
]

# --------------------------------------------------------------------------------------------
# States, inputs, actions.  IntEnum, not Enum: IntEnum members hash and compare as ints in C,
# while Enum.__hash__ is Python code, and the table lookup is the hot path.


class State(IntEnum):
    CALLING = 1  # INVITE client, request sent, nothing heard (§17.1.1.2)
    TRYING = 2  # non-INVITE client or server, nothing heard / nothing answered (§17.1.2.2, §17.2.2)
    PROCEEDING = 3  # a provisional response went by
    COMPLETED = 4  # a final response went by; absorbing retransmissions
    CONFIRMED = 5  # INVITE server, ACK for a non-2xx received (§17.2.1)
    ACCEPTED = 6  # INVITE, a 2xx went by (RFC 6026 §8.4, §8.7)
    TERMINATED = 7  # absorbing: every input raises


class Input(IntEnum):
    REQUEST_RETRANSMISSION = 1  # server: the request again
    ACK = 2  # INVITE server: an ACK matching the transaction
    SEND_1XX = 3  # server: the TU hands a response down
    SEND_2XX = 4
    SEND_300_699 = 5
    RECV_1XX = 6  # client: a response from the transport
    RECV_2XX = 7
    RECV_300_699 = 8
    TIMER_A = 9
    TIMER_B = 10
    TIMER_C = 11
    TIMER_D = 12
    TIMER_E = 13
    TIMER_F = 14
    TIMER_G = 15
    TIMER_H = 16
    TIMER_I = 17
    TIMER_J = 18
    TIMER_K = 19
    TIMER_L = 20
    TIMER_M = 21
    TRANSPORT_ERROR = 22  # the transport failed to send (§17.1.4, §17.2.4)


# Members the per-message paths read, as module constants: in Python 3.11 ``State.X`` is
# looked up through ``EnumType.__getattr__`` (a slot hook, several hundred instructions each
# time), a module global is a cached dict read.
_TERMINATED_ST = State.TERMINATED
_COMPLETED_ST = State.COMPLETED
_IN_ACK = Input.ACK
_IN_RETRANSMISSION = Input.REQUEST_RETRANSMISSION
_IN_SEND_1XX = Input.SEND_1XX
_IN_SEND_2XX = Input.SEND_2XX
_IN_SEND_300_699 = Input.SEND_300_699
_IN_RECV_1XX = Input.RECV_1XX
_IN_RECV_2XX = Input.RECV_2XX
_IN_RECV_300_699 = Input.RECV_300_699

_TIMER_INPUTS = frozenset(i for i in Input if i.name.startswith("TIMER_"))
_REQUEST_INPUTS = frozenset({Input.REQUEST_RETRANSMISSION, Input.ACK})
_RESPONSE_INPUTS = frozenset(Input) - _TIMER_INPUTS - _REQUEST_INPUTS - {Input.TRANSPORT_ERROR}


_SEND_INPUTS = frozenset({Input.SEND_1XX, Input.SEND_2XX, Input.SEND_300_699})

#: What an input carries: a message class (or classes) for ``isinstance``.
_Kind = type[Request] | type[Response] | tuple[type[Response], type[ResponseSummary]]


def _message_kind(inp: Input) -> _Kind | None:
    """The message class an input carries, ``None`` for timers and transport errors.  A TU
    may hand a response down as a summary with its bytes (``response_summary``)."""
    if inp in _REQUEST_INPUTS:
        return Request
    if inp in _SEND_INPUTS:
        return (Response, ResponseSummary)
    if inp in _RESPONSE_INPUTS:
        return Response
    return None


class Action(IntEnum):
    SEND_REQUEST = 1  # (re)send the request that created the client transaction
    SEND_ACK = 2  # build the ACK for a non-2xx final (§17.1.1.3) and send it
    RESEND_ACK = 3  # the non-2xx final came again: send the same ACK
    SEND_RESPONSE = 4  # send the TU's response and remember it as the last one
    RESEND_RESPONSE = 5  # send the last response again (if there is one yet)
    PASS_TO_TU = 6
    REPORT_TIMEOUT = 7
    REPORT_TRANSPORT_ERROR = 8
    REPORT_TIMER_C = 9
    START_A = 10  # arm at the initial interval
    BACKOFF_A = 11  # INVITE: double, no cap (§17.1.1.2)
    START_B = 12
    START_C = 13  # arm or restart (a 1xx restarts it, §16.7 step 2)
    START_D = 14
    START_E = 15
    BACKOFF_E = 16  # Trying: MIN(2E, T2) (§17.1.2.2)
    E_AT_T2 = 17  # Proceeding: T2 (§17.1.2.2)
    START_F = 18
    START_G = 19
    BACKOFF_G = 20  # MIN(2G, T2) (§17.2.1)
    START_H = 21
    START_I = 22
    START_J = 23
    START_K = 24
    START_L = 25
    START_M = 26


# --------------------------------------------------------------------------------------------
# Events: immutable values handed to the I/O layer.


@dataclass(frozen=True, slots=True)
class SendMessage:
    """Send ``message``; ``data`` is its wire form when already known, else serialise it."""

    message: Request | Response | ResponseSummary
    data: bytes | None = None


@dataclass(frozen=True, slots=True)
class PassToTU:
    """Deliver ``message`` to the transaction user (UA core or proxy core)."""

    message: Request | Response


@dataclass(frozen=True, slots=True)
class TransactionTimedOut:
    """Timer B, F or H fired: the TU learns of a timeout (a proxy synthesises 408, §16.7)."""

    timer: Input


@dataclass(frozen=True, slots=True)
class TransportFailed:
    """The transport reported a failure; the TU is informed (§17.1.4, §17.2.4)."""


@dataclass(frozen=True, slots=True)
class TimerCFired:
    """Proxy Timer C fired (§16.8): CANCEL if a 1xx came (state PROCEEDING), else act on 408."""


@dataclass(frozen=True, slots=True)
class TransactionTerminated:
    """The transaction reached Terminated; it is destroyed (the table drops it)."""


Event = (SendMessage | PassToTU | TransactionTimedOut | TransportFailed | TimerCFired
         | TransactionTerminated)

# The events without fields are shared: no allocation on the hot path.
_TERMINATED = TransactionTerminated()
_TRANSPORT_FAILED = TransportFailed()
_TIMER_C_FIRED = TimerCFired()
