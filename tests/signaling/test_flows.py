"""signaling/flows.py with the whole server: RFC 5626 flows (one per instance, the next when one
is gone, 430 when none is left), GRUUs (RFC 5627) and clients behind NAT, over real sockets."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Iterator

import pytest

from protocols import stun
from protocols.sip.message import NameAddr, Request, Response, SipURI
from protocols.sip.uri import parse_uri
from signaling.flows import FlowTable
from signaling.server import Server
from tests.peers.sipua import UA, StreamUA, UdpUA
from tests.signaling.inproc import running_server

URN_A = "urn:uuid:00000000-0000-1000-8000-00000000000a"
URN_B = "urn:uuid:00000000-0000-1000-8000-00000000000b"


def _udp(server: Server) -> int:
    assert server.udp_address is not None
    return server.udp_address[1]


def _outbound(ua: UA, urn: str, reg_id: int | str | None, supported: str = "outbound",
              contact: NameAddr | None = None, expires: int = 600) -> Request:
    """A REGISTER of ``ua`` with an instance (and a reg-id) and ``Supported``."""
    req = ua.register(expires=expires, contact=contact)
    params = dict(req.contacts[0].params)
    params["+sip.instance"] = f'"<{urn}>"'
    if reg_id is not None:
        params["reg-id"] = str(reg_id)
    req.contacts = [NameAddr(req.contacts[0].uri, params=params)]
    req.extra.append(("Supported", supported))
    return req


async def _registered(ua: UA, req: Request) -> Response:
    await ua.send(req)
    return await ua.response(200, "REGISTER")


async def _invite_final(caller: UA, callee: str) -> Response:
    invite = caller.invite(callee)
    await caller.send(invite)
    msg = await caller.recv(lambda m: isinstance(m, Response) and m.status >= 200
                            and m.call_id == invite.call_id)
    assert isinstance(msg, Response)
    return msg


def test_flow_table_lapse_and_bound() -> None:
    now = [100.0]
    table = FlowTable(flow_timer=10, clock=lambda: now[0], max_flows=2)
    assert table.alive("192.0.2.1", 5060)  # never seen: not known to have failed
    table.seen("192.0.2.1", 5060)
    now[0] += 20  # 2 x Flow-Timer: one keep-alive may be missed
    assert table.alive("192.0.2.1", 5060)
    now[0] += 0.5
    assert not table.alive("192.0.2.1", 5060)
    table.seen("192.0.2.1", 5060)
    assert table.alive("192.0.2.1", 5060)
    table.seen("192.0.2.2", 1)
    table.seen("192.0.2.3", 1)  # over the bound: the oldest is forgotten
    assert len(table) == 2
    now[0] += 100
    assert table.alive("192.0.2.1", 5060) and not table.alive("192.0.2.3", 1)


async def test_outbound_register_gets_require_flow_timer_and_one_binding_per_reg_id() -> None:
    """RFC 5626 §6: the 200 says ``Require: outbound`` and (§5.4) ``Flow-Timer``, echoes the
    instance and reg-id; a new REGISTER on the same reg-id from another Contact replaces the
    binding, another reg-id adds a second flow; without ``Supported: outbound`` reg-id is
    ignored."""
    async with running_server(flow_timer=30) as server:
        ua = await UdpUA("ob1", "127.0.0.1", _udp(server)).start()
        other = await UdpUA("ob1", "127.0.0.1", _udp(server)).start()
        try:
            ok = await _registered(ua, _outbound(ua, URN_A, 1))
            assert ok.require == ["outbound"] and ok.header("Flow-Timer") == "30"
            [contact] = ok.contacts
            assert contact.params["+sip.instance"] == f'"<{URN_A}>"'
            assert contact.params["reg-id"] == "1"
            ok = await _registered(other, _outbound(other, URN_A, 1))  # same flow id, new 5-tuple
            assert [str(c.uri) for c in ok.contacts] == [str(other.contact.uri)]
            ok = await _registered(ua, _outbound(ua, URN_A, 2))
            assert sorted(c.params["reg-id"] or "" for c in ok.contacts) == ["1", "2"]
            plain = await _registered(ua, _outbound(ua, URN_B, 1, supported="path"))
            assert plain.require == [] and plain.header("Flow-Timer") is None
            bindings = await server.registry.lookup("sip:ob1@127.0.0.1", 0)
            assert sorted((b.reg_id or 0, b.reach_source) for b in bindings) == [
                (0, False), (1, True), (2, True)]
        finally:
            await ua.close()
            await other.close()


async def test_two_reg_ids_in_one_register_and_a_first_hop_without_ob() -> None:
    """§6: two Contacts with reg-id in one REGISTER is 400, so is a reg-id beyond 32 bits;
    through a proxy (two Vias), a first Path value without ``ob`` (an edge proxy without
    outbound) or no Path at all is 439; nothing is stored for any of them."""
    async with running_server() as server:
        ua = await UdpUA("ob2", "127.0.0.1", _udp(server)).start()
        try:
            req = _outbound(ua, URN_A, 1)
            second = NameAddr(SipURI("sip", "127.0.0.1", user="ob2", port=9),
                              params={"+sip.instance": f'"<{URN_A}>"', "reg-id": "2"})
            req.contacts.append(second)
            await ua.send(req)
            assert (await ua.response(400, "REGISTER")).reason.startswith("More than one")
            for bad in ("4294967296", "9" * 5000):
                await ua.send(_outbound(ua, URN_A, bad))
                await ua.response(400, "REGISTER")
            for path in ("<sip:edge.example.net;lr>", None):  # through a proxy (two Vias)
                req = _outbound(ua, URN_A, 1)
                req.vias.insert(0, ua.via())
                if path is not None:
                    req.extra.append(("Path", path))
                await ua.send(req)
                await ua.response(439, "REGISTER")
            req = _outbound(ua, URN_A, 1)
            req.vias.insert(0, ua.via())
            req.extra.append(("Path", "<sip:127.0.0.1:9;lr;ob>"))
            ok = await _registered(ua, req)
            assert ok.require == ["outbound"]
            bindings = await server.registry.lookup("sip:ob2@127.0.0.1", 0)
            assert [(b.reg_id, b.path) for b in bindings] == [(1, ("<sip:127.0.0.1:9;lr;ob>",))]
        finally:
            await ua.close()


async def test_tcp_flows_one_target_per_instance_the_other_when_one_closes() -> None:
    """Two flows of one instance over two TCP connections: a request goes over one only (§7),
    the lowest reg-id; when its connection closes the other flow takes the request; when
    both are closed the bindings stay and the answer is 430 Flow Failed (§5.3), not 480,
    until the instance registers a flow again, which takes the next request."""
    async with running_server(sip_tcp="127.0.0.1:0") as server:
        port = server.stream_addresses["tcp"][1]
        conns = server.streams["tcp"].conns
        flow1 = await StreamUA("obt", "127.0.0.1", _udp(server), port).start()
        flow2 = await StreamUA("obt", "127.0.0.1", _udp(server), port).start()
        caller = await UdpUA("caller", "127.0.0.1", _udp(server)).start()
        again: StreamUA | None = None
        try:
            await _registered(flow1, _outbound(flow1, URN_A, 1))
            await _registered(flow2, _outbound(flow2, URN_A, 2))
            await caller.send(caller.invite("obt"))
            got = await flow1.request("INVITE")
            assert str(got.uri) == str(flow1.contact.uri)
            assert not [m for m in await flow2.quiet(0.5) if isinstance(m, Request)]
            await flow1.send(flow1.reply(got, 486, tag="busy"))
            assert (await caller.response(486)).status == 486
            await flow1.close()
            await _until(lambda: len(conns) == 1)  # the connection's close reaches the server
            await caller.send(caller.invite("obt"))
            got = await flow2.request("INVITE")
            assert str(got.uri) == str(flow2.contact.uri)
            await flow2.send(flow2.reply(got, 486, tag="busy"))
            await caller.response(486)
            await flow2.close()
            await _until(lambda: not conns)
            assert len(await server.registry.lookup("sip:obt@127.0.0.1", time.time())) == 2
            final = await _invite_final(caller, "obt")
            assert (final.status, final.reason) == (430, "Flow Failed")
            again = await StreamUA("obt", "127.0.0.1", _udp(server), port).start()
            await _registered(again, _outbound(again, URN_A, 1))
            await caller.send(caller.invite("obt"))
            got = await again.request("INVITE")
            await again.send(again.reply(got, 486, tag="busy"))
            await caller.response(486)
        finally:
            await caller.close()
            await flow2.close()
            if again is not None:
                await again.close()


@pytest.mark.parametrize("status", [430, 408])
async def test_a_flow_that_answers_430_or_408_gives_way_to_the_next_flow_of_its_instance(
        status: int) -> None:
    """RFC 5626 §5.3, §7: a phone with two flows through two edge proxies (played here by the
    test: each keeps one flow and answers 430 when it has lost it, or 408).  A request goes
    to the first flow only; its edge's 430 or 408 sends it to the second flow, whose answer
    is the caller's; when both edges answer so, the caller gets that answer."""
    async with running_server() as server:
        port = _udp(server)
        edges = [await UdpUA("obe", "127.0.0.1", port).start() for _ in range(2)]
        caller = await UdpUA("caller", "127.0.0.1", port).start()
        try:
            for reg_id, edge in enumerate(edges, 1):
                req = _outbound(edge, URN_A, reg_id)
                # The edge's own Via above the phone's, and its Path with ob (§5.1).
                req.vias.insert(0, edge.via())
                req.extra.append(("Path", f"<sip:127.0.0.1:{edge.port};lr;ob>"))
                await _registered(edge, req)
            await caller.send(caller.invite("obe"))
            got = await edges[0].request("INVITE")
            assert not [m for m in await edges[1].quiet(0.3) if isinstance(m, Request)]
            await edges[0].send(edges[0].reply(got, status, tag="lost"))
            got = await edges[1].request("INVITE")
            route = got.routes[0].uri if got.routes else None
            assert isinstance(route, SipURI) and route.port == edges[1].port
            await edges[1].send(edges[1].reply(got, 486, tag="busy"))
            await caller.response(486)
            assert server.proxy.c_proxy.get("flow_failed_next_flow") == 1
            invite = caller.invite("obe")
            await caller.send(invite)
            for edge in edges:
                await edge.send(edge.reply(await edge.request("INVITE"), status, tag="lost"))
            await caller.response(status)
        finally:
            for ua in (*edges, caller):
                await ua.close()


async def test_a_flow_that_closes_under_a_request_gives_way_to_the_next_flow() -> None:
    """A flow's connection closes while the INVITE sent over it waits for its first answer:
    the branch fails at once (§17.1.4; its answer could only have come over that connection),
    not at Timer B, and the instance's other flow gets the INVITE (RFC 5626 §5.3)."""
    async with running_server(sip_tcp="127.0.0.1:0") as server:
        port = server.stream_addresses["tcp"][1]
        flow1 = await StreamUA("obc", "127.0.0.1", _udp(server), port).start()
        flow2 = await StreamUA("obc", "127.0.0.1", _udp(server), port).start()
        caller = await UdpUA("caller", "127.0.0.1", _udp(server)).start()
        try:
            await _registered(flow1, _outbound(flow1, URN_A, 1))
            await _registered(flow2, _outbound(flow2, URN_A, 2))
            await caller.send(caller.invite("obc"))
            await flow1.request("INVITE")
            await flow1.close()  # no answer: the connection goes
            got = await flow2.request("INVITE")
            await flow2.send(flow2.reply(got, 486, tag="busy"))
            await caller.response(486)
            assert server.proxy.c_proxy.get("flow_failed_next_flow") == 1
        finally:
            await caller.close()
            await flow2.close()


async def test_a_flow_that_never_answers_gives_way_to_the_next_flow() -> None:
    """RFC 5626 §7: a branch that times out counts as a 408, after which the instance's next
    flow gets the request (T1 of 50 ms: Timer B fires after 3.2 s).  An INVITE over two
    UDP flows: the first stays silent, the second answers, and its answer is the caller's;
    a flow that gave a final answer other than 408 or 430 is not followed by another."""
    async with running_server(t1=0.05, t2=0.2) as server:
        port = _udp(server)
        flows = [await UdpUA("obt", "127.0.0.1", port).start() for _ in range(2)]
        caller = await UdpUA("caller", "127.0.0.1", port).start()
        try:
            for reg_id, flow in enumerate(flows, 1):
                await _registered(flow, _outbound(flow, URN_A, reg_id))
            await caller.send(caller.invite("obt"))
            await flows[0].request("INVITE")  # and no answer, nor to its retransmissions
            got = await flows[1].request("INVITE")
            await flows[1].send(flows[1].reply(got, 200, tag="b"))
            await caller.response(200)
            assert server.proxy.c_proxy.get("flow_failed_next_flow") == 1
            await caller.send(caller.invite("obt"))
            await flows[0].send(flows[0].reply(await flows[0].request("INVITE"), 486, tag="x"))
            await caller.response(486)
            assert not [m for m in await flows[1].quiet(0.3) if isinstance(m, Request)]
        finally:
            for ua in (*flows, caller):
                await ua.close()


async def test_timer_c_on_a_flow_gives_way_to_the_next_flow_unless_it_rang() -> None:
    """RFC 3261 §16.8 with RFC 5626 §7: Timer C (shortened here to one second through the
    server's timer values, far below Timer B) fires on a branch to one flow.  A flow that
    sent nothing, or only a 100 (hop by hop: nothing from the instance), counts as a 408:
    the instance's next flow gets the INVITE, and the first flow's transaction is CANCELled
    when it had its 100.  A flow that rang (180) is CANCELled and its 487 is the caller's
    answer: the instance answered, so no other flow is tried."""
    async with running_server(ring_timeout=600) as server:
        core = server.core
        core.timers[False] = dataclasses.replace(core.timers[False], c=1.0)
        port = _udp(server)
        flows = [await UdpUA("obc", "127.0.0.1", port).start() for _ in range(2)]
        caller = await UdpUA("caller", "127.0.0.1", port).start()
        try:
            for reg_id, flow in enumerate(flows, 1):
                await _registered(flow, _outbound(flow, URN_A, reg_id))
            for first in ("silent", "trying"):
                invite = caller.invite("obc")
                await caller.send(invite)
                got = await flows[0].request("INVITE")
                if first == "trying":
                    await flows[0].send(flows[0].reply(got, 100))
                    cancel = await flows[0].request("CANCEL", timeout=3.0)
                    assert cancel.vias[0].branch == got.vias[0].branch
                    await flows[0].send(flows[0].reply(cancel, 200))
                    await flows[0].send(flows[0].reply(got, 487, tag="late"))
                second = await flows[1].request("INVITE", timeout=3.0)
                await flows[1].send(flows[1].reply(second, 486, tag="busy"))
                final = await caller.response(486)
                assert final.call_id == invite.call_id
                await caller.send(caller.ack_non2xx(invite, final))
            assert server.proxy.c_proxy.get("flow_failed_next_flow") == 2

            invite = caller.invite("obc")
            await caller.send(invite)
            got = await flows[0].request("INVITE")
            await flows[0].send(flows[0].reply(got, 180, tag="ring"))
            cancel = await flows[0].request("CANCEL", timeout=3.0)
            await flows[0].send(flows[0].reply(cancel, 200))
            await flows[0].send(flows[0].reply(got, 487, tag="ring"))
            final = await caller.response(487)
            assert final.call_id == invite.call_id
            assert not [m for m in await flows[1].quiet(0.3) if isinstance(m, Request)
                        and m.method == "INVITE"]
            assert server.proxy.c_proxy.get("flow_failed_next_flow") == 2
        finally:
            for ua in (*flows, caller):
                await ua.close()


async def _until(ready: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait (bounded generously: CI is a busy machine) until ``ready()``."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_udp_flows_kept_alive_by_stun_and_430_when_every_flow_lapsed() -> None:
    """UDP flows live by their keep-alives (§4.4.2): with Flow-Timer 1 s, a flow silent for
    over 2 s has failed.  The flow whose STUN keep-alives go on takes the request; when its
    keep-alives stop too, the answer is 430 Flow Failed (§5.3, §11.6)."""
    async with running_server(flow_timer=1) as server:
        port = _udp(server)
        silent = await UdpUA("obu", "127.0.0.1", port).start()
        chatty = await UdpUA("obu", "127.0.0.1", port).start()
        caller = await UdpUA("caller", "127.0.0.1", port).start()
        stop = asyncio.Event()

        async def keep_alive() -> None:
            while not stop.is_set():
                await chatty.send_bytes(stun.binding_request())
                await asyncio.sleep(0.2)

        try:
            await _registered(silent, _outbound(silent, URN_A, 1))
            await _registered(chatty, _outbound(chatty, URN_A, 2))
            task = asyncio.get_running_loop().create_task(keep_alive())
            await asyncio.sleep(3.0)  # flow 1: no keep-alive for > 2 x Flow-Timer
            await caller.send(caller.invite("obu"))
            got = await chatty.request("INVITE")
            await chatty.send(chatty.reply(got, 486, tag="b"))
            await caller.response(486)
            assert not [m for m in silent.received if isinstance(m, Request)]
            stop.set()
            await task
            await asyncio.sleep(3.0)
            final = await _invite_final(caller, "obu")
            assert (final.status, final.reason) == (430, "Flow Failed")
            assert 'signaling_sip_stun_keepalives_total' in server.metrics.exposition().decode()
        finally:
            stop.set()
            for ua in (silent, chatty, caller):
                await ua.close()


async def test_stun_keepalive_on_the_sip_port_is_answered_with_the_source() -> None:
    """RFC 5626 §8: a STUN Binding request on the SIP UDP port gets a Binding response whose
    XOR-MAPPED-ADDRESS is the address the server saw; a broken one is a counted drop."""
    async with running_server() as server:
        ua = await UdpUA("stun", "127.0.0.1", _udp(server)).start()
        try:
            await ua.send_bytes(stun.binding_request(fingerprint=True))
            for _ in range(100):
                if ua.stun:
                    break
                await asyncio.sleep(0.05)
            msg = stun.parse(ua.stun[0])
            assert msg is not None and msg.type == stun.BINDING_SUCCESS
            assert stun.mapped_address(msg) == ("127.0.0.1", ua.port)
            await ua.send_bytes(stun.binding_request()[:10])
        finally:
            await ua.close()
        for _ in range(100):
            text = server.metrics.exposition().decode()
            if 'reason="stun_invalid"' in text:
                break
            await asyncio.sleep(0.02)
        assert 'signaling_sip_dropped_total{reason="stun_invalid"} 1.0' in text
        assert "signaling_sip_stun_keepalives_total 1.0" in text


async def test_stun_from_a_blocked_source_is_not_answered() -> None:
    """Keep-alives go through the source guard as SIP does: a blocked address gets nothing."""
    async with running_server() as server:
        assert server.core.guard is not None
        server.core.guard.block("127.0.0.1", "test", server.core.now(), 60)
        ua = await UdpUA("stun", "127.0.0.1", _udp(server)).start()
        try:
            await ua.send_bytes(stun.binding_request())
            await ua.quiet(0.5)
            assert ua.stun == []
            server.core.guard.lift("127.0.0.1")
            await ua.send_bytes(stun.binding_request())
            for _ in range(100):
                if ua.stun:
                    break
                await asyncio.sleep(0.05)
            assert len(ua.stun) == 1
        finally:
            await ua.close()


async def test_private_contact_is_reached_at_the_source_with_its_contact_as_uri() -> None:
    """A UDP phone behind NAT registers a private Contact (192.168.1.20): the INVITE for it
    goes to the address its REGISTER came from, its Request-URI the registered Contact, and
    the call completes with in-dialog requests both ways."""
    async with running_server() as server:
        phone = await UdpUA("natted", "127.0.0.1", _udp(server)).start()
        caller = await UdpUA("caller", "127.0.0.1", _udp(server)).start()
        try:
            private = NameAddr(SipURI("sip", "192.168.1.20", user="natted", port=5060))
            await _registered(phone, phone.register(contact=private))
            [binding] = await server.registry.lookup("sip:natted@127.0.0.1", 0)
            assert binding.reach_source and binding.source == f"127.0.0.1:{phone.port}"
            invite = caller.invite("natted")
            await caller.send(invite)
            got = await phone.request("INVITE")
            assert str(got.uri) == "sip:natted@192.168.1.20:5060"
            # The whole call: in-dialog requests both ways reach the phone at its source too
            # (the dialog keeps the peer each side was reached at), whatever its Contact says.
            answer = phone.reply(got, 200, tag="n", body=b"v=0\r\n")
            answer.contacts = [private]
            await phone.send(answer)
            ok = await caller.response(200)
            leg = caller.uac_leg(invite, ok)
            await caller.send(caller.in_dialog(leg, "ACK", cseq=1))
            await phone.request("ACK")
            callee_leg = phone.uas_leg(got, "n")
            await phone.send(phone.in_dialog(callee_leg, "INFO"))
            info = await caller.request("INFO")
            await caller.send(caller.reply(info, 200))
            await phone.response(200, "INFO")
            await caller.send(caller.in_dialog(leg, "BYE"))
            bye = await phone.request("BYE")
            assert str(bye.uri) == "sip:natted@192.168.1.20:5060"
            await phone.send(phone.reply(bye, 200))
            await caller.response(200, "BYE")
        finally:
            await phone.close()
            await caller.close()


async def test_public_contact_equal_to_a_rewritten_via_is_natted_a_third_party_is_not() -> None:
    """Rule 2 of ``behind_nat``: the Contact equals the Via sent-by and both differ from the
    source (the UA does not know its NAT's address): reached at the source.  A Contact naming
    another address than the Via (registered on another device's behalf) is left alone."""
    async with running_server() as server:
        phone = await UdpUA("pub", "127.0.0.1", _udp(server)).start()
        try:
            req = phone.register(contact=NameAddr(SipURI("sip", "203.0.113.5", user="pub",
                                                         port=5062)))
            req.vias[0] = req.vias[0].__class__("UDP", "203.0.113.5", 5062,
                                                dict(req.vias[0].params))
            await _registered(phone, req)
            third = phone.register(contact=NameAddr(SipURI("sip", "198.51.100.7", user="pub")))
            third.vias[0] = third.vias[0].__class__("UDP", "203.0.113.5", 5062,
                                                    dict(third.vias[0].params))
            await _registered(phone, third)
            got = {b.contact: b.reach_source
                   for b in await server.registry.lookup("sip:pub@127.0.0.1", 0)}
            assert got == {"sip:pub@203.0.113.5:5062": True, "sip:pub@198.51.100.7": False}
        finally:
            await phone.close()


def _gruus(resp: Response) -> Iterator[tuple[str, str, str]]:
    for c in resp.contacts:
        yield (c.params["+sip.instance"] or "", (c.params["pub-gruu"] or "").strip('"'),
               (c.params["temp-gruu"] or "").strip('"'))


async def test_gruus_route_to_their_instance_only() -> None:
    """RFC 5627: with ``Supported: gruu`` each instance's Contact in the 200 carries pub-gruu
    and temp-gruu; a request to either reaches that instance only; a forged temp-gruu is
    404; once the instance is gone its GRUUs give 480; a temp-gruu issued under an earlier
    Call-ID no longer routes (§6)."""
    async with running_server() as server:
        port = _udp(server)
        a = await UdpUA("gr", "127.0.0.1", port).start()
        b = await UdpUA("gr", "127.0.0.1", port).start()
        caller = await UdpUA("caller", "127.0.0.1", port).start()
        try:
            ok_a = await _registered(a, _outbound(a, URN_A, None, supported="gruu"))
            ok_b = await _registered(b, _outbound(b, URN_B, None, supported="gruu, path"))
            by_instance = {inst: (pub, temp) for inst, pub, temp in _gruus(ok_b)}
            assert set(by_instance) == {f'"<{URN_A}>"', f'"<{URN_B}>"'}
            pub_a, _ = by_instance[f'"<{URN_A}>"']
            _, temp_b = by_instance[f'"<{URN_B}>"']
            assert pub_a == f"sip:gr@127.0.0.1;gr={URN_A}"
            assert "gr" not in temp_b.split("@")[0] or temp_b.startswith("sip:tgruu.")
            assert [temp for _, _, temp in _gruus(ok_a)] != [""]
            for target, reached, other in ((pub_a, a, b), (temp_b, b, a)):
                invite = caller.invite("x")
                invite.uri = parse_uri(target)
                await caller.send(invite)
                got = await reached.request("INVITE")
                await reached.send(reached.reply(got, 486, tag="g"))
                await caller.response(486)
                assert not [m for m in await other.quiet(0.3)
                            if isinstance(m, Request) and m.method == "INVITE"]
            forged = caller.invite("x")
            forged.uri = parse_uri(temp_b.replace("tgruu.", "tgruu.aa", 1))
            await caller.send(forged)
            await caller.response(404)
            await a.send(_outbound(a, URN_A, None, supported="gruu", expires=0))
            await a.response(200, "REGISTER")
            gone = caller.invite("x")
            gone.uri = parse_uri(pub_a)
            await caller.send(gone)
            await caller.response(480)
            # b registers again under a new Call-ID: its first temp-gruu is void (§6)
            await _registered(b, _outbound(b, URN_B, None, supported="gruu"))
            stale = caller.invite("x")
            stale.uri = parse_uri(temp_b)
            await caller.send(stale)
            await caller.response(480)
        finally:
            for ua in (a, b, caller):
                await ua.close()


@pytest.mark.parametrize("tag", ["outbound", "gruu"])
async def test_options_lists_the_new_option_tags(tag: str) -> None:
    async with running_server() as server:
        ua = await UdpUA("opt", "127.0.0.1", _udp(server)).start()
        try:
            req = ua.register()
            req.method = "OPTIONS"
            req.cseq = req.cseq.__class__(req.cseq.seq, "OPTIONS")
            req.contacts = []
            req.uri = SipURI("sip", "127.0.0.1", port=_udp(server))
            await ua.send(req)
            ok = await ua.response(200, "OPTIONS")
            assert tag in (ok.header("Supported") or "")
        finally:
            await ua.close()
