"""Next hops (signaling/hops.py): transports chosen from URIs, flows, Path, default ports."""

from __future__ import annotations

import pytest

from protocols.sip.message import NameAddr, Request, SipURI
from protocols.sip.parser import parse_message
from protocols.sip.uri import parse_uri
from signaling.hops import Hops, Target, default_port, is_ip
from signaling.registry.base import Binding
from signaling.transports.base import Peer, Transports
from tests.signaling.corekit import RecordingTransport


def transports() -> Transports:
    t = Transports()
    t.add(RecordingTransport("udp", port=5060))
    t.add(RecordingTransport("tcp", reliable=True, port=5060, uri_transport="tcp"))
    t.add(RecordingTransport("tls", reliable=True, port=5061, uri_transport="tls"))
    t.add(RecordingTransport("ws", reliable=True, port=5066, uri_transport="ws"))
    t.add(RecordingTransport("wss", reliable=True, port=7443, uri_transport="wss"))
    return t


def hops() -> Hops:
    return Hops(transports(), "n1", lambda uri: uri.host == "127.0.0.1")


def binding(contact: str, **kw: object) -> Binding:
    return Binding(aor="sip:u@example.com", contact=contact, q=1.0, expires_at=1e12,
                   call_id="c", cseq=1, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(("uri", "transport", "port"), [
    ("sip:a@192.0.2.1", "udp", 5060),
    ("sip:a@192.0.2.1;transport=UDP", "udp", 5060),
    ("sip:a@192.0.2.1;transport=tcp", "tcp", 5060),
    ("sip:a@192.0.2.1;transport=tls", "tls", 5061),
    ("sips:a@192.0.2.1", "tls", 5061),
    ("sips:a@192.0.2.1;transport=tcp", "tls", 5061),  # RFC 5630: TLS over TCP
    ("sips:a@192.0.2.1;transport=ws", "wss", 5061),
    ("sip:a@192.0.2.1;transport=sctp", None, 5060),
    ("sips:a@192.0.2.1;transport=udp", None, 5061),  # never sips over UDP
])
def test_transport_and_port_of_a_uri(uri: str, transport: str | None, port: int) -> None:
    parsed = parse_uri(uri)
    assert isinstance(parsed, SipURI)
    assert transports().for_uri(parsed) == transport
    assert default_port(parsed) == port


def test_is_ip() -> None:
    assert is_ip("192.0.2.1") and is_ip("[2001:db8::1]") and not is_ip("example.com")
    # What the IPv4 fast path refuses is still decided by the general parser, the same way.
    assert is_ip("2001:db8::1") and is_ip("::ffff:192.0.2.1")
    assert not any(is_ip(h) for h in ("192.0.2", "192.0.2.256", "01.0.2.1", " 192.0.2.1", ""))


async def test_a_flow_binding_carries_its_connection_and_its_contact() -> None:
    h = hops()
    t = await h.binding_target(binding("sip:u@192.0.2.7:5070;transport=tcp", transport="tcp",
                                       connection_id="n1/tcp/3", node="n1"))
    assert t == Target(parse_uri("sip:u@192.0.2.7:5070;transport=tcp"),
                       Peer("tcp", "192.0.2.7", 5070, "n1/tcp/3"))
    # A WebSocket client's Contact is not an address: the connection only.
    t = await h.binding_target(binding("sip:u@x.invalid;transport=ws", transport="ws",
                                       connection_id="n1/5", node="n1"))
    assert t is not None and t.peer == Peer("ws", "", 0, "n1/5")
    # Another node's connection cannot be used from here.
    assert await h.binding_target(binding("sip:u@192.0.2.7;transport=tcp", transport="tcp",
                                          connection_id="n2/tcp/1", node="n2")) is None


async def test_a_path_is_the_route_to_its_binding() -> None:
    h = hops()
    t = await h.binding_target(binding(
        "sip:u@10.0.0.5:5060", path=("<sip:192.0.2.50:5070;lr>", "<sip:192.0.2.51;lr>")))
    assert t is not None
    assert t.peer == Peer("udp", "192.0.2.50", 5070)
    assert [str(r) for r in t.routes] == ["<sip:192.0.2.50:5070;lr>", "<sip:192.0.2.51;lr>"]
    assert str(t.uri) == "sip:u@10.0.0.5:5060"
    # Over a flow to the edge proxy, the flow is the hop, the Path still the route.
    t = await h.binding_target(binding("sip:u@10.0.0.5", transport="tls",
                                       connection_id="n1/tls/9", node="n1",
                                       path=("<sip:192.0.2.50;transport=tls;lr>",)))
    assert t is not None and t.peer == Peer("tls", "", 0, "n1/tls/9")
    assert t.routes == (NameAddr(parse_uri("sip:192.0.2.50;transport=tls;lr")),)


async def test_a_private_contact_without_a_flow_is_reached_at_its_source() -> None:
    t = await hops().binding_target(binding("sip:u@phone.local", source="198.51.100.4:40000"))
    assert t is not None and t.peer == Peer("udp", "198.51.100.4", 40000)


def test_route_target_skips_our_own_uri_and_unknown_transports() -> None:
    def req(route: str) -> Request:
        m = parse_message((
            "INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bKx\r\n"
            f"Route: <{route}>\r\nFrom: <sip:a@example.com>;tag=1\r\n"
            "To: <sip:bob@example.com>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n"
            "Content-Length: 0\r\n\r\n").encode())
        assert isinstance(m, Request)
        return m

    h = hops()
    t = h.route_target(req("sip:192.0.2.60;transport=tls;lr"))
    assert t is not None and t.peer == Peer("tls", "192.0.2.60", 5061)
    assert str(t.uri) == "sip:bob@example.com"  # the Request-URI is left as it is
    assert h.route_target(req("sip:127.0.0.1;lr")) is None  # ourselves
    assert h.route_target(req("sip:192.0.2.60;transport=sctp;lr")) is None
