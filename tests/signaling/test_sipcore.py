"""The SIP receive path over real UDP: errors, stateless answers, shedding, Via stamping."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from protocols.sip.message import Response
from signaling.registry.base import Binding, ContactChange
from signaling.registry.memory import MemoryRegistry
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
