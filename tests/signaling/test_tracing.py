"""signaling/tracing.py: one call and one registration give the expected tree of spans.

The spans are exported by the server's real OTLP/HTTP exporter to a receiver (tests/otlp.py)
that decodes each request with the official ``opentelemetry-proto`` definitions: what a
collector would see, not what the SDK holds in memory.
"""

from __future__ import annotations

import asyncio

from protocols.sip.message import Response
from tests.otlp import attributes, receiver
from tests.peers.sipua import UdpUA
from tests.signaling.inproc import running_server

#: A W3C traceparent a traced application would put on its INVITE (version, trace id, parent
#: span id, sampled).
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{CALLER_TRACE}-00f067aa0ba902b7-01"


async def test_a_call_is_one_trace_of_call_and_transaction_spans() -> None:
    async with receiver() as (rx, endpoint), running_server(
            trace_sample=1.0, otlp_endpoint=endpoint) as server:
        assert server.udp_address is not None
        port = server.udp_address[1]
        caller = await UdpUA("alice", "127.0.0.1", port).start()
        callee = await UdpUA("bob", "127.0.0.1", port).start()
        try:
            await callee.send(callee.register())
            await callee.response(200, "REGISTER")
            invite = caller.invite("bob")
            invite.extra.append(("traceparent", TRACEPARENT))
            await caller.send(invite)
            got = await callee.request("INVITE")
            # The proxy passes its own span's context on (W3C): same trace, its span as parent.
            forwarded = got.header("traceparent")
            assert forwarded is not None and forwarded.split("-")[1] == CALLER_TRACE
            await callee.send(callee.reply(got, 180, tag="b1"))
            await caller.response(180)
            await callee.send(callee.reply(got, 200, tag="b1"))
            ok = await caller.response(200)
            leg = caller.uac_leg(invite, ok)
            await caller.send(caller.in_dialog(leg, "ACK", cseq=1))
            await callee.request("ACK")
            bye = caller.in_dialog(leg, "BYE")
            await caller.send(bye)
            routed = await callee.request("BYE")
            await callee.send(callee.reply(routed, 200))
            await caller.response(200, "BYE")
            calls = await rx.wait_for("SIP call")
            invites = await rx.wait_for("SIP INVITE")
            byes = await rx.wait_for("SIP BYE")
            registers = await rx.wait_for("SIP REGISTER")
        finally:
            await caller.close()
            await callee.close()
    call = calls[0]
    assert call.trace_id.hex() == CALLER_TRACE  # the caller's trace continues here
    assert call.parent_span_id.hex() == "00f067aa0ba902b7"
    assert [e.name for e in call.events] == ["ringing", "answered", "confirmed", "ended"]
    ended = {kv.key: kv.value.string_value for kv in call.events[-1].attributes}
    assert ended == {"sip.ended_by": "caller"}
    # The INVITE and BYE transactions are children of the call, each with its final status.
    for txn, status in ((invites[0], 200), (byes[0], 200)):
        assert txn.trace_id == call.trace_id and txn.parent_span_id == call.span_id
        assert attributes(txn)["sip.status_code"] == status
    assert forwarded.split("-")[2] == invites[0].span_id.hex()
    attrs = attributes(call)
    assert attrs["network.protocol.name"] == "sip" and attrs["network.peer.address"] == "127.0.0.1"
    assert attrs["sip.method"] == "INVITE"
    # Call-ID exported as a keyed hash by default, never as it is.
    assert attrs["sip.call_id"] != invite.call_id and len(str(attrs["sip.call_id"])) == 16
    reg = registers[0]
    assert attributes(reg)["sip.status_code"] == 200 and not reg.parent_span_id


async def test_spans_for_a_collector_that_is_down_are_dropped_and_counted() -> None:
    """A collector that refuses connections never slows or blocks signaling: the export
    fails in its own thread and is counted; calls and registrations go on."""
    async with running_server(trace_sample=1.0,
                              otlp_endpoint="http://127.0.0.1:9/v1/traces") as server:
        assert server.udp_address is not None and server.tracer is not None
        ua = await UdpUA("carol", "127.0.0.1", server.udp_address[1]).start()
        try:
            for _ in range(3):
                await ua.send(ua.register())
                resp = await ua.response(200, "REGISTER")
                assert isinstance(resp, Response)
        finally:
            await ua.close()
        spans = server.tracer.processor.c_spans
        async with asyncio.timeout(30):
            while spans.get("export_failed") < 3:
                await asyncio.sleep(0.1)
                server.tracer.processor.force_flush(100)
        assert spans.get("exported") == 0


async def test_tracing_off_by_default_holds_no_tracer() -> None:
    async with running_server() as server:
        assert server.tracer is None and server.proxy.tracer is None


async def test_unsampled_requests_make_no_spans_and_a_traced_caller_is_followed() -> None:
    """Parent-based sampling: with a ratio that samples nothing new, a REGISTER or a call
    without trace context makes no span at all (their in-dialog requests neither), while a
    call whose INVITE carries a sampled traceparent is traced."""
    async with receiver() as (rx, endpoint), running_server(
            trace_sample=1e-9, otlp_endpoint=endpoint) as server:
        assert server.udp_address is not None and server.tracer is not None
        port = server.udp_address[1]
        caller = await UdpUA("dave", "127.0.0.1", port).start()
        callee = await UdpUA("erin", "127.0.0.1", port).start()
        try:
            await callee.send(callee.register())
            await callee.response(200, "REGISTER")
            for traced in (False, True):
                invite = caller.invite("erin")
                if traced:
                    invite.extra.append(("traceparent", TRACEPARENT))
                await caller.send(invite)
                got = await callee.request("INVITE")
                await callee.send(callee.reply(got, 486, tag=f"t{traced}"))
                busy = await caller.response(486)
                await caller.send(caller.ack_non2xx(invite, busy))
            calls = await rx.wait_for("SIP call")
            server.tracer.processor.force_flush(5_000)
        finally:
            await caller.close()
            await callee.close()
    assert len(calls) == 1 and calls[0].trace_id.hex() == CALLER_TRACE
    assert rx.named("SIP REGISTER") == []
    assert [s.trace_id.hex() for s in rx.named("SIP INVITE")] == [CALLER_TRACE]
