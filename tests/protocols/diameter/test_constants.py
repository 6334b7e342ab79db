"""Spot checks of the RFC numbers, and the sans-I/O rule for the whole package."""

from __future__ import annotations

import ast
from pathlib import Path

from protocols.diameter.constants import (
    HEADER_LENGTH,
    AvpCode,
    CommandCode,
    ResultCode,
)

FORBIDDEN = {"asyncio", "socket", "redis", "aiohttp", "time", "selectors", "uvloop", "threading"}


def test_numbers() -> None:
    assert HEADER_LENGTH == 20
    assert int(CommandCode.CREDIT_CONTROL) == 272 and int(CommandCode.DEVICE_WATCHDOG) == 280
    assert int(AvpCode.GRANTED_SERVICE_UNIT) == 431 and int(AvpCode.SESSION_ID) == 263
    assert int(ResultCode.DIAMETER_TOO_BUSY) == 3004
    assert int(ResultCode.DIAMETER_INVALID_AVP_LENGTH) == 5014


def test_protocols_diameter_does_no_io() -> None:
    root = Path(__file__).resolve().parents[3] / "protocols" / "diameter"
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN, f"{path.name} imports {name}"
