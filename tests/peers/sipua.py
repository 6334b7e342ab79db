"""Small SIP user agents for tests: over UDP, TCP or TLS, and WebSocket (RFC 7118, WS or WSS).

Both speak SIP through our own codec (``protocols.sip``: one codec, two uses) and keep every
message they receive in a queue, so a test drives a call step by step and checks each header
on the way (Via, Contact, Record-Route).  They are deliberately dumb: no transaction layer,
no retransmissions unless a test sends twice, so a test sees exactly what the server sent.

* ``UdpUA``: an asyncio datagram endpoint on 127.0.0.1.
* ``StreamUA``: one TCP connection (TLS with an SSL context) to the server, framed by
  ``protocols.sip.framing``; its Contact names the connection's local address with
  ``transport=tcp`` or ``transport=tls``, which nothing listens on: the server reaches it only
  over the connection it registered over.
* ``WsUA``: a ``websockets`` client with the ``sip`` subprotocol; its Via is
  ``SIP/2.0/WS <random>.invalid`` and its Contact ``sip:user@<random>.invalid;transport=ws``,
  as RFC 7118 §5 describes for a browser that has no reachable address.

``Leg`` is the UA's view of one dialog (RFC 3261 §12.1): the route set, the remote target and
both tags, enough to send ACK, re-INVITE and BYE inside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field

from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from protocols import stun
from protocols.sip.builders import make_response
from protocols.sip.framing import PING, SipStream
from protocols.sip.message import CSeq, NameAddr, Request, Response, SipURI, Via
from protocols.sip.parser import parse_message
from protocols.sip.serializer import serialize
from protocols.sip.uri import parse_uri

__all__ = ["SDP", "UA", "Leg", "StreamUA", "UdpUA", "WsUA", "confirmed_call"]

#: Seconds a test waits for one expected message before failing: far above any loopback
#: round trip, well below a test's patience.
RECV_TIMEOUT = 5.0
SDP = b"v=0\r\no=ua 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n" \
      b"m=audio 9 RTP/AVP 0\r\n"
_COOKIE = "z9hG4bK"
_ids = itertools.count(1)

Message = Request | Response


@dataclass
class Leg:
    """One side's dialog state (§12.1.1 UAS, §12.1.2 UAC)."""

    call_id: str
    local: NameAddr    # our From/To value, with our tag
    remote: NameAddr   # theirs, with their tag
    target: str        # the remote Contact URI (remote target)
    routes: list[NameAddr] = field(default_factory=list)
    cseq: int = 1


class UA:
    """Common part: message queue, builders.  ``send`` is the transport's."""

    transport = "UDP"

    def __init__(self, user: str, server_host: str, server_port: int) -> None:
        self.user = user
        self.server_host = server_host
        self.server_port = server_port
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()
        self.received: list[Message] = []

    # -- transport hooks ---------------------------------------------------------------------

    @property
    def via_host(self) -> str:
        raise NotImplementedError

    @property
    def via_port(self) -> int | None:
        raise NotImplementedError

    @property
    def contact(self) -> NameAddr:
        raise NotImplementedError

    async def send_bytes(self, data: bytes) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    def _deliver(self, data: bytes) -> None:
        msg = parse_message(data)
        self.received.append(msg)
        self.inbox.put_nowait(msg)

    # -- receiving ---------------------------------------------------------------------------

    async def recv(self, match: Callable[[Message], bool] | None = None,
                   timeout: float = RECV_TIMEOUT) -> Message:
        """The next message that ``match`` accepts (others stay in ``received`` only)."""
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.inbox.get()
                if match is None or match(msg):
                    return msg

    async def response(self, status: int, method: str = "INVITE",
                       timeout: float = RECV_TIMEOUT) -> Response:
        msg = await self.recv(lambda m: isinstance(m, Response) and m.status == status
                              and m.cseq.method == method, timeout)
        assert isinstance(msg, Response)
        return msg

    async def request(self, method: str, timeout: float = RECV_TIMEOUT) -> Request:
        msg = await self.recv(lambda m: isinstance(m, Request) and m.method == method, timeout)
        assert isinstance(msg, Request)
        return msg

    async def quiet(self, seconds: float) -> list[Message]:
        """Everything that arrives in the next ``seconds`` (to check nothing more came)."""
        out: list[Message] = []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while True:
                    out.append(await self.inbox.get())
        return out

    # -- sending -----------------------------------------------------------------------------

    async def send(self, msg: Message) -> None:
        await self.send_bytes(serialize(msg))

    def via(self, branch: str | None = None) -> Via:
        b = branch or f"{_COOKIE}{os.urandom(6).hex()}"
        return Via(self.transport, self.via_host, self.via_port, {"branch": b, "rport": None})

    def aor(self, user: str | None = None) -> NameAddr:
        return NameAddr(SipURI("sip", self.server_host, user=user or self.user))

    def register(self, expires: int = 600, contact: NameAddr | None = None) -> Request:
        return Request(
            method="REGISTER", uri=SipURI("sip", self.server_host, port=self.server_port),
            vias=[self.via()], from_=self.aor().with_param("tag", _tag()), to=self.aor(),
            call_id=_call_id(), cseq=CSeq(next(_ids), "REGISTER"), max_forwards=70,
            contacts=[contact or self.contact], expires=expires)

    def invite(self, callee: str, max_forwards: int = 70) -> Request:
        uri = SipURI("sip", self.server_host, user=callee, port=self.server_port)
        return Request(
            method="INVITE", uri=uri, vias=[self.via()],
            from_=self.aor().with_param("tag", _tag()), to=NameAddr(uri), call_id=_call_id(),
            cseq=CSeq(1, "INVITE"), max_forwards=max_forwards, contacts=[self.contact],
            content_type="application/sdp", body=SDP)

    def cancel(self, invite: Request) -> Request:
        """§9.1: same Request-URI, Call-ID, From, To, CSeq number and top Via as the INVITE."""
        return Request(method="CANCEL", uri=invite.uri, vias=[invite.vias[0]],
                       from_=invite.from_, to=invite.to, call_id=invite.call_id,
                       cseq=CSeq(invite.cseq.seq, "CANCEL"), max_forwards=70)

    def ack_non2xx(self, invite: Request, resp: Response) -> Request:
        """§17.1.1.3: hop-by-hop ACK, the INVITE's branch and the response's To."""
        return Request(method="ACK", uri=invite.uri, vias=[invite.vias[0]],
                       from_=invite.from_, to=resp.to, call_id=invite.call_id,
                       cseq=CSeq(invite.cseq.seq, "ACK"), max_forwards=70)

    def reply(self, req: Request, status: int, tag: str | None = None,
              body: bytes = b"") -> Response:
        """A UAS response: Record-Route copied for dialog-creating answers (§12.1.1)."""
        resp = make_response(req, status, to_tag=tag)
        if status > 100 and req.to.tag is None:
            resp.record_routes = list(req.record_routes)
            resp.contacts = [self.contact]
        if body:
            resp.content_type = "application/sdp"
            resp.body = body
        return resp

    # -- dialogs -----------------------------------------------------------------------------

    def uac_leg(self, invite: Request, ok: Response) -> Leg:
        """§12.1.2: route set is the 2xx's Record-Route reversed; target its Contact."""
        return Leg(invite.call_id, invite.from_, ok.to, str(ok.contacts[0].uri),
                   list(reversed(ok.record_routes)), invite.cseq.seq)

    def uas_leg(self, invite: Request, tag: str) -> Leg:
        """§12.1.1: route set is the INVITE's Record-Route in order; target its Contact."""
        return Leg(invite.call_id, invite.to.with_param("tag", tag), invite.from_,
                   str(invite.contacts[0].uri), list(invite.record_routes), 0)

    def in_dialog(self, leg: Leg, method: str, *, cseq: int | None = None) -> Request:
        """§12.2.1.1: Request-URI the remote target, Route the route set (loose routing)."""
        if cseq is None:
            leg.cseq += 1
            cseq = leg.cseq
        body = SDP if method == "INVITE" else b""
        return Request(
            method=method, uri=parse_uri(leg.target), vias=[self.via()], from_=leg.local,
            to=leg.remote, call_id=leg.call_id, cseq=CSeq(cseq, method), max_forwards=70,
            routes=list(leg.routes), contacts=[self.contact] if method == "INVITE" else [],
            content_type="application/sdp" if body else None, body=body)


class UdpUA(UA):
    """A UA on a UDP socket of its own."""

    def __init__(self, user: str, server_host: str, server_port: int) -> None:
        super().__init__(user, server_host, server_port)
        self._transport: asyncio.DatagramTransport | None = None
        self.port = 0
        #: STUN answers to keep-alives this UA sent (RFC 5626 §8), beside the SIP messages.
        self.stun: list[bytes] = []

    async def start(self, port: int = 0) -> UdpUA:
        """Bound to ``port`` on 127.0.0.1 (any free one by default)."""
        ua = self

        class _Proto(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
                if stun.is_stun(data):
                    ua.stun.append(data)
                else:
                    ua._deliver(data)

        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(_Proto,
                                                           local_addr=("127.0.0.1", port))
        self._transport = transport
        self.port = int(transport.get_extra_info("sockname")[1])
        return self

    @property
    def via_host(self) -> str:
        return "127.0.0.1"

    @property
    def via_port(self) -> int | None:
        return self.port

    @property
    def contact(self) -> NameAddr:
        return NameAddr(SipURI("sip", "127.0.0.1", user=self.user, port=self.port))

    async def send_bytes(self, data: bytes) -> None:
        assert self._transport is not None
        self._transport.sendto(data, (self.server_host, self.server_port))

    async def answer(self, resp: Response) -> None:
        """A response sent where §18.2.2 says: the top Via's ``received`` and ``rport`` (RFC
        3581 §4) or its sent-by, which for a proxy of several workers is the port of the one
        that forwarded the request (``signaling.supervisor``), not the shared port."""
        assert self._transport is not None
        via = resp.vias[0]
        host = via.params.get("received") or via.host
        port = via.params.get("rport") or via.port or 5060
        self._transport.sendto(serialize(resp), (host, int(port)))

    async def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class StreamUA(UA):
    """A UA over one TCP or TLS connection to the server (RFC 3261 §18.3 framing)."""

    def __init__(self, user: str, server_host: str, server_port: int, stream_port: int,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        super().__init__(user, server_host, server_port)
        self.stream_port = stream_port
        self.ssl_context = ssl_context
        self.transport = "TLS" if ssl_context is not None else "TCP"
        self.port = 0
        #: Set when the server closed the connection (or sent what cannot be framed).
        self.closed = asyncio.Event()
        self._writer: asyncio.StreamWriter | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> StreamUA:
        reader, self._writer = await asyncio.open_connection(
            "127.0.0.1", self.stream_port, ssl=self.ssl_context,
            server_hostname="sip.example.com" if self.ssl_context else None)
        self.port = int(self._writer.get_extra_info("sockname")[1])
        self._reader = asyncio.get_running_loop().create_task(self._read(reader))
        return self

    async def _read(self, reader: asyncio.StreamReader) -> None:
        stream = SipStream()
        with contextlib.suppress(Exception):
            while data := await reader.read(65536):
                for item in stream.receive(data):
                    if isinstance(item, bytes):
                        self._deliver(item)
                    elif item is not PING:
                        return
        self.closed.set()

    @property
    def via_host(self) -> str:
        return "127.0.0.1"

    @property
    def via_port(self) -> int | None:
        return self.port

    @property
    def contact(self) -> NameAddr:
        return NameAddr(SipURI("sip", "127.0.0.1", user=self.user, port=self.port,
                               params={"transport": self.transport.lower()}))

    async def send_bytes(self, data: bytes) -> None:
        assert self._writer is not None
        self._writer.write(data)
        await self._writer.drain()

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)


class WsUA(UA):
    """A WebSocket client UA (RFC 7118): subprotocol ``sip``, one SIP message per frame;
    over TLS (WSS) when given an SSL context."""

    transport = "WS"

    def __init__(self, user: str, server_host: str, server_port: int, ws_port: int,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        super().__init__(user, server_host, server_port)
        self.ws_port = ws_port
        self.ssl_context = ssl_context
        if ssl_context is not None:
            self.transport = "WSS"
        self.host = f"{os.urandom(5).hex()}.invalid"  # §5: the client has no reachable address
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> WsUA:
        scheme = "wss" if self.ssl_context is not None else "ws"
        self._ws = await connect(f"{scheme}://127.0.0.1:{self.ws_port}",
                                 subprotocols=[Subprotocol("sip")], ssl=self.ssl_context,
                                 server_hostname="sip.example.com" if self.ssl_context else None)
        self._reader = asyncio.get_running_loop().create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self._ws is not None
        with contextlib.suppress(Exception):
            async for frame in self._ws:
                self._deliver(frame.encode() if isinstance(frame, str) else frame)

    @property
    def via_host(self) -> str:
        return self.host

    @property
    def via_port(self) -> int | None:
        return None

    @property
    def contact(self) -> NameAddr:
        return NameAddr(SipURI("sip", self.host, user=self.user, params={"transport": "ws"}))

    async def send_bytes(self, data: bytes) -> None:
        assert self._ws is not None
        await self._ws.send(data.decode("utf-8", "surrogateescape"))

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)


async def invited(caller: UA, callee: UA) -> tuple[Request, Request]:
    """``callee`` registers and ``caller`` calls it: the INVITE sent and the one received."""
    await callee.send(callee.register())
    await callee.response(200, "REGISTER")
    invite = caller.invite(callee.user)
    await caller.send(invite)
    return invite, await callee.request("INVITE")


async def confirmed_call(caller: UA, callee: UA, tag: str = "c1") -> Leg:
    """``callee`` registers, ``caller`` calls it, ``callee`` answers 200 and ``caller`` ACKs:
    the caller's leg of the confirmed dialog (its next in-dialog request goes over it)."""
    invite, got = await invited(caller, callee)
    await callee.send(callee.reply(got, 200, tag=tag, body=b"v=0\r\n"))
    leg = caller.uac_leg(invite, await caller.response(200))
    await caller.send(caller.in_dialog(leg, "ACK", cseq=1))
    await callee.request("ACK")
    return leg


def _tag() -> str:
    return os.urandom(4).hex()


def _call_id() -> str:
    return f"{os.urandom(8).hex()}@test"
