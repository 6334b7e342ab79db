"""Erlang/OTP's diameter application as a Credit-Control client (CCR-I, CCR-U, CCR-T)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from protocols.diameter.allow import parse_allowed_peer
from signaling.diameter import DiameterServer
from signaling.metrics import Metrics
from signaling.registry.memory import MemoryRegistry
from tests.signaling.diameter.conftest import make_config
from tests.signaling.diameter.peers import build_erlang_client, require

SESSIONS = 3


async def test_erlang_credit_control_sessions(tmp_path: Path) -> None:
    outdir = build_erlang_client(tmp_path)
    # Its Origin-Host pinned to its address (issue 20): a real CER passes the allow list.
    config = make_config(allowed_peers=(parse_allowed_peer("erl.test@127.0.0.1"),))
    server = DiameterServer(config, Metrics(), MemoryRegistry())
    await server.start()
    try:
        proc = await asyncio.create_subprocess_exec(
            require("erl"), "-noshell", "-pa", str(outdir),
            "-eval", f'cc_client:main(["{server.port}", "{SESSIONS}"])',
            cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        text = out.decode()
        assert proc.returncode == 0, text
        lines = [ln for ln in text.splitlines() if ln.startswith("CCA ")]
        assert len(lines) == 3 * SESSIONS, text
        for line in lines:
            _, _sid, rtype, result, gsu = line.split(" ", 4)
            assert result == "result=2001", line
            if rtype in ("1", "2"):  # Initial and Update get a grant: what was requested
                assert re.search(r"'CC-Time' => \[60\]", gsu), line
            else:
                assert gsu == "gsu=none", line
        assert "DONE" in text
        assert server.m_requests.get("CCR") == 3 * SESSIONS
        assert server.session_count() == 0  # every session terminated
        assert server.m_dropped.get("unknown_peer") == 0
    finally:
        await server.close(0.5)
