"""Real WebSocket SIP clients against the running server (issue 3, "Real peers"; RFC 7118).

- JsSIP (npm ``jssip``) under Node, with the ``ws`` package as its WebSocket, registers
  ``alice`` over WebSocket and gets its 200; the binding is then visible to a query REGISTER
  over UDP.  JsSIP registers an Outbound flow (RFC 5626, as RFC 7118 §6 recommends), so when
  the Node process goes away without unregistering (a closed browser tab) its binding stays
  and a call to it is answered 430 Flow Failed (RFC 5626 §5.3) until it expires.
- The Python ``websockets`` client checks the transport's rules: the ``sip`` subprotocol is
  required (§4.1), one SIP message per WebSocket message in text and binary frames (§4.2),
  pings are answered, and a peer that stops answering the server's pings is closed and loses
  its bindings.

The Node project is ``tests/peers/jssip`` (package.json, package-lock.json, register.js); its
``node_modules`` is installed here on first use with ``npm install`` (gitignored).
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect
from websockets.typing import Subprotocol

from harness.serverproc import ServerProcess
from protocols.sip.message import Response
from protocols.sip.parser import parse_message, parse_name_addr

JSSIP_DIR = Path(__file__).resolve().parents[1] / "peers" / "jssip"
#: npm install runs once per checkout (then it is a no-op); the registry can be slow.
NPM_TIMEOUT = 300.0
#: JsSIP gives up after 10 s itself (register.js); this only guards against a hung Node.
NODE_TIMEOUT = 20.0
#: How long the server may take to notice a closed connection and remove its bindings.  It
#: does so on the close callback, within milliseconds; this is the polling deadline.
REMOVAL_DEADLINE = 5.0
#: Server pings every PING_INTERVAL and closes a peer whose pong is PING_TIMEOUT late
#: (``--ws-ping-interval`` / ``--ws-ping-timeout``), short here so the dead-peer test is quick.
PING_INTERVAL = 0.3
PING_TIMEOUT = 0.3
#: websockets' close_timeout, which the server keeps at the library default: after a ping
#: timeout it sends a Close frame and half-closes TCP, then waits this long for the peer's side
#: of the TCP connection to close before it calls the connection closed (and the registrar
#: drops the bindings).  A dead peer never closes its side, so it costs this much more.
WS_CLOSE_TIMEOUT = 10.0
#: When a peer that stopped answering pings must have lost its bindings.
DEAD_PEER_DEADLINE = PING_INTERVAL + PING_TIMEOUT + WS_CLOSE_TIMEOUT + 2.0
SIP = Subprotocol("sip")


@pytest.fixture(scope="module")
def jssip() -> Path:
    """``tests/peers/jssip`` with its node_modules installed."""
    npm = shutil.which("npm")
    assert npm is not None and shutil.which("node"), "node/npm missing: see scripts/test"
    subprocess.run([npm, "install", "--no-audit", "--no-fund", "--prefer-offline"],
                   cwd=JSSIP_DIR, check=True, timeout=NPM_TIMEOUT, capture_output=True)
    assert (JSSIP_DIR / "node_modules" / "jssip").is_dir()
    return JSSIP_DIR


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    srv = ServerProcess("--ws-ping-interval", str(PING_INTERVAL),
                        "--ws-ping-timeout", str(PING_TIMEOUT)).start()
    try:
        yield srv
    finally:
        assert srv.stop() == 0
    assert "Traceback" not in srv.log


def query_contacts(server: ServerProcess, user: str) -> list[str]:
    """The bindings of ``user@127.0.0.1``: a REGISTER without Contact over UDP (§10.2.3)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(2.0)
        port = s.getsockname()[1]
        nonce = os.urandom(4).hex()
        s.sendto((
            f"REGISTER sip:127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-q{nonce}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:{user}@127.0.0.1>;tag={nonce}\r\n"
            f"To: <sip:{user}@127.0.0.1>\r\nCall-ID: q-{nonce}\r\nCSeq: 1 REGISTER\r\n"
            f"Content-Length: 0\r\n\r\n"
        ).encode(), ("127.0.0.1", server.udp_port))
        resp = parse_message(s.recv(65_535))
    assert isinstance(resp, Response) and resp.status == 200, resp
    return [str(c.uri) for c in resp.contacts]


def wait_removed(server: ServerProcess, user: str, within: float = REMOVAL_DEADLINE) -> None:
    deadline = time.monotonic() + within
    while query_contacts(server, user):
        assert time.monotonic() < deadline, f"binding of {user} survived its connection"
        time.sleep(0.05)


def wait_flow_failed(server: ServerProcess, user: str,
                     within: float = REMOVAL_DEADLINE) -> None:
    """A call to ``user``, whose only flow closed, ends 430 (RFC 5626 §5.3) once the server
    has seen the connection close; its binding stays."""
    deadline = time.monotonic() + within
    while (status := invite_status(server, user)) != 430:
        # Sent as it closed: the branch fails 503, relayed as 500 (§16.7 step 6).
        assert status == 500 and time.monotonic() < deadline, status
        time.sleep(0.05)
    assert query_contacts(server, user)


def invite_status(server: ServerProcess, user: str) -> int:
    """The final status of an INVITE to ``user@127.0.0.1`` sent over UDP."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(5.0)
        port = s.getsockname()[1]
        nonce = os.urandom(4).hex()
        s.sendto((
            f"INVITE sip:{user}@127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-i{nonce}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:caller@127.0.0.1>;tag={nonce}\r\n"
            f"To: <sip:{user}@127.0.0.1>\r\nCall-ID: i-{nonce}\r\nCSeq: 1 INVITE\r\n"
            f"Contact: <sip:caller@127.0.0.1:{port}>\r\nContent-Length: 0\r\n\r\n"
        ).encode(), ("127.0.0.1", server.udp_port))
        while True:
            resp = parse_message(s.recv(65_535))
            assert isinstance(resp, Response)
            if resp.status >= 200:
                return resp.status


def register_ws(user: str, ws_port: int, transport_host: str = "client.invalid") -> str:
    """A REGISTER as a WebSocket client sends it (RFC 7118 §5: Via WS, .invalid host)."""
    nonce = os.urandom(4).hex()
    return (
        f"REGISTER sip:127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/WS {transport_host};branch=z9hG4bK-{nonce}\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:{user}@127.0.0.1>;tag={nonce}\r\n"
        f"To: <sip:{user}@127.0.0.1>\r\nCall-ID: ws-{nonce}\r\nCSeq: 1 REGISTER\r\n"
        f"Contact: <sip:{user}@{transport_host};transport=ws>\r\nExpires: 600\r\n"
        f"Content-Length: 0\r\n\r\n"
    )


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "JsSIP printed nothing"
    return proc.stdout.readline()


def test_jssip_registers_over_websocket(jssip: Path, server: ServerProcess) -> None:
    node = shutil.which("node")
    assert node is not None
    proc = subprocess.Popen(
        [node, str(jssip / "register.js"), f"ws://127.0.0.1:{server.ws_port}",
         "sip:alice@127.0.0.1"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        outcome = json.loads(_read_line(proc, NODE_TIMEOUT))
        assert outcome["event"] == "registered", outcome
        assert outcome["status"] == 200
        # The contact JsSIP registered (sip:<random>@<random>.invalid;transport=ws) is bound;
        # it asked for GRUUs (RFC 5627) and now uses its pub-gruu as its Contact (§4.2).
        bound = parse_name_addr(outcome["contact"].split(",")[0])
        assert str(bound.uri).endswith(".invalid;transport=ws")
        assert query_contacts(server, "alice") == [str(bound.uri)]
        urn = (bound.params["+sip.instance"] or "").strip('"<>')
        assert outcome["sent_contact"].strip("<>") == f"sip:alice@127.0.0.1;gr={urn}"
    finally:
        assert proc.stdin is not None
        proc.stdin.close()  # register.js exits without unregistering
        status = proc.wait(NODE_TIMEOUT)
    assert status == 0, proc.stderr.read() if proc.stderr else ""
    wait_flow_failed(server, "alice")


def test_sip_subprotocol_is_required(server: ServerProcess) -> None:
    with pytest.raises(InvalidStatus) as refused:
        connect(f"ws://127.0.0.1:{server.ws_port}", open_timeout=5)
    assert refused.value.response.status_code == 400
    with pytest.raises(InvalidStatus):
        connect(f"ws://127.0.0.1:{server.ws_port}", subprotocols=[Subprotocol("chat")],
                open_timeout=5)
    with connect(f"ws://127.0.0.1:{server.ws_port}", subprotocols=[SIP], open_timeout=5) as ws:
        assert ws.subprotocol == "sip"


def test_one_message_per_frame_text_and_binary(server: ServerProcess) -> None:
    with connect(f"ws://127.0.0.1:{server.ws_port}", subprotocols=[SIP], open_timeout=5) as ws:
        ws.send(register_ws("bob", 0))                      # a text frame
        text = ws.recv(timeout=5)
        assert isinstance(text, str)  # UTF-8 answers go in text frames (§4.2)
        resp = parse_message(text.encode())
        assert isinstance(resp, Response) and resp.status == 200
        assert resp.vias[0].transport == "WS"
        assert [str(c.uri) for c in resp.contacts] == ["sip:bob@client.invalid;transport=ws"]
        ws.send(register_ws("carol", 0).encode())           # a binary frame
        resp = parse_message(ws.recv(timeout=5).encode())  # type: ignore[union-attr]
        assert isinstance(resp, Response) and resp.status == 200
        assert query_contacts(server, "bob") == ["sip:bob@client.invalid;transport=ws"]
        # Our ping is answered.
        assert ws.ping().wait(5)
    # A clean close removes every binding made over the connection (§5).
    wait_removed(server, "bob")
    wait_removed(server, "carol")


def _raw_ws_client(port: int) -> socket.socket:
    """A WebSocket client that completes the handshake and then never answers a ping."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
               f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: sip\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        assert chunk, "handshake refused"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return s


def _masked_text_frame(payload: bytes) -> bytes:
    # RFC 6455 §5.2: FIN + text opcode; a client masks every frame.
    mask = os.urandom(4)
    n = len(payload)
    header = bytes([0x81, 0x80 | n]) if n < 126 else bytes([0x81, 0x80 | 126]) + n.to_bytes(2)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def test_dead_peer_is_closed_and_loses_its_bindings(server: ServerProcess) -> None:
    assert server.ws_port is not None
    with _raw_ws_client(server.ws_port) as s:
        s.sendall(_masked_text_frame(register_ws("dave", 0).encode()))
        _wait_bound(server, "dave")
        # The server pings every PING_INTERVAL; nobody answers; after PING_TIMEOUT it closes
        # the connection (1011) and, once websockets gives up on the closing handshake, removes
        # dave's binding, although this TCP socket never closes.
        wait_removed(server, "dave", within=DEAD_PEER_DEADLINE)
        s.settimeout(DEAD_PEER_DEADLINE)
        data = b""
        while chunk := s.recv(65_536):  # until the server closes the TCP connection
            data += chunk
    assert b"\x89" in data  # it did ping (opcode 0x9) before giving up
    assert b"\x88" in data and b"keepalive ping timeout" in data  # Close 1011 (RFC 6455 §7.4.1)


def _wait_bound(server: ServerProcess, user: str) -> None:
    deadline = time.monotonic() + REMOVAL_DEADLINE
    while not query_contacts(server, user):
        assert time.monotonic() < deadline, f"{user} never registered"
        time.sleep(0.05)
