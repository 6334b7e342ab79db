"""The SIP receive path over real UDP: errors, stateless answers, shedding, Via stamping."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from typing import cast

import pytest

from protocols.sip.builders import make_response
from protocols.sip.message import CSeq, NameAddr, Request, Response, SipURI, Via
from protocols.sip.parser import parse_message, parse_via_list
from protocols.sip.serializer import serialize
from protocols.sip.summary import response_summary
from protocols.sip.transaction import (
    Event,
    NonInviteServerTransaction,
    ServerTransaction,
    TransportFailed,
)
from signaling.registry.base import Binding, ContactChange
from signaling.registry.memory import MemoryRegistry
from signaling.sipcore import Peer, StreamAnswer
from signaling.stateless import stateless_answer, stateless_tail
from tests.signaling.corekit import RecordingTransport, node
from tests.signaling.inproc import UdpPeer, running_server


def _req(method: str, ruri: str, local: int, *, branch: str = "z9hG4bKa1", extra: str = "",
         call_id: str = "core-1", to_tag: str = "", rport: bool = False) -> bytes:
    via = f"SIP/2.0/UDP 10.9.9.9:{local};branch={branch}" + (";rport" if rport else "")
    to = "<sip:bob@example.com>" + (f";tag={to_tag}" if to_tag else "")
    lines = [f"{method} {ruri} SIP/2.0", f"Via: {via}", "Max-Forwards: 70",
             "From: <sip:alice@example.com>;tag=a1", f"To: {to}", f"Call-ID: {call_id}",
             f"CSeq: 1 {method}"]
    if extra:
        lines.append(extra)
    lines.append("Content-Length: 0\r\n\r\n")
    return "\r\n".join(lines).encode()


async def _answer(peer: UdpPeer, port: int, data: bytes) -> Response:
    peer.send(data, port)
    return await peer.final()


async def test_malformed_request_gets_400_with_reason_and_tag() -> None:
    async with running_server(domain=["example.com"]) as srv:
        assert srv.udp_address is not None
        port = srv.udp_address[1]
        peer = await UdpPeer.open()
        bad = _req("OPTIONS", "sip:bob@example.com", peer.port).replace(b"Max-Forwards: 70",
                                                                         b"Max-Forwards: 300")
        resp = await _answer(peer, port, bad)
        assert resp.status == 400
        assert "Max-Forwards" in resp.reason
        assert resp.to.tag  # §8.2.6.2
        assert srv.core.c_reject.get("400") == 1
        # Without a Via there is nowhere to answer: a counted discard.
        peer.send(b"OPTIONS sip:x@example.com SIP/2.0\r\nCall-ID: z\r\n\r\n", port)
        assert await peer.silent(0.3)
        assert srv.core.c_drop.get("malformed") == 1
        assert len(srv.core.table) == 0  # nothing left behind
        peer.close()


async def test_options_to_the_server_is_stateless() -> None:
    async with running_server() as srv:
        assert srv.udp_address is not None
        port = srv.udp_address[1]
        peer = await UdpPeer.open()
        resp = await _answer(peer, port, _req("OPTIONS", f"sip:127.0.0.1:{port}", peer.port,
                                              rport=True))
        assert resp.status == 200
        assert "INVITE" in (resp.header("Allow") or "")
        # §11.2: what the server supports; §20.35: who answered.
        assert resp.header("Supported") == "gruu, outbound, path"
        assert resp.header("Server") == "signaling"
        assert resp.header("Accept") == "application/sdp"
        assert len(srv.core.table) == 0
        # RFC 3581 §4 and §18.2.1: the top Via tells the client where we saw it.
        top = resp.vias[0]
        assert top.params["received"] == "127.0.0.1"
        assert top.params["rport"] == str(peer.port)
        peer.close()


async def test_unsupported_scheme_and_extensions() -> None:
    async with running_server(domain=["example.com"]) as srv:
        assert srv.udp_address is not None
        port = srv.udp_address[1]
        peer = await UdpPeer.open()
        scheme = await _answer(peer, port, _req("OPTIONS", "urn:x:y", peer.port))
        assert scheme.status == 416
        ext = await _answer(peer, port, _req("REGISTER", "sip:example.com", peer.port,
                                             branch="z9hG4bKb2", extra="Require: foo, path"))
        assert ext.status == 420
        assert ext.header("Unsupported") == "foo"
        proxy_ext = await _answer(peer, port, _req("MESSAGE", "sip:bob@example.com", peer.port,
                                                   branch="z9hG4bKb3",
                                                   extra="Proxy-Require: bar"))
        assert proxy_ext.status == 420
        assert proxy_ext.header("Unsupported") == "bar"
        peer.close()


async def test_cancel_and_ack_matching_nothing() -> None:
    async with running_server(domain=["example.com"]) as srv:
        assert srv.udp_address is not None
        port = srv.udp_address[1]
        peer = await UdpPeer.open()
        cancel = await _answer(peer, port, _req("CANCEL", "sip:bob@example.com", peer.port))
        assert cancel.status == 481  # §9.2
        peer.send(_req("ACK", "sip:bob@example.com", peer.port, to_tag="t1"), port)
        assert await peer.silent(0.3)
        assert srv.proxy.c_proxy.get("ack_dropped") == 1
        peer.close()


class SlowRegistry(MemoryRegistry):
    """The in-memory registry, slowed down: a stand-in for a loaded backend."""

    async def register(self, aor: str, call_id: str, cseq: int,
                       changes: Sequence[ContactChange], now: float) -> list[Binding]:
        await asyncio.sleep(0.3)
        return await super().register(aor, call_id, cseq, changes, now)


async def test_full_queue_sheds_with_503_and_retry_after() -> None:
    async with running_server(SlowRegistry(), domain=["example.com"], workers=1,
                              queue_size=1, retry_after=7) as srv:
        assert srv.udp_address is not None
        port = srv.udp_address[1]
        peer = await UdpPeer.open()
        for i in range(4):
            peer.send(_req("REGISTER", "sip:example.com", peer.port, branch=f"z9hG4bKs{i}",
                           call_id=f"shed-{i}", extra="Contact: <sip:a@10.0.0.1>"), port)
        statuses = sorted([(await peer.final(3.0)).status for _ in range(4)])
        assert statuses.count(503) >= 2, statuses
        assert 200 in statuses
        assert srv.core.c_shed.get("queue_full") >= 2
        peer.close()


async def test_new_requests_get_503_while_shutting_down() -> None:
    async with running_server(domain=["example.com"]) as srv:
        assert srv.udp_address is not None
        port = srv.udp_address[1]
        peer = await UdpPeer.open()
        srv.core.accepting = False
        resp = await _answer(peer, port, _req("REGISTER", "sip:example.com", peer.port,
                                              extra="Contact: <sip:a@10.0.0.1>"))
        assert resp.status == 503
        assert resp.header("Retry-After") is not None
        srv.core.accepting = True
        peer.close()


@pytest.mark.parametrize("method, to_tag", [("CANCEL", ""), ("BYE", "t1")])
async def test_what_ends_held_work_is_not_shed_while_shutting_down(method: str,
                                                                   to_tag: str) -> None:
    # A draining server finishes what it holds: a CANCEL ends an INVITE (§9.2), a BYE a call
    # (a reload's new worker hands the old one the BYEs of its calls: signaling.handoff).
    # Neither is new work: each gets its answer (481 here: nothing held), never a 503.
    async with running_server(domain=["example.com"]) as srv:
        assert srv.udp_address is not None
        port = srv.udp_address[1]
        peer = await UdpPeer.open()
        srv.core.accepting = False
        answer = await _answer(peer, port, _req(method, "sip:bob@example.com", peer.port,
                                                to_tag=to_tag))
        assert answer.status == 481
        assert srv.core.c_shed.get("shutting_down") == 0
        srv.core.accepting = True
        peer.close()


async def test_stray_response_is_a_counted_drop() -> None:
    async with running_server() as srv:
        assert srv.udp_address is not None
        port = srv.udp_address[1]
        peer = await UdpPeer.open()
        peer.send(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.1.1.1;branch=z9hG4bKnone\r\n"
                  b"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: s\r\n"
                  b"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n", port)
        await asyncio.sleep(0.2)
        assert srv.core.c_drop.get("stray_response") == 1
        assert srv.core.c_resp_in.get("OPTIONS", "2xx", "udp") == 1
        peer.close()


async def test_respond_sends_the_bytes_the_tu_wrote_and_keeps_them() -> None:
    # A TU may hand a non-INVITE final response as bytes with a stub (the registrar's 200):
    # sent once as a first send, kept for retransmissions; a second final is discarded
    # (§17.2.2) and does not replace them.
    async with running_server() as srv:
        peer = await UdpPeer.open()
        req = parse_message(_req("OPTIONS", "sip:example.com", 5062))
        assert isinstance(req, Request)
        txn = NonInviteServerTransaction(req, srv.core.timers[False],
                                         Peer("udp", "127.0.0.1", peer.port))
        srv.core.table.add(txn)
        first = stateless_answer(req, 200, "OK", stateless_tail([("Date", "x")]))
        srv.core.respond(txn, response_summary(200, "OK", "OPTIONS"), first)
        assert isinstance(await peer.recv(), Response) and peer.raw == [first]
        assert srv.core.c_resp_out.get("OPTIONS", "2xx", "udp") == 1
        assert srv.core.c_retrans.get("sent") == 0
        srv.core.respond(txn, response_summary(200, "OK", "OPTIONS"),
                         stateless_answer(req, 200, "Other", stateless_tail([])))
        assert await peer.silent(0.2)
        assert txn.last_response_bytes == first
        srv.core.receive(serialize(req), Peer("udp", "127.0.0.1", peer.port))
        await peer.recv()
        assert peer.raw == [first, first]
        assert srv.core.c_retrans.get("sent") == 1
        peer.close()


async def test_server_header_is_configurable_and_may_be_off() -> None:
    for value, expected in (("Example SBC 1.0", "Example SBC 1.0"), ("off", None)):
        async with running_server(server_header=value) as srv:
            assert srv.udp_address is not None
            port = srv.udp_address[1]
            peer = await UdpPeer.open()
            options = await _answer(peer, port, _req("OPTIONS", f"sip:127.0.0.1:{port}",
                                                     peer.port))
            assert options.header("Server") == expected
            # An error answer of our own carries it too (a request for nobody here).
            unknown = await _answer(peer, port, _req("MESSAGE", "sip:nobody@127.0.0.1",
                                                     peer.port))
            assert unknown.status == 404 and unknown.header("Server") == expected
            peer.close()


async def test_a_silent_caller_gets_the_final_response_on_timer_g_until_h_only() -> None:
    """§17.2.1: an INVITE's non-2xx final is resent at Timer G (T1, doubling up to T2) while
    no ACK comes, and Timer H (64*T1) ends it: counted on the wire with a caller that never
    ACKs (issue 20 item 5 saw ~10 copies at the default timers: this is that schedule)."""
    import time

    from tests.peers.sipua import UdpUA

    t1, t2 = 0.05, 0.2
    schedule, t, interval = [], 0.0, t1
    while t + interval < 64 * t1:
        t += interval
        schedule.append(t)
        interval = min(2 * interval, t2)
    async with running_server(t1=t1, t2=t2) as srv:
        assert srv.udp_address is not None
        caller = await UdpUA("alice", "127.0.0.1", srv.udp_address[1]).start()
        try:
            invite = caller.invite("nobody-at-all")
            await caller.send(invite)
            first = await caller.response(404)
            started = time.monotonic()
            copies = [m for m in await caller.quiet(64 * t1 + 1.0)
                      if isinstance(m, Response) and m.call_id == invite.call_id]
            waited = time.monotonic() - started
        finally:
            await caller.close()
    assert first.to.tag and all(c.status == 404 and c.to.tag == first.to.tag for c in copies)
    # Never more than the schedule allows (a busy loop may fire a few late, hence fewer), and
    # retransmitting it did; copies past H would exceed the schedule within the extra second.
    assert 5 <= len(copies) <= len(schedule), (len(copies), schedule)
    assert waited >= 64 * t1 + 1.0
    assert srv.core.c_retrans.get("sent") == len(copies)


class _ClosedConnections(RecordingTransport):
    """A connection transport whose connections are all gone: every send fails."""

    def send(self, data: bytes, peer: Peer) -> bool:
        return False


def _options_to(peer: Peer) -> Request:
    return Request(method="OPTIONS", uri=SipURI("sip", peer.host, port=peer.port),
                   vias=[Via(peer.transport.upper(), "127.0.0.1", 5060,
                             {"branch": f"z9hG4bK{peer.host}.{peer.port}"})],
                   from_=NameAddr(SipURI("sip", "example.com", user="a"), None, {"tag": "f"}),
                   to=NameAddr(SipURI("sip", "example.com", user="b")), call_id="gone-1",
                   cseq=CSeq(1, "OPTIONS"), max_forwards=70)


async def test_a_request_that_cannot_be_sent_fails_its_transaction_at_once() -> None:
    """§17.1.4: a send to a connection that is gone is a transport error the TU learns of
    when it happens, not at Timer F 32 s later."""
    async with node() as n:
        n.core.transports.add(_ClosedConnections("tcp", reliable=True, port=5060))
        events: list[Event] = []
        peer = Peer("tcp", "192.0.2.7", 5070, "conn-1")
        txn = n.core.start_client_transaction(_options_to(peer), peer,
                                              lambda t, ev: events.append(ev))
        assert txn is not None and txn.terminated
        assert any(isinstance(ev, TransportFailed) for ev in events)


async def test_a_connection_a_sibling_reports_gone_fails_what_waits_on_it() -> None:
    """``connection_gone`` (a sibling worker could not write on the connection for us) fails
    the unanswered transactions to that connection, and only those."""
    async with node() as n:
        n.core.transports.add(RecordingTransport("tcp", reliable=True, port=5060))
        gone_events: list[Event] = []
        other_events: list[Event] = []
        gone = Peer("tcp", "192.0.2.7", 5070, "host/w1.3/17")
        other = Peer("tcp", "192.0.2.8", 5070, "host/w1.3/18")
        n.core.start_client_transaction(_options_to(gone), gone,
                                        lambda t, ev: gone_events.append(ev))
        n.core.start_client_transaction(_options_to(other), other,
                                        lambda t, ev: other_events.append(ev))
        n.core.connection_gone(gone)
        assert any(isinstance(ev, TransportFailed) for ev in gone_events)
        assert not any(isinstance(ev, TransportFailed) for ev in other_events)


async def test_a_register_over_a_connection_is_answered_without_a_transaction() -> None:
    """§17.2.2: over a reliable transport a non-INVITE server transaction has nothing to do
    (no retransmission to absorb, Timer J zero), so a REGISTER for the registrar that came
    over a connection is answered through a ``StreamAnswer``: its 200 goes back over that
    connection, counted, and no transaction is filed; a second final answer is dropped as a
    transaction would.  A REGISTER the edge relays still gets its transaction (its branch
    needs one), and one over UDP too."""
    async with node(relay="on") as n:
        tcp = RecordingTransport("tcp", reliable=True, port=5060)
        n.core.transports.add(tcp)
        conn = Peer("tcp", "192.0.2.10", 40000, "node-1/tcp/1")
        register = _req("REGISTER", "sip:example.com", 40000, call_id="reg-tcp",
                        extra="Contact: <sip:bob@192.0.2.10:40000;transport=tcp>")
        n.core.receive(register.replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP"), conn)
        ok, peer = await tcp.final()
        assert ok.status == 200 and peer == conn
        assert len(n.core.table) == 0
        assert n.core.c_resp_out.get("REGISTER", "2xx", "tcp") == 1
        answer = StreamAnswer(conn)
        req = parse_message(register)
        assert isinstance(req, Request)
        n.core.respond(cast(ServerTransaction, answer), make_response(req, 200))
        n.core.respond(cast(ServerTransaction, answer), make_response(req, 500))
        assert (await tcp.final())[0].status == 200
        assert tcp.sent.empty() and n.core.c_drop.get("late_response") == 1

        n.receive(_req("REGISTER", "sip:example.com", 5070, call_id="reg-udp",
                       extra="Contact: <sip:bob@192.0.2.10:5070>"))
        assert (await n.udp.final())[0].status == 200
        assert len(n.core.table) == 1  # §17.2.2: Timer J keeps it for retransmissions
        relayed = _req("REGISTER", "sip:127.0.0.1:5999", 40001, call_id="reg-relay",
                       extra="Contact: <sip:carol@192.0.2.10:40001>\r\nSupported: path")
        n.core.receive(relayed.replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP"),
                       Peer("tcp", "192.0.2.10", 40001, "node-1/tcp/2"))
        forwarded, _ = await tcp.next()
        assert isinstance(forwarded, Request) and forwarded.method == "REGISTER"
        assert len(n.core.table) == 3  # the relayed REGISTER's server and client transactions


async def test_a_register_duplicated_over_a_connection_is_absorbed() -> None:
    """§17.2: over a connection a client does not retransmit, but a duplicate (same branch)
    must still not be worked on twice, which made the registrar answer it 500 (§10.3 step 7:
    CSeq not higher).  One that arrives while the first is worked on is absorbed (Trying);
    one after the answer gets that same answer again (Completed), never a 500."""
    async with node() as n:
        tcp = RecordingTransport("tcp", reliable=True, port=5060)
        n.core.transports.add(tcp)
        conn = Peer("tcp", "192.0.2.10", 40000, "node-1/tcp/1")
        register = _req("REGISTER", "sip:example.com", 40000, call_id="reg-dup",
                        extra="Contact: <sip:bob@192.0.2.10:40000;transport=tcp>") \
            .replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP")
        n.core.receive(register, conn)
        n.core.receive(register, conn)  # in the same read: the first is not answered yet
        ok, peer = await tcp.final()
        assert ok.status == 200 and peer == conn
        n.core.receive(register, conn)
        again, peer = await tcp.final()
        assert (again.status, again.to.tag, peer) == (200, ok.to.tag, conn)
        await asyncio.sleep(0.2)  # a worker would have answered the duplicates by now
        assert tcp.sent.empty()
        assert n.core.c_retrans.get("received") == 2 and n.core.c_retrans.get("sent") == 1
        assert len(n.core.table) == 0


@pytest.mark.parametrize(("via", "kept"), [
    ("SIP/2.0/UDP 10.9.9.9:5070;branch=z9hG4bKs1;rport", True),
    ("SIP/2.0/UDP 10.9.9.9:5070;rport;branch=z9hG4bKs2", False),
    ("SIP/2.0/UDP 10.9.9.9:5070;branch=z9hG4bKs3;received=10.1.1.1;rport", False),
    ("SIP/2.0/UDP 10.9.9.9;branch=z9hG4bKs4", False),
])
async def test_a_stamped_via_reads_as_its_fields(via: str, kept: bool) -> None:
    """The stamped top Via (§18.2.1 received, RFC 3581 rport): its text, the received one with
    the values appended when a bare rport ends it, else rendered, reads back as its fields."""
    async with running_server() as srv:
        req = parse_message(_req("OPTIONS", "sip:bob@example.com", 5070)
                            .replace(b"SIP/2.0/UDP 10.9.9.9:5070;branch=z9hG4bKa1",
                                     via.encode()))
        assert isinstance(req, Request)
        srv.core._stamp_via(req, Peer("udp", "127.0.0.1", 5071))
        top = req.vias[0]
        assert (top.raw is not None) == kept
        assert str(top) == str(dataclasses.replace(top, raw=None))
        (parsed,) = parse_via_list(str(top))
        assert parsed == top and top.params["received"] == "127.0.0.1"


async def test_a_register_answered_at_once_over_udp_keeps_only_its_answer() -> None:
    """With ``answer_at_once`` (the in-memory registry: ``Server``) a REGISTER over UDP is
    answered within the receive call, without a worker or a server transaction: what is left
    of one once answered (§17.2.2 Completed) is its 200's bytes, resent to each
    retransmission of the request (counted as such) without the registrar seeing it again.
    An RFC 2543 REGISTER (no magic cookie: its key needs its To tag) keeps its transaction."""
    async with node() as n:
        n.core.answer_at_once = True
        register = _req("REGISTER", "sip:example.com", 5070, call_id="reg-now",
                        extra="Contact: <sip:bob@192.0.2.10:5070>")
        n.receive(register)
        assert not n.udp.sent.empty()  # answered before receive returned
        ok, peer = await n.udp.final()
        assert ok.status == 200 and peer == Peer("udp", "192.0.2.10", 5070)
        assert len(n.core.table) == 0 and len(n.core.answered) == 1
        assert n.registrar.c_register.get("200") == 1
        n.receive(register)
        again, _ = await n.udp.final()
        assert serialize(again) == serialize(ok)
        assert n.registrar.c_register.get("200") == 1  # absorbed, not registered twice
        assert n.core.c_retrans.get("received") == 1 and n.core.c_retrans.get("sent") == 1
        assert n.core.c_resp_out.get("REGISTER", "2xx", "udp") == 2

        old = _req("REGISTER", "sip:example.com", 5070, call_id="reg-2543", branch="x1",
                   extra="Contact: <sip:bob@192.0.2.10:5070>")
        n.receive(old)
        assert (await n.udp.final())[0].status == 200
        assert len(n.core.table) == 1 and len(n.core.answered) == 1

        n.core.answered.max_size = 1  # bounded as the table is: full, a 503 before handling
        n.receive(_req("REGISTER", "sip:example.com", 5070, call_id="reg-full",
                       branch="z9hG4bKfull", extra="Contact: <sip:bob@192.0.2.10:5070>"))
        full, _ = await n.udp.final()
        assert full.status == 503 and full.header("Retry-After") is not None
        assert n.core.c_shed.get("transaction_table_full") == 1
        assert n.registrar.c_register.get("200") == 2


class _WaitingRegistry(MemoryRegistry):
    async def register(self, aor: str, call_id: str, cseq: int,
                       changes: Sequence[ContactChange], now: float) -> list[Binding]:
        await asyncio.sleep(0)
        return await super().register(aor, call_id, cseq, changes, now)


async def test_a_tu_that_waits_on_work_answered_at_once_answers_from_the_callback() -> None:
    """``answer_at_once`` with a registry that waits (Redis): the REGISTER is answered when
    the wait is over, from the callback, without a task, worker or transaction; the next
    ones take the same path, and what waits is bounded (``max_waiting``: 503 past it)."""
    async with node() as n:
        n.registrar.registry = _WaitingRegistry()
        n.core.answer_at_once = True
        tasks = len(asyncio.all_tasks())
        n.receive(_req("REGISTER", "sip:example.com", 5070, call_id="reg-w1",
                       extra="Contact: <sip:bob@192.0.2.10:5070>"))
        assert n.udp.sent.empty() and n.core.waiting_count == 1 and len(n.core.waiting) == 1
        assert len(asyncio.all_tasks()) == tasks  # no task for it
        assert (await n.udp.final())[0].status == 200
        assert n.core.answer_at_once and n.core.waiting_count == 0 and not n.core.waiting
        assert len(n.core.answered) == 1
        n.receive(_req("REGISTER", "sip:example.com", 5070, call_id="reg-w2",
                       branch="z9hG4bKw2", extra="Contact: <sip:bob@192.0.2.10:5070>"))
        assert (await n.udp.final())[0].status == 200
        assert len(n.core.table) == 0 and len(n.core.answered) == 2

        n.core.max_waiting = 1
        n.receive(_req("REGISTER", "sip:example.com", 5070, call_id="reg-w3",
                       branch="z9hG4bKw3", extra="Contact: <sip:bob@192.0.2.10:5070>"))
        n.receive(_req("REGISTER", "sip:example.com", 5070, call_id="reg-w4",
                       branch="z9hG4bKw4", extra="Contact: <sip:bob@192.0.2.10:5070>"))
        full, _ = await n.udp.final()  # the second, refused at once (§21.5.4)
        assert full.call_id == "reg-w4" and full.status == 503
        assert full.header("Retry-After") is not None
        assert n.core.c_shed.get("queue_full") == 1
        ok, _ = await n.udp.final()
        assert ok.call_id == "reg-w3" and ok.status == 200
        assert n.registrar.c_register.get("200") == 3


async def test_a_register_over_a_connection_that_waits_at_once_absorbs_its_duplicate() -> None:
    """Over a connection the wait is the same (Redis): answered from the callback; a
    duplicate relayed meanwhile is absorbed through its ``StreamAnswer`` (§17.2.2), not
    worked on again, and nothing is left waiting."""
    async with node() as n:
        n.registrar.registry = _WaitingRegistry()
        n.core.answer_at_once = True
        tcp = RecordingTransport("tcp", reliable=True, port=5060)
        n.core.transports.add(tcp)
        conn = Peer("tcp", "192.0.2.10", 40000, "node-1/tcp/1")
        register = _req("REGISTER", "sip:example.com", 40000, call_id="reg-tcp-w",
                        extra="Contact: <sip:bob@192.0.2.10:40000;transport=tcp>")
        register = register.replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP")
        n.core.receive(register, conn)
        n.core.receive(register, conn)  # before the wait is over
        assert n.core.waiting_count == 1 and not n.core.waiting  # kept by key over UDP only
        ok, peer = await tcp.final()
        assert ok.status == 200 and peer == conn
        await asyncio.sleep(0.05)
        assert tcp.sent.empty() and n.core.waiting_count == 0
        assert n.registrar.c_register.get("200") == 1 and len(n.core.table) == 0


class _FailingRegistry(MemoryRegistry):
    async def register(self, aor: str, call_id: str, cseq: int,
                       changes: Sequence[ContactChange], now: float) -> list[Binding]:
        await asyncio.sleep(0)
        raise RuntimeError("a bug past the wait")


async def test_work_answered_at_once_that_fails_after_its_wait_is_answered_500() -> None:
    """A failure after the wait costs that request a 500 (§21.5.1), kept for its
    retransmissions as any answer; nothing waits any more."""
    async with node() as n:
        n.registrar.registry = _FailingRegistry()
        n.core.answer_at_once = True
        data = _req("REGISTER", "sip:example.com", 5070, call_id="reg-bug",
                    branch="z9hG4bKbug", extra="Contact: <sip:bob@192.0.2.10:5070>")
        n.receive(data)
        failed, _ = await n.udp.final()
        assert failed.status == 500 and n.core.c_errors.get() == 1
        assert n.core.waiting_count == 0 and len(n.core.answered) == 1
        n.receive(data)
        again, _ = await n.udp.final()
        assert again.status == 500 and n.core.c_errors.get() == 1


async def test_a_retransmission_while_work_answered_at_once_waits_is_absorbed() -> None:
    """The wait above, over UDP: a retransmission that comes while the REGISTER waits is
    absorbed (§17.2.2: nothing while it is worked on) and one after it gets the same 200; the
    REGISTER is worked on once (twice, §10.3 step 7 would answer the second 500)."""
    async with node() as n:
        n.registrar.registry = _WaitingRegistry()
        n.core.answer_at_once = True
        data = _req("REGISTER", "sip:example.com", 5070, call_id="reg-rt", branch="z9hG4bKrt",
                    extra="Contact: <sip:bob@192.0.2.10:5070>")
        n.receive(data)
        n.receive(data)  # before the registry's wait is over
        first, _ = await n.udp.final()
        assert first.status == 200
        n.receive(data)
        again, _ = await n.udp.final()
        assert again.status == 200 and again.to.tag == first.to.tag
        await asyncio.sleep(0.05)
        assert n.udp.sent.empty()  # nothing else was answered
        assert n.registrar.c_register.get("200") == 1
