"""Our UAs as callees: what they answer to requests the server routes to them, and their
dialogs in the project's one model (RFC 3261 §12.1.1, §13.3.1.4, §15)."""

from __future__ import annotations

import time
from typing import Any

from loadtest.agents import UA
from loadtest.links import Link
from loadtest.sipmsg import Identity
from loadtest.timeline import Timeline
from loadtest.timers import TxnTimers
from loadtest.uas import Uas
from protocols.sip.dialog import DialogState
from protocols.sip.message import Response
from protocols.sip.parser import parse_message

PEER = ("127.0.0.1", 5060)


class Wire(Link):
    def __init__(self) -> None:
        super().__init__()
        self.replies: list[tuple[bytes, Any]] = []

    def reply(self, data: bytes, addr: Any) -> None:
        self.replies.append((data, addr))

    def statuses(self) -> list[int]:
        out = []
        for data, _ in self.replies:
            msg = parse_message(data)
            assert isinstance(msg, Response)
            out.append(msg.status)
        return out


def _request(method: str, user: str = "bob", branch: str = "z9hG4bKuas1", to_tag: str = "",
             cseq: int | None = None, contact: bool = True) -> bytes:
    if cseq is None:
        cseq = 2 if method == "BYE" else 1
    to = "<sip:bob@d>" + (f";tag={to_tag}" if to_tag else "")
    return (f"{method} sip:{user}@10.0.0.1:4000 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:5060;branch={branch}\r\n"
            "Record-Route: <sip:p1.d;lr>, <sip:127.0.0.1:5060;lr>\r\nMax-Forwards: 69\r\n"
            f"From: <sip:alice@d>;tag=a1\r\nTo: {to}\r\nCall-ID: c1\r\n"
            + ("Contact: <sip:alice@10.0.0.2:5070>\r\n" if contact else "")
            + f"CSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n").encode()


def _to_tag(wire: Wire) -> str:
    msg = parse_message(wire.replies[-1][0])
    assert isinstance(msg, Response) and msg.to.tag
    return msg.to.tag


def _uas(t1: float = 0.5) -> tuple[Uas, Wire, TxnTimers]:
    wire = Wire()
    bob = UA(Identity(b"bob", b"d", b"UDP", b"10.0.0.1:4000", b"sip:bob@10.0.0.1:4000"), wire,
             False)
    timers = TxnTimers(t1, 4.0, 180.0, {}, Timeline(1), lambda txn, now: None)
    return Uas({"bob": bob}, timers), wire, timers


def test_invite_rings_then_answers_with_contact_record_route_and_sdp() -> None:
    uas, wire, _ = _uas()
    uas.on_request(_request("INVITE"), PEER, wire)
    assert wire.statuses() == [180, 200]
    ok = parse_message(wire.replies[1][0])
    assert isinstance(ok, Response) and wire.replies[1][1] == PEER
    assert [str(rr.uri) for rr in ok.record_routes] == ["sip:p1.d;lr",
                                                        "sip:127.0.0.1:5060;lr"]  # §12.1.1
    assert str(ok.contacts[0].uri) == "sip:bob@10.0.0.1:4000"
    assert ok.content_type == "application/sdp" and ok.body
    # A retransmitted INVITE gets the same 200 again, not a new answer (§17.2).
    uas.on_request(_request("INVITE"), PEER, wire)
    assert wire.replies[2][0] == wire.replies[1][0]
    assert uas.stats.retransmissions_absorbed == 1
    assert uas.stats.requests == {"INVITE": 2}


def test_the_callee_dialog_moves_through_the_shared_model() -> None:
    uas, wire, _ = _uas()
    uas.on_request(_request("INVITE"), PEER, wire)
    tag = _to_tag(wire)
    d = uas.dialogs["c1"].dialog

    def state() -> DialogState:  # read afresh each time (no narrowing across the calls)
        return d.state

    # §12.1.1: route set = Record-Route in order, remote target = the caller's Contact.
    assert [str(r.uri) for r in d.route_set] == ["sip:p1.d;lr", "sip:127.0.0.1:5060;lr"]
    assert str(d.remote_target) == "sip:alice@10.0.0.2:5070"
    assert (d.id.local_tag, d.id.remote_tag, d.remote_seq) == (tag, "a1", 1)
    assert state() is DialogState.WAIT_ACK and not d.is_uac
    # An ACK with another To tag is not this dialog's; ours confirms it.
    uas.on_request(_request("ACK", branch="z9hG4bKa0", to_tag="other"), PEER, wire)
    assert state() is DialogState.WAIT_ACK
    uas.on_request(_request("ACK", branch="z9hG4bKa1", to_tag=tag), PEER, wire)
    assert state() is DialogState.CONFIRMED
    # §12.2.2: a request with a lower CSeq than the INVITE's is out of order: 500.
    uas.on_request(_request("BYE", branch="z9hG4bKb0", to_tag=tag, cseq=0), PEER, wire)
    assert wire.statuses()[-1] == 500 and state() is DialogState.CONFIRMED
    uas.on_request(_request("BYE", branch="z9hG4bKb1", to_tag=tag), PEER, wire)
    assert wire.statuses()[-1] == 200 and state() is DialogState.TERMINATED
    assert uas.dialogs == {}


def test_an_invite_without_contact_gets_400_and_no_dialog() -> None:
    uas, wire, _ = _uas()
    uas.on_request(_request("INVITE", contact=False), PEER, wire)
    assert wire.statuses() == [400] and uas.dialogs == {}  # §8.1.1.8


def test_the_2xx_is_resent_until_the_ack_comes_or_64_t1() -> None:
    uas, wire, timers = _uas(t1=0.01)
    uas.on_request(_request("INVITE"), PEER, wire)
    time.sleep(0.015)
    timers.run_actions(time.monotonic())  # T1 passed without ACK: re-sent (§13.3.1.4)
    assert uas.stats.ok_retransmitted == 1 and wire.statuses() == [180, 200, 200]
    uas.on_request(_request("ACK", branch="z9hG4bKack", to_tag=_to_tag(wire)), PEER, wire)
    time.sleep(0.05)
    timers.run_actions(time.monotonic())
    assert uas.stats.ok_retransmitted == 1 and len(wire.replies) == 3
    # Never ACKed: re-sent at T1 doubling (to T2), given up at 64*T1.
    uas, wire, timers = _uas(t1=0.01)
    uas.on_request(_request("INVITE"), PEER, wire)
    d = uas.dialogs["c1"].dialog
    deadline = time.monotonic() + 5
    while not uas.stats.ack_timeouts and time.monotonic() < deadline:
        time.sleep(0.005)
        timers.run_actions(time.monotonic())
    assert uas.stats.ack_timeouts == 1
    # Due at 0.01, 0.03, 0.07, 0.15, 0.31, 0.63 s (0.01 doubling; T2 = 4 s is not reached):
    # at most those six before 64*T1 = 0.64 s; each counts from when the previous one fired,
    # so a stalled machine sends fewer, never more.
    assert 2 <= uas.stats.ok_retransmitted <= 6 and uas.dialogs == {}
    assert d.state is DialogState.TERMINATED  # the model's TIMEOUT input


def test_unknown_callee_404_bye_200_other_methods_501_garbage_counted() -> None:
    uas, wire, _ = _uas()
    uas.on_request(_request("INVITE", user="carol", branch="z9hG4bK2"), PEER, wire)
    uas.on_request(_request("BYE", branch="z9hG4bK3"), PEER, wire)
    uas.on_request(_request("INFO", branch="z9hG4bK4"), PEER, wire)
    assert wire.statuses() == [404, 200, 501]
    uas.on_request(b"\x00\x01 not sip", PEER, wire)
    assert uas.stats.bad == 1 and len(wire.replies) == 3
