"""The proxy's per-request state and its release once settled (signaling/proxy_context.py)."""

from __future__ import annotations

import pytest

from protocols.sip.builders import make_response
from protocols.sip.message import CSeq, NameAddr, Request, SipURI, Via
from protocols.sip.summary import ResponseSummary
from protocols.sip.timers import DEFAULT_TIMERS, timer_values
from protocols.sip.transaction import InviteServerTransaction
from signaling.proxy_context import Branch, Context
from signaling.transports.base import Peer


def _invite() -> Request:
    return Request(method="INVITE", uri=SipURI("sip", "example.com", user="bob"),
                   vias=[Via("UDP", "192.0.2.1", 5060, {"branch": "z9hG4bKctx1"})],
                   from_=NameAddr(SipURI("sip", "example.com", user="alice"),
                                  params={"tag": "a"}),
                   to=NameAddr(SipURI("sip", "example.com", user="bob")),
                   call_id="ctx-1", cseq=CSeq(1, "INVITE"))


def test_settles_only_when_answered_and_every_branch_has_its_final() -> None:
    req = _invite()
    ctx = Context(InviteServerTransaction(req, timer_values(DEFAULT_TIMERS, False)), req, 0.0)
    assert (ctx.method, ctx.creates_dialog) == ("INVITE", True)
    one, two = Branch(ctx, req, Peer("udp", "198.51.100.1", 5060)), Branch(
        ctx, req, Peer("udp", "198.51.100.2", 5060))
    ctx.branches = [one, two]
    ok = make_response(req, 200, to_tag="b1")
    one.final = ok
    assert not ctx.settle(lambda r: "tag")  # no answer upstream yet
    ctx.done = True
    assert not ctx.settle(lambda r: "tag")  # the second branch is still pending (CANCEL)
    assert ctx.request is req and two.request is req
    two.final = make_response(req, 487, to_tag="b2")
    ctx.best = two.final
    assert ctx.settle(lambda r: f"tag-{r.call_id}")
    assert ctx.settled and ctx.tag == "tag-ctx-1" and ctx.best is None
    assert one.final == ResponseSummary(200, "OK", "INVITE", "b1")
    assert isinstance(two.final, ResponseSummary) and two.final.status == 487
    with pytest.raises(RuntimeError):
        _ = ctx.request
    with pytest.raises(RuntimeError):
        _ = one.request
    # A 2xx retransmission relayed afterwards is summarised again by the next call.
    one.final = ok
    assert ctx.settle(lambda r: "unused") and isinstance(one.final, ResponseSummary)
