"""SIP transaction state machines, sans-I/O (RFC 3261 §17, updated by RFC 6026).

Rules this module keeps (the h11/h2/aioquic model):

* No I/O and no clock.  Every entry point takes ``now`` (seconds, any monotonic origin).  A
  machine never sends: it returns a list of immutable events (``SendMessage``, ``PassToTU``,
  ``TransactionTimedOut``, ``TransportFailed``, ``TimerCFired``, ``TransactionTerminated``) and
  the asyncio side does the I/O.
* Each of the four machines is a table ``{(State, Input): (actions, next State)}``.  A pair that
  is not in the table raises ``TransactionError`` and leaves the machine untouched; nothing falls
  through silently.  ``handle(input, now, msg)`` is the only driver; the typed methods
  (``start``, ``receive_response``, ``receive_request``, ``send_response``, ``on_timer``,
  ``transport_error``) only pick the input.
* Timers are deadlines kept by the transaction (``next_deadline()``); ``on_timer(now)`` fires
  every due one in deadline order.  Which timers may run in a state is declared per machine
  (``STATE_TIMERS``): entering a state cancels the others, so e.g. a 1xx stops Timer A and B.
  A timer the RFC sets to zero on reliable transports (D, I, J, K) fires inside the same call.
* Matching keys (§17.1.3, §17.2.3) are in ``txkeys.py`` and the bounded table of live
  transactions, with its one heap of deadlines, in ``txtable.py``.

Wire bytes: the machines keep the message objects they send.  The I/O layer serialises a
``SendMessage`` whose ``data`` is ``None`` and may hand the bytes back with ``cache_bytes`` so
later retransmissions (Timers A, E, G, request retransmissions answered with the last response,
ACK resent for a retransmitted non-2xx) reuse them instead of serialising again.

Where the RFC figures are silent about an input that the network can plausibly deliver (a 1xx
reordered behind the final response on UDP, an INVITE retransmission after the ACK) the table
absorbs it explicitly; each such row says so.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

from .errors import TransactionError
from .message import CSeq, NameAddr, Request, Response
from .summary import ResponseSummary, response_summary
from .timers import TimerValues
from .txkeys import (
    MAGIC_COOKIE,
    TransactionKey,
    cancel_target_key,
    client_key,
    client_key_of_request,
    server_key,
)
from .txtypes import (
    _IN_ACK,
    _IN_RECV_1XX,
    _IN_RECV_2XX,
    _IN_RECV_300_699,
    _IN_RETRANSMISSION,
    _IN_SEND_1XX,
    _IN_SEND_2XX,
    _IN_SEND_300_699,
    _TERMINATED,
    _TERMINATED_ST,
    _TIMER_C_FIRED,
    _TIMER_INPUTS,
    _TRANSPORT_FAILED,
    Action,
    Event,
    Input,
    PassToTU,
    SendMessage,
    State,
    TimerCFired,
    TransactionTerminated,
    TransactionTimedOut,
    TransportFailed,
    _Kind,
    _message_kind,
)

if TYPE_CHECKING:
    from .txtable import TransactionTable

__all__ = [
    "MAGIC_COOKIE",
    "Action",
    "ClientTransaction",
    "Event",
    "Input",
    "InviteClientTransaction",
    "InviteServerTransaction",
    "NonInviteClientTransaction",
    "NonInviteServerTransaction",
    "PassToTU",
    "ResponseSummary",
    "SendMessage",
    "ServerTransaction",
    "State",
    "TimerCFired",
    "Transaction",
    "TransactionKey",
    "TransactionTerminated",
    "TransactionTimedOut",
    "TransportFailed",
    "build_ack",
    "build_cancel",
    "cancel_target_key",
    "client_key",
    "new_client_transaction",
    "new_server_transaction",
    "response_summary",
    "server_key",
]




# --------------------------------------------------------------------------------------------
# Action implementations.  Each takes (transaction, input, message, now, out).

#: What an input may carry.
Msg = Request | Response | ResponseSummary
_ActionFn = Callable[["Transaction", Input, "Msg | None", float, list[Event]], None]


def _arm(t: Transaction, timer: Input, delay: float | None, now: float) -> None:
    """Set ``timer`` to fire ``delay`` from now; ``None`` means not on this transport."""
    if delay is None:
        return
    if delay <= 0:
        # RFC 3261 sets D, I, J, K to zero on reliable transports: fire within this call.
        t._immediate = timer
        return
    t._timers[timer] = now + delay


def _a_send_request(t: Transaction, inp: Input, m: Msg | None,
                    now: float, out: list[Event]) -> None:
    out.append(SendMessage(t.request, t.request_bytes))


def _a_send_ack(t: Transaction, inp: Input, m: Msg | None,
                now: float, out: list[Event]) -> None:
    assert isinstance(t, InviteClientTransaction) and isinstance(m, Response)
    t.ack = build_ack(t.request, m)
    t.ack_bytes = None
    out.append(SendMessage(t.ack))


def _a_resend_ack(t: Transaction, inp: Input, m: Msg | None,
                  now: float, out: list[Event]) -> None:
    assert isinstance(t, InviteClientTransaction)
    if t.ack is not None:
        out.append(SendMessage(t.ack, t.ack_bytes))


def _a_send_response(t: Transaction, inp: Input, m: Msg | None,
                     now: float, out: list[Event]) -> None:
    assert isinstance(m, Response | ResponseSummary)
    t.last_response = m
    t.last_response_bytes = None
    out.append(SendMessage(m))


def _a_resend_response(t: Transaction, inp: Input, m: Msg | None,
                       now: float, out: list[Event]) -> None:
    # §17.2.1/§17.2.2: a retransmitted request is answered with the last response, if any yet.
    if t.last_response is not None:
        out.append(SendMessage(t.last_response, t.last_response_bytes))


def _a_pass_to_tu(t: Transaction, inp: Input, m: Msg | None,
                  now: float, out: list[Event]) -> None:
    assert isinstance(m, Request | Response)
    out.append(PassToTU(m))


def _a_report_timeout(t: Transaction, inp: Input, m: Msg | None,
                      now: float, out: list[Event]) -> None:
    out.append(TransactionTimedOut(inp))


def _a_report_transport_error(t: Transaction, inp: Input, m: Msg | None,
                              now: float, out: list[Event]) -> None:
    out.append(_TRANSPORT_FAILED)


def _a_report_timer_c(t: Transaction, inp: Input, m: Msg | None,
                      now: float, out: list[Event]) -> None:
    out.append(_TIMER_C_FIRED)


def _start_retransmit(timer: Input, field: str) -> _ActionFn:
    def action(t: Transaction, inp: Input, m: Msg | None,
               now: float, out: list[Event]) -> None:
        interval: float | None = getattr(t.timers, field)
        t._interval = interval
        _arm(t, timer, interval, now)
    return action


def _backoff(timer: Input, cap: bool) -> _ActionFn:
    def action(t: Transaction, inp: Input, m: Msg | None,
               now: float, out: list[Event]) -> None:
        if t._interval is None:  # reliable transport: nothing was ever scheduled
            return
        nxt = t._interval * 2
        if cap and nxt > t.timers.t2:
            nxt = t.timers.t2
        t._interval = nxt
        _arm(t, timer, nxt, now)
    return action


def _a_e_at_t2(t: Transaction, inp: Input, m: Msg | None,
               now: float, out: list[Event]) -> None:
    if t._interval is None:
        return
    t._interval = t.timers.t2
    _arm(t, Input.TIMER_E, t.timers.t2, now)


def _start(timer: Input, field: str) -> _ActionFn:
    def action(t: Transaction, inp: Input, m: Msg | None,
               now: float, out: list[Event]) -> None:
        _arm(t, timer, getattr(t.timers, field), now)
    return action


def _a_start_c(t: Transaction, inp: Input, m: Msg | None,
               now: float, out: list[Event]) -> None:
    # Timer C belongs to proxies only (§16.6 step 11); a UA's INVITE waits for the callee.
    if isinstance(t, InviteClientTransaction) and t.proxy:
        _arm(t, Input.TIMER_C, t.timers.c, now)


_ACTION_FUNCS: dict[Action, _ActionFn] = {
    Action.SEND_REQUEST: _a_send_request,
    Action.SEND_ACK: _a_send_ack,
    Action.RESEND_ACK: _a_resend_ack,
    Action.SEND_RESPONSE: _a_send_response,
    Action.RESEND_RESPONSE: _a_resend_response,
    Action.PASS_TO_TU: _a_pass_to_tu,
    Action.REPORT_TIMEOUT: _a_report_timeout,
    Action.REPORT_TRANSPORT_ERROR: _a_report_transport_error,
    Action.REPORT_TIMER_C: _a_report_timer_c,
    Action.START_A: _start_retransmit(Input.TIMER_A, "a"),
    Action.BACKOFF_A: _backoff(Input.TIMER_A, cap=False),
    Action.START_B: _start(Input.TIMER_B, "b"),
    Action.START_C: _a_start_c,
    Action.START_D: _start(Input.TIMER_D, "d"),
    Action.START_E: _start_retransmit(Input.TIMER_E, "e"),
    Action.BACKOFF_E: _backoff(Input.TIMER_E, cap=True),
    Action.E_AT_T2: _a_e_at_t2,
    Action.START_F: _start(Input.TIMER_F, "f"),
    Action.START_G: _start_retransmit(Input.TIMER_G, "g"),
    Action.BACKOFF_G: _backoff(Input.TIMER_G, cap=True),
    Action.START_H: _start(Input.TIMER_H, "h"),
    Action.START_I: _start(Input.TIMER_I, "i"),
    Action.START_J: _start(Input.TIMER_J, "j"),
    Action.START_K: _start(Input.TIMER_K, "k"),
    Action.START_L: _start(Input.TIMER_L, "l"),
    Action.START_M: _start(Input.TIMER_M, "m"),
}

Table = dict[tuple[State, Input], tuple[tuple[Action, ...], State]]
_Compiled = dict[
    tuple[State, Input],
    tuple[tuple[_ActionFn, ...], State, bool, _Kind | None],
]

# Short names for the tables below.
_S, _I, _A = State, Input, Action


# --------------------------------------------------------------------------------------------
# The machines.


class Transaction:
    """Common driver.  Subclasses declare ``TABLE``, ``STATE_TIMERS`` and ``INITIAL``."""

    TABLE: ClassVar[Table]
    STATE_TIMERS: ClassVar[dict[State, frozenset[Input]]]
    INITIAL: ClassVar[State]
    #: States in which the parsed messages may be released (``compact``): the request has
    #: been answered or answered for good, only retransmissions are left to absorb.
    COMPACTABLE: ClassVar[frozenset[State]] = frozenset()
    _compiled: ClassVar[_Compiled]
    #: States whose rows resend the last response's bytes (derived from ``TABLE``).
    _resends: ClassVar[frozenset[State]]

    __slots__ = (
        "_immediate",
        "_interval",
        "_owner",
        "_request",
        "_timers",
        "key",
        "last_response",
        "last_response_bytes",
        "peer",
        "request_bytes",
        "state",
        "timers",
    )

    def __init_subclass__(cls) -> None:
        super().__init_subclass__()
        if "TABLE" in cls.__dict__:
            cls._compiled = {
                pair: (
                    tuple(_ACTION_FUNCS[a] for a in actions),
                    nxt,
                    pair[1] in _TIMER_INPUTS,
                    _message_kind(pair[1]),
                )
                for pair, (actions, nxt) in cls.TABLE.items()
            }
            cls._resends = frozenset(st for (st, _), (actions, _) in cls.TABLE.items()
                                     if Action.RESEND_RESPONSE in actions)

    def __init__(self, request: Request, key: TransactionKey, timers: TimerValues,
                 peer: object = None) -> None:
        self._request: Request | None = request
        self.key = key
        self.timers = timers
        #: Opaque to this module: where the I/O layer sends (address, connection ...).
        self.peer = peer
        self.state = self.INITIAL
        #: The request's wire form, set by the I/O layer to spare re-serialising retransmits.
        self.request_bytes: bytes | None = None
        #: The last response sent; a ``ResponseSummary`` when the TU gave bytes or once
        #: compacted (its wire form is then in ``last_response_bytes`` if still needed).
        self.last_response: Response | ResponseSummary | None = None
        #: The last response's wire form; reset whenever a new response is sent.
        self.last_response_bytes: bytes | None = None
        self._timers: dict[Input, float] = {}
        self._interval: float | None = None
        self._immediate: Input | None = None
        self._owner: TransactionTable | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.state.name} {self.key!r}>"

    @property
    def request(self) -> Request:
        """The request that created the transaction; ``TransactionError`` once ``compact``
        released it (only retransmissions are left then: nothing needs it, see ``compact``)."""
        request = self._request
        if request is None:
            raise TransactionError(f"{self!r}: request released by compact()")
        return request

    @property
    def compacted(self) -> bool:
        """True once ``compact`` released the parsed messages."""
        return self._request is None

    # -- the driver --------------------------------------------------------------------------

    def handle(self, inp: Input, now: float, msg: Msg | None = None) -> list[Event]:
        """Apply one input.  Raises ``TransactionError`` (state unchanged) if not in the table."""
        entry = self._compiled.get((self.state, inp))
        if entry is None:
            raise TransactionError(
                f"{type(self).__name__}: {inp.name} not allowed in state {self.state.name}")
        actions, nxt, is_timer, kind = entry
        if kind is not None and not isinstance(msg, kind):
            raise TransactionError(f"{type(self).__name__}: {inp.name} needs a {kind!r}")
        if is_timer:
            self._timers.pop(inp, None)
        out: list[Event] = []
        for fn in actions:
            fn(self, inp, msg, now, out)
        if nxt is not self.state:
            self._enter(nxt, out)
        imm = self._immediate
        if imm is not None:
            self._immediate = None
            out += self.handle(imm, now)
        elif self._owner is not None:
            self._owner._reschedule(self)
        return out

    def _enter(self, nxt: State, out: list[Event]) -> None:
        self.state = nxt
        timers = self._timers
        if timers:
            allowed = self.STATE_TIMERS[nxt]
            # The usual entry keeps every armed timer (Completed with its J just armed): one
            # C-level superset test instead of building the list of timers to cancel.
            if not allowed.issuperset(timers):
                for k in [k for k in timers if k not in allowed]:
                    del timers[k]
        if nxt is _TERMINATED_ST:
            self._immediate = None
            out.append(_TERMINATED)

    # -- timers ------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """The earliest armed timer's deadline, or ``None`` when nothing is armed."""
        timers = self._timers
        if not timers:
            return None
        return min(timers.values())

    def on_timer(self, now: float) -> list[Event]:
        """Fire every timer due at ``now``, earliest first (a firing may cancel the others)."""
        out: list[Event] = []
        timers = self._timers
        while timers:
            timer = min(timers, key=timers.__getitem__)
            if timers[timer] > now:
                break
            out += self.handle(timer, now)
        return out

    # -- the rest ----------------------------------------------------------------------------

    def transport_error(self, now: float) -> list[Event]:
        """The transport could not send for this transaction (§17.1.4, §17.2.4)."""
        return self.handle(Input.TRANSPORT_ERROR, now)

    @property
    def terminated(self) -> bool:
        return self.state is _TERMINATED_ST

    def armed_timers(self) -> dict[Input, float]:
        """A copy of the armed timers and their deadlines (for tests and diagnostics)."""
        return dict(self._timers)

    def cache_bytes(self, message: Msg, data: bytes) -> None:
        """Remember the wire form of a message this transaction sent, for retransmissions."""
        if message is self._request:
            self.request_bytes = data
        elif message is self.last_response:
            self.last_response_bytes = data

    def compact(self) -> bool:
        """Release the parsed messages once only retransmissions are left; True if done.

        In the states of ``COMPACTABLE`` (a final response went by) a transaction only
        absorbs retransmissions until its last timer: 32 s on UDP for G/H, J, L, M and D.
        Keeping the parsed request and responses alive that long holds a few KB and dozens
        of collector-tracked objects per transaction; at thousands of requests per second
        that is gigabytes and long garbage-collector pauses.  What stays: the request is
        dropped (reading ``request`` raises, ``compacted`` is True), the last response
        becomes a ``ResponseSummary`` and its bytes are kept only where the table still
        resends them (``_resends``); an INVITE client keeps its ACK for a retransmitted
        non-2xx (§17.1.1.3).  A server transaction is compacted only once its response's
        bytes are known.
        """
        if self.state not in self.COMPACTABLE:
            return False
        last = self.last_response
        if self.state in self._resends:
            if self.last_response_bytes is None:
                return False
        else:
            self.last_response_bytes = None
        self._request = None
        self.request_bytes = None
        if isinstance(last, Response):
            self.last_response = ResponseSummary.of(last)
        return True


class ClientTransaction(Transaction):
    """A client transaction: ``start`` sends the request; responses come in."""

    __slots__ = ("_started",)
    START_ACTIONS: ClassVar[tuple[Action, ...]]

    def __init__(self, request: Request, timers: TimerValues, peer: object = None) -> None:
        key = client_key_of_request(request)
        super().__init__(request, key, timers, peer)
        self._started = False

    def start(self, now: float) -> list[Event]:
        """Send the request and arm the first timers (entry into Calling/Trying)."""
        if self._started:
            raise TransactionError(f"{type(self).__name__} already started")
        self._started = True
        out: list[Event] = []
        for a in self.START_ACTIONS:
            _ACTION_FUNCS[a](self, Input.TIMER_A, None, now, out)
        if self._owner is not None:
            self._owner._reschedule(self)
        return out

    def receive_response(self, response: Response, now: float) -> list[Event]:
        """A response matched to this transaction by ``client_key`` (§17.1.3)."""
        status = response.status
        inp = _IN_RECV_1XX if status < 200 else _IN_RECV_2XX if status < 300 else (
            _IN_RECV_300_699)
        return self.handle(inp, now, response)


class InviteClientTransaction(ClientTransaction):
    """RFC 3261 §17.1.1 with RFC 6026 §8.4 (Accepted state, Timer M)."""

    __slots__ = ("ack", "ack_bytes", "proxy")
    INITIAL = State.CALLING
    COMPACTABLE = frozenset({State.COMPLETED, State.ACCEPTED})
    START_ACTIONS = (Action.SEND_REQUEST, Action.START_A, Action.START_B, Action.START_C)

    TABLE: ClassVar[Table] = {
        (_S.CALLING, _I.TIMER_A): ((_A.SEND_REQUEST, _A.BACKOFF_A), _S.CALLING),
        (_S.CALLING, _I.TIMER_B): ((_A.REPORT_TIMEOUT,), _S.TERMINATED),
        (_S.CALLING, _I.TIMER_C): ((_A.REPORT_TIMER_C,), _S.CALLING),
        (_S.CALLING, _I.RECV_1XX): ((_A.PASS_TO_TU, _A.START_C), _S.PROCEEDING),
        # RFC 6026 §8.4: a 2xx no longer terminates; Accepted absorbs nothing but forwards
        # every 2xx (retransmissions and forks) so the TU can ACK each.
        (_S.CALLING, _I.RECV_2XX): ((_A.PASS_TO_TU, _A.START_M), _S.ACCEPTED),
        (_S.CALLING, _I.RECV_300_699): ((_A.SEND_ACK, _A.PASS_TO_TU, _A.START_D), _S.COMPLETED),
        (_S.CALLING, _I.TRANSPORT_ERROR): ((_A.REPORT_TRANSPORT_ERROR,), _S.TERMINATED),
        (_S.PROCEEDING, _I.RECV_1XX): ((_A.PASS_TO_TU, _A.START_C), _S.PROCEEDING),
        (_S.PROCEEDING, _I.RECV_2XX): ((_A.PASS_TO_TU, _A.START_M), _S.ACCEPTED),
        (_S.PROCEEDING, _I.RECV_300_699): ((_A.SEND_ACK, _A.PASS_TO_TU, _A.START_D), _S.COMPLETED),
        (_S.PROCEEDING, _I.TIMER_C): ((_A.REPORT_TIMER_C,), _S.PROCEEDING),
        # §17.1.4: a reliable connection may fail while we wait for the final response.
        (_S.PROCEEDING, _I.TRANSPORT_ERROR): ((_A.REPORT_TRANSPORT_ERROR,), _S.TERMINATED),
        (_S.COMPLETED, _I.RECV_300_699): ((_A.RESEND_ACK,), _S.COMPLETED),
        # Not in the figure: a 1xx reordered behind the final on UDP is discarded.
        (_S.COMPLETED, _I.RECV_1XX): ((), _S.COMPLETED),
        (_S.COMPLETED, _I.TIMER_D): ((), _S.TERMINATED),
        (_S.COMPLETED, _I.TRANSPORT_ERROR): ((_A.REPORT_TRANSPORT_ERROR,), _S.TERMINATED),
        (_S.ACCEPTED, _I.RECV_2XX): ((_A.PASS_TO_TU,), _S.ACCEPTED),
        # Not in the figure: a late 1xx after the 2xx is discarded.
        (_S.ACCEPTED, _I.RECV_1XX): ((), _S.ACCEPTED),
        (_S.ACCEPTED, _I.TIMER_M): ((), _S.TERMINATED),
    }
    STATE_TIMERS: ClassVar[dict[State, frozenset[Input]]] = {
        _S.CALLING: frozenset({_I.TIMER_A, _I.TIMER_B, _I.TIMER_C}),
        _S.PROCEEDING: frozenset({_I.TIMER_C}),
        _S.COMPLETED: frozenset({_I.TIMER_D}),
        _S.ACCEPTED: frozenset({_I.TIMER_M}),
        _S.TERMINATED: frozenset(),
    }

    def __init__(self, request: Request, timers: TimerValues, peer: object = None, *,
                 proxy: bool = False) -> None:
        if request.method != "INVITE":
            raise TransactionError(f"INVITE client transaction for {request.method}")
        super().__init__(request, timers, peer)
        #: Run proxy Timer C (§16.6 step 11).
        self.proxy = proxy
        #: The ACK built for a non-2xx final (§17.1.1.3), resent when that final comes again.
        self.ack: Request | None = None
        self.ack_bytes: bytes | None = None

    def cache_bytes(self, message: Msg, data: bytes) -> None:
        if message is self.ack:
            self.ack_bytes = data
        else:
            super().cache_bytes(message, data)


class NonInviteClientTransaction(ClientTransaction):
    """RFC 3261 §17.1.2."""

    __slots__ = ()
    INITIAL = State.TRYING
    START_ACTIONS = (Action.SEND_REQUEST, Action.START_E, Action.START_F)
    COMPACTABLE = frozenset({State.COMPLETED})

    TABLE: ClassVar[Table] = {
        (_S.TRYING, _I.TIMER_E): ((_A.SEND_REQUEST, _A.BACKOFF_E), _S.TRYING),
        (_S.TRYING, _I.TIMER_F): ((_A.REPORT_TIMEOUT,), _S.TERMINATED),
        (_S.TRYING, _I.TRANSPORT_ERROR): ((_A.REPORT_TRANSPORT_ERROR,), _S.TERMINATED),
        (_S.TRYING, _I.RECV_1XX): ((_A.PASS_TO_TU,), _S.PROCEEDING),
        (_S.TRYING, _I.RECV_2XX): ((_A.PASS_TO_TU, _A.START_K), _S.COMPLETED),
        (_S.TRYING, _I.RECV_300_699): ((_A.PASS_TO_TU, _A.START_K), _S.COMPLETED),
        (_S.PROCEEDING, _I.TIMER_E): ((_A.SEND_REQUEST, _A.E_AT_T2), _S.PROCEEDING),
        (_S.PROCEEDING, _I.TIMER_F): ((_A.REPORT_TIMEOUT,), _S.TERMINATED),
        (_S.PROCEEDING, _I.TRANSPORT_ERROR): ((_A.REPORT_TRANSPORT_ERROR,), _S.TERMINATED),
        (_S.PROCEEDING, _I.RECV_1XX): ((_A.PASS_TO_TU,), _S.PROCEEDING),
        (_S.PROCEEDING, _I.RECV_2XX): ((_A.PASS_TO_TU, _A.START_K), _S.COMPLETED),
        (_S.PROCEEDING, _I.RECV_300_699): ((_A.PASS_TO_TU, _A.START_K), _S.COMPLETED),
        # §17.1.2.2: Completed exists to buffer response retransmissions: absorbed.
        (_S.COMPLETED, _I.RECV_1XX): ((), _S.COMPLETED),
        (_S.COMPLETED, _I.RECV_2XX): ((), _S.COMPLETED),
        (_S.COMPLETED, _I.RECV_300_699): ((), _S.COMPLETED),
        (_S.COMPLETED, _I.TIMER_K): ((), _S.TERMINATED),
    }
    STATE_TIMERS: ClassVar[dict[State, frozenset[Input]]] = {
        _S.TRYING: frozenset({_I.TIMER_E, _I.TIMER_F}),
        _S.PROCEEDING: frozenset({_I.TIMER_E, _I.TIMER_F}),
        _S.COMPLETED: frozenset({_I.TIMER_K}),
        _S.TERMINATED: frozenset(),
    }

    def __init__(self, request: Request, timers: TimerValues, peer: object = None) -> None:
        if request.method in ("INVITE", "ACK"):
            raise TransactionError(f"non-INVITE client transaction for {request.method}")
        super().__init__(request, timers, peer)


class ServerTransaction(Transaction):
    """A server transaction: created by a new request; the TU sends responses through it."""

    __slots__ = ("_to_tag",)

    def __init__(self, request: Request, timers: TimerValues, peer: object = None,
                 key: TransactionKey | None = None) -> None:
        """``key``: ``server_key(request)`` when the caller has it already (it matched the
        request against the table first), else computed here."""
        if key is None:
            key = server_key(request)
            if key is None:
                raise TransactionError("request without Via cannot create a transaction")
        # The base named, not super(): one transaction per new request, and super() builds a
        # proxy object each time.
        Transaction.__init__(self, request, key, timers, peer)
        self._to_tag = request.to.tag

    def receive_request(self, request: Request, now: float) -> list[Event]:
        """A request matched to this transaction: a retransmission, or the ACK (§17.2.1)."""
        inp = _IN_ACK if request.method == "ACK" else _IN_RETRANSMISSION
        return self.handle(inp, now, request)

    def send_response(self, response: Response | ResponseSummary, now: float) -> list[Event]:
        """The TU's response to the request (§17.2.1, §17.2.2); a summary when the TU wrote
        the response as bytes itself (it then hands them to ``cache_bytes`` before sending)."""
        status = response.status
        inp = _IN_SEND_1XX if status < 200 else _IN_SEND_2XX if status < 300 else (
            _IN_SEND_300_699)
        return self.handle(inp, now, response)

    def matches_to_tag(self, request: Request) -> bool:
        """RFC 2543 fallback (§17.2.3): the To tag must match too.

        A retransmission carries the creating request's To tag; an ACK carries the tag of the
        response it acknowledges.
        """
        if request.method == "ACK":
            last = self.last_response
            if last is None:
                return False
            tag = last.to_tag if isinstance(last, ResponseSummary) else last.to.tag
            return request.to.tag == tag
        return request.to.tag == self._to_tag


class InviteServerTransaction(ServerTransaction):
    """RFC 3261 §17.2.1 with RFC 6026 §8.7 (Accepted state, Timer L).

    The TU should send 100 Trying itself (a proxy does so at once, §16.2); this machine does
    not run the optional 200 ms Trying timer.
    """

    __slots__ = ()
    INITIAL = State.PROCEEDING
    COMPACTABLE = frozenset({State.COMPLETED, State.CONFIRMED, State.ACCEPTED})

    TABLE: ClassVar[Table] = {
        # §17.2.1: a retransmitted INVITE gets the most recent provisional response.
        (_S.PROCEEDING, _I.REQUEST_RETRANSMISSION): ((_A.RESEND_RESPONSE,), _S.PROCEEDING),
        (_S.PROCEEDING, _I.SEND_1XX): ((_A.SEND_RESPONSE,), _S.PROCEEDING),
        # RFC 6026 §8.7: a 2xx moves to Accepted, not Terminated, so INVITE retransmissions
        # are recognised as such instead of looking like a new request.
        (_S.PROCEEDING, _I.SEND_2XX): ((_A.SEND_RESPONSE, _A.START_L), _S.ACCEPTED),
        (_S.PROCEEDING, _I.SEND_300_699): (
            (_A.SEND_RESPONSE, _A.START_G, _A.START_H), _S.COMPLETED),
        (_S.PROCEEDING, _I.TRANSPORT_ERROR): ((_A.REPORT_TRANSPORT_ERROR,), _S.TERMINATED),
        (_S.COMPLETED, _I.REQUEST_RETRANSMISSION): ((_A.RESEND_RESPONSE,), _S.COMPLETED),
        (_S.COMPLETED, _I.TIMER_G): ((_A.RESEND_RESPONSE, _A.BACKOFF_G), _S.COMPLETED),
        (_S.COMPLETED, _I.ACK): ((_A.START_I,), _S.CONFIRMED),
        (_S.COMPLETED, _I.TIMER_H): ((_A.REPORT_TIMEOUT,), _S.TERMINATED),
        (_S.COMPLETED, _I.TRANSPORT_ERROR): ((_A.REPORT_TRANSPORT_ERROR,), _S.TERMINATED),
        # §17.2.1: Confirmed absorbs ACK retransmissions; a late INVITE copy likewise.
        (_S.CONFIRMED, _I.ACK): ((), _S.CONFIRMED),
        (_S.CONFIRMED, _I.REQUEST_RETRANSMISSION): ((), _S.CONFIRMED),
        (_S.CONFIRMED, _I.TIMER_I): ((), _S.TERMINATED),
        # RFC 6026 §8.7: INVITE retransmissions are absorbed, not answered: the 2xx is the
        # TU's to retransmit (§13.3.1.4).  Further 2xx (retransmissions, proxied forks) are
        # sent; an ACK matching the transaction goes up to the TU.
        (_S.ACCEPTED, _I.REQUEST_RETRANSMISSION): ((), _S.ACCEPTED),
        (_S.ACCEPTED, _I.SEND_2XX): ((_A.SEND_RESPONSE,), _S.ACCEPTED),
        (_S.ACCEPTED, _I.ACK): ((_A.PASS_TO_TU,), _S.ACCEPTED),
        (_S.ACCEPTED, _I.TIMER_L): ((), _S.TERMINATED),
        # A failed 2xx send is the TU's to handle; the transaction keeps absorbing INVITE
        # retransmissions until Timer L, or they would look like new requests.
        (_S.ACCEPTED, _I.TRANSPORT_ERROR): ((_A.REPORT_TRANSPORT_ERROR,), _S.ACCEPTED),
    }
    STATE_TIMERS: ClassVar[dict[State, frozenset[Input]]] = {
        _S.PROCEEDING: frozenset(),
        _S.COMPLETED: frozenset({_I.TIMER_G, _I.TIMER_H}),
        _S.CONFIRMED: frozenset({_I.TIMER_I}),
        _S.ACCEPTED: frozenset({_I.TIMER_L}),
        _S.TERMINATED: frozenset(),
    }

    def __init__(self, request: Request, timers: TimerValues, peer: object = None,
                 key: TransactionKey | None = None) -> None:
        if request.method != "INVITE":
            raise TransactionError(f"INVITE server transaction for {request.method}")
        ServerTransaction.__init__(self, request, timers, peer, key)


class NonInviteServerTransaction(ServerTransaction):
    """RFC 3261 §17.2.2."""

    __slots__ = ()
    INITIAL = State.TRYING

    COMPACTABLE = frozenset({State.COMPLETED})

    TABLE: ClassVar[Table] = {
        # §17.2.2: in Trying there is no response yet; a retransmission is discarded.
        (_S.TRYING, _I.REQUEST_RETRANSMISSION): ((), _S.TRYING),
        (_S.TRYING, _I.SEND_1XX): ((_A.SEND_RESPONSE,), _S.PROCEEDING),
        (_S.TRYING, _I.SEND_2XX): ((_A.SEND_RESPONSE, _A.START_J), _S.COMPLETED),
        (_S.TRYING, _I.SEND_300_699): ((_A.SEND_RESPONSE, _A.START_J), _S.COMPLETED),
        (_S.PROCEEDING, _I.REQUEST_RETRANSMISSION): ((_A.RESEND_RESPONSE,), _S.PROCEEDING),
        (_S.PROCEEDING, _I.SEND_1XX): ((_A.SEND_RESPONSE,), _S.PROCEEDING),
        (_S.PROCEEDING, _I.SEND_2XX): ((_A.SEND_RESPONSE, _A.START_J), _S.COMPLETED),
        (_S.PROCEEDING, _I.SEND_300_699): ((_A.SEND_RESPONSE, _A.START_J), _S.COMPLETED),
        (_S.PROCEEDING, _I.TRANSPORT_ERROR): ((_A.REPORT_TRANSPORT_ERROR,), _S.TERMINATED),
        (_S.COMPLETED, _I.REQUEST_RETRANSMISSION): ((_A.RESEND_RESPONSE,), _S.COMPLETED),
        # §17.2.2: any other final response from the TU in Completed is discarded.
        (_S.COMPLETED, _I.SEND_2XX): ((), _S.COMPLETED),
        (_S.COMPLETED, _I.SEND_300_699): ((), _S.COMPLETED),
        (_S.COMPLETED, _I.TIMER_J): ((), _S.TERMINATED),
        (_S.COMPLETED, _I.TRANSPORT_ERROR): ((_A.REPORT_TRANSPORT_ERROR,), _S.TERMINATED),
    }
    STATE_TIMERS: ClassVar[dict[State, frozenset[Input]]] = {
        _S.TRYING: frozenset(),
        _S.PROCEEDING: frozenset(),
        _S.COMPLETED: frozenset({_I.TIMER_J}),
        _S.TERMINATED: frozenset(),
    }

    def __init__(self, request: Request, timers: TimerValues, peer: object = None,
                 key: TransactionKey | None = None) -> None:
        if request.method in ("INVITE", "ACK"):
            raise TransactionError(f"non-INVITE server transaction for {request.method}")
        ServerTransaction.__init__(self, request, timers, peer, key)


def new_client_transaction(request: Request, timers: TimerValues, peer: object = None, *,
                           proxy: bool = False) -> ClientTransaction:
    """The right client machine for ``request`` (not started: call ``start(now)``)."""
    if request.method == "INVITE":
        return InviteClientTransaction(request, timers, peer, proxy=proxy)
    return NonInviteClientTransaction(request, timers, peer)


def new_server_transaction(request: Request, timers: TimerValues, peer: object = None,
                           key: TransactionKey | None = None) -> ServerTransaction:
    """The right server machine for a new ``request``; ACK never creates one (§17.2.3).
    ``key``: its ``server_key``, when the caller has it already."""
    if request.method == "INVITE":
        return InviteServerTransaction(request, timers, peer, key)
    return NonInviteServerTransaction(request, timers, peer, key)


# --------------------------------------------------------------------------------------------
# Requests a client transaction builds.


def build_ack(invite: Request, response: Response) -> Request:
    """The ACK for a non-2xx final response (§17.1.1.3).

    Request-URI, Call-ID, From, CSeq number and the single Via come from the INVITE (the ACK is
    part of the INVITE transaction, hence the same branch); To comes from the response, so it
    carries the tag the UAS chose; the INVITE's Route values are kept.
    """
    return _in_transaction("ACK", invite, response.to)


def build_cancel(request: Request) -> Request:
    """The CANCEL for a pending request (§9.1).

    Request-URI, Call-ID, To, From and the CSeq number are those of the request, tags included;
    a single Via equal to the request's top Via, so the CANCEL reaches the same server
    transaction; the same Route values.  ACK and CANCEL themselves cannot be cancelled.
    """
    if request.method in ("ACK", "CANCEL"):
        raise TransactionError(f"cannot CANCEL a {request.method} (§9.1)")
    return _in_transaction("CANCEL", request, request.to)


def _in_transaction(method: str, request: Request, to: NameAddr) -> Request:
    """A request of ``request``'s transaction (§9.1, §17.1.1.3): its Request-URI, Call-ID,
    From, CSeq number, top Via (hence its branch) and Route values, with ``to``."""
    return Request(
        method=method,
        uri=request.uri,
        vias=[request.vias[0]],
        from_=request.from_,
        to=to,
        call_id=request.call_id,
        cseq=CSeq(request.cseq.seq, method),
        max_forwards=70,
        routes=list(request.routes),
    )
