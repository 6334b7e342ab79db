"""signaling/edge.py: this server as the edge proxy in front of a real registrar (Kamailio with
its registrar and Path support): a phone's REGISTER relayed with a flow token in the Path (RFC
5626 §5.1, §5.2), calls from the registrar's side sent over the phone's own connection by it
(§5.3.1), 430 once that connection is gone, 403 for a token that does not verify."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from protocols.sip.message import NameAddr, Request, SipURI
from signaling.server import Server
from signaling.transports.tcp import StreamTransport
from tests.peers.kamailio import Kamailio
from tests.peers.sipua import StreamUA, UdpUA
from tests.signaling.inproc import running_server

#: Kamailio as the registrar behind our edge (written for this test): REGISTERs are saved with
#: their Path (``use_path``; ``path_mode`` 1 returns it in the 200 to a UA that supports
#: path), and a call is sent to the binding by its Path, our Route value with the flow token.
KAMAILIO_REGISTRAR = """#!KAMAILIO
debug=2
log_stderror=yes
fork=yes
children=1
disable_tcp=yes
auto_aliases=no
listen=udp:127.0.0.1:{port}
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "siputils.so"
loadmodule "textops.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
modparam("registrar", "use_path", 1)
modparam("registrar", "path_mode", 1)

request_route {
    if (!mf_process_maxfwd_header("10")) {
        sl_send_reply("483", "Too Many Hops");
        exit;
    }
    if (is_method("REGISTER")) {
        save("location");
        exit;
    }
    if (is_method("OPTIONS") && $rU == $null) {
        sl_send_reply("200", "OK");
        exit;
    }
    if (has_totag()) {
        if (loose_route()) {
            t_relay();
        } else if (!is_method("ACK")) {
            sl_send_reply("404", "Not here");
        }
        exit;
    }
    if (!lookup("location")) {
        sl_send_reply("404", "Not Found");
        exit;
    }
    t_relay();
}
"""


@pytest.fixture
def registrar(tmp_path: Path) -> Iterator[Kamailio]:
    kamailio = Kamailio(KAMAILIO_REGISTRAR, tmp_path).start()
    try:
        yield kamailio
    finally:
        kamailio.stop()


def _udp(server: Server) -> int:
    assert server.udp_address is not None
    return server.udp_address[1]


async def _until_closed(server: Server) -> None:
    tcp = server.streams["tcp"]
    assert isinstance(tcp, StreamTransport)
    deadline = time.monotonic() + 10  # generous: CI is a busy machine
    while tcp.conns:
        assert time.monotonic() < deadline, "the edge did not see the connection close"
        await asyncio.sleep(0.05)


async def test_phone_behind_our_edge_is_called_over_its_flow_by_the_token(
        registrar: Kamailio) -> None:
    """A phone over TCP registers through the edge (relay on, its domain not the registrar's)
    with Kamailio: the 200 brings back the edge's Path, with a flow token, ``lr`` and ``ob``
    (the Contact registers an outbound flow).  Kamailio's call to the phone carries that
    Path as its Route; the edge sends it over the phone's connection (a TCP Via of the edge
    on top, no Route left).  Once the phone's connection is closed, the next call gets 430
    Flow Failed from the edge, relayed by Kamailio."""
    async with running_server(sip_tcp="127.0.0.1:0", domain="edge.test", relay="on") as edge:
        tcp = edge.stream_addresses["tcp"][1]
        phone = await StreamUA("ephone", "127.0.0.1", registrar.port, tcp).start()
        caller = await UdpUA("caller", "127.0.0.1", registrar.port).start()
        try:
            req = phone.register()
            contact = req.contacts[0]
            req.contacts = [NameAddr(contact.uri, params={
                **contact.params, "reg-id": "1",
                "+sip.instance": '"<urn:uuid:00000000-0000-1000-8000-0000000000ed>"'})]
            req.extra.append(("Supported", "path, outbound"))
            await phone.send(req)
            ok = await phone.response(200, "REGISTER")
            [path] = ok.headers("Path")
            assert f"@127.0.0.1:{_udp(edge)};" in path and ";lr" in path and ";ob" in path
            assert "<sip:ft." in path, path

            invite = caller.invite("ephone")
            await caller.send(invite)
            got = await phone.request("INVITE")
            assert got.vias[0].transport == "TCP" and got.vias[0].port == tcp
            assert got.vias[1].port == registrar.port
            assert not got.routes
            await phone.send(phone.reply(got, 486, tag="busy"))
            await caller.response(486)

            await phone.close()
            await _until_closed(edge)
            await caller.send(caller.invite("ephone"))
            final = await caller.response(430)
            assert final.reason == "Flow Failed"
        finally:
            await caller.close()
            await phone.close()


async def test_a_token_that_does_not_verify_is_forbidden_and_udp_phones_get_a_token_too(
        registrar: Kamailio) -> None:
    """§5.3.1: a Route of the edge with a token it did not make (or altered) is answered 403,
    never followed.  A UDP phone's REGISTER gets a token as well (no ``ob`` without outbound),
    and Kamailio's call reaches the phone at its source address through the edge."""
    async with running_server(domain="edge.test", relay="on") as edge:
        port = _udp(edge)
        phone = await UdpUA("uphone", "127.0.0.1", registrar.port).start()
        caller = await UdpUA("caller", "127.0.0.1", registrar.port).start()
        forger = await UdpUA("forger", "127.0.0.1", port).start()
        try:
            req = phone.register()
            req.extra.append(("Supported", "path"))
            # The phone sends to the edge, which relays to Kamailio (the Request-URI's).
            phone.server_port = port
            await phone.send(req)
            ok = await phone.response(200, "REGISTER")
            [path] = ok.headers("Path")
            assert "<sip:ft." in path and ";ob" not in path, path
            user = path[len("<sip:"):path.index("@")]
            await caller.send(caller.invite("uphone"))
            got = await phone.request("INVITE")
            assert got.vias[0].port == port and got.vias[1].port == registrar.port
            await phone.send(phone.reply(got, 486, tag="busy"))
            await caller.response(486)

            for bad in (user[:-2] + ("aa" if not user.endswith("aa") else "bb"), "ft.abcdef"):
                invite = forger.invite("uphone")
                invite.routes = [NameAddr(SipURI("sip", "127.0.0.1", user=bad, port=port,
                                                 params={"lr": None}))]
                await forger.send(invite)
                await forger.response(403)
            assert not [m for m in await phone.quiet(0.3) if m.cseq.method == "INVITE"
                        and m.call_id != got.call_id]
        finally:
            for ua in (phone, caller, forger):
                await ua.close()


@pytest.mark.parametrize("path_mode", ["strict", "lazy"])
async def test_the_edge_adds_its_path_as_rfc_3327_asks(path_mode: str) -> None:
    """RFC 3327 §5.2 at the edge, before a registrar played by the test (which sees what the
    edge relays): a UA that says ``Supported: path`` gets the edge's Path and ``Require:
    path`` (the edge needs the registrar to honour it); an outbound REGISTER without the tag
    still gets the Path with ``ob`` (RFC 5626 §5.1's MUST) and no Require; any other REGISTER
    without the tag is answered 421 with ``Require: path`` by the edge and never relayed
    (``path_mode`` strict), or relayed with the Path and no Require (lazy)."""
    async with running_server(domain="edge.test", relay="on", path_mode=path_mode) as edge:
        port = _udp(edge)
        registrar = await UdpUA("registrar", "127.0.0.1", port).start()
        phone = await UdpUA("pphone", "127.0.0.1", registrar.port).start()
        urn = '"<urn:uuid:00000000-0000-1000-8000-0000000000ee>"'

        def register() -> Request:
            # For the registrar's Request-URI, sent to the edge.
            phone.server_port = registrar.port
            req = phone.register()
            phone.server_port = port
            return req

        try:
            async def relayed(req: Request) -> Request:
                await phone.send(req)
                got = await registrar.request("REGISTER")
                await registrar.send(registrar.reply(got, 200, tag="r"))
                await phone.response(200, "REGISTER")
                return got

            req = register()
            req.extra.append(("Supported", "path"))
            got = await relayed(req)
            [path] = got.headers("Path")
            assert "<sip:ft." in path and ";ob" not in path
            assert got.require == ["path"]

            req = register()
            req.contacts = [NameAddr(req.contacts[0].uri,
                                     params={"reg-id": "1", "+sip.instance": urn})]
            req.extra.append(("Supported", "outbound"))
            got = await relayed(req)
            [path] = got.headers("Path")
            assert "<sip:ft." in path and ";ob" in path
            assert got.require == []

            if path_mode == "strict":
                await phone.send(register())
                refused = await phone.response(421, "REGISTER")
                assert refused.require == ["path"]
                assert not [m for m in await registrar.quiet(0.3) if isinstance(m, Request)]
            else:
                got = await relayed(register())
                assert "<sip:ft." in got.headers("Path")[0]
                assert got.require == []
        finally:
            await phone.close()
            await registrar.close()
