"""signaling/flows.py with real peers by others: behind Kamailio as an edge proxy (RFC 3327
Path, RFC 5626 flows through two edges) and baresip with outbound and GRUU (test_flows.py has
the rules over the test's own sockets; split off to keep each module under ~800 lines)."""

from __future__ import annotations

import asyncio
import os
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.serverproc import (
    ServerProcess,
    free_tcp_port,
)
from protocols.sip.message import NameAddr, Request, SipURI
from protocols.sip.uri import parse_uri
from tests.peers import baresip
from tests.peers.kamailio import Kamailio
from tests.peers.sipua import UA, UdpUA
from tests.signaling.test_flows import URN_A, _invite_final, _outbound, _registered
from tests.siptools import UdpClient

# --- behind Kamailio as an edge proxy (RFC 3327 Path) -------------------------------------------

#: Kamailio as the edge proxy in front of our registrar (written for this test): a REGISTER
#: gets a Path with the address it came from (``add_path_received``, RFC 3327 §5.1) and goes on
#: to us; a request from us carries that Path as its Route and the edge sends it on to the
#: phone (the path module's ``use_received``), record-routing INVITEs so the dialog stays on
#: the edge; anything else from a phone goes on to us.
KAMAILIO_EDGE = """#!KAMAILIO
debug=2
log_stderror=yes
fork=yes
children=1
tcp_children=1
disable_tcp=yes
auto_aliases=no
listen=udp:127.0.0.1:{port}
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "path.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "siputils.so"
loadmodule "textops.so"
modparam("path", "use_received", 1)

request_route {{
    if (!mf_process_maxfwd_header("10")) {{
        sl_send_reply("483", "Too Many Hops");
        exit;
    }}
    if (has_totag()) {{
        if (loose_route()) {{
            t_relay();
        }} else if (!is_method("ACK")) {{
            sl_send_reply("404", "Not here");
        }}
        exit;
    }}
    if (is_method("REGISTER")) {{
        add_path_received();
        $du = "sip:127.0.0.1:{core}";
        t_relay();
        exit;
    }}
    # A request from the core carries the Path as its Route: loose_route consumes it and the
    # path module points $du at the phone (the Path's received).  Nothing set it: a request
    # from a phone, for the core.
    loose_route();
    if ($du == $null) {{
        $du = "sip:127.0.0.1:{core}";
    }}
    if (is_method("INVITE")) {{
        record_route();
    }}
    t_relay();
}}
"""


@pytest.fixture
def edge_and_core(tmp_path: Path) -> Iterator[tuple[ServerProcess, Kamailio]]:
    with ServerProcess("--log-level", "warning", ws=False) as core:
        edge = Kamailio(KAMAILIO_EDGE.replace("{core}", str(core.udp_port))
                        .replace("{{", "{").replace("}}", "}"), tmp_path).start()
        try:
            yield core, edge
        finally:
            edge.stop()
    assert "Traceback" not in core.log


async def test_phone_behind_a_kamailio_edge_is_called_through_it(
        edge_and_core: tuple[ServerProcess, Kamailio]) -> None:
    """A phone registers through Kamailio, which adds a Path; the 200 brings the Path back
    (RFC 3327 §5.3); a call to the phone goes through the edge (its Via above ours on the
    INVITE, and its Record-Route), and ACK and BYE follow it there.  An outbound REGISTER
    through this edge, which puts no ``ob`` in its Path, is answered 439 (RFC 5626 §6).  A
    private Contact registered through the edge is reached through it too; registered without
    ``Supported: path`` it is refused 420 (§5.3, the default ``path_mode``)."""
    core, edge = edge_and_core
    phone = await UdpUA("edged", "127.0.0.1", edge.port).start()
    caller = await UdpUA("caller", "127.0.0.1", core.udp_port).start()
    try:
        req = phone.register()
        req.extra.append(("Supported", "path"))
        ok = await _registered(phone, req)
        [path] = ok.headers("Path")
        assert f"127.0.0.1:{edge.port}" in path and "received=" in path, path
        invite = caller.invite("edged")
        await caller.send(invite)
        got = await phone.request("INVITE")
        assert str(got.uri) == str(phone.contact.uri)
        assert [v.port for v in got.vias[:2]] == [edge.port, core.udp_port], got.vias
        assert any(f":{edge.port}" in str(r) for r in got.record_routes)
        await phone.send(phone.reply(got, 200, tag="p", body=b"v=0\r\n"))
        answer = await caller.response(200)
        leg = caller.uac_leg(invite, answer)
        await caller.send(caller.in_dialog(leg, "ACK", cseq=1))
        ack = await phone.request("ACK")
        assert ack.vias[0].port == edge.port
        await caller.send(caller.in_dialog(leg, "BYE"))
        bye = await phone.request("BYE")
        assert bye.vias[0].port == edge.port
        await phone.send(phone.reply(bye, 200))
        await caller.response(200, "BYE")
        await phone.send(_outbound(phone, URN_A, 1, supported="outbound, path"))
        await phone.response(439, "REGISTER")
        # A phone behind NAT registering its private Contact through the edge: the edge's
        # Path (received=) reaches it, the Request-URI is its registered Contact.
        private = NameAddr(SipURI("sip", "10.20.30.40", user="edged", port=5060))
        await phone.send(phone.register(contact=private))
        # RFC 3327 §5.3: the edge's Path on a REGISTER whose UA does not support path: 420.
        refused = await phone.response(420, "REGISTER")
        assert refused.header("Unsupported") == "path"
        req = phone.register(contact=private)
        req.extra.append(("Supported", "path"))
        await _registered(phone, req)
        await caller.send(caller.invite("edged"))
        got = await phone.request("INVITE")
        assert got.uri in (private.uri, phone.contact.uri)  # forked to both bindings
        second = await phone.request("INVITE")
        assert {str(got.uri), str(second.uri)} == {str(private.uri), str(phone.contact.uri)}
        for inv in (got, second):
            await phone.send(phone.reply(inv, 486, tag="b"))
        await caller.response(486)
    finally:
        await phone.close()
        await caller.close()


async def test_an_outbound_phone_behind_two_kamailio_edges_survives_the_loss_of_one(
        tmp_path: Path) -> None:
    """RFC 5626 §3.3, §9.3 with real edge proxies: a phone registers two flows (reg-id 1 and
    2) through two Kamailio edges, each adding a Path with ``ob`` (``add_path_received`` with
    its "ob" parameter, §5.1), so our 200 says ``Require: outbound``.  A call goes over one
    flow only; once edge 1 is gone (stopped: its flow is lost), the INVITE sent there gets no
    answer, counts as a 408 at Timer B (T1 of 50 ms: 3.2 s) and goes to the other flow
    through edge 2, where the phone answers."""
    config = (KAMAILIO_EDGE.replace("add_path_received();", 'add_path_received("ob", "ob");'))
    with ServerProcess("--t1", "0.05", "--t2", "0.2", "--log-level", "warning",
                       ws=False) as core:
        edges = []
        for n in (1, 2):
            (tmp_path / f"e{n}").mkdir()
            edges.append(Kamailio(config.replace("{core}", str(core.udp_port))
                                  .replace("{{", "{").replace("}}", "}"),
                                  tmp_path / f"e{n}").start())
        phone = await UdpUA("twoedge", "127.0.0.1", edges[0].port).start()
        caller = await UdpUA("caller", "127.0.0.1", core.udp_port).start()
        try:
            for reg_id, edge in enumerate(edges, 1):
                phone.server_port = edge.port
                ok = await _registered(phone, _outbound(phone, URN_A, reg_id,
                                                        supported="outbound, path"))
                [path] = ok.headers("Path")
                assert f":{edge.port};" in path and ";ob" in path, path
                assert "outbound" in ok.require
            invite = caller.invite("twoedge")
            await caller.send(invite)
            got = await phone.request("INVITE")
            assert got.vias[0].port == edges[0].port
            await phone.send(phone.reply(got, 486, tag="busy"))
            await caller.response(486)
            assert not [m for m in await phone.quiet(0.3) if isinstance(m, Request)
                        and m.method == "INVITE"]

            edges[0].stop()  # edge 1 and the flow through it are gone
            invite = caller.invite("twoedge")
            await caller.send(invite)
            got = await phone.request("INVITE", timeout=15.0)
            assert got.vias[0].port == edges[1].port, got.vias
            await phone.send(phone.reply(got, 200, tag="up", body=b"v=0\r\n"))
            ok = await caller.response(200)
            assert ok.call_id == invite.call_id
            leg = caller.uac_leg(invite, ok)
            await caller.send(caller.in_dialog(leg, "ACK", cseq=1))
            ack = await phone.request("ACK")
            assert ack.vias[0].port == edges[1].port
        finally:
            await phone.close()
            await caller.close()
            for edge in edges:
                edge.stop()
    assert "Traceback" not in core.log


# --- baresip, a real UA by others, with outbound and GRUU -----------------------------------------

def _metric(server: ServerProcess, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.admin_port}/metrics",
                                timeout=5) as resp:
        text = resp.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name))


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_baresip_with_outbound_keeps_its_flow_alive_and_is_called_at_its_gruu(
        tmp_path: Path, transport: str) -> None:
    """baresip with ``sipnat=outbound``: its REGISTER carries +sip.instance, reg-id and
    ``Supported: outbound, gruu``; our 200 says ``Require: outbound``, Flow-Timer 5 and gives
    its GRUUs; over UDP baresip then sends STUN keep-alives on our SIP port, which we answer
    (over TCP it pings with CRLFs); a call to its pub-gruu reaches it over its flow and
    completes (ACK and BYE to the Contact it answers with)."""
    tcp = free_tcp_port()
    with ServerProcess("--flow-timer", "5", "--sip-tcp", f"127.0.0.1:{tcp}",
                       "--log-level", "warning", ws=False, admin=True) as server:
        port, uri_param = (server.udp_port, "") if transport == "udp" else (tcp,
                                                                        ";transport=tcp")
        ua = baresip.start(
            tmp_path, baresip.config(uuid=True),
            f'<sip:obbob@127.0.0.1{uri_param}>;regint=600;sipnat=outbound;answermode=auto;'
            f'outbound="sip:127.0.0.1:{port}{uri_param}"\n', 180)
        caller = await UdpUA("caller", "127.0.0.1", server.udp_port).start()
        try:
            contacts: list[NameAddr] = []
            deadline = time.monotonic() + 90  # generous: baresip starts slowly on a busy machine
            while not contacts:
                assert time.monotonic() < deadline, "baresip did not register"
                contacts = await asyncio.to_thread(_query, server.udp_port, "obbob")
                assert ua.poll() is None
                await asyncio.sleep(0.1)
            [contact] = contacts
            assert contact.params["reg-id"] == "1", contact
            urn = (contact.params["+sip.instance"] or "").strip('"<>')
            assert urn.startswith("urn:uuid:")
            if transport == "udp":
                await _stun_keepalive_seen(server)
            invite = caller.invite("obbob")
            invite.uri = parse_uri(f"sip:obbob@127.0.0.1;gr={urn}")
            await caller.send(invite)
            ok = await caller.response(200, timeout=15)
            leg = caller.uac_leg(invite, ok)
            await caller.send(caller.in_dialog(leg, "ACK", cseq=1))
            await caller.send(caller.in_dialog(leg, "BYE"))
            await caller.response(200, "BYE", timeout=15)
            if transport == "tcp":
                # Killed, baresip cannot unregister: its flow (the connection) is gone while
                # its binding stays, and a call gets 430 Flow Failed (RFC 5626 §5.3), not 480.
                ua.kill()
                await _flow_failed(caller, "obbob")
        finally:
            await caller.close()
            ua.terminate()
            out, _ = ua.communicate(timeout=10)
        log = out
        assert "Require: outbound" in log and "Flow-Timer: 5" in log, log[-4000:]
        assert f'pub-gruu="sip:obbob@127.0.0.1;gr={urn}"' in log, log[-4000:]
    assert "Traceback" not in server.log


async def _flow_failed(caller: UA, user: str) -> None:
    """A call to ``user`` ends 430 once the server has seen its flow close (until then it may
    still be sent over the closing connection, whose branch then fails 503, relayed as 500
    by §16.7 step 6)."""
    statuses = []
    for _ in range(50):
        final = await _invite_final(caller, user)
        statuses.append(final.status)
        if final.status == 430:
            return
        assert final.status == 500, statuses
        await asyncio.sleep(0.2)
    raise AssertionError(f"no 430: {statuses}")


async def _stun_keepalive_seen(server: ServerProcess) -> None:
    for _ in range(300):  # Flow-Timer 5 s: the first keep-alive within 5 s, 30 s allowed
        if await asyncio.to_thread(_metric, server, "signaling_sip_stun_keepalives_total"):
            return
        await asyncio.sleep(0.1)
    raise AssertionError("no STUN keep-alive answered")


def _query(udp_port: int, user: str) -> list[NameAddr]:
    """The contacts (with their parameters) a query REGISTER (§10.2.3) lists for ``user``."""
    client = UdpClient()
    try:
        msg = client.request(udp_port, (
            f"REGISTER sip:127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{client.port};branch=z9hG4bK-q{os.urandom(4).hex()}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:{user}@127.0.0.1>;tag=q\r\n"
            f"To: <sip:{user}@127.0.0.1>\r\nCall-ID: q-{os.urandom(4).hex()}\r\n"
            f"CSeq: 1 REGISTER\r\nSupported: outbound\r\nContent-Length: 0\r\n\r\n"
            ).encode())
    finally:
        client.close()
    return list(msg.contacts)
