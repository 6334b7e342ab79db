"""SIPp registers thousands of unique users with the running server (issue 3, "Real peers").

SIPp (Debian ``sip-tester``) plays the shared reference scenario
``../shared/reference/sipp/register.xml`` (read in place: one REGISTER per call, user
``u<call number>`` at the server's address, contact ``u<n>@<SIPp's address>``, expects 200).
Every call must succeed: SIPp's exit status 0 and its statistics file report ``USERS``
successful calls and none failed.  Then every user is looked up with a query REGISTER (no
Contact, RFC 3261 §10.2.3) and the 200 must list exactly the contact SIPp registered, with a
remaining expiry no longer than the 3600 s asked for.
"""

from __future__ import annotations

import socket
from pathlib import Path

from harness.serverproc import ServerProcess
from harness.sipp_runner import Sipp
from protocols.sip.message import Response
from protocols.sip.parser import parse_message

REGISTER_XML = Path(__file__).resolve().parents[2] / ".." / "shared" / "reference" / "sipp" \
    / "register.xml"
#: Users registered: "thousands" (issue 3), at ``RATE`` per second a 2.5 s run.
USERS = 5000
#: Far below the server's measured capacity (benchmarks/bench_register.py) so that no call can
#: fail for load on a shared 2-core CI machine; this test is about correctness.
RATE = 2000
#: SIPp gives up on a call after this long (its -timeout); the run needs USERS / RATE seconds.
SIPP_TIMEOUT = 30.0
#: The scenario's Expires.
EXPIRES = 3600


def query(sock: socket.socket, server_port: int, user: int) -> Response:
    """A REGISTER without Contact for ``u<user>``: the registrar lists its bindings (§10.3)."""
    local = sock.getsockname()[1]
    sock.sendto((
        f"REGISTER sip:127.0.0.1:{server_port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK-q{user}\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:u{user}@127.0.0.1>;tag=q{user}\r\n"
        f"To: <sip:u{user}@127.0.0.1>\r\nCall-ID: query-{user}\r\nCSeq: 1 REGISTER\r\n"
        f"Content-Length: 0\r\n\r\n"
    ).encode(), ("127.0.0.1", server_port))
    msg = parse_message(sock.recv(65_535))
    assert isinstance(msg, Response)
    assert msg.call_id == f"query-{user}"
    return msg


def test_sipp_registers_thousands_of_users() -> None:
    assert REGISTER_XML.exists(), f"shared reference scenario missing: {REGISTER_XML}"
    with ServerProcess(ws=False) as server:
        sipp = Sipp(str(REGISTER_XML), f"127.0.0.1:{server.udp_port}", calls=USERS, rate=RATE,
                    timeout=SIPP_TIMEOUT)
        result = sipp.start().wait()
        assert result.returncode == 0, (result.output[-2000:], result.errors[-2000:])
        assert (result.successful, result.failed) == (USERS, 0), result.output[-2000:]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            s.settimeout(2.0)
            for user in range(1, USERS + 1):  # SIPp numbers calls from 1
                resp = query(s, server.udp_port, user)
                assert resp.status == 200, (user, resp.status)
                assert [str(c.uri) for c in resp.contacts] == \
                    [f"sip:u{user}@127.0.0.1:{sipp.port}"], user
                expires = int(resp.contacts[0].params["expires"] or "")
                assert EXPIRES - 60 < expires <= EXPIRES
            # A user SIPp never registered has no binding: the lookups above are not vacuous.
            assert query(s, server.udp_port, USERS + 1).contacts == []
        assert server.alive()
    assert "Traceback" not in server.log
