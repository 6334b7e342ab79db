"""Credit-Control server sessions (RFC 4006 §7 server state machine; RFC 8506 §7 keeps it).

The session machine is ``TABLE``: ``(state, input) -> (actions, next state)``.  The inputs are
the request types of §8.3 split by whether the credit policy accepted them ("successfully
processed" in the RFC table), plus the Tcc supervision timer.  A request the table has no row
for is answered with ``SessionStateError``'s Result-Code: an update or termination for a session
that is not open is DIAMETER_UNKNOWN_SESSION_ID (5002, RFC 4006 §7), an initial or event request
on an open session is DIAMETER_UNABLE_TO_COMPLY (5012).

CC-Request-Number ordering (§8.2): numbers start at 0 and increase within the session.  The same
number as the last one is a duplicate (a retransmission, possibly with the T bit) and gets the
stored answer again without touching the credit; a smaller number is DIAMETER_INVALID_AVP_VALUE
(5004) with the AVP in Failed-AVP.

Session state is a ``msgspec.Struct`` so the I/O layer can keep it in any store as bytes; this
module never stores anything itself, and reads no clock (``now`` is passed in).
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol

import msgspec

from protocols.deadlines import DeadlineHeap
from protocols.diameter.builders import LocalIdentity, answer
from protocols.diameter.codec import Avp, Message, encode_avp
from protocols.diameter.constants import (
    AVP_FLAG_M,
    AppId,
    AvpCode,
    CCRequestType,
    ResultCode,
)
from protocols.diameter.errors import RemoteProtocolError, SessionStateError
from protocols.diameter.fastenum import FastEnum

__all__ = [
    "DEFAULT_TCC",
    "MAX_TRACKED_SESSIONS",
    "TABLE",
    "CCAction",
    "CCInput",
    "CCSession",
    "CCState",
    "CreditControl",
    "CreditDecision",
    "CreditOutcome",
    "CreditPolicy",
    "CreditRequest",
    "QuotaPolicy",
    "TccTimers",
    "Units",
    "decode_session",
    "encode_session",
    "parse_ccr",
]

# Tcc (RFC 4006 §13): how long an open session may stay silent before the server releases its
# reservation.  The RFC suggests a value tied to Validity-Time; clients re-report at least every
# few minutes, so 10 minutes keeps abandoned sessions from holding credit for long.
DEFAULT_TCC = 600.0

# Sessions whose Tcc one node tracks.  A session costs ~100 bytes here; a million is far above
# one node's open sessions and bounds the memory a flood of CCR-Initials can take.
MAX_TRACKED_SESSIONS = 1_000_000

_U32 = struct.Struct("!I")
_U64 = struct.Struct("!Q")

# Plain ints for the per-message loops: reading an IntEnum member costs ~50 ns each time.
_SESSION_ID = int(AvpCode.SESSION_ID)
_ORIGIN_HOST = int(AvpCode.ORIGIN_HOST)
_CC_REQUEST_TYPE = int(AvpCode.CC_REQUEST_TYPE)
_CC_REQUEST_NUMBER = int(AvpCode.CC_REQUEST_NUMBER)
_RSU = int(AvpCode.REQUESTED_SERVICE_UNIT)
_USU = int(AvpCode.USED_SERVICE_UNIT)
_GSU = int(AvpCode.GRANTED_SERVICE_UNIT)
_CC_TIME = int(AvpCode.CC_TIME)
_CC_TOTAL_OCTETS = int(AvpCode.CC_TOTAL_OCTETS)
_CC_SSU = int(AvpCode.CC_SERVICE_SPECIFIC_UNITS)
_SUCCESS = int(ResultCode.DIAMETER_SUCCESS)
_TERMINATION = int(CCRequestType.TERMINATION_REQUEST)


class CCState(IntEnum):
    IDLE = 0
    OPEN = 1


class CCInput(FastEnum):
    INITIAL_OK = "CCR Initial, successfully processed"
    INITIAL_FAILED = "CCR Initial, not successfully processed"
    UPDATE_OK = "CCR Update, successfully processed"
    UPDATE_FAILED = "CCR Update, not successfully processed"
    TERMINATION_OK = "CCR Termination, successfully processed"
    TERMINATION_FAILED = "CCR Termination, not successfully processed"
    EVENT_OK = "CCR Event, successfully processed"
    EVENT_FAILED = "CCR Event, not successfully processed"
    TCC_EXPIRED = "Session supervision timer Tcc expired"


class CCAction(FastEnum):
    SEND_CCA = "Send CCA"
    START_TCC = "Start Tcc"
    RESTART_TCC = "Restart Tcc"
    STOP_TCC = "Stop Tcc"
    DEBIT_UNITS = "Debit used units"
    RELEASE_RESERVED = "Release reserved units"


_S, _I, _A = CCState, CCInput, CCAction

TABLE: dict[tuple[CCState, CCInput], tuple[tuple[CCAction, ...], CCState]] = {
    (_S.IDLE, _I.INITIAL_OK): ((_A.SEND_CCA, _A.START_TCC), _S.OPEN),
    (_S.IDLE, _I.INITIAL_FAILED): ((_A.SEND_CCA,), _S.IDLE),
    (_S.IDLE, _I.EVENT_OK): ((_A.SEND_CCA, _A.DEBIT_UNITS), _S.IDLE),
    (_S.IDLE, _I.EVENT_FAILED): ((_A.SEND_CCA,), _S.IDLE),
    (_S.OPEN, _I.UPDATE_OK): ((_A.SEND_CCA, _A.DEBIT_UNITS, _A.RESTART_TCC), _S.OPEN),
    (_S.OPEN, _I.UPDATE_FAILED): ((_A.SEND_CCA, _A.DEBIT_UNITS, _A.STOP_TCC), _S.IDLE),
    (_S.OPEN, _I.TERMINATION_OK): ((_A.SEND_CCA, _A.DEBIT_UNITS, _A.STOP_TCC), _S.IDLE),
    (_S.OPEN, _I.TERMINATION_FAILED): ((_A.SEND_CCA, _A.STOP_TCC), _S.IDLE),
    (_S.OPEN, _I.TCC_EXPIRED): ((_A.RELEASE_RESERVED, _A.STOP_TCC), _S.IDLE),
}

# CCA echoes these from the CCR (RFC 4006 §3.2).
_ECHOED = frozenset({int(AvpCode.CC_REQUEST_TYPE), int(AvpCode.CC_REQUEST_NUMBER)})

_INPUTS: dict[int, tuple[CCInput, CCInput]] = {
    CCRequestType.INITIAL_REQUEST: (_I.INITIAL_OK, _I.INITIAL_FAILED),
    CCRequestType.UPDATE_REQUEST: (_I.UPDATE_OK, _I.UPDATE_FAILED),
    CCRequestType.TERMINATION_REQUEST: (_I.TERMINATION_OK, _I.TERMINATION_FAILED),
    CCRequestType.EVENT_REQUEST: (_I.EVENT_OK, _I.EVENT_FAILED),
}


class Units(msgspec.Struct, frozen=True):
    """Service units (RFC 4006 §8.17-8.21): time, octets, service-specific units."""

    cc_time: int | None = None
    total_octets: int | None = None
    service_specific_units: int | None = None

    def plus(self, other: Units | None) -> Units:
        if other is None:
            return self
        return Units(_add(self.cc_time, other.cc_time), _add(self.total_octets, other.total_octets),
                     _add(self.service_specific_units, other.service_specific_units))

    def is_empty(self) -> bool:
        return self.cc_time is None and self.total_octets is None and (
            self.service_specific_units is None)

    def to_avp(self, code: int) -> Avp:
        """A Granted-/Used-/Requested-Service-Unit group (§8.17, §8.18, §8.19)."""
        parts = []
        if self.cc_time is not None:
            parts.append(encode_avp(_CC_TIME, AVP_FLAG_M, _U32.pack(self.cc_time)))
        if self.total_octets is not None:
            parts.append(encode_avp(_CC_TOTAL_OCTETS, AVP_FLAG_M,
                                    _U64.pack(self.total_octets)))
        if self.service_specific_units is not None:
            parts.append(encode_avp(_CC_SSU, AVP_FLAG_M,
                                    _U64.pack(self.service_specific_units)))
        return Avp(code, AVP_FLAG_M, b"".join(parts))


def _add(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    return a if b is None else a + b


class CCSession(msgspec.Struct):
    """What the server remembers of one open session (stored between requests)."""

    session_id: str
    state: int
    request_number: int
    tcc_deadline: float | None = None
    granted: Units = Units()
    used: Units = Units()
    last_result: int = ResultCode.DIAMETER_SUCCESS
    last_granted: Units | None = None
    origin_host: str = ""


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(CCSession)


def encode_session(session: CCSession) -> bytes:
    return _ENCODER.encode(session)


def decode_session(data: bytes) -> CCSession:
    return _DECODER.decode(data)


@dataclass(frozen=True, slots=True)
class CreditRequest:
    """The parts of a CCR the credit logic reads (RFC 4006 §3.1)."""

    session_id: str
    origin_host: str
    request_type: int
    request_number: int
    requested: Units | None = None
    used: Units | None = None


@dataclass(frozen=True, slots=True)
class CreditDecision:
    """A policy's verdict: the Result-Code and the units to grant (None: no GSU)."""

    result_code: int
    granted: Units | None = None

    @property
    def ok(self) -> bool:
        return self.result_code == _SUCCESS


class CreditPolicy(Protocol):
    """Decides a request; any callable of this shape replaces the built-in ``QuotaPolicy``."""

    def __call__(self, request: CreditRequest, session: CCSession) -> CreditDecision: ...


class QuotaPolicy:
    """Grants up to ``grant`` per request from a per-session ``quota`` of used units.

    A request asking for less gets what it asked for (§5.1.1: the server MAY grant less than
    requested, never needs to grant more); once the quota is used up the answer is
    DIAMETER_CREDIT_LIMIT_REACHED (4012, RFC 4006 §9.1).  Termination grants nothing.
    """

    def __init__(self, grant: Units, quota: Units | None = None) -> None:
        self.grant = grant
        self.quota = quota

    def __call__(self, request: CreditRequest, session: CCSession) -> CreditDecision:
        if request.request_type == _TERMINATION:
            return CreditDecision(_SUCCESS)
        used = session.used.plus(request.used)
        fields = ("cc_time", "total_octets", "service_specific_units")
        granted: dict[str, int | None] = {}
        for name in fields:
            granted[name] = self._one(name, request.requested, used)
        if all(v is None or v <= 0 for v in granted.values()) and not self.grant.is_empty():
            return CreditDecision(ResultCode.DIAMETER_CREDIT_LIMIT_REACHED)
        return CreditDecision(_SUCCESS, Units(**granted))

    def _one(self, name: str, requested: Units | None, used: Units) -> int | None:
        cap: int | None = getattr(self.grant, name)
        if cap is None:
            return None
        want = getattr(requested, name) if requested is not None else None
        value = cap if want is None else min(cap, want)
        limit = getattr(self.quota, name) if self.quota is not None else None
        if limit is not None:
            value = min(value, max(0, limit - (getattr(used, name) or 0)))
        return value


@dataclass(slots=True)
class CreditOutcome:
    """What to do after a request: send ``answer``; store ``session`` (None: delete it)."""

    answer: Message
    session: CCSession | None
    actions: tuple[CCAction, ...] = ()
    duplicate: bool = False


def parse_ccr(msg: Message) -> CreditRequest:
    """Read a validated CCR's session fields (the validator has checked types and presence)."""
    sid = origin = ""
    rtype = number = -1
    requested = used = None
    for avp in msg.avps:
        if avp.vendor_id:
            continue
        code = avp.code
        if code == _SESSION_ID:
            sid = avp.data.decode("utf-8")
        elif code == _ORIGIN_HOST:
            origin = avp.data.decode("ascii")
        elif code == _CC_REQUEST_TYPE:
            rtype = _U32.unpack(avp.data)[0]
        elif code == _CC_REQUEST_NUMBER:
            number = _U32.unpack(avp.data)[0]
        elif code == _RSU:
            requested = _units(avp)
        elif code == _USU:
            used = _units(avp) if used is None else used.plus(_units(avp))
    return CreditRequest(sid, origin, rtype, number, requested, used)


def _units(group: Avp) -> Units:
    t = o = s = None
    for child in group.children():
        code = child.code
        if code == _CC_TIME and len(child.data) == 4:
            t = _U32.unpack(child.data)[0]
        elif code == _CC_TOTAL_OCTETS and len(child.data) == 8:
            o = _U64.unpack(child.data)[0]
        elif code == _CC_SSU and len(child.data) == 8:
            s = _U64.unpack(child.data)[0]
    return Units(t, o, s)


class CreditControl:
    """Runs the session table for each CCR against a pluggable credit policy."""

    def __init__(
        self,
        identity: LocalIdentity,
        policy: CreditPolicy | Callable[[CreditRequest, CCSession], CreditDecision],
        tcc: float = DEFAULT_TCC,
    ) -> None:
        self.identity = identity
        self.policy = policy
        self.tcc = tcc
        self._auth_app = Avp(AvpCode.AUTH_APPLICATION_ID, AVP_FLAG_M,
                             _U32.pack(AppId.CREDIT_CONTROL))

    def handle(self, msg: Message, req: CreditRequest, session: CCSession | None,
               now: float) -> CreditOutcome:
        """Process one CCR; raises ``RemoteProtocolError`` for requests to reject."""
        current = session or CCSession(req.session_id, CCState.IDLE, -1,
                                       origin_host=req.origin_host)
        if session is not None and req.request_number <= session.request_number:
            return self._replay(msg, req, session)
        inputs = _INPUTS.get(req.request_type)
        if inputs is None:
            raise RemoteProtocolError("unknown CC-Request-Type",
                                      ResultCode.DIAMETER_INVALID_AVP_VALUE,
                                      failed_avps=_failed(msg, AvpCode.CC_REQUEST_TYPE))
        state = CCState(current.state)
        if (state, inputs[0]) not in TABLE:
            raise SessionStateError(state, inputs[0], _missing_row_code(state))
        decision = self.policy(req, current)
        event = inputs[0] if decision.ok else inputs[1]
        actions, next_state = TABLE[(state, event)]
        new = self._apply(current, req, decision, actions, next_state, now)
        cca = self.build_cca(msg, decision.result_code, decision.granted)
        return CreditOutcome(cca, new if next_state is CCState.OPEN else None, actions)

    def expire(self, session: CCSession, now: float) -> CCSession | None:
        """Tcc fired: release the reservation and forget the session (None) if it is due."""
        if session.tcc_deadline is None or now < session.tcc_deadline:
            return session
        state = CCState(session.state)
        if (state, CCInput.TCC_EXPIRED) not in TABLE:
            raise SessionStateError(state, CCInput.TCC_EXPIRED,
                                    ResultCode.DIAMETER_UNKNOWN_SESSION_ID)
        return None

    def build_cca(self, msg: Message, result_code: int, granted: Units | None) -> Message:
        """CCA (RFC 4006 §3.2): echo Auth-Application-Id, CC-Request-Type and -Number."""
        avps = [self._auth_app]
        for avp in msg.avps:
            if avp.code in _ECHOED and not avp.vendor_id:
                avps.append(avp)
        if granted is not None and not granted.is_empty():
            avps.append(granted.to_avp(_GSU))
        return answer(msg, result_code, self.identity, avps)

    def _apply(self, current: CCSession, req: CreditRequest, decision: CreditDecision,
               actions: tuple[CCAction, ...], next_state: CCState, now: float) -> CCSession:
        new = msgspec.structs.replace(
            current, state=int(next_state), request_number=req.request_number,
            last_result=decision.result_code, last_granted=decision.granted,
        )
        for action in actions:
            if action in (CCAction.START_TCC, CCAction.RESTART_TCC):
                new.tcc_deadline = now + self.tcc
            elif action is CCAction.STOP_TCC:
                new.tcc_deadline = None
            elif action is CCAction.DEBIT_UNITS:
                new.used = new.used.plus(req.used)
        if decision.granted is not None:
            new.granted = new.granted.plus(decision.granted)
        return new

    def _replay(self, msg: Message, req: CreditRequest, session: CCSession) -> CreditOutcome:
        if req.request_number < session.request_number:
            raise RemoteProtocolError(
                "CC-Request-Number out of order", ResultCode.DIAMETER_INVALID_AVP_VALUE,
                failed_avps=_failed(msg, AvpCode.CC_REQUEST_NUMBER))
        cca = self.build_cca(msg, session.last_result, session.last_granted)
        return CreditOutcome(cca, session, (), duplicate=True)


class TccTimers:
    """The Tcc deadlines of many sessions (RFC 4006 §13) in one ``DeadlineHeap``.

    Every request re-arms its session's Tcc; the heap's lazy deletion and bounded slack keep
    that O(log n).  Bounded by ``max_sessions``: ``set`` returns False beyond it and the
    caller relies on the store's TTL.
    """

    def __init__(self, max_sessions: int = MAX_TRACKED_SESSIONS) -> None:
        self.max_sessions = max_sessions
        self._heap: DeadlineHeap[str] = DeadlineHeap()

    def __len__(self) -> int:
        return len(self._heap)

    def set(self, session_id: str, deadline: float) -> bool:
        return self._heap.push(session_id, deadline, self.max_sessions)

    def cancel(self, session_id: str) -> None:
        self._heap.cancel(session_id)

    def deadline(self, session_id: str) -> float | None:
        return self._heap.deadline(session_id)

    def items(self, limit: int) -> list[tuple[str, float]]:
        return list(itertools.islice(self._heap.items(), max(0, limit)))

    def next_deadline(self) -> float | None:
        return self._heap.next_deadline()

    def expired(self, now: float) -> list[str]:
        """Sessions whose Tcc has passed; they are no longer tracked."""
        return self._heap.pop_due(now)


def _missing_row_code(state: CCState) -> int:
    if state is CCState.IDLE:
        return ResultCode.DIAMETER_UNKNOWN_SESSION_ID
    return ResultCode.DIAMETER_UNABLE_TO_COMPLY


def _failed(msg: Message, code: int) -> tuple[bytes, ...]:
    avp = msg.find(code)
    return (avp.encode(),) if avp is not None else ()
