"""The owner side of the ``shared`` engine: it runs the interface's methods only, and a bad
frame closes that one connection (counted), never the owner or another worker's connection."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from signaling.registry import MemoryRegistry
from signaling.registry.owner import RegistryOwner
from signaling.registry.shared import SharedRegistry
from signaling.registry.wire import HEADER


@pytest.fixture
async def sock_path() -> AsyncIterator[str]:
    with tempfile.TemporaryDirectory(prefix="sig-owner-") as tmp:
        yield str(Path(tmp) / "registry.sock")


async def test_malformed_frame_closes_only_that_connection(sock_path: str) -> None:
    owner = RegistryOwner(MemoryRegistry(), sock_path)
    await owner.start()
    reg = SharedRegistry(sock_path)
    try:
        await reg.ping()
        reader, writer = await asyncio.open_unix_connection(sock_path)
        writer.write(b"\x00\x00\x00\x03abc")  # not a request
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5.0) == b""  # closed by the owner
        reader2, writer2 = await asyncio.open_unix_connection(sock_path)
        writer2.write(b"\x7f\xff\xff\xff")  # and an absurd length on another one
        await writer2.drain()
        assert await asyncio.wait_for(reader2.read(), 5.0) == b""
        assert owner.malformed == 2
        assert await reg.count_aors() == 0  # the worker's connection is untouched
        writer.close()
        writer2.close()
    finally:
        await reg.close()
        await owner.close()


async def test_only_interface_methods_run(sock_path: str) -> None:
    owner = RegistryOwner(MemoryRegistry(), sock_path)
    await owner.start()
    try:
        reader, writer = await asyncio.open_unix_connection(sock_path)
        body = msgspec.msgpack.encode((1, "close", []))  # a method, but not the interface's
        writer.write(HEADER.pack(len(body)) + body)
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5.0) == b""
        assert owner.malformed == 1
        writer.close()
        reader, writer = await asyncio.open_unix_connection(sock_path)
        body = msgspec.msgpack.encode((2, "lookup", ["sip:a@x"]))  # an argument missing
        writer.write(HEADER.pack(len(body)) + body)
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5.0) == b""
        assert owner.malformed == 2
        writer.close()
    finally:
        await owner.close()
