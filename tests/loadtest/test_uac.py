"""The UAC on a recording link: REGISTERs one at a time per UA (RFC 3261 §10.2), every final
counted per code, kind and second, errors unless expected; calls whose dialog is the project's
one model (§12.1.2 route set and target, §12.2.1.1 strict routers, states through its table)."""

from __future__ import annotations

import time
from typing import Any

from loadtest.agents import UA, Caller
from loadtest.links import Link
from loadtest.metrics import KindStats
from loadtest.responder import respond
from loadtest.sipmsg import Identity
from loadtest.timeline import Timeline
from loadtest.trace import Call
from loadtest.uac import Uac, UacConfig
from protocols.sip.dialog import DialogState
from protocols.sip.message import Request
from protocols.sip.parser import parse_message


class Wire(Link):
    def __init__(self) -> None:
        super().__init__()
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> None:
        self.sent.append(data)


def _uac(expected: frozenset[int] = frozenset()) -> tuple[Uac, UA, Wire, dict[str, KindStats]]:
    kinds: dict[str, KindStats] = {}

    def stats(kind: str) -> KindStats:
        return kinds.setdefault(kind, KindStats())

    requests: list[bytes] = []
    cfg = UacConfig(deadline=1.0, ws_share=0.0, backoff=False, backoff_base=30.0,
                    backoff_max=1800.0, expected=expected)
    uac = Uac(cfg, stats, Timeline(1), lambda d, a, link: requests.append(d), 0.5, 4.0, 180.0,
              seed=1)
    wire = Wire()
    ua = UA(Identity(b"alice", b"127.0.0.1", b"UDP", b"127.0.0.1:5999",
                     b"sip:alice@127.0.0.1:5999"), wire, False)
    return uac, ua, wire, kinds


def _answer(uac: Uac, request: bytes, status: bytes) -> None:
    out = respond(request, status)
    assert out is not None
    uac.on_message(out, ("127.0.0.1", 5060), Link())


def test_registers_wait_for_the_previous_one_and_finals_are_counted() -> None:
    uac, ua, wire, kinds = _uac()
    reg = kinds.setdefault("register", KindStats())
    for _ in range(3):
        uac.send_register(ua, reg, 3600, None, 1, False, 0, time.monotonic())
    # One in flight, one waiting; the third replaced the second (superseded).
    assert len(wire.sent) == 1 and reg.queued == 2 and reg.superseded == 1
    _answer(uac, wire.sent[0], b"100 Trying")
    _answer(uac, wire.sent[0], b"200 OK")
    assert len(wire.sent) == 2 and b"CSeq: 2 REGISTER" in wire.sent[1]  # the waiting one
    _answer(uac, wire.sent[1], b"403 Forbidden")
    assert reg.codes == {200: 1, 403: 1} and reg.failures == {403: 1}
    assert reg.answered == {"2xx": 1, "4xx": 1} and reg.provisional == 1
    cur = uac.tl.cur
    assert cur.by_class == {"1xx": 1, "2xx": 1, "4xx": 1}
    assert (cur.sent, cur.answered, cur.good, cur.errors) == (2, 2, 1, 1)
    assert uac.txns == {}
    # A retransmitted final after completion is a stray, counted and dropped.
    _answer(uac, wire.sent[1], b"403 Forbidden")
    assert uac.stray == 1 and reg.codes[403] == 1


def test_expected_codes_are_not_errors_and_timeouts_are() -> None:
    uac, ua, wire, kinds = _uac(expected=frozenset({403}))
    reg = kinds.setdefault("register", KindStats())
    uac.send_register(ua, reg, 3600, None, 1, False, 0, time.monotonic())
    _answer(uac, wire.sent[0], b"403 Forbidden")
    assert uac.tl.cur.errors == 0 and reg.codes == {403: 1}
    uac.send_register(ua, reg, 3600, None, 1, False, 0, time.monotonic())
    (txn,) = uac.txns.values()
    for step in range(330):  # 33 s in steps of 0.1 s: Timer E's retransmissions, then F
        uac.timers.run(txn.t0 + step / 10)
    assert reg.retransmissions == 10  # 0.5, 1.5, 3.5, 7.5, then every T2 = 4 s to 31.5
    assert reg.timeouts == 1 and uac.tl.cur.timeouts == 1 and uac.tl.cur.errors == 1
    assert uac.txns == {} and ua.reg_txn is None


def test_a_final_answer_after_timer_f_is_counted_late_once() -> None:
    uac, ua, wire, kinds = _uac()
    reg = kinds.setdefault("register", KindStats())
    uac.send_register(ua, reg, 3600, None, 1, False, 0, time.monotonic())
    (txn,) = uac.txns.values()
    for step in range(330):  # Timer E's retransmissions, then F (64*T1): the client gave up
        uac.timers.run(txn.t0 + step / 10)
    assert reg.timeouts == 1
    _answer(uac, wire.sent[0], b"200 OK")  # the server answers anyway
    _answer(uac, wire.sent[0], b"200 OK")  # and retransmits it: one late answer, one stray
    assert reg.late_finals == 1 and uac.stray == 1 and reg.codes == {}


def test_requests_reaching_our_uas_go_to_the_uas_side() -> None:
    got: list[Any] = []
    uac, _, _, _ = _uac()
    uac.on_request = lambda d, a, link: got.append(d)
    uac.on_message(b"OPTIONS sip:alice@127.0.0.1 SIP/2.0\r\n\r\n", None, Link())
    assert len(got) == 1


def _ok(invite: bytes, record_route: bytes, to_tag: bytes = b"callee1") -> bytes:
    """The callee's 2xx to ``invite`` as a record-routing proxy forwards it back."""
    out = respond(invite, b"200 OK")
    assert out is not None
    out = out.replace(b";tag=resp1", b";tag=" + to_tag)
    return out.replace(b"\r\n\r\n", b"\r\nContact: <sip:bob@10.0.0.9:5070>\r\n"
                       + record_route + b"\r\n\r\n", 1)


def _call(uac: Uac, ua: UA, wire: Wire, record_route: bytes) -> tuple[Caller, Request]:
    uac._send_invite(ua, Call(t=0, user="alice", domain="example.com", callee="bob", hold=60),
                     1, False, 0, time.monotonic())
    (caller,) = uac.dialogs.values()
    uac.on_message(_ok(wire.sent[-1], record_route), ("127.0.0.1", 5060), Link())
    ack = parse_message(wire.sent[-1])
    assert isinstance(ack, Request) and ack.method == "ACK"
    return caller, ack


def test_the_caller_dialog_comes_from_the_model_and_the_bye_carries_its_route_set() -> None:
    uac, ua, wire, kinds = _uac()
    caller, ack = _call(uac, ua, wire,
                        b"Record-Route: <sip:p2.example.com;lr>\r\n"
                        b"Record-Route: <sip:p1.example.com;lr;ftag=x>")
    d = caller.dialog
    assert d is not None and d.is_uac

    def state() -> DialogState:  # read afresh each time (no narrowing across the calls)
        return d.state

    assert state() is DialogState.CONFIRMED  # ACK sent
    # §12.1.2: Record-Route reversed (URIs only), the 2xx's Contact as remote target.
    routes = ["sip:p1.example.com;lr;ftag=x", "sip:p2.example.com;lr"]
    assert [str(r.uri) for r in d.route_set] == routes
    assert str(ack.uri) == "sip:bob@10.0.0.9:5070" and [str(r.uri) for r in ack.routes] == routes
    assert ack.to.tag == "callee1" and ack.cseq.seq == 1  # §13.2.2.4: the INVITE's number
    assert uac.calls.established == 1 and uac.up == 1
    # A 2xx retransmission is ACKed again; another fork's 2xx (other To tag) is not ours.
    sent = len(wire.sent)
    uac.on_message(_ok(wire.sent[0], b"Record-Route: <sip:p2.example.com;lr>", b"callee1"),
                   None, Link())
    assert len(wire.sent) == sent + 1 and wire.sent[-1] == wire.sent[-2]
    uac.on_message(_ok(wire.sent[0], b"Record-Route: <sip:p2.example.com;lr>", b"fork2"),
                   None, Link())
    assert len(wire.sent) == sent + 1 and state() is DialogState.CONFIRMED
    uac.send_bye(caller, time.monotonic())
    bye = parse_message(wire.sent[-1])
    assert isinstance(bye, Request) and bye.method == "BYE"
    assert str(bye.uri) == "sip:bob@10.0.0.9:5070" and [str(r.uri) for r in bye.routes] == routes
    assert (bye.cseq.seq, bye.to.tag, bye.call_id) == (2, "callee1", d.id.call_id)
    assert state() is DialogState.TERMINATED
    uac.hang_up_all(time.monotonic())  # terminated: no second BYE
    assert len(wire.sent) == sent + 2
    _answer(uac, wire.sent[-1], b"200 OK")
    assert uac.calls.completed == 1 and uac.up == 0 and uac.dialogs == {}
    assert kinds["bye"].codes == {200: 1}


def test_a_strict_router_in_the_route_set_becomes_the_request_uri() -> None:
    uac, ua, wire, _ = _uac()
    # RFC 2543 strict router (no lr) nearest to us: §12.2.1.1.
    caller, ack = _call(uac, ua, wire, b"Record-Route: <sip:p2.example.com;lr>, "
                                       b"<sip:strict.example.com>")
    assert str(ack.uri) == "sip:strict.example.com"
    assert [str(r.uri) for r in ack.routes] == ["sip:p2.example.com;lr",
                                                "sip:bob@10.0.0.9:5070"]
    uac.send_bye(caller, time.monotonic())
    bye = parse_message(wire.sent[-1])
    assert isinstance(bye, Request) and str(bye.uri) == "sip:strict.example.com"
    assert [str(r.uri) for r in bye.routes][-1] == "sip:bob@10.0.0.9:5070"
