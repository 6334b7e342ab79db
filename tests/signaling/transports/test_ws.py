"""SIP over WebSocket (RFC 7118) against the in-process server's real listener."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from protocols.sip.message import Response
from protocols.sip.parser import parse_message
from tests.signaling.inproc import running_server


def _ws_register(user: str, cseq: int = 1, expires: int = 600, call_id: str = "") -> str:
    call_id = call_id or uuid.uuid4().hex
    return (f"REGISTER sip:127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bK{uuid.uuid4().hex}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:{user}@127.0.0.1>;tag=w{cseq}\r\n"
            f"To: <sip:{user}@127.0.0.1>\r\nCall-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\n"
            f"Contact: <sip:{user}@df7jal23ls0d.invalid;transport=ws>\r\nExpires: {expires}\r\n"
            f"Content-Length: 0\r\n\r\n")


async def test_register_over_ws_text_and_binary_and_removal_on_close() -> None:
    async with running_server() as srv:
        assert srv.ws_address is not None
        url = f"ws://127.0.0.1:{srv.ws_address[1]}"
        async with connect(url, subprotocols=["sip"]) as ws:  # type: ignore[list-item]
            assert ws.subprotocol == "sip"
            await ws.send(_ws_register("wsa"))
            text = await ws.recv()
            assert isinstance(text, str)  # RFC 7118 §4.2: UTF-8 message, text frame
            resp = parse_message(text.encode())
            assert isinstance(resp, Response) and resp.status == 200
            await ws.send(_ws_register("wsb").encode())  # binary frames are accepted too
            resp2 = parse_message((await ws.recv()).encode())  # type: ignore[union-attr]
            assert isinstance(resp2, Response) and resp2.status == 200
            bindings = await srv.registry.lookup("sip:wsa@127.0.0.1", 0.0)
            assert len(bindings) == 1
            assert bindings[0].transport == "ws"
            assert bindings[0].connection_id is not None
        # RFC 7118 §5: the connection is gone, so are the bindings made over it.
        for _ in range(50):
            if await srv.registry.count_bindings() == 0:
                break
            await asyncio.sleep(0.05)
        assert await srv.registry.lookup("sip:wsa@127.0.0.1", 0.0) == []
        assert await srv.registry.lookup("sip:wsb@127.0.0.1", 0.0) == []


async def test_sip_subprotocol_is_required() -> None:
    async with running_server() as srv:
        assert srv.ws_address is not None
        url = f"ws://127.0.0.1:{srv.ws_address[1]}"
        with pytest.raises(InvalidStatus) as err:
            async with connect(url):
                pass
        assert err.value.response.status_code == 400


async def test_origin_allow_list() -> None:
    async with running_server(ws_origins=["https://app.example"]) as srv:
        assert srv.ws_address is not None
        url = f"ws://127.0.0.1:{srv.ws_address[1]}"
        with pytest.raises(InvalidStatus) as err:
            async with connect(url, subprotocols=["sip"],  # type: ignore[list-item]
                               origin="https://evil.example"):  # type: ignore[arg-type]
                pass
        assert err.value.response.status_code == 403
        async with connect(url, subprotocols=["sip"],  # type: ignore[list-item]
                           origin="https://app.example") as ws:  # type: ignore[arg-type]
            await ws.send(_ws_register("origin-ok"))
            assert "200 OK" in str(await ws.recv())


async def test_oversized_message_closes_the_connection() -> None:
    async with running_server(ws_max_size=2048) as srv:
        assert srv.ws_address is not None
        url = f"ws://127.0.0.1:{srv.ws_address[1]}"
        async with connect(url, subprotocols=["sip"]) as ws:  # type: ignore[list-item]
            await ws.send("X" * 5000)
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
