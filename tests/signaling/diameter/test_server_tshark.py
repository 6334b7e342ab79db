"""tshark decodes a capture of the server's traffic without malformed packets or expert errors."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

from protocols.diameter.builders import LocalIdentity, request
from protocols.diameter.doic import supported_features_avp
from signaling.diameter import DiameterServer
from signaling.metrics import Metrics
from signaling.registry.memory import MemoryRegistry
from tests.protocols.diameter.factory import DICT, ccr
from tests.signaling.diameter.client import Client, result_code
from tests.signaling.diameter.conftest import make_config
from tests.signaling.diameter.peers import build_erlang_client, free_port, require

CLIENT = LocalIdentity("client.test", "test")
# Wireshark's expert severity for errors (epan/proto.h PI_ERROR).
PI_ERROR = 0x00800000


async def _capture(port: int, pcap: Path) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        require("tshark"), "-i", "lo", "-f", f"tcp port {port}", "-w", str(pcap),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    assert proc.stderr is not None
    while True:
        line = await asyncio.wait_for(proc.stderr.readline(), 20)
        assert line, "tshark exited before capturing"
        if b"Capturing on" in line:
            break
    # "Capturing on" comes before the capture filter is live: probe with bare TCP connections
    # until one shows up in the file, so no Diameter message is missed.
    for _ in range(100):
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()
        await asyncio.sleep(0.1)
        if pcap.exists() and _count_frames(pcap) > 0:
            return proc
    raise AssertionError("tshark never saw the probe connections")


def _count_frames(pcap: Path) -> int:
    out = subprocess.run([require("tshark"), "-r", str(pcap)], capture_output=True, text=True)
    return len(out.stdout.splitlines())


async def _python_client_traffic(port: int) -> None:
    c = await Client.connect(port)
    assert result_code(await c.handshake()) == 2001
    for number, rtype in enumerate((1, 2, 2, 3)):
        await c.send(ccr(rtype=rtype, number=number, requested=60, used=30 if number else None))
        assert result_code(await c.recv()) == 2001
    await c.send(request(280, 0, 9, 9, list(CLIENT.origin_avps)))
    assert result_code(await c.recv()) == 2001
    await c.send(ccr(session="unknown", rtype=2, number=1))
    assert result_code(await c.recv()) == 5002
    await c.send(request(282, 0, 10, 10, [*CLIENT.origin_avps, DICT.make("Disconnect-Cause", 0)]))
    dpa = await c.recv()
    assert result_code(dpa) == 2001
    await c.close()


def _tshark(pcap: Path, port: int, *args: str) -> str:
    out = subprocess.run(
        [require("tshark"), "-r", str(pcap), "-d", f"tcp.port=={port},diameter", *args],
        check=True, capture_output=True, text=True)
    return out.stdout


def _values(text: str) -> list[str]:
    return [v for line in text.split() for v in line.split(",") if v]


async def test_capture_decodes_cleanly(tmp_path: Path) -> None:
    port = free_port()
    server = DiameterServer(make_config(port=port), Metrics(), MemoryRegistry())
    await server.start()
    pcap = tmp_path / "diameter.pcapng"
    tshark = await _capture(port, pcap)
    try:
        await _python_client_traffic(port)
        outdir = build_erlang_client(tmp_path)
        erl = await asyncio.create_subprocess_exec(
            require("erl"), "-noshell", "-pa", str(outdir),
            "-eval", f'cc_client:main(["{port}", "2"])', cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(erl.communicate(), 60)
        assert erl.returncode == 0, out.decode()
        await asyncio.sleep(0.5)  # let the last segments reach the capture
    finally:
        tshark.terminate()
        await tshark.wait()
        await server.close(0.5)
    # One TCP segment may carry several messages: tshark joins their values with commas.
    codes = _values(_tshark(pcap, port, "-Y", "diameter", "-T", "fields",
                            "-e", "diameter.cmd.code"))
    # CER/CEA twice, 4+6 CCR/CCA, DWR/DWA, 5002 CCR/CCA, DPR/DPA: every message decoded.
    assert codes.count("272") >= 2 * (4 + 1 + 6), " ".join(codes)
    assert "257" in codes and "280" in codes and "282" in codes
    bad = _tshark(pcap, port, "-Y", f"_ws.malformed || _ws.expert.severity >= {PI_ERROR}")
    assert bad.strip() == "", bad
    expert = _tshark(pcap, port, "-q", "-z", "expert,error")
    assert "Errors (" not in expert, expert
    rc = _values(_tshark(pcap, port, "-Y", "diameter", "-T", "fields",
                         "-e", "diameter.Result-Code"))
    assert rc.count("2001") >= 4 + 1 + 6 + 2 and "5002" in rc


async def test_doic_avps_decode_in_wireshark(tmp_path: Path) -> None:
    """Wireshark's own dictionary reads our OC-Supported-Features and OC-OLR (RFC 7683 §7)."""
    port = free_port()
    # A report that holds still for the test (the reduction moves at most once an hour).
    server = DiameterServer(make_config(port=port, doic_interval=3600.0), Metrics(),
                            MemoryRegistry())
    await server.start()
    assert server.reporter is not None
    server.reporter.observe(lambda: 1.0, asyncio.get_running_loop().time())  # as if overloaded
    pcap = tmp_path / "doic.pcapng"
    tshark = await _capture(port, pcap)
    try:
        c = await Client.connect(port)
        assert result_code(await c.handshake()) == 2001
        await c.send(ccr(rtype=4, extra=[supported_features_avp()]))
        assert result_code(await c.recv()) == 2001
        await c.close()
        await asyncio.sleep(0.5)
    finally:
        tshark.terminate()
        await tshark.wait()
        await server.close(0.5)
    bad = _tshark(pcap, port, "-Y", f"_ws.malformed || _ws.expert.severity >= {PI_ERROR}")
    assert bad.strip() == "", bad
    fields = _tshark(pcap, port, "-Y", "diameter.OC-OLR", "-T", "fields",
                     "-e", "diameter.flags.request", "-e", "diameter.OC-Report-Type",
                     "-e", "diameter.OC-Reduction-Percentage",
                     "-e", "diameter.OC-Validity-Duration", "-e", "diameter.OC-Feature-Vector")
    (line,) = fields.strip().splitlines()  # the CCA, and only it, carries a report
    flag, report_type, reduction, validity, vector = line.split("\t")
    assert flag in ("0", "False") and report_type == "0" and reduction == "20"
    assert validity == "30" and int(vector, 0) == 1
    requests = "diameter.OC-Supported-Features && diameter.flags.request == 1"
    assert _tshark(pcap, port, "-Y", requests, "-T", "fields",
                   "-e", "diameter.cmd.code").split() == ["272"]
