"""RFC 6733 §5.6 peer machine: table coverage, responder, initiator, election, watchdog."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.diameter.builders import answer
from protocols.diameter.capabilities import build_cea
from protocols.diameter.codec import Message
from protocols.diameter.constants import CommandCode, ResultCode
from protocols.diameter.errors import PeerStateError
from protocols.diameter.peer import (
    CE_TIMEOUT,
    TRANSITIONS,
    Action,
    Closed,
    Connect,
    Deliver,
    Disconnect,
    Dropped,
    Opened,
    PeerEvent,
    PeerMachine,
    PeerState,
    Send,
)
from tests.protocols.diameter.factory import caps, ccr, cer

I_CONN, R_CONN, NEW_CONN = 1, 2, 3

def _state(obj: Any) -> object:
    """The current state, read through a call so mypy does not narrow it."""
    return obj.state



def _machine(local: str = "server.test", initiator: bool = False) -> PeerMachine:
    return PeerMachine(caps(local), tw=6.0, initiator=initiator, rng=random.Random(0))


def _dwr(hbh: int = 5) -> Message:
    m = _machine("client.test")
    msg = m._dwr()
    msg.hop_by_hop = hbh
    return msg


def _input(event: PeerEvent) -> tuple[int | None, Message | None]:
    """A plausible connection and message for each event."""
    remote = caps("client.test")
    cea = build_cea(cer("server.test"), ResultCode.DIAMETER_SUCCESS, remote)
    dwr = _dwr()
    dpr = _machine("client.test")._dpr()
    table: dict[str, tuple[int | None, Message | None]] = {
        "R_CONN_CER": (NEW_CONN, cer()),
        "I_RCV_CEA": (I_CONN, cea), "R_RCV_CEA": (R_CONN, cea),
        "I_RCV_CER": (I_CONN, cer()), "R_RCV_CER": (R_CONN, cer()),
        "I_RCV_NON_CEA": (I_CONN, ccr()),
        "I_RCV_DWR": (I_CONN, dwr), "R_RCV_DWR": (R_CONN, dwr),
        "I_RCV_DWA": (I_CONN, answer(dwr, 2001, remote.identity)),
        "R_RCV_DWA": (R_CONN, answer(dwr, 2001, remote.identity)),
        "I_RCV_DPR": (I_CONN, dpr), "R_RCV_DPR": (R_CONN, dpr),
        "I_RCV_DPA": (I_CONN, answer(dpr, 2001, remote.identity)),
        "R_RCV_DPA": (R_CONN, answer(dpr, 2001, remote.identity)),
        "I_RCV_MESSAGE": (I_CONN, ccr()), "R_RCV_MESSAGE": (R_CONN, ccr()),
        "SEND_MESSAGE": (None, ccr()),
        "I_PEER_DISC": (I_CONN, None), "R_PEER_DISC": (R_CONN, None),
    }
    return table.get(event.name, (None, None))


@pytest.mark.parametrize("state", list(PeerState))
@pytest.mark.parametrize("event", list(PeerEvent))
@given(local=st.sampled_from(["server.test", "a.test"]))
def test_every_state_and_event(state: PeerState, event: PeerEvent, local: str) -> None:
    m = _machine(local)
    m.state, m.i_conn, m.r_conn = state, I_CONN, R_CONN
    m.remote = caps("client.test")
    m._pending_cer = cer()
    conn, msg = _input(event)
    row = TRANSITIONS.get((state, event))
    if row is None:
        with pytest.raises(PeerStateError):
            m.handle(event, 1.0, conn, msg)
        assert _state(m) is state
        return
    m.handle(event, 1.0, conn, msg)
    expected = row[1]
    if Action.ELECT in row[0] and local > "client.test":
        expected = TRANSITIONS[(PeerState.WAIT_RETURNS, PeerEvent.WIN_ELECTION)][1]
    assert _state(m) is expected


def test_responder_cer_dwr_dpr() -> None:
    m = _machine()
    m.incoming_cer(R_CONN, cer(), 0.0)
    out = m.take_outbox()
    assert _state(m) is PeerState.R_OPEN
    cea = next(c for c in out if isinstance(c, Send))
    assert cea.conn == R_CONN and cea.message.command_code == CommandCode.CAPABILITIES_EXCHANGE
    assert any(isinstance(c, Opened) and c.remote.origin_host == "client.test" for c in out)
    m.receive(R_CONN, _dwr(9), 1.0)
    (dwa,) = m.take_outbox()
    assert isinstance(dwa, Send) and dwa.message.hop_by_hop == 9 and not dwa.message.is_request
    m.receive(R_CONN, ccr(), 2.0)
    (deliver,) = m.take_outbox()
    assert isinstance(deliver, Deliver)
    m.receive(R_CONN, _machine("client.test")._dpr(), 3.0)
    assert _state(m) is PeerState.CLOSING
    m.disconnected(R_CONN, 3.5)
    assert _state(m) is PeerState.CLOSED
    assert any(isinstance(c, Closed) for c in m.take_outbox())


def test_watchdog_probes_then_drops_a_silent_peer() -> None:
    m = _machine()
    m.incoming_cer(R_CONN, cer(), 0.0)
    m.take_outbox()
    t = m.next_deadline()
    assert t is not None and 4.0 <= t <= 8.0
    m.on_timer(t)
    (probe,) = m.take_outbox()
    assert isinstance(probe, Send) and probe.message.command_code == 280
    assert probe.message.is_request and m.sent_dwr == 1
    # The DWA resets the watchdog.
    m.receive(R_CONN, answer(probe.message, 2001, caps("client.test").identity), t + 0.1)
    assert m.received_dwa == 1
    for _ in range(3):  # probe, failover (SUSPECT), close (DOWN)
        deadline = m.next_deadline()
        assert deadline is not None
        m.on_timer(deadline)
    out = m.take_outbox()
    assert any(isinstance(c, Disconnect) and c.conn == R_CONN for c in out)
    assert _state(m) is PeerState.CLOSED


def test_initiator_path_and_stop() -> None:
    m = _machine(initiator=True)
    m.start(0.0)
    assert m.take_outbox() == [Connect()] and _state(m) is PeerState.WAIT_CONN_ACK
    m.connected(I_CONN, 0.1)
    (sent,) = m.take_outbox()
    assert isinstance(sent, Send) and sent.message.command_code == 257
    cea = build_cea(sent.message, 2001, caps("client.test"))
    m.receive(I_CONN, cea, 0.2)
    assert _state(m) is PeerState.I_OPEN
    m.stop(1.0)
    (dpr,) = [c for c in m.take_outbox() if isinstance(c, Send)]
    assert dpr.message.command_code == 282 and _state(m) is PeerState.CLOSING
    m.receive(I_CONN, answer(dpr.message, 2001, caps("client.test").identity), 1.1)
    assert _state(m) is PeerState.CLOSED


def test_initiator_cea_timeout() -> None:
    m = _machine(initiator=True)
    m.start(0.0)
    m.connected(I_CONN, 0.0)
    m.take_outbox()
    m.on_timer(CE_TIMEOUT + 0.1)
    assert _state(m) is PeerState.CLOSED
    assert Disconnect(I_CONN) in m.take_outbox()


def test_election_won_keeps_the_responder_connection() -> None:
    m = _machine("server.test", initiator=True)  # "server.test" > "client.test": we win
    m.start(0.0)
    m.connected(I_CONN, 0.0)
    m.take_outbox()
    m.incoming_cer(R_CONN, cer("client.test"), 0.1)
    out = m.take_outbox()
    assert _state(m) is PeerState.R_OPEN
    assert Disconnect(I_CONN) in out
    assert any(isinstance(c, Send) and c.conn == R_CONN for c in out)


def test_election_lost_keeps_our_connection() -> None:
    m = _machine("a.test", initiator=True)
    m.start(0.0)
    m.connected(I_CONN, 0.0)
    (sent,) = [c for c in m.take_outbox() if isinstance(c, Send)]
    m.incoming_cer(R_CONN, cer("client.test"), 0.1)
    assert _state(m) is PeerState.WAIT_RETURNS
    m.receive(I_CONN, build_cea(sent.message, 2001, caps("client.test")), 0.2)
    assert _state(m) is PeerState.I_OPEN
    assert Disconnect(R_CONN) in m.take_outbox()


def test_second_connection_is_rejected_while_open() -> None:
    m = _machine()
    m.incoming_cer(R_CONN, cer(), 0.0)
    m.take_outbox()
    m.incoming_cer(NEW_CONN, cer(), 0.1)
    assert m.take_outbox() == [Disconnect(NEW_CONN)] and _state(m) is PeerState.R_OPEN


def test_unknown_connection_is_a_local_error() -> None:
    from protocols.diameter.errors import LocalProtocolError

    m = _machine()
    m.incoming_cer(R_CONN, cer(), 0.0)
    with pytest.raises(LocalProtocolError):
        m.receive(99, ccr(), 0.1)


def test_send_message_goes_to_open_connection() -> None:
    m = _machine()
    m.incoming_cer(R_CONN, cer(), 0.0)
    m.take_outbox()
    m.send(ccr(), 0.1)
    (sent,) = m.take_outbox()
    assert isinstance(sent, Send) and sent.conn == R_CONN


@pytest.mark.parametrize("result, apps", [(5012, frozenset({4})), (2001, frozenset({16777238}))])
def test_refused_or_useless_cea_closes(result: int, apps: frozenset[int]) -> None:
    m = _machine(initiator=True)
    m.start(0.0)
    m.connected(I_CONN, 0.0)
    (sent,) = [c for c in m.take_outbox() if isinstance(c, Send)]
    m.receive(I_CONN, build_cea(sent.message, result, caps("client.test", apps)), 0.1)
    assert _state(m) is PeerState.CLOSED
    assert Disconnect(I_CONN) in m.take_outbox()


def test_reopen_throws_messages_away_until_three_dwas() -> None:
    m = _machine(initiator=True)
    m.start(0.0)
    m.connected(I_CONN, 0.0)
    (cer_sent,) = [c for c in m.take_outbox() if isinstance(c, Send)]
    m.receive(I_CONN, build_cea(cer_sent.message, 2001, caps("client.test")), 0.1)
    m.disconnected(I_CONN, 1.0)  # watchdog OKAY -> DOWN
    assert _state(m) is PeerState.CLOSED
    m.take_outbox()
    deadline = m.next_deadline()
    assert deadline is not None
    m.on_timer(deadline)  # DOWN: AttemptOpen -> Start -> Connect
    assert Connect() in m.take_outbox()
    m.connected(I_CONN + 10, deadline)
    (cer2,) = [c for c in m.take_outbox() if isinstance(c, Send)]
    m.receive(I_CONN + 10, build_cea(cer2.message, 2001, caps("client.test")), deadline)
    out = m.take_outbox()
    probe = next(c for c in out if isinstance(c, Send))
    assert probe.message.command_code == 280  # REOPEN probes at once
    m.receive(I_CONN + 10, ccr(), deadline)
    (dropped,) = m.take_outbox()
    assert isinstance(dropped, Dropped) and dropped.reason == "watchdog_reopen"


def test_broken_cer_leaves_the_machine_unchanged() -> None:
    from protocols.diameter.constants import AvpCode
    from protocols.diameter.errors import RemoteProtocolError
    from tests.protocols.diameter.factory import without

    m = _machine()
    with pytest.raises(RemoteProtocolError):
        m.incoming_cer(R_CONN, without(cer(), AvpCode.ORIGIN_HOST), 0.0)
    assert _state(m) is PeerState.CLOSED and m.r_conn is None and m.take_outbox() == []
