"""The bytes the proxy relays a response with: edited from the received ones
(``protocols.sip.edit``) where the message allows it, else None and the caller serializes.

Editing is an optimisation with an exact contract: the edited bytes read back as the message
``serialize`` would have written.  With ``SIGNALING_TEST_CHECK_EDITS=1`` in the environment (the
test suite sets it for the servers it runs in process) every
edited message is checked against that contract and a difference raises, so each test that
sends a call through the proxy tests the editor too.
"""

from __future__ import annotations

import dataclasses
import os

from protocols.sip.edit import forwarded_response
from protocols.sip.message import Response
from protocols.sip.parser import parse_message
from protocols.sip.serializer import serialize

__all__ = ["CHECK_EDITS", "response_bytes"]

#: Check every edited message against the serializer (tests; see the module's docstring).
CHECK_EDITS = os.environ.get("SIGNALING_TEST_CHECK_EDITS") == "1"


def response_bytes(resp: Response) -> bytes | None:
    """The wire form of ``resp`` without its top Via (§16.7 step 9), when it can be edited
    from the received bytes; None otherwise (the caller serializes its own copy)."""
    data = forwarded_response(resp)
    if data is not None and CHECK_EDITS:
        _check(data, dataclasses.replace(resp, vias=resp.vias[1:]))
    return data


def _check(data: bytes, expected: Response) -> None:
    """``data`` must read back as ``expected`` does from its serialized form, raw texts
    included: both are serialized again, which writes every field from its raw text in one
    canonical order."""
    edited = serialize(parse_message(data))
    rebuilt = serialize(parse_message(serialize(expected)))
    if edited != rebuilt:
        raise AssertionError(f"edited message differs from the rebuilt one:\n{edited!r}\n"
                             f"{rebuilt!r}")
