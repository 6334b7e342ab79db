"""A UDP phone that a browser can call: it registers with a password (RFC 3261 §22.2) and
answers an INVITE with an SDP answer a WebRTC offer accepts (the offer's mid, ICE and DTLS
attributes, Opus), then answers BYE.  Enough for the signaling of a call from JsSIP in
Chromium to a UDP phone to complete; no media flows (its ICE candidate leads nowhere).

It runs on a thread of its own with a blocking socket, for tests that drive a browser
synchronously, and keeps every request it received (parsed) in ``requests``."""

from __future__ import annotations

import os
import socket
import threading

from protocols.sip.builders import make_response
from protocols.sip.digest import authorization, parse_challenge
from protocols.sip.message import NameAddr, Request, Response, SipURI
from protocols.sip.parser import parse_message
from protocols.sip.serializer import serialize

__all__ = ["WebRtcPhone"]

#: A well-formed SHA-256 fingerprint (RFC 8122 §5); nothing ever checks it against a key.
_FINGERPRINT = ":".join(["AB"] * 32)


def _answer(offer: bytes) -> bytes:
    mid = next((line.split(":", 1)[1] for line in offer.decode().splitlines()
                if line.startswith("a=mid:")), "0")
    return "\r\n".join([
        "v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=-", "t=0 0", f"a=group:BUNDLE {mid}",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111", "c=IN IP4 127.0.0.1", f"a=mid:{mid}",
        "a=ice-lite", "a=ice-ufrag:phon", "a=ice-pwd:phonephonephonephonephone",
        f"a=fingerprint:sha-256 {_FINGERPRINT}", "a=setup:active", "a=sendrecv",
        "a=rtcp-mux", "a=rtpmap:111 opus/48000/2",
        "a=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host", ""]).encode()


class WebRtcPhone:
    """``user`` at ``domain``, registered at the server's UDP ``port`` (see the docstring)."""

    def __init__(self, user: str, password: str, domain: str, port: int) -> None:
        self.user, self.password, self.domain, self.server = user, password, domain, port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(10.0)
        self.port = int(self.sock.getsockname()[1])
        self.requests: list[Request] = []
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def _register(self, auth: str | None) -> Response:
        nonce = os.urandom(4).hex()
        aor = f"sip:{self.user}@{self.domain}"
        text = (f"REGISTER sip:{self.domain} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK-{nonce};rport\r\n"
                f"Max-Forwards: 70\r\nFrom: <{aor}>;tag={nonce}\r\nTo: <{aor}>\r\n"
                f"Call-ID: reg-{self.port}\r\nCSeq: {2 if auth else 1} REGISTER\r\n"
                f"Contact: <sip:{self.user}@127.0.0.1:{self.port}>\r\nExpires: 600\r\n"
                + (f"Authorization: {auth}\r\n" if auth else "") + "Content-Length: 0\r\n\r\n")
        self.sock.sendto(text.encode(), ("127.0.0.1", self.server))
        resp = parse_message(self.sock.recv(65_535))
        assert isinstance(resp, Response)
        return resp

    def register(self) -> int:
        """REGISTER, answering the challenge; the final status."""
        first = self._register(None)
        if first.status != 401:
            return first.status
        chal = parse_challenge(first.headers("WWW-Authenticate")[0])
        return self._register(authorization(chal, method="REGISTER",
                                            uri=f"sip:{self.domain}", username=self.user,
                                            password=self.password)).status

    def start(self) -> WebRtcPhone:
        assert self.register() == 200
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        return self

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(65_535)
            except TimeoutError:
                continue
            msg = parse_message(data)
            if not isinstance(msg, Request):
                continue
            self.requests.append(msg)
            if msg.method == "INVITE":
                ok = make_response(msg, 200, to_tag="phone")
                ok.record_routes = list(msg.record_routes)  # §12.1.1
                ok.contacts = [NameAddr(SipURI("sip", "127.0.0.1", user=self.user,
                                               port=self.port))]
                ok.content_type, ok.body = "application/sdp", _answer(msg.body)
                self.sock.sendto(serialize(ok), addr)
            elif msg.method in ("BYE", "OPTIONS", "CANCEL"):
                self.sock.sendto(serialize(make_response(msg, 200)), addr)

    def methods(self) -> list[str]:
        return [r.method for r in self.requests]

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.sock.close()
