"""RFC 3261 §18.1.1 in the proxy: a request too large for UDP goes over TCP, and back over UDP
when the TCP connection is refused; a refused connection fails its transactions at once
(§17.1.4).  Real sockets: an in-process server, UDP phones, and a TCP port nothing listens on
(the kernel answers the SYN with a reset)."""

from __future__ import annotations

import socket

from protocols.sip.message import NameAddr, SipURI
from tests.peers.sipua import SDP, UdpUA
from tests.signaling.inproc import running_server

FILLER = b"a=x-filler:" + b"f" * 1500 + b"\r\n"


def _closed_tcp_port() -> int:
    """A loopback TCP port nothing listens on (bound and released: connecting gets a reset)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_refused_tcp_connection_is_retried_over_udp() -> None:
    """The phone listens on UDP only: the INVITE moved to TCP for its size is refused and
    then reaches it over UDP, with a UDP Via of ours, and the call is answered."""
    async with running_server(sip_tcp="127.0.0.1:0") as server:
        assert server.udp_address is not None
        udp = server.udp_address[1]
        phone = await UdpUA("big", "127.0.0.1", udp).start()
        caller = await UdpUA("alice", "127.0.0.1", udp).start()
        try:
            await phone.send(phone.register())
            await phone.response(200, "REGISTER")
            invite = caller.invite("big")
            invite.body = SDP + FILLER
            await caller.send(invite)
            got = await phone.request("INVITE", timeout=20)
            assert got.body.endswith(FILLER)
            assert got.vias[0].transport == "UDP" and got.vias[0].port == udp
            await phone.send(phone.reply(got, 200, tag="b1", body=SDP))
            assert (await caller.response(200)).status == 200
            counts = server.proxy.c_proxy
            assert counts.get("udp_too_large_sent_over_tcp") == 1
            assert counts.get("udp_too_large_retried_over_udp") == 1
            assert server.streams["tcp"].was_refused("127.0.0.1", phone.port)
        finally:
            await phone.close()
            await caller.close()


async def test_small_requests_and_refused_tcp_targets_are_not_retried_over_udp() -> None:
    """A binding over TCP whose connection is refused: no UDP retry (the request was not
    moved for its size), and the transport error fails the branch at once (§17.1.4): the
    caller gets 500 (a proxy does not pass on its own 503, §16.7), not Timer B's 408."""
    async with running_server(sip_tcp="127.0.0.1:0") as server:
        assert server.udp_address is not None
        udp = server.udp_address[1]
        port = _closed_tcp_port()
        phone = await UdpUA("tcpphone", "127.0.0.1", udp).start()
        caller = await UdpUA("alice", "127.0.0.1", udp).start()
        try:
            contact = NameAddr(SipURI("sip", "127.0.0.1", user="tcpphone", port=port,
                                      params={"transport": "tcp"}))
            await phone.send(phone.register(contact=contact))
            await phone.response(200, "REGISTER")
            await caller.send(caller.invite("tcpphone"))
            assert (await caller.response(500, timeout=20)).status == 500
            assert await phone.quiet(0.3) == []
            assert server.proxy.c_proxy.get("udp_too_large_retried_over_udp") == 0
            assert server.streams["tcp"].was_refused("127.0.0.1", port)
        finally:
            await phone.close()
            await caller.close()
