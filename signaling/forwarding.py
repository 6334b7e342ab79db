"""The bytes the proxy relays a response or forwards a request with: edited from the received
ones (``protocols.sip.edit``) where the message allows it, else None and the caller serializes.

Editing is an optimisation with an exact contract: the edited bytes read back as the message
``serialize`` would have written.  With ``SIGNALING_TEST_CHECK_EDITS=1`` in the environment (the
test suite sets it for the servers it runs in process) every
edited message is checked against that contract and a difference raises, so each test that
sends a call through the proxy tests the editor too.
"""

from __future__ import annotations

import dataclasses
import os

from protocols.sip.edit import forwarded_request, forwarded_response
from protocols.sip.message import Request, Response, Via
from protocols.sip.parser import parse_message
from protocols.sip.serializer import serialize

__all__ = ["CHECK_EDITS", "ack_bytes", "request_bytes", "response_bytes"]

#: Check every edited message against the serializer (tests; see the module's docstring).
CHECK_EDITS = os.environ.get("SIGNALING_TEST_CHECK_EDITS") == "1"


def response_bytes(resp: Response) -> bytes | None:
    """The wire form of ``resp`` without its top Via (§16.7 step 9), when it can be edited
    from the received bytes; None otherwise (the caller serializes its own copy)."""
    data = forwarded_response(resp)
    if data is not None and CHECK_EDITS:
        _check(data, dataclasses.replace(resp, vias=resp.vias[1:]))
    return data


def request_bytes(received: Request, copy: Request) -> bytes | None:
    """The wire form of ``copy``, the request a proxy forwards for ``received`` (``Request.
    forwarded``: the fields it changes given, the others shared), when it can be edited from
    ``received``'s bytes; None otherwise (the caller serializes ``copy``).  What the edit can
    express is told by sharing: one Via added above ``received``'s, Record-Route values added
    above its own, the same untyped headers, Require and Route values (those popped from
    ``received`` in place, §16.4, excepted: ``edit`` counts them), a new Request-URI or the same
    object."""
    if received.wire is None:
        return None
    vias, rr, old_rr = copy.vias, copy.record_routes, received.record_routes
    added = len(rr) - len(old_rr)
    if (len(vias) != len(received.vias) + 1 or vias[1] is not received.vias[0]
            or copy.extra is not received.extra or copy.require is not received.require
            or len(copy.routes) != len(received.routes) or copy.max_forwards is None
            or added < 0 or (old_rr and rr[added] is not old_rr[0])):
        return None
    uri = copy.uri
    data = forwarded_request(received, vias[0], copy.max_forwards, rr[:added] if added else (),
                             None if uri is received.uri else
                             (str(uri) if uri.raw is None else uri.raw))
    if data is not None and CHECK_EDITS:
        _check(data, copy)
    return data


def ack_bytes(received: Request, via: Via, max_forwards: int) -> bytes | None:
    """The wire form of an ACK for a 2xx forwarded statelessly (§16.11): ``received`` with
    ``via`` on top, Max-Forwards ``max_forwards`` and the Route values popped from it since it
    was parsed cut out; None when its bytes cannot be edited so."""
    data = forwarded_request(received, via, max_forwards)
    if data is not None and CHECK_EDITS:
        _check(data, received.forwarded(
            uri=received.uri, vias=[via, *received.vias], record_routes=received.record_routes,
            routes=received.routes, max_forwards=max_forwards, extra=received.extra,
            require=received.require))
    return data


def _check(data: bytes, expected: Request | Response) -> None:
    """``data`` must read back as ``expected`` does from its serialized form, raw texts
    included: both are serialized again, which writes every field from its raw text in one
    canonical order."""
    edited = serialize(parse_message(data))
    rebuilt = serialize(parse_message(serialize(expected)))
    if edited != rebuilt:
        raise AssertionError(f"edited message differs from the rebuilt one:\n{edited!r}\n"
                             f"{rebuilt!r}")
