"""TransportInfo (signaling/transports/base.py): what a transport tells the protocol code."""

from __future__ import annotations

import dataclasses

import pytest

from protocols.sip.parser import parse_via_list
from signaling.transports.base import TransportInfo


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
