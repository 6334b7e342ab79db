"""The server end to end over real sockets: start, answer, shut down cleanly."""

from __future__ import annotations

from protocols.sip.message import Response
from protocols.sip.parser import parse_message
from tests.serverproc import ServerProcess, options, sip_request


def test_starts_answers_options_and_stops_cleanly() -> None:
    server = ServerProcess("--domain", "example.com").start()
    try:
        answer = sip_request(server.udp_port, options(server.udp_port))
        assert answer is not None
        resp = parse_message(answer)
        assert isinstance(resp, Response)
        assert resp.status == 200
        assert "REGISTER" in (resp.header("Allow") or "")
    finally:
        status = server.stop()
    assert status == 0
    assert "Traceback" not in server.log
    assert "stopped" in server.log
