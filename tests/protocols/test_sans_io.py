"""protocols/ is sans-I/O: no module under it may do I/O, run an event loop or read a clock.

Every module's imports are read with ``ast`` (not by importing it, so a module that would only
misbehave on import is caught too): the forbidden top-level modules below may not be imported,
directly, through ``from``, or through ``__import__`` / ``importlib.import_module`` with a
literal name; ``datetime`` may be used for values but its clock functions (``now``, ``utcnow``,
``today``) may not be called.  Time is passed in as ``now`` (ARCHITECTURE: the aioquic model).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PROTOCOLS = Path(__file__).resolve().parents[2] / "protocols"

#: Top-level modules that mean I/O, concurrency or a clock.
FORBIDDEN = frozenset({
    "asyncio", "socket", "selectors", "time", "redis", "aiohttp", "asyncpg", "websockets",
    "uvloop", "threading", "ssl", "subprocess", "multiprocessing", "concurrent", "signal",
    "select",
})
#: Clock reads on datetime.datetime / datetime.date.
CLOCK_CALLS = frozenset({"now", "utcnow", "today"})


def violations(source: str, filename: str = "<src>") -> list[str]:
    tree = ast.parse(source, filename)
    found: list[str] = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
            if node.module == "datetime":
                found += [f"{filename}:{node.lineno} imports the clock datetime.{a.name}"
                          for a in node.names if a.name in CLOCK_CALLS]
        elif isinstance(node, ast.Call):
            func = node.func
            called = func.id if isinstance(func, ast.Name) else (
                func.attr if isinstance(func, ast.Attribute) else "")
            if called in ("__import__", "import_module") and node.args and isinstance(
                    node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                names = [node.args[0].value]
            if (isinstance(func, ast.Attribute) and func.attr in CLOCK_CALLS
                    and _names_date(func.value)):
                found.append(f"{filename}:{node.lineno} reads the clock ({func.attr})")
        line = getattr(node, "lineno", 0)
        found += [f"{filename}:{line} imports {name}" for name in names
                  if name.split(".")[0] in FORBIDDEN]
    return found


def _names_date(node: ast.expr) -> bool:
    if isinstance(node, ast.Name):
        return node.id in ("datetime", "date")
    return isinstance(node, ast.Attribute) and node.attr in ("datetime", "date")


def modules() -> list[Path]:
    found = sorted(PROTOCOLS.rglob("*.py"))
    assert found, f"no modules under {PROTOCOLS}"
    return found


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PROTOCOLS)))
def test_module_is_sans_io(path: Path) -> None:
    assert violations(path.read_text(), str(path)) == []


def test_every_package_is_walked() -> None:
    packages = {p.parent.name for p in modules()}
    assert {"protocols", "sip", "diameter"} <= packages
    assert any(p.name == "parser.py" for p in modules())


@pytest.mark.parametrize(
    "source",
    [
        "import asyncio", "import socket as s", "import os, time", "from time import monotonic",
        "from asyncio.events import AbstractEventLoop", "import redis.asyncio",
        "from aiohttp import web", "import asyncpg", "import websockets", "import uvloop",
        "import threading", "import selectors", "x = __import__('socket')",
        "import importlib\nm = importlib.import_module('time')",
        "import datetime\nx = datetime.datetime.now()",
        "from datetime import datetime\nx = datetime.utcnow()",
        "from datetime import date\nx = date.today()", "from datetime import now",
        "def f():\n    import time\n    return time.time()",
    ],
)
def test_the_checker_catches_violations(source: str) -> None:
    assert violations(source) != []


@pytest.mark.parametrize(
    "source",
    ["import re", "from datetime import datetime, timezone\nx = datetime(2020, 1, 1)",
     "from . import errors", "from .timers import Timer", "import dataclasses",
     "x = obj.now()", "import timeit_like_name"],
)
def test_the_checker_allows_pure_code(source: str) -> None:
    assert violations(source) == []
