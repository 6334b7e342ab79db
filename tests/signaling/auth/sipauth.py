"""A digest-authenticating SIP client for the in-process tests (requests as bytes)."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from protocols.sip.digest import authorization, parse_challenge
from protocols.sip.message import Response
from tests.signaling.inproc import UdpPeer

__all__ = ["DOMAIN", "Client", "open_peer"]

DOMAIN = "example.com"
_branches = itertools.count(1)


async def open_peer(host: str = "127.0.0.1") -> UdpPeer:
    loop = asyncio.get_running_loop()
    _, peer = await loop.create_datagram_endpoint(UdpPeer, local_addr=(host, 0))
    return peer


class Client:
    """One user agent: builds REGISTER/INVITE/MESSAGE with optional credentials."""

    def __init__(self, peer: UdpPeer, server_port: int, user: str,
                 host: str = "127.0.0.1") -> None:
        self.peer = peer
        self.port = server_port
        self.user = user
        self.host = host
        self.cseq = 0

    def request(self, method: str, ruri: str, *, to: str, call_id: str,
                auth: tuple[str, str] | None = None, to_tag: str | None = None,
                contact: str | None = None, expires: int | None = None,
                from_user: str | None = None) -> bytes:
        self.cseq += 1
        port = self.peer.port
        lines = [f"{method} {ruri} SIP/2.0",
                 f"Via: SIP/2.0/UDP {self.host}:{port};branch=z9hG4bKa{next(_branches)};rport",
                 "Max-Forwards: 70",
                 f"From: <sip:{from_user or self.user}@{DOMAIN}>;tag=t{self.user}",
                 f"To: <{to}>" + (f";tag={to_tag}" if to_tag else ""),
                 f"Call-ID: {call_id}", f"CSeq: {self.cseq} {method}",
                 f"Contact: <{contact or f'sip:{self.user}@{self.host}:{port}'}>"]
        if expires is not None:
            lines.append(f"Expires: {expires}")
        if auth is not None:
            lines.append(f"{auth[0]}: {auth[1]}")
        lines.append("Content-Length: 0\r\n\r\n")
        return "\r\n".join(lines).encode()

    async def ask(self, data: bytes) -> Response:
        self.peer.send(data, self.port)
        return await self.peer.final(5.0)

    async def register(self, password: str | None, *, aor_user: str | None = None,
                       algorithm: str | None = None, username: str | None = None,
                       call_id: str = "reg") -> tuple[Response, str | None]:
        """REGISTER, answer the 401 when ``password``; the final answer and the header sent."""
        to = f"sip:{aor_user or self.user}@{DOMAIN}"
        first = await self.ask(self.request("REGISTER", f"sip:{DOMAIN}", to=to, call_id=call_id,
                                            expires=600))
        if first.status != 401 or password is None:
            return first, None
        value = self.answer(first, "WWW-Authenticate", "REGISTER", f"sip:{DOMAIN}",
                            username or self.user, password, algorithm)
        resp = await self.ask(self.request("REGISTER", f"sip:{DOMAIN}", to=to, call_id=call_id,
                                           expires=600, auth=("Authorization", value)))
        return resp, value

    @staticmethod
    def challenges(resp: Response, header: str) -> list[dict[str, Any]]:
        return [parse_challenge(v) for v in resp.headers(header)]

    def answer(self, resp: Response, header: str, method: str, uri: str, username: str,
               password: str, algorithm: str | None = None, nc: int = 1) -> str:
        chals = self.challenges(resp, header)
        chal = next(c for c in chals if algorithm is None or c["algorithm"] == algorithm)
        return authorization(chal, method=method, uri=uri, username=username,
                             password=password, nc=nc)
