"""signaling/proxy_dialogs.py: a dialog created by an INVITE, made early by a tagged 1xx,
confirmed by the 2xx and ended by a BYE from either side, with the end reported once; the
side an in-dialog request goes to; bad inputs counted, never raised."""

from __future__ import annotations

import dataclasses
from typing import Any

from protocols.sip.message import Request, Response
from protocols.sip.parser import parse_message
from signaling.config import load_config
from signaling.dialogs import DialogInput, DialogState, ProxyDialog
from signaling.metrics import Metrics
from signaling.proxy_dialogs import DIALOG_LINGER, LINGER_T1, DialogKeeper
from signaling.registry.memory import MemoryRegistry
from signaling.transports.base import Peer

CALLER = Peer("udp", "192.0.2.1", 5061)
CALLEE = Peer("udp", "192.0.2.2", 5062)
HEAD = ("Via: SIP/2.0/UDP 192.0.2.1:5061;branch=z9hG4bK{b}\r\nMax-Forwards: 70\r\n"
        "From: <sip:a@example.com>;tag=a\r\nTo: <sip:b@example.com>{to}\r\n"
        "Call-ID: c1\r\nCSeq: {seq} {method}\r\n")


def _request(method: str, to_tag: str = "", seq: int = 1, from_callee: bool = False) -> Request:
    head = HEAD.format(b=method + str(seq), to=f";tag={to_tag}" if to_tag else "", seq=seq,
                       method=method)
    if from_callee:
        head = (head.replace("From: <sip:a@example.com>;tag=a", "From: <sip:b@example.com>;tag=b")
                .replace(f"To: <sip:b@example.com>;tag={to_tag}", "To: <sip:a@example.com>;tag=a"))
    data = (f"{method} sip:b@example.com SIP/2.0\r\n{head}"
            "Contact: <sip:a@192.0.2.1:5061>\r\nContent-Length: 0\r\n\r\n").encode()
    msg = parse_message(data)
    assert isinstance(msg, Request)
    return msg


def _response(status: int, to_tag: str | None) -> Response:
    tag = f";tag={to_tag}" if to_tag else ""
    data = (f"SIP/2.0 {status} X\r\n{HEAD.format(b='INVITE1', to=tag, seq=1, method='INVITE')}"
            "Contact: <sip:b@192.0.2.2:5062>\r\nContent-Length: 0\r\n\r\n").encode()
    msg = parse_message(data)
    assert isinstance(msg, Response)
    return msg


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _keeper(**options: Any) -> tuple[DialogKeeper, list[ProxyDialog], Metrics]:
    flags: dict[str, Any] = {"domain": ["example.com"], "max_dialog_duration": 3600}
    flags.update(options)
    metrics = Metrics()
    ended: list[ProxyDialog] = []
    events = metrics.fast_counter("proxy_events", "events", ["event"])
    keeper = DialogKeeper(load_config(flags, env={}), MemoryRegistry(), metrics, events, Clock(),
                          on_ended=ended.append)
    return keeper, ended, metrics


def _answered(keeper: DialogKeeper) -> ProxyDialog:
    dialog = keeper.create(_request("INVITE"), CALLER, 100.0)
    keeper.response(dialog, CALLEE, _response(200, "b"), DialogInput.SUCCESS)
    keeper.input(dialog, DialogInput.ACK)
    return dialog


def test_a_tagged_provisional_makes_an_early_dialog_an_untagged_one_does_not() -> None:
    keeper, _, _ = _keeper()
    dialog = keeper.create(_request("INVITE"), CALLER, 100.0)
    keeper.response(dialog, CALLEE, _response(100, None), DialogInput.PROVISIONAL)
    assert dialog.early_tags is None  # §12.1: no To tag, no early dialog
    keeper.response(dialog, CALLEE, _response(180, "b1"), DialogInput.PROVISIONAL)
    keeper.response(dialog, CALLEE, _response(183, "b2"), DialogInput.PROVISIONAL)
    assert dialog.early_tags == {"b1", "b2"}


def test_the_2xx_confirms_the_dialog_and_sets_the_maximum_duration() -> None:
    keeper, ended, _ = _keeper()
    dialog = _answered(keeper)
    assert dialog.state is DialogState.CONFIRMED
    assert (dialog.callee_tag, dialog.callee_peer) == ("b", CALLEE)
    assert dialog.callee_contact == "sip:b@192.0.2.2:5062"
    assert dialog.deadline == 100.0 + 3600 and dialog.early_tags is None
    assert keeper.find(_request("BYE", to_tag="b", seq=2)) is dialog
    assert not ended


def test_an_ended_dialog_lingers_64_t1_of_the_configured_t1() -> None:
    """Kept for Timer B/F (64*T1, §17.1.1.2) of the T1 configured, not 32 s whatever T1 is:
    with a short T1 a storm's failed calls lingered long after their last retransmission."""
    for t1 in (0.02, 0.5, 1.0):
        keeper, _, _ = _keeper(t1=t1)
        dialog = _answered(keeper)
        keeper.request(dialog, _request("BYE", "b", 5, from_callee=True))
        assert dialog.deadline == 100.0 + LINGER_T1 * t1 == 100.0 + 64 * t1


def test_in_dialog_requests_go_to_the_other_side() -> None:
    keeper, _, _ = _keeper()
    dialog = _answered(keeper)
    assert keeper.other_side(dialog, _request("INFO", to_tag="b", seq=2)) == CALLEE
    assert keeper.other_side(dialog, _request("INFO", "b", 1, from_callee=True)) == CALLER


def test_a_bye_ends_the_dialog_once_and_names_who_ended_it() -> None:
    keeper, ended, _ = _keeper()
    dialog = _answered(keeper)
    keeper.request(dialog, _request("BYE", "b", 5, from_callee=True))
    assert dialog.state is DialogState.TERMINATED and dialog.ended_by == "callee"
    assert ended == [dialog]
    # Kept to absorb retransmissions, then removed by the proxy's sweep.
    assert dialog.deadline == 100.0 + DIALOG_LINGER
    keeper.input(dialog, DialogInput.TIMEOUT)  # a late input: no second end
    assert ended == [dialog]


def test_the_caller_cseq_is_tracked_so_a_bye_of_ours_exceeds_it() -> None:
    keeper, _, _ = _keeper()
    dialog = _answered(keeper)
    keeper.request(dialog, _request("INFO", to_tag="b", seq=7))
    keeper.request(dialog, _request("INFO", "b", 40, from_callee=True))  # callee's own CSeq
    assert dialog.caller_cseq == 7 and dialog.state is DialogState.CONFIRMED


def test_a_failed_invite_ends_the_dialog_as_the_callees() -> None:
    keeper, ended, _ = _keeper()
    dialog = keeper.create(_request("INVITE"), CALLER, 100.0)
    keeper.input(dialog, DialogInput.FAILURE)
    assert dialog.state is DialogState.TERMINATED and dialog.ended_by == "callee"
    assert ended == [dialog]


def test_a_transition_the_table_refuses_is_counted_not_raised() -> None:
    keeper, ended, metrics = _keeper()
    dialog = keeper.create(_request("INVITE"), CALLER, 100.0)
    keeper.request(dialog, _request("BYE", to_tag="b", seq=2))  # BYE before any answer
    keeper.input(dialog, DialogInput.ACK)
    events = metrics.fast_counter("proxy_events", "events", ["event"])
    assert events.get("dialog_transition_error") >= 1
    assert dialog.state is not DialogState.TERMINATED and not ended


def test_a_failing_end_hook_never_reaches_the_call_path() -> None:
    keeper, _, _ = _keeper()

    def broken(dialog: ProxyDialog) -> None:
        raise RuntimeError("records down")

    keeper.on_ended = broken
    dialog = _answered(keeper)
    keeper.request(dialog, _request("BYE", to_tag="b", seq=2))
    assert dialog.state is DialogState.TERMINATED and dialog.ended_by == "caller"


def test_dialogs_by_state_are_exported() -> None:
    keeper, _, metrics = _keeper()
    _answered(keeper)
    keeper.create(dataclasses.replace(_request("INVITE"), call_id="c2"), CALLER, 100.0)
    text = metrics.exposition().decode()
    assert 'signaling_dialogs{state="confirmed"} 1.0' in text
    assert 'signaling_dialogs{state="initial"} 1.0' in text
