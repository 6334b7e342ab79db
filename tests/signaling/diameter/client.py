"""A small real-socket Diameter client for the server tests."""

from __future__ import annotations

import asyncio
import contextlib
import struct

from protocols.diameter.codec import Message, decode_message
from protocols.diameter.constants import AvpCode
from protocols.diameter.dictionary import base_dictionary
from protocols.diameter.framer import Framer
from tests.protocols.diameter.factory import cer

DICT = base_dictionary()


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.framer = Framer()
        self.pending: list[bytes] = []

    @classmethod
    async def connect(cls, port: int, source: str | None = None) -> Client:
        """Connect to the server on loopback, from ``source`` (e.g. 127.0.0.2) if given."""
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, local_addr=(source, 0) if source else None)
        return cls(reader, writer)

    async def send(self, msg: Message | bytes) -> None:
        self.writer.write(msg if isinstance(msg, bytes) else msg.encode())
        await self.writer.drain()

    async def recv(self, timeout: float = 15.0) -> Message:
        while not self.pending:
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
            if not data:
                raise ConnectionError("closed by server")
            self.pending.extend(self.framer.feed(data))
        return decode_message(self.pending.pop(0))

    async def closed(self, timeout: float = 15.0) -> bool:
        """True once the server closed the connection (after any answers)."""
        try:
            while True:
                data = await asyncio.wait_for(self.reader.read(65536), timeout)
                if not data:
                    return True
        except (ConnectionError, TimeoutError):
            return isinstance(self.reader.exception(), ConnectionError) or self.reader.at_eof()

    async def handshake(self, host: str = "client.test") -> Message:
        await self.send(cer(host))
        return await self.recv()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


def result_code(msg: Message) -> int:
    avp = msg.find(AvpCode.RESULT_CODE)
    assert avp is not None
    value: int = DICT.value(avp)
    return value


def failed_avp_codes(msg: Message) -> list[int]:
    """Codes of the AVPs in Failed-AVP, read from their headers only: for 5014 the header
    keeps the offending length, so the content need not decode (RFC 6733 §7.1.5)."""
    avp = msg.find(AvpCode.FAILED_AVP)
    assert avp is not None
    data, codes, pos = avp.data, [], 0
    while pos + 8 <= len(data):
        code, flags_len = struct.unpack_from("!II", data, pos)
        codes.append(code)
        length = flags_len & 0xFFFFFF
        if pos + length > len(data) or length < 8:
            break
        pos += (length + 3) & ~3
    return codes
