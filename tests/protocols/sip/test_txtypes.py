"""protocols/sip/txtypes.py: the machines' vocabulary.  Inputs carry what their names say and
events are immutable values (ARCHITECTURE habit 4)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from protocols.sip.message import Request, Response
from protocols.sip.summary import ResponseSummary
from protocols.sip.txtypes import (
    Input,
    SendMessage,
    TimerCFired,
    TransactionTerminated,
    TransactionTimedOut,
    TransportFailed,
    _message_kind,
)


@pytest.mark.parametrize("inp", list(Input))
def test_each_input_carries_the_message_its_name_says(inp: Input) -> None:
    kind = _message_kind(inp)
    if inp.name.startswith("TIMER_") or inp is Input.TRANSPORT_ERROR:
        assert kind is None
    elif inp.name.startswith("SEND_"):
        assert kind == (Response, ResponseSummary)  # a TU may hand down a summary + bytes
    elif inp.name.startswith("RECV_"):
        assert kind is Response
    else:
        assert kind is Request


@pytest.mark.parametrize("event", [
    SendMessage(ResponseSummary(200, "OK", "REGISTER", None), b"x"),
    TransactionTimedOut(Input.TIMER_B),
])
def test_events_with_fields_are_frozen(event: Any) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(event, dataclasses.fields(event)[0].name, None)


@pytest.mark.parametrize("event", [TransportFailed(), TimerCFired(), TransactionTerminated()])
def test_events_without_fields_hold_nothing(event: Any) -> None:
    # Shared instances (no allocation per event): slotted with no field, nothing to change.
    assert dataclasses.fields(event) == () and not hasattr(event, "__dict__")
