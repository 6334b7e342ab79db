"""JsSIP in headless Chromium over secure WebSocket (RFC 7118 over TLS, issue 15 "Tests with
real peers").

The test makes its own CA and server certificate with ``openssl`` (tests/tlscerts.py) and puts
the CA in the NSS database of the browser's HOME, so Chromium verifies the server's certificate
as a user's browser would; without that CA the same page cannot connect.  The page is served over
HTTPS too (an app served over HTTPS may only open ``wss://``).  JsSIP (npm ``jssip``, bundled
for the browser with esbuild) registers two users over WSS with their passwords, answering the
server's challenge (RFC 3261 §22.2), and one calls the other through the proxy: the INVITE
reaches the callee over WSS with our Record-Route, the call is confirmed and hung up.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from harness.serverproc import free_tcp_port
from tests.peers.browser import PageServer, chromium, nss_home
from tests.peers.webrtcphone import WebRtcPhone
from tests.signaling.auth.peers import auth_server
from tests.signaling.test_websocket_client import jssip
from tests.tlscerts import Pki, make_pki

__all__ = ["jssip"]  # the fixture: tests/peers/jssip with node_modules

PAGE_DIR = Path(__file__).resolve().parents[2] / "peers" / "jssip" / "browser"
USERS = {"alice": "wonder-land-42", "bob": "builder-77", "carol": "udp-phone-9"}


class Listening(NamedTuple):
    wss: int
    udp: int
#: Bound on a browser start plus two registrations and a call: start-up dominates, and a busy
#: 2-core CI machine starts Chromium slowly.
BROWSER_TIMEOUT = 120.0


@pytest.fixture(scope="module")
def page_dir(jssip: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The page with JsSIP bundled for the browser (esbuild from the package's CommonJS)."""
    out = tmp_path_factory.mktemp("page")
    subprocess.run([str(jssip / "node_modules" / ".bin" / "esbuild"),
                    str(jssip / "node_modules" / "jssip" / "lib" / "JsSIP.js"), "--bundle",
                    "--format=iife", "--global-name=JsSIP", "--platform=browser",
                    f"--outfile={out / 'jssip.js'}"], check=True, capture_output=True,
                   timeout=120)
    for src in PAGE_DIR.iterdir():
        (out / src.name).write_bytes(src.read_bytes())
    return out


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def server(pki: Pki) -> Iterator[Listening]:
    """A server with authentication on and a WSS listener: its ports."""
    port = free_tcp_port()
    srv = auth_server(USERS, "--sip-wss", f"127.0.0.1:{port}",
                      "--tls-cert", str(pki.cert("server")), "--tls-key", str(pki.key("server")),
                      ws=False).start()
    try:
        _wait_listening(port)
        yield Listening(port, srv.udp_port)
    finally:
        assert srv.stop() == 0
    assert "Traceback" not in srv.log
    assert not any(pw in srv.log for pw in USERS.values())


def _wait_listening(port: int, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"nothing listens on {port}"
            time.sleep(0.1)


def test_jssip_in_chromium_registers_and_calls_over_wss(
        page_dir: Path, pki: Pki, server: Listening,
        tmp_path: Path) -> None:
    home = nss_home(tmp_path / "home", pki.ca)
    config = {"wss": f"wss://127.0.0.1:{server.wss}", "domain": "127.0.0.1",
              "callee": "sip:bob@127.0.0.1",
              "users": {u: USERS[u] for u in ("alice", "bob")}}
    seen: list[dict[str, Any]] = []
    with PageServer(page_dir, config, pki.cert("server"), pki.key("server")) as page, \
            chromium(page.url + "call.html", home):
        for user in ("alice", "bob"):
            got = page.wait_for({"ua": user, "event": "registered"}, BROWSER_TIMEOUT, seen)
            assert got["status"] == 200
        incoming = page.wait_for({"ua": "bob", "event": "incoming"}, BROWSER_TIMEOUT, seen)
        # The INVITE came to bob over WSS from us, with our Record-Route facing WSS.
        assert incoming["via"].upper().startswith("SIP/2.0/WSS 127.0.0.1"), incoming
        assert any("transport=wss" in rr for rr in incoming["record_route"]), incoming
        assert incoming["from"] == "sip:alice@127.0.0.1"
        accepted = page.wait_for({"ua": "alice", "event": "accepted"}, BROWSER_TIMEOUT, seen)
        assert accepted["status"] == 200
        for user in ("alice", "bob"):
            page.wait_for({"ua": user, "event": "confirmed"}, BROWSER_TIMEOUT, seen)
            page.wait_for({"ua": user, "event": "ended"}, BROWSER_TIMEOUT, seen)
    assert not any(r["event"] in ("failed", "error", "registrationFailed") for r in seen), seen


def test_jssip_in_chromium_calls_a_udp_phone(page_dir: Path, pki: Pki, server: Listening,
                                             tmp_path: Path) -> None:
    """JsSIP over WSS calls a phone registered over UDP with its password: the INVITE reaches
    the phone over UDP with both of our Record-Routes (RFC 5658: the one facing the phone
    names UDP, the one facing the browser WSS), the browser accepts the phone's answer, and its
    ACK and BYE reach the phone over UDP along the route set."""
    home = nss_home(tmp_path / "home", pki.ca)
    phone = WebRtcPhone("carol", USERS["carol"], "127.0.0.1", server.udp).start()
    config = {"wss": f"wss://127.0.0.1:{server.wss}", "domain": "127.0.0.1",
              "callee": "sip:carol@127.0.0.1", "users": {"alice": USERS["alice"]}}
    seen: list[dict[str, Any]] = []
    try:
        with PageServer(page_dir, config, pki.cert("server"), pki.key("server")) as page, \
                chromium(page.url + "call.html", home):
            accepted = page.wait_for({"ua": "alice", "event": "accepted"}, BROWSER_TIMEOUT,
                                     seen)
            page.wait_for({"ua": "alice", "event": "confirmed"}, BROWSER_TIMEOUT, seen)
            page.wait_for({"ua": "alice", "event": "ended"}, BROWSER_TIMEOUT, seen)
            deadline = time.monotonic() + BROWSER_TIMEOUT
            while "BYE" not in phone.methods():
                assert time.monotonic() < deadline, phone.methods()
                time.sleep(0.1)
    finally:
        phone.close()
    assert accepted["status"] == 200
    invite = next(r for r in phone.requests if r.method == "INVITE")
    assert invite.vias[0].transport == "UDP"
    assert [str(rr.uri).split(";transport=")[-1].split(";")[0] if "transport=" in str(rr.uri)
            else "udp" for rr in invite.record_routes] == ["udp", "wss"], invite.record_routes
    assert any("transport=wss" in rr for rr in accepted["record_route"])
    assert phone.methods().count("ACK") == 1
    assert not any(r["event"] in ("failed", "error", "registrationFailed") for r in seen), seen


def test_without_the_ca_chromium_refuses_the_certificate(
        page_dir: Path, pki: Pki, server: Listening,
        tmp_path: Path) -> None:
    """The same page in a browser that does not know the test CA (page served over HTTP from
    127.0.0.1, a secure context all the same): the WSS connection fails and nothing registers,
    so the first test's trust is the CA's doing, not ignored certificate errors."""
    home = nss_home(tmp_path / "home", None)
    config = {"wss": f"wss://127.0.0.1:{server.wss}", "domain": "127.0.0.1",
              "users": {"alice": USERS["alice"]}}
    seen: list[dict[str, Any]] = []
    with PageServer(page_dir, config) as page, chromium(page.url + "call.html", home):
        page.wait_for({"ua": "alice", "event": "disconnected"}, BROWSER_TIMEOUT, seen)
    assert not any(r["event"] == "registered" for r in seen), seen
