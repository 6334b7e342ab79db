"""TransportInfo and Transports (signaling/transports/base.py): what a transport tells the
protocol code."""

from __future__ import annotations

import dataclasses

import pytest

from protocols.sip.parser import parse_via_list
from signaling.transports.base import Peer, TransportInfo, Transports


@pytest.mark.parametrize(("token", "host", "port", "via_port"), [
    ("UDP", "127.0.0.1", 5060, None), ("TCP", "sip.example.org", 5060, 5090),
    ("WSS", "[2001:db8::1]", 443, None)])
@pytest.mark.parametrize("extra", [None, {}, {"oc": None, "oc-algo": '"loss"'}])
def test_via_text_is_the_rendering_of_its_fields(token: str, host: str, port: int,
                                                 via_port: int | None,
                                                 extra: dict[str, str | None] | None) -> None:
    """Our Via's text is written from a prefix kept per transport, never rendered field by
    field: it must be what rendering writes, and read back as the same Via."""
    info = TransportInfo(token.lower(), reliable=token != "UDP", via_token=token, host=host,
                         port=port, uri_transport=None, via_port=via_port)
    via = info.via("z9hG4bKb1.s2", extra)
    assert via.raw == str(dataclasses.replace(via, raw=None))
    assert via.branch == "z9hG4bKb1.s2" and via.port == (via_port or port)
    assert "rport" in via.params and via.params.keys() >= (extra or {}).keys()
    (parsed,) = parse_via_list(via.raw)
    assert parsed == via


class _Fake:
    def __init__(self, info: TransportInfo) -> None:
        self.info = info

    def send(self, data: bytes, peer: Peer) -> bool:
        return True

    def holds(self, conn_id: str) -> bool:
        return False


def test_own_via_is_host_and_via_port_of_a_transport_held() -> None:
    """``is_own_via``: the sent-by of our Via on any transport still there, exactly as we
    write it (the via port, not the listening port); forgotten when the transport goes."""
    transports = Transports()
    udp = TransportInfo("udp", reliable=False, via_token="UDP", host="10.0.0.1", port=5060,
                        uri_transport=None, via_port=5070)
    tcp = TransportInfo("tcp", reliable=True, via_token="TCP", host="sip.example.org",
                        port=5060, uri_transport="tcp")
    transports.add(_Fake(udp))
    transports.add(_Fake(tcp))
    for info in (udp, tcp):
        assert transports.is_own_via(info.via("z9hG4bK1"))
    (listening,) = parse_via_list("SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK2")
    (other,) = parse_via_list("SIP/2.0/UDP 10.0.0.2:5070;branch=z9hG4bK3")
    assert not transports.is_own_via(listening) and not transports.is_own_via(other)
    transports.remove("tcp")
    assert not transports.is_own_via(tcp.via("z9hG4bK4"))
    assert transports.is_own_via(udp.via("z9hG4bK5"))
