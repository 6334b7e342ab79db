"""``storm import`` on captures taken with real tools: dumpcap on loopback while SIPp, the storm
engine, or a real TCP connection carrying Diameter run."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import dpkt
import pytest

from harness.serverproc import free_udp_ports
from loadtest.engine import Engine, EngineConfig
from loadtest.pcapimport import import_capture
from loadtest.responder import Responder
from loadtest.trace import Call, CcrSession, Event, Register, read_trace
from protocols.diameter.codec import Avp, Message, encode_avps
from protocols.diameter.constants import AVP_FLAG_M, FLAG_R

PORTS = range(39100, 39200)  # this helper's assigned range, used for fixed-port peers


def _free_udp_port() -> int:
    for port in PORTS:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s2:
            try:
                s2.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port in 39100-39199")


@contextlib.contextmanager
def capture(path: Path, bpf: str, fmt: str = "pcapng") -> Iterator[None]:
    """dumpcap on loopback; returns once it is capturing, stops (flushing) on exit."""
    proc = subprocess.Popen(["dumpcap", "-i", "lo", "-f", bpf, "-w", str(path),
                             "-n" if fmt == "pcapng" else "-P"],
                            stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    deadline = time.monotonic() + 20
    for line in proc.stderr:
        if "Capturing on" in line or time.monotonic() > deadline:
            break
    time.sleep(0.5)  # "Capturing on" is printed just before the capture is really live
    try:
        yield
        time.sleep(0.3)  # let the last packets reach the capture buffer
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=20)


def _sipp_calls(tmp: Path, fmt: str, calls: int, pause_ms: int) -> Path:
    port = _free_udp_port()
    pcap = tmp / f"calls.{fmt}"
    # Each SIPp binds four media ports from -mp (6000 by default): free ones, or a SIPp of
    # another test running meanwhile makes this one exit 254 ("unable to bind").
    uas = subprocess.Popen(["sipp", "-sn", "uas", "-i", "127.0.0.1", "-p", str(port),
                            "-mp", str(free_udp_ports(4)),
                            "-m", str(calls), "-nostdin", "-timeout", "30s"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp)
    try:
        time.sleep(0.3)
        with capture(pcap, f"udp port {port}", fmt):
            uac = subprocess.run(
                ["sipp", "-sn", "uac", f"127.0.0.1:{port}", "-i", "127.0.0.1",
                 "-p", str(port + 1), "-mp", str(free_udp_ports(4)),
                 "-m", str(calls), "-r", "20", "-d", str(pause_ms),
                 "-s", "bob", "-nostdin", "-timeout", "30s"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp, timeout=60)
            assert uac.returncode == 0
    finally:
        uas.terminate()
        uas.wait(timeout=10)
    return pcap


@pytest.mark.parametrize("fmt", ["pcapng", "pcap"])
def test_sipp_calls_become_call_events_with_their_timing(tmp_path: Path, fmt: str) -> None:
    pcap = _sipp_calls(tmp_path, fmt, calls=6, pause_ms=400)
    out = tmp_path / "trace.jsonl"
    res = import_capture(pcap, out, sip_ports=None)
    # INVITE, 180, 200, ACK, BYE, 200 per call (SIPp's built-in uac/uas).
    assert res.sip_messages == 6 * 6 and res.undecodable == 0
    trace = read_trace(out)
    assert trace.header.source == f"import {pcap.name}"
    calls = [e for e in trace.events if isinstance(e, Call)]
    assert len(calls) == res.events == 6
    assert all(c.callee == "bob" and c.user == "sipp" for c in calls)
    # SIPp pauses 400 ms between ACK and BYE: the holding time is that, within capture jitter.
    assert all(0.39 <= c.hold <= 1.0 for c in calls)
    # -r 20: one call every 50 ms, first at 0; original timing kept.
    assert calls[0].t < 0.01
    # (A loaded machine may make SIPp catch up in bursts: check the span, not each gap.)
    assert [c.t for c in calls] == sorted(c.t for c in calls)
    assert 0.2 <= calls[-1].t - calls[0].t <= 1.5


async def test_engine_registrations_round_trip_through_a_capture(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    tr, _ = await loop.create_datagram_endpoint(Responder, local_addr=("127.0.0.1", 0))
    port = tr.get_extra_info("sockname")[1]
    events: list[Event] = [Register(t=i * 0.01, user=f"user{i}", domain="example.com",
                                    expires=600 + i) for i in range(25)]
    pcap = tmp_path / "reg.pcapng"
    try:
        with capture(pcap, f"udp port {port}"):
            await Engine(events, EngineConfig(target=("127.0.0.1", port), sockets=4)).run()
    finally:
        tr.close()
    out = tmp_path / "reg.jsonl"
    res = import_capture(pcap, out, sip_ports={port})
    regs = read_trace(out).events
    assert res.events == 25
    assert [(e.user, e.expires) for e in regs if isinstance(e, Register)] == [
        (f"user{i}", 600 + i) for i in range(25)]
    # 25 registrations 10 ms apart in the trace: 240 ms from first to last in the capture.
    assert 0.23 <= regs[-1].t - regs[0].t <= 1.0


def _avp(code: int, data: bytes) -> Avp:
    return Avp(code, AVP_FLAG_M, data)


def _ccr(sid: str, rtype: int, number: int, imsi: str) -> bytes:
    sub = encode_avps([_avp(450, struct.pack("!I", 1)), _avp(444, imsi.encode())])
    avps = [_avp(263, sid.encode()), _avp(264, b"client.test"), _avp(296, b"client.realm"),
            _avp(283, b"server.realm"), _avp(258, struct.pack("!I", 4)),
            _avp(461, b"32251@3gpp.org"), _avp(416, struct.pack("!I", rtype)),
            _avp(415, struct.pack("!I", number)), _avp(443, sub)]
    return Message(272, FLAG_R, 4, number + 1, number + 1, avps).encode()


async def test_diameter_ccr_sessions_over_tcp_are_reassembled(tmp_path: Path) -> None:
    received = bytearray()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            received.extend(data)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pcap = tmp_path / "dia.pcapng"
    with capture(pcap, f"tcp port {port}"):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        msgs = [_ccr("s1;1", 1, 0, "001010000000001"), _ccr("s2;1", 1, 0, "001010000000002"),
                _ccr("s1;1", 2, 1, "001010000000001"), _ccr("s1;1", 2, 2, "001010000000001")]
        blob = b"".join(msgs)
        # Split mid-message so the importer must reassemble across segments.
        for chunk in (blob[:30], blob[30:250], blob[250:]):
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        term = _ccr("s1;1", 3, 3, "001010000000001")
        writer.write(term)
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.close()
        await writer.wait_closed()
        await asyncio.sleep(0.1)
    server.close()
    await server.wait_closed()
    assert bytes(received) == blob + term  # every byte really crossed TCP
    out = tmp_path / "dia.jsonl"
    res = import_capture(pcap, out, diameter_ports={port})
    assert res.diameter_messages == 5 and res.undecodable == 0
    sessions = {e.user: e for e in read_trace(out).events if isinstance(e, CcrSession)}
    assert set(sessions) == {"001010000000001", "001010000000002"}
    s1 = sessions["001010000000001"]
    assert s1.updates == 2 and s1.domain == "client.realm"
    assert 0.3 <= s1.hold <= 1.0
    assert sessions["001010000000002"].hold == 0.0  # never terminated in the capture


def test_garbage_and_unsupported_captures(tmp_path: Path) -> None:
    path = tmp_path / "junk.pcap"
    with open(path, "wb") as fh:
        w = dpkt.pcap.Writer(fh)
        udp = dpkt.udp.UDP(sport=5060, dport=5060, data=b"INVITE nonsense\r\n\r\n")
        udp.ulen = len(udp)
        ip = dpkt.ip.IP(src=b"\x7f\x00\x00\x01", dst=b"\x7f\x00\x00\x01", p=17, data=udp)
        ip.len = len(ip)
        eth = dpkt.ethernet.Ethernet(data=ip, type=dpkt.ethernet.ETH_TYPE_IP)
        w.writepkt(bytes(eth), ts=1.0)
        w.writepkt(b"\x00\x01", ts=1.5)  # truncated frame
    res = import_capture(path, tmp_path / "o.jsonl")
    assert res.packets == 2 and res.undecodable == 2 and res.events == 0
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"not a capture at all")
    with pytest.raises(ValueError):
        import_capture(bad, tmp_path / "o2.jsonl")
