"""signaling/router.py: which part of the node answers what, checked without sockets."""

from __future__ import annotations

from protocols.sip.message import Response
from tests.signaling.corekit import node


def _request(method: str, uri: str, *, branch: str, to_tag: str = "") -> bytes:
    to = f"<sip:bob@example.com>{';tag=' + to_tag if to_tag else ''}"
    return (f"{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bK{branch}"
            f"\r\nMax-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a1\r\nTo: {to}\r\n"
            f"Call-ID: {branch}@router\r\nCSeq: 1 {method}\r\n"
            "Contact: <sip:alice@192.0.2.10:5070>\r\nContent-Length: 0\r\n\r\n").encode()


async def test_register_goes_to_the_registrar() -> None:
    async with node() as n:
        n.receive(_request("REGISTER", "sip:example.com", branch="r1"))
        resp, peer = await n.udp.final()
        assert isinstance(resp, Response) and resp.status == 200
        assert (peer.host, peer.port) == ("192.0.2.10", 5070)
        assert n.registrar.c_register.get("200") == 1


async def test_other_requests_go_to_the_proxy() -> None:
    async with node() as n:
        # A user of a served domain that never registered: the proxy's 404 (§16.5).
        n.receive(_request("MESSAGE", "sip:nobody@example.com", branch="m1"))
        resp, _ = await n.udp.final()
        assert resp.status == 404
        assert n.registrar.c_register.get("200") == 0


async def test_cancel_and_stray_ack_reach_the_proxy() -> None:
    async with node() as n:
        # §9.2: a CANCEL matching nothing is 481 (the proxy found no INVITE for it).
        n.receive(_request("CANCEL", "sip:bob@example.com", branch="c1"))
        resp, _ = await n.udp.final()
        assert resp.status == 481
        # An ACK matching nothing and routed nowhere is dropped by the proxy and counted.
        n.receive(_request("ACK", "sip:bob@example.com", branch="a1", to_tag="x"))
        assert n.proxy.c_proxy.get("ack_dropped") == 1
