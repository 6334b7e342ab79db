"""The Diameter peer state machine of RFC 6733 §5.6, with the RFC 3539 watchdog inside.

``TRANSITIONS`` is the §5.6 table verbatim: ``(state, event) -> (actions, next state)``.  Any
pair it does not list raises ``PeerStateError``.  Events prefixed ``I_`` concern the connection
we initiated, ``R_`` the one the peer initiated (§5.6); ``PeerMachine.receive`` turns a received
message into the right event from the connection it came on and its command.

Three kinds of rows were added to the RFC table, each marked below: the Closing state also
processes messages, DWRs and DWAs that were in flight when DPR was sent (§5.4 accepts that
messages race a DPR), and a CER/CEA on an open connection is answered/processed (§5.6 rows of
RFC 6733 that RFC 3588 lacked).

Capabilities are checked before a CER reaches the machine: an incompatible peer (5010) or a
broken CER is answered and disconnected by the caller without any peer state (§5.3), so
Process-CER only records what the peer advertised.

A CEA that refuses us (a Result-Code outside 2xxx) or shares no application with us (§5.3) is
not the answer Wait-I-CEA waits for: it is classified as I-Rcv-Non-CEA there (Error, Closed),
and as I-Peer-Disc in Wait-Returns (our connection is useless, the peer's is kept).

Election (§5.6.4): when both sides connect, the node whose Origin-Host is lexicographically
greater wins and closes the connection it initiated.

Nothing here reads a clock or touches a socket; the machine hands back commands in ``outbox``
(``Connect``, ``Send``, ``Disconnect``, ``Deliver``, ``Opened``, ``Closed``).  Connections are
opaque integers chosen by the caller.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass

from protocols.diameter.builders import answer, request
from protocols.diameter.capabilities import (
    Capabilities,
    build_cea,
    build_cer,
    negotiate,
    parse_capabilities,
)
from protocols.diameter.codec import Avp, Message
from protocols.diameter.constants import (
    AVP_FLAG_M,
    AvpCode,
    CommandCode,
    DisconnectCause,
    ResultCode,
)
from protocols.diameter.errors import LocalProtocolError, PeerStateError, RemoteProtocolError
from protocols.diameter.fastenum import FastEnum
from protocols.diameter.watchdog import DEFAULT_TW, Watchdog, WdAction, WdInput, WdState

__all__ = [
    "CE_TIMEOUT",
    "DP_TIMEOUT",
    "TRANSITIONS",
    "Action",
    "Closed",
    "Connect",
    "Deliver",
    "Disconnect",
    "Dropped",
    "Opened",
    "PeerEvent",
    "PeerMachine",
    "PeerState",
    "Send",
]

# How long to wait for a connection, a CEA or the election's outcome before giving up (§5.6
# Timeout event).  10 s is several round trips on any real network.
CE_TIMEOUT = 10.0
# How long Closing waits for a DPA (or the peer's disconnect) before dropping the connection.
DP_TIMEOUT = 5.0

_U32 = struct.Struct("!I")
_DWR = int(CommandCode.DEVICE_WATCHDOG)  # a plain int for the per-message path


class PeerState(FastEnum):
    CLOSED = "Closed"
    WAIT_CONN_ACK = "Wait-Conn-Ack"
    WAIT_I_CEA = "Wait-I-CEA"
    WAIT_CONN_ACK_ELECT = "Wait-Conn-Ack/Elect"
    WAIT_RETURNS = "Wait-Returns"
    R_OPEN = "R-Open"
    I_OPEN = "I-Open"
    CLOSING = "Closing"


class PeerEvent(FastEnum):
    START = "Start"
    STOP = "Stop"
    TIMEOUT = "Timeout"
    WIN_ELECTION = "Win-Election"
    SEND_MESSAGE = "Send-Message"
    R_CONN_CER = "R-Conn-CER"
    I_RCV_CONN_ACK = "I-Rcv-Conn-Ack"
    I_RCV_CONN_NACK = "I-Rcv-Conn-Nack"
    I_PEER_DISC = "I-Peer-Disc"
    R_PEER_DISC = "R-Peer-Disc"
    I_RCV_CEA = "I-Rcv-CEA"
    I_RCV_NON_CEA = "I-Rcv-Non-CEA"
    R_RCV_CEA = "R-Rcv-CEA"
    I_RCV_CER = "I-Rcv-CER"
    R_RCV_CER = "R-Rcv-CER"
    I_RCV_DWR = "I-Rcv-DWR"
    R_RCV_DWR = "R-Rcv-DWR"
    I_RCV_DWA = "I-Rcv-DWA"
    R_RCV_DWA = "R-Rcv-DWA"
    I_RCV_DPR = "I-Rcv-DPR"
    R_RCV_DPR = "R-Rcv-DPR"
    I_RCV_DPA = "I-Rcv-DPA"
    R_RCV_DPA = "R-Rcv-DPA"
    I_RCV_MESSAGE = "I-Rcv-Message"
    R_RCV_MESSAGE = "R-Rcv-Message"


class Action(FastEnum):
    I_SND_CONN_REQ = "I-Snd-Conn-Req"
    R_ACCEPT = "R-Accept"
    PROCESS_CER = "Process-CER"
    R_SND_CEA = "R-Snd-CEA"
    I_SND_CEA = "I-Snd-CEA"
    I_SND_CER = "I-Snd-CER"
    PROCESS_CEA = "Process-CEA"
    CLEANUP = "Cleanup"
    ERROR = "Error"
    ELECT = "Elect"
    I_DISC = "I-Disc"
    R_DISC = "R-Disc"
    R_REJECT = "R-Reject"
    I_SND_MESSAGE = "I-Snd-Message"
    R_SND_MESSAGE = "R-Snd-Message"
    PROCESS = "Process"
    PROCESS_DWR = "Process-DWR"
    PROCESS_DWA = "Process-DWA"
    I_SND_DWA = "I-Snd-DWA"
    R_SND_DWA = "R-Snd-DWA"
    I_SND_DPR = "I-Snd-DPR"
    R_SND_DPR = "R-Snd-DPR"
    I_SND_DPA = "I-Snd-DPA"
    R_SND_DPA = "R-Snd-DPA"


_S, _E, _A = PeerState, PeerEvent, Action

TRANSITIONS: dict[tuple[PeerState, PeerEvent], tuple[tuple[Action, ...], PeerState]] = {
    (_S.CLOSED, _E.START): ((_A.I_SND_CONN_REQ,), _S.WAIT_CONN_ACK),
    (_S.CLOSED, _E.R_CONN_CER): ((_A.R_ACCEPT, _A.PROCESS_CER, _A.R_SND_CEA), _S.R_OPEN),
    (_S.WAIT_CONN_ACK, _E.I_RCV_CONN_ACK): ((_A.I_SND_CER,), _S.WAIT_I_CEA),
    (_S.WAIT_CONN_ACK, _E.I_RCV_CONN_NACK): ((_A.CLEANUP,), _S.CLOSED),
    (_S.WAIT_CONN_ACK, _E.R_CONN_CER): ((_A.R_ACCEPT, _A.PROCESS_CER), _S.WAIT_CONN_ACK_ELECT),
    (_S.WAIT_CONN_ACK, _E.TIMEOUT): ((_A.ERROR,), _S.CLOSED),
    (_S.WAIT_I_CEA, _E.I_RCV_CEA): ((_A.PROCESS_CEA,), _S.I_OPEN),
    (_S.WAIT_I_CEA, _E.R_CONN_CER): (
        (_A.R_ACCEPT, _A.PROCESS_CER, _A.ELECT), _S.WAIT_RETURNS),
    (_S.WAIT_I_CEA, _E.I_PEER_DISC): ((_A.I_DISC,), _S.CLOSED),
    (_S.WAIT_I_CEA, _E.I_RCV_NON_CEA): ((_A.ERROR,), _S.CLOSED),
    (_S.WAIT_I_CEA, _E.TIMEOUT): ((_A.ERROR,), _S.CLOSED),
    (_S.WAIT_CONN_ACK_ELECT, _E.I_RCV_CONN_ACK): ((_A.I_SND_CER, _A.ELECT), _S.WAIT_RETURNS),
    (_S.WAIT_CONN_ACK_ELECT, _E.I_RCV_CONN_NACK): ((_A.R_SND_CEA,), _S.R_OPEN),
    (_S.WAIT_CONN_ACK_ELECT, _E.R_PEER_DISC): ((_A.R_DISC,), _S.WAIT_CONN_ACK),
    (_S.WAIT_CONN_ACK_ELECT, _E.R_CONN_CER): ((_A.R_REJECT,), _S.WAIT_CONN_ACK_ELECT),
    (_S.WAIT_CONN_ACK_ELECT, _E.TIMEOUT): ((_A.ERROR,), _S.CLOSED),
    (_S.WAIT_RETURNS, _E.WIN_ELECTION): ((_A.I_DISC, _A.R_SND_CEA), _S.R_OPEN),
    (_S.WAIT_RETURNS, _E.I_PEER_DISC): ((_A.I_DISC, _A.R_SND_CEA), _S.R_OPEN),
    (_S.WAIT_RETURNS, _E.I_RCV_CEA): ((_A.R_DISC,), _S.I_OPEN),
    (_S.WAIT_RETURNS, _E.R_PEER_DISC): ((_A.R_DISC,), _S.WAIT_I_CEA),
    (_S.WAIT_RETURNS, _E.R_CONN_CER): ((_A.R_REJECT,), _S.WAIT_RETURNS),
    (_S.WAIT_RETURNS, _E.TIMEOUT): ((_A.ERROR,), _S.CLOSED),
    (_S.R_OPEN, _E.SEND_MESSAGE): ((_A.R_SND_MESSAGE,), _S.R_OPEN),
    (_S.R_OPEN, _E.R_RCV_MESSAGE): ((_A.PROCESS,), _S.R_OPEN),
    (_S.R_OPEN, _E.R_RCV_DWR): ((_A.PROCESS_DWR, _A.R_SND_DWA), _S.R_OPEN),
    (_S.R_OPEN, _E.R_RCV_DWA): ((_A.PROCESS_DWA,), _S.R_OPEN),
    (_S.R_OPEN, _E.R_CONN_CER): ((_A.R_REJECT,), _S.R_OPEN),
    (_S.R_OPEN, _E.STOP): ((_A.R_SND_DPR,), _S.CLOSING),
    (_S.R_OPEN, _E.R_RCV_DPR): ((_A.R_SND_DPA,), _S.CLOSING),
    (_S.R_OPEN, _E.R_PEER_DISC): ((_A.R_DISC,), _S.CLOSED),
    (_S.R_OPEN, _E.R_RCV_CER): ((_A.R_SND_CEA,), _S.R_OPEN),
    (_S.R_OPEN, _E.R_RCV_CEA): ((_A.PROCESS_CEA,), _S.R_OPEN),
    (_S.I_OPEN, _E.SEND_MESSAGE): ((_A.I_SND_MESSAGE,), _S.I_OPEN),
    (_S.I_OPEN, _E.I_RCV_MESSAGE): ((_A.PROCESS,), _S.I_OPEN),
    (_S.I_OPEN, _E.I_RCV_DWR): ((_A.PROCESS_DWR, _A.I_SND_DWA), _S.I_OPEN),
    (_S.I_OPEN, _E.I_RCV_DWA): ((_A.PROCESS_DWA,), _S.I_OPEN),
    (_S.I_OPEN, _E.R_CONN_CER): ((_A.R_REJECT,), _S.I_OPEN),
    (_S.I_OPEN, _E.STOP): ((_A.I_SND_DPR,), _S.CLOSING),
    (_S.I_OPEN, _E.I_RCV_DPR): ((_A.I_SND_DPA,), _S.CLOSING),
    (_S.I_OPEN, _E.I_PEER_DISC): ((_A.I_DISC,), _S.CLOSED),
    (_S.I_OPEN, _E.I_RCV_CER): ((_A.I_SND_CEA,), _S.I_OPEN),
    (_S.I_OPEN, _E.I_RCV_CEA): ((_A.PROCESS_CEA,), _S.I_OPEN),
    (_S.CLOSING, _E.I_RCV_DPA): ((_A.I_DISC,), _S.CLOSED),
    (_S.CLOSING, _E.R_RCV_DPA): ((_A.R_DISC,), _S.CLOSED),
    (_S.CLOSING, _E.TIMEOUT): ((_A.ERROR,), _S.CLOSED),
    (_S.CLOSING, _E.I_PEER_DISC): ((_A.I_DISC,), _S.CLOSED),
    (_S.CLOSING, _E.R_PEER_DISC): ((_A.R_DISC,), _S.CLOSED),
    # Added (module doc): traffic already in flight when DPR crossed it.
    (_S.CLOSING, _E.I_RCV_MESSAGE): ((_A.PROCESS,), _S.CLOSING),
    (_S.CLOSING, _E.R_RCV_MESSAGE): ((_A.PROCESS,), _S.CLOSING),
    (_S.CLOSING, _E.I_RCV_DWR): ((_A.PROCESS_DWR, _A.I_SND_DWA), _S.CLOSING),
    (_S.CLOSING, _E.R_RCV_DWR): ((_A.PROCESS_DWR, _A.R_SND_DWA), _S.CLOSING),
    (_S.CLOSING, _E.I_RCV_DWA): ((_A.PROCESS_DWA,), _S.CLOSING),
    (_S.CLOSING, _E.R_RCV_DWA): ((_A.PROCESS_DWA,), _S.CLOSING),
    (_S.CLOSING, _E.R_CONN_CER): ((_A.R_REJECT,), _S.CLOSING),
}

# States in which the machine waits with a deadline and what it is.
_STATE_TIMEOUTS = {
    _S.WAIT_CONN_ACK: CE_TIMEOUT,
    _S.WAIT_I_CEA: CE_TIMEOUT,
    _S.WAIT_CONN_ACK_ELECT: CE_TIMEOUT,
    _S.WAIT_RETURNS: CE_TIMEOUT,
    _S.CLOSING: DP_TIMEOUT,
}


# -- commands handed to the I/O layer -------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Connect:
    """Open a transport connection to the peer (I-Snd-Conn-Req, AttemptOpen)."""


@dataclass(frozen=True, slots=True)
class Send:
    conn: int
    message: Message


@dataclass(frozen=True, slots=True)
class Disconnect:
    conn: int


@dataclass(frozen=True, slots=True)
class Deliver:
    """An application message for the upper layer (the Process action)."""

    conn: int
    message: Message


@dataclass(frozen=True, slots=True)
class Dropped:
    """A message discarded on purpose (RFC 3539 REOPEN Throwaway); the caller counts it."""

    conn: int
    message: Message
    reason: str


@dataclass(frozen=True, slots=True)
class Opened:
    conn: int
    remote: Capabilities


@dataclass(frozen=True, slots=True)
class Closed:
    reason: str


Command = Connect | Send | Disconnect | Deliver | Dropped | Opened | Closed

_SUFFIX_BY_COMMAND: dict[int, tuple[str, str]] = {
    CommandCode.CAPABILITIES_EXCHANGE: ("CER", "CEA"),
    CommandCode.DEVICE_WATCHDOG: ("DWR", "DWA"),
    CommandCode.DISCONNECT_PEER: ("DPR", "DPA"),
}
# (initiator side?, command code, is request) -> event, for the base commands.
_EVENTS: dict[tuple[bool, int, bool], PeerEvent] = {
    (side == "I", code, is_request): PeerEvent[f"{side}_RCV_{names[0 if is_request else 1]}"]
    for side in ("I", "R")
    for code, names in _SUFFIX_BY_COMMAND.items()
    for is_request in (True, False)
}


class PeerMachine:
    """One remote peer: its connections, its state and its watchdog."""

    def __init__(
        self,
        local: Capabilities,
        *,
        tw: float = DEFAULT_TW,
        initiator: bool = False,
        rng: random.Random | None = None,
    ) -> None:
        self.local = local
        self.state = PeerState.CLOSED
        self.remote: Capabilities | None = None
        self.i_conn: int | None = None
        self.r_conn: int | None = None
        self.outbox: list[Command] = []
        self._rng = rng or random.Random()
        self.watchdog = Watchdog(tw, initiator=initiator, rng=self._rng)
        self._state_deadline: float | None = None
        # §3: identifiers start from random values and increase.
        self._hop_by_hop = self._rng.getrandbits(32)
        self._end_to_end = self._rng.getrandbits(32)
        self._pending_cer: Message | None = None
        self._parsed: Capabilities | None = None
        self.received_dwa = 0
        self.sent_dwr = 0

    # -- public entry points ------------------------------------------------------------

    def next_deadline(self) -> float | None:
        deadlines = [d for d in (self._state_deadline, self.watchdog.next_deadline())
                     if d is not None]
        return min(deadlines) if deadlines else None

    def take_outbox(self) -> list[Command]:
        out, self.outbox = self.outbox, []
        return out

    @property
    def open_conn(self) -> int | None:
        if self.state is PeerState.R_OPEN:
            return self.r_conn
        if self.state is PeerState.I_OPEN:
            return self.i_conn
        if self.state is PeerState.CLOSING:
            return self.r_conn if self.r_conn is not None else self.i_conn
        return None

    def handle(self, event: PeerEvent, now: float, conn: int | None = None,
               message: Message | None = None) -> None:
        """Apply one §5.6 event; raises ``PeerStateError`` for a pair the table lacks."""
        row = TRANSITIONS.get((self.state, event))
        if row is None:
            raise PeerStateError(self.state, event)
        actions, next_state = row
        if message is not None and (Action.PROCESS_CER in actions or Action.PROCESS_CEA in actions):
            # Read the capabilities before changing anything: a broken CER/CEA raises here
            # (RemoteProtocolError) and leaves the machine as it was.
            self._parsed = parse_capabilities(message)
        previous = self.state
        self.state = next_state
        for action in actions:
            self._do(action, now, conn, message)
        if self.state is next_state:
            # (An Elect action may already have moved on through Win-Election and done this.)
            self._entered(previous, now)

    def start(self, now: float) -> None:
        self.handle(PeerEvent.START, now)

    def stop(self, now: float) -> None:
        self.handle(PeerEvent.STOP, now)

    def connected(self, conn: int, now: float) -> None:
        """Our outgoing connection is up (I-Rcv-Conn-Ack)."""
        self.i_conn = conn
        self.handle(PeerEvent.I_RCV_CONN_ACK, now, conn)

    def connect_failed(self, now: float) -> None:
        self.handle(PeerEvent.I_RCV_CONN_NACK, now)

    def incoming_cer(self, conn: int, cer: Message, now: float) -> None:
        """A new connection whose first message is this (already negotiated) CER."""
        self.handle(PeerEvent.R_CONN_CER, now, conn, cer)

    def disconnected(self, conn: int, now: float) -> None:
        if conn == self.i_conn:
            self.handle(PeerEvent.I_PEER_DISC, now, conn)
        elif conn == self.r_conn:
            self.handle(PeerEvent.R_PEER_DISC, now, conn)
        # A connection we already let go (rejected, or replaced) needs nothing.

    def receive(self, conn: int, msg: Message, now: float) -> None:
        """A message on one of this peer's connections."""
        event = self.classify(conn, msg)
        if self._feed_watchdog(msg, now):
            # RFC 3539 REOPEN: Throwaway until the connection has proven itself.
            self.outbox.append(Dropped(conn, msg, "watchdog_reopen"))
            return
        self.handle(event, now, conn, msg)

    def send(self, msg: Message, now: float) -> None:
        self.handle(PeerEvent.SEND_MESSAGE, now, None, msg)

    def on_timer(self, now: float) -> None:
        """Fire whatever deadline has passed: the state timeout or the watchdog."""
        if self._state_deadline is not None and now >= self._state_deadline:
            self._state_deadline = None
            self.handle(PeerEvent.TIMEOUT, now)
        wd = self.watchdog.next_deadline()
        if wd is not None and now >= wd:
            self._run_watchdog(self.watchdog.handle(WdInput.TIMER_EXPIRES, now), now)

    def next_hop_by_hop(self) -> int:
        self._hop_by_hop = (self._hop_by_hop + 1) & 0xFFFFFFFF
        return self._hop_by_hop

    def next_end_to_end(self) -> int:
        self._end_to_end = (self._end_to_end + 1) & 0xFFFFFFFF
        return self._end_to_end

    # -- classification -----------------------------------------------------------------

    def classify(self, conn: int, msg: Message) -> PeerEvent:
        """The §5.6 event for a message: by connection side, command and R bit."""
        initiator_side = conn == self.i_conn
        if not initiator_side and conn != self.r_conn:
            raise LocalProtocolError(f"connection {conn} does not belong to this peer")
        if initiator_side and self.state in (PeerState.WAIT_I_CEA, PeerState.WAIT_RETURNS):
            if msg.command_code == CommandCode.CAPABILITIES_EXCHANGE and not msg.is_request:
                if self._cea_acceptable(msg):
                    return PeerEvent.I_RCV_CEA
                # §5.3: a refused exchange leaves this connection unusable.
                if self.state is PeerState.WAIT_RETURNS:
                    return PeerEvent.I_PEER_DISC
                return PeerEvent.I_RCV_NON_CEA
            if self.state is PeerState.WAIT_I_CEA:
                return PeerEvent.I_RCV_NON_CEA
        event = _EVENTS.get((initiator_side, msg.command_code, msg.is_request))
        if event is not None:
            return event
        return PeerEvent.I_RCV_MESSAGE if initiator_side else PeerEvent.R_RCV_MESSAGE

    def _cea_acceptable(self, cea: Message) -> bool:
        """A success Result-Code and at least one common application (§5.3.2, §5.3)."""
        rc = cea.find(AvpCode.RESULT_CODE)
        if rc is None or len(rc.data) != 4 or not 2000 <= _U32.unpack(rc.data)[0] < 3000:
            return False
        try:
            negotiate(self.local, parse_capabilities(cea))
        except RemoteProtocolError:
            return False
        return True

    # -- actions ------------------------------------------------------------------------

    def _do(self, action: Action, now: float, conn: int | None, msg: Message | None) -> None:
        _ACTIONS[action](self, now, conn, msg)

    def _entered(self, previous: PeerState, now: float) -> None:
        state = self.state
        if state is previous:
            return
        timeout = _STATE_TIMEOUTS.get(state)
        self._state_deadline = now + timeout if timeout is not None else None
        if state in (PeerState.R_OPEN, PeerState.I_OPEN) and previous not in (
            PeerState.R_OPEN, PeerState.I_OPEN
        ):
            conn = self.open_conn
            assert conn is not None and self.remote is not None
            self._run_watchdog(self.watchdog.handle(WdInput.CONNECTION_UP, now), now)
            self.outbox.append(Opened(conn, self.remote))
        elif state is PeerState.CLOSED:
            if self.watchdog.state not in (WdState.INITIAL, WdState.DOWN):
                self.watchdog.handle(WdInput.CONNECTION_DOWN, now)
            if not self.watchdog.initiator:
                self.watchdog.reset()
            self.i_conn = self.r_conn = None
            self.outbox.append(Closed(f"from {previous.value}"))

    def _feed_watchdog(self, msg: Message, now: float) -> bool:
        """Feed the watchdog; True when it says to throw the message away."""
        if self.state not in (PeerState.R_OPEN, PeerState.I_OPEN):
            return False
        is_dwa = msg.command_code == _DWR and not msg.is_request
        if is_dwa:
            self.received_dwa += 1
        inp = WdInput.RECEIVE_DWA if is_dwa else WdInput.RECEIVE_NON_DWA
        actions = self.watchdog.handle(inp, now)
        self._run_watchdog(actions, now)
        return WdAction.THROWAWAY in actions

    def _run_watchdog(self, actions: tuple[WdAction, ...], now: float) -> None:
        for action in actions:
            if action is WdAction.SEND_WATCHDOG:
                conn = self.open_conn
                if conn is not None:
                    self.sent_dwr += 1
                    self.outbox.append(Send(conn, self._dwr()))
            elif action is WdAction.CLOSE_CONNECTION:
                conn = self.open_conn
                if conn is not None:
                    self.disconnected(conn, now)  # its I-Disc/R-Disc emits the Disconnect
            elif action is WdAction.ATTEMPT_OPEN and self.state is PeerState.CLOSED:
                self.handle(PeerEvent.START, now)

    def _dwr(self) -> Message:
        avps = list(self.local.identity.origin_avps)
        if self.local.origin_state_id is not None:
            avps.append(Avp(AvpCode.ORIGIN_STATE_ID, AVP_FLAG_M,
                            _U32.pack(self.local.origin_state_id)))
        return request(CommandCode.DEVICE_WATCHDOG, 0, self.next_hop_by_hop(),
                       self.next_end_to_end(), avps)

    def _dpr(self, cause: int = DisconnectCause.REBOOTING) -> Message:
        avps = [*self.local.identity.origin_avps,
                Avp(AvpCode.DISCONNECT_CAUSE, AVP_FLAG_M, _U32.pack(cause))]
        return request(CommandCode.DISCONNECT_PEER, 0, self.next_hop_by_hop(),
                       self.next_end_to_end(), avps)


def _i_snd_conn_req(m: PeerMachine, now: float, conn: int | None, msg: Message | None) -> None:
    m.outbox.append(Connect())


def _r_accept(m: PeerMachine, now: float, conn: int | None, msg: Message | None) -> None:
    m.r_conn = conn
    m._pending_cer = msg


def _process_cer(m: PeerMachine, now: float, conn: int | None, msg: Message | None) -> None:
    m.remote = m._parsed  # parsed in ``handle`` before the state changed


def _snd_cea(m: PeerMachine, conn: int | None) -> None:
    cer = m._pending_cer
    if cer is not None and conn is not None:
        m.outbox.append(Send(conn, build_cea(cer, ResultCode.DIAMETER_SUCCESS, m.local)))
    m._pending_cer = None


def _r_snd_cea(m: PeerMachine, now: float, conn: int | None, msg: Message | None) -> None:
    if msg is not None and msg.command_code == CommandCode.CAPABILITIES_EXCHANGE:
        m._pending_cer = msg  # R-Rcv-CER on an open connection: answer this one
    _snd_cea(m, m.r_conn)


def _i_snd_cea(m: PeerMachine, now: float, conn: int | None, msg: Message | None) -> None:
    m._pending_cer = msg
    _snd_cea(m, m.i_conn)


def _i_snd_cer(m: PeerMachine, now: float, conn: int | None, msg: Message | None) -> None:
    assert m.i_conn is not None
    m.outbox.append(Send(m.i_conn, build_cer(m.local, m.next_hop_by_hop(), m.next_end_to_end())))


def _process_cea(m: PeerMachine, now: float, conn: int | None, msg: Message | None) -> None:
    m.remote = m._parsed


def _cleanup(m: PeerMachine, now: float, conn: int | None, msg: Message | None) -> None:
    if m.i_conn is not None:
        m.outbox.append(Disconnect(m.i_conn))
    m.i_conn = None


def _error(m: PeerMachine, now: float, conn: int | None, msg: Message | None) -> None:
    for c in (m.i_conn, m.r_conn):
        if c is not None:
            m.outbox.append(Disconnect(c))
    m.i_conn = m.r_conn = None


def _elect(m: PeerMachine, now: float, conn: int | None, msg: Message | None) -> None:
    # §5.6.4: compare Origin-Host octet strings; the greater local identity wins.
    assert m.remote is not None
    if m.local.origin_host.encode() > m.remote.origin_host.encode():
        m.handle(PeerEvent.WIN_ELECTION, now)


def _i_disc(m: PeerMachine, now: float, conn: int | None, msg: Message | None) -> None:
    if m.i_conn is not None:
        m.outbox.append(Disconnect(m.i_conn))
    m.i_conn = None


def _r_disc(m: PeerMachine, now: float, conn: int | None, msg: Message | None) -> None:
    if m.r_conn is not None:
        m.outbox.append(Disconnect(m.r_conn))
    m.r_conn = None


def _r_reject(m: PeerMachine, now: float, conn: int | None, msg: Message | None) -> None:
    if conn is not None and conn not in (m.i_conn, m.r_conn):
        m.outbox.append(Disconnect(conn))


def _snd_message(m: PeerMachine, now: float, conn: int | None, msg: Message | None) -> None:
    target = m.open_conn
    assert msg is not None and target is not None
    m.outbox.append(Send(target, msg))


def _process(m: PeerMachine, now: float, conn: int | None, msg: Message | None) -> None:
    assert conn is not None and msg is not None
    m.outbox.append(Deliver(conn, msg))


def _noop(m: PeerMachine, now: float, conn: int | None, msg: Message | None) -> None:
    # Process-DWR / Process-DWA: the watchdog was already fed on receipt (RFC 3539 §3.4.1).
    return


def _snd_dwa(m: PeerMachine, now: float, conn: int | None, msg: Message | None) -> None:
    assert conn is not None and msg is not None
    m.outbox.append(Send(conn, answer(msg, ResultCode.DIAMETER_SUCCESS, m.local.identity)))


def _snd_dpr(m: PeerMachine, now: float, conn: int | None, msg: Message | None) -> None:
    target = m.open_conn
    if target is not None:
        m.outbox.append(Send(target, m._dpr()))


def _snd_dpa(m: PeerMachine, now: float, conn: int | None, msg: Message | None) -> None:
    assert conn is not None and msg is not None
    m.outbox.append(Send(conn, answer(msg, ResultCode.DIAMETER_SUCCESS, m.local.identity)))


_ACTIONS = {
    _A.I_SND_CONN_REQ: _i_snd_conn_req,
    _A.R_ACCEPT: _r_accept,
    _A.PROCESS_CER: _process_cer,
    _A.R_SND_CEA: _r_snd_cea,
    _A.I_SND_CEA: _i_snd_cea,
    _A.I_SND_CER: _i_snd_cer,
    _A.PROCESS_CEA: _process_cea,
    _A.CLEANUP: _cleanup,
    _A.ERROR: _error,
    _A.ELECT: _elect,
    _A.I_DISC: _i_disc,
    _A.R_DISC: _r_disc,
    _A.R_REJECT: _r_reject,
    _A.I_SND_MESSAGE: _snd_message,
    _A.R_SND_MESSAGE: _snd_message,
    _A.PROCESS: _process,
    _A.PROCESS_DWR: _noop,
    _A.PROCESS_DWA: _noop,
    _A.I_SND_DWA: _snd_dwa,
    _A.R_SND_DWA: _snd_dwa,
    _A.I_SND_DPR: _snd_dpr,
    _A.R_SND_DPR: _snd_dpr,
    _A.I_SND_DPA: _snd_dpa,
    _A.R_SND_DPA: _snd_dpa,
}
