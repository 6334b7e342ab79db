"""DiameterServer over real TCP sockets: CER, Credit-Control, every RFC 6733 §7 error, shedding."""

from __future__ import annotations

import asyncio
import struct

import pytest
import uvloop

from protocols.diameter.builders import LocalIdentity, answer
from protocols.diameter.codec import Avp
from protocols.diameter.constants import (
    AVP_FLAG_M,
    FLAG_E,
    FLAG_P,
    FLAG_R,
    AvpCode,
    ResultCode,
)
from protocols.diameter.creditcontrol import Units
from signaling.diameter import DiameterServer
from signaling.metrics import Metrics
from signaling.registry.memory import MemoryRegistry
from tests.protocols.diameter.factory import DICT, ccr, cer, without
from tests.signaling.diameter.client import Client, failed_avp_codes, result_code
from tests.signaling.diameter.conftest import make_config

CLIENT = LocalIdentity("client.test", "test")


async def _open(server: DiameterServer) -> Client:
    c = await Client.connect(server.port)
    cea = await c.handshake()
    assert result_code(cea) == ResultCode.DIAMETER_SUCCESS
    return c


async def test_capabilities_exchange_answer(server: DiameterServer) -> None:
    c = await Client.connect(server.port)
    cea = await c.handshake()
    assert not cea.is_request and cea.command_code == 257
    host = cea.find(AvpCode.ORIGIN_HOST)
    assert host is not None and DICT.value(host) == "server.test"
    apps = [DICT.value(a) for a in cea.find_all(AvpCode.AUTH_APPLICATION_ID)]
    assert apps == [4]
    assert cea.find(AvpCode.HOST_IP_ADDRESS) is not None
    (info,) = server.peers()
    assert info.origin_host == "client.test" and info.state == "R-Open"
    assert info.applications == (4,)
    await c.close()


async def test_credit_control_initial_update_termination(server: DiameterServer) -> None:
    c = await _open(server)
    await c.send(ccr(rtype=1, number=0, requested=30, hbh=1))
    cca = await c.recv()
    assert result_code(cca) == 2001 and cca.hop_by_hop == 1
    gsu = cca.find(AvpCode.GRANTED_SERVICE_UNIT)
    assert gsu is not None
    granted = {DICT.value(child) for child in gsu.children()}
    assert 30 in granted
    assert server.session_count() == 1
    assert server.sessions()[0].session_id == "client.test;1;1"
    await c.send(ccr(rtype=2, number=1, used=30, hbh=2))
    assert result_code(await c.recv()) == 2001
    await c.send(ccr(rtype=3, number=2, used=10, hbh=3))
    assert result_code(await c.recv()) == 2001
    assert server.session_count() == 0
    text = server.metrics.exposition().decode()
    assert 'signaling_diameter_requests_total{command="CCR"} 3.0' in text
    assert 'signaling_diameter_answers_total{result_code="2001"} 4.0' in text
    assert 'signaling_diameter_peers{state="R-Open"} 1.0' in text
    await c.close()


async def test_update_for_unknown_session_is_5002(server: DiameterServer) -> None:
    c = await _open(server)
    await c.send(ccr(session="nope", rtype=2, number=1))
    assert result_code(await c.recv()) == ResultCode.DIAMETER_UNKNOWN_SESSION_ID
    await c.close()


async def test_request_number_out_of_order_is_5004(server: DiameterServer) -> None:
    c = await _open(server)
    for number, rtype in ((0, 1), (3, 2)):
        await c.send(ccr(rtype=rtype, number=number))
        assert result_code(await c.recv()) == 2001
    await c.send(ccr(rtype=2, number=2))
    ans = await c.recv()
    assert result_code(ans) == ResultCode.DIAMETER_INVALID_AVP_VALUE
    assert failed_avp_codes(ans) == [AvpCode.CC_REQUEST_NUMBER]
    await c.close()


async def test_request_before_cer_is_3010_and_closed(server: DiameterServer) -> None:
    c = await Client.connect(server.port)
    await c.send(ccr(hbh=9))
    ans = await c.recv()
    assert result_code(ans) == ResultCode.DIAMETER_UNKNOWN_PEER
    assert ans.flags & FLAG_E and ans.hop_by_hop == 9
    assert await c.closed()
    assert server.peers() == []


async def test_answer_before_cer_closes(server: DiameterServer) -> None:
    c = await Client.connect(server.port)
    await c.send(answer(ccr(), 2001, CLIENT))
    assert await c.closed()


async def test_no_common_application_is_5010_and_closed(server: DiameterServer) -> None:
    c = await Client.connect(server.port)
    await c.send(cer(apps=frozenset({16777238})))
    cea = await c.recv()
    assert cea.command_code == 257 and result_code(cea) == ResultCode.DIAMETER_NO_COMMON_APPLICATION
    assert await c.closed()
    assert server.peers() == []


async def test_cer_missing_avp_is_5005_and_closed(server: DiameterServer) -> None:
    c = await Client.connect(server.port)
    await c.send(without(cer(), AvpCode.ORIGIN_REALM))
    cea = await c.recv()
    assert result_code(cea) == ResultCode.DIAMETER_MISSING_AVP
    assert failed_avp_codes(cea) == [AvpCode.ORIGIN_REALM]
    assert await c.closed()


def _bad_header_bits() -> bytes:
    msg = ccr()
    msg.flags = FLAG_R | FLAG_P | FLAG_E
    return msg.encode()


def _unknown_command() -> bytes:
    msg = ccr()
    msg.command_code = 9999
    return msg.encode()


def _other_application() -> bytes:
    msg = ccr()
    msg.application_id = 16777238
    return msg.encode()


def _broken_avp_length() -> bytes:
    wire = bytearray(ccr(extra=[Avp(AvpCode.SERVICE_CONTEXT_ID, AVP_FLAG_M, b"abcd")]).encode())
    # Make the last AVP claim 200 bytes: it overruns the message (§7.1.5, 5014).
    struct.pack_into("!I", wire, len(wire) - 8, (AVP_FLAG_M << 24) | 200)
    return bytes(wire)


def _wrong_size_value() -> bytes:
    msg = without(ccr(), AvpCode.CC_REQUEST_NUMBER)
    msg.avps.append(Avp(AvpCode.CC_REQUEST_NUMBER, AVP_FLAG_M, b"\0\0"))
    return msg.encode()


@pytest.mark.parametrize("wire, code, e_bit, failed", [
    (_unknown_command(), ResultCode.DIAMETER_COMMAND_UNSUPPORTED, True, None),
    (_other_application(), ResultCode.DIAMETER_APPLICATION_UNSUPPORTED, True, None),
    (_bad_header_bits(), ResultCode.DIAMETER_INVALID_HDR_BITS, True, None),
    (ccr(extra=[Avp(AvpCode.USED_SERVICE_UNIT, AVP_FLAG_M | 0x02, b"")]).encode(),
     ResultCode.DIAMETER_INVALID_AVP_BITS, True, AvpCode.USED_SERVICE_UNIT),
    (ccr(extra=[Avp(99999, AVP_FLAG_M, b"x")]).encode(),
     ResultCode.DIAMETER_AVP_UNSUPPORTED, False, 99999),
    (ccr(rtype=7).encode(), ResultCode.DIAMETER_INVALID_AVP_VALUE, False,
     AvpCode.CC_REQUEST_TYPE),
    (without(ccr(), AvpCode.SERVICE_CONTEXT_ID).encode(), ResultCode.DIAMETER_MISSING_AVP,
     False, AvpCode.SERVICE_CONTEXT_ID),
    (_wrong_size_value(), ResultCode.DIAMETER_INVALID_AVP_LENGTH, False,
     AvpCode.CC_REQUEST_NUMBER),
    (_broken_avp_length(), ResultCode.DIAMETER_INVALID_AVP_LENGTH, False,
     AvpCode.SERVICE_CONTEXT_ID),
])
async def test_protocol_errors_get_the_rfc_answer(
    server: DiameterServer, wire: bytes, code: int, e_bit: bool, failed: int | None
) -> None:
    c = await _open(server)
    await c.send(wire)
    ans = await c.recv()
    assert result_code(ans) == code
    assert bool(ans.flags & FLAG_E) is e_bit
    assert not ans.is_request and ans.hop_by_hop == 10
    if failed is not None:
        assert failed_avp_codes(ans) == [failed]
    # Session-Id echoed first (§6.2, §8.8), even when the later AVPs could not be split.
    assert ans.avps[0].code == AvpCode.SESSION_ID and ans.avps[0].data == b"client.test;1;1"
    # The connection stays usable: the message boundary was intact.
    await c.send(ccr(session="after", rtype=4, number=0, hbh=11))
    after = await c.recv()
    assert result_code(after) == 2001 and after.hop_by_hop == 11
    await c.close()


async def test_unsupported_version_is_5011_then_closed(server: DiameterServer) -> None:
    c = await _open(server)
    wire = bytearray(ccr(hbh=5).encode())
    wire[0] = 2
    await c.send(bytes(wire))
    ans = await c.recv()
    assert result_code(ans) == ResultCode.DIAMETER_UNSUPPORTED_VERSION and ans.hop_by_hop == 5
    assert await c.closed()


@pytest.mark.parametrize("length", [21, 0x7FFFFC])
async def test_garbage_length_is_5015_then_closed(server: DiameterServer, length: int) -> None:
    c = await _open(server)
    wire = bytearray(ccr(hbh=6).encode())
    struct.pack_into("!I", wire, 0, (1 << 24) | length)
    await c.send(bytes(wire))
    ans = await c.recv()
    assert result_code(ans) == ResultCode.DIAMETER_INVALID_MESSAGE_LENGTH
    assert await c.closed()


async def test_short_garbage_closes_without_answer(server: DiameterServer) -> None:
    c = await _open(server)
    await c.send(b"\x01\x00\x00\x08")
    assert await c.closed()
    assert c.pending == []


async def test_dwr_is_answered(server: DiameterServer) -> None:
    c = await _open(server)
    from protocols.diameter.builders import request

    await c.send(request(280, 0, 77, 77, list(CLIENT.origin_avps)))
    dwa = await c.recv()
    assert dwa.command_code == 280 and not dwa.is_request and result_code(dwa) == 2001
    assert dwa.hop_by_hop == 77
    await c.close()


async def test_full_queue_is_answered_3004_and_counted() -> None:
    gate = asyncio.Event()
    entered = asyncio.Event()

    class GatedStore(MemoryRegistry):
        async def get_session(self, session_id: str) -> bytes | None:
            entered.set()
            await gate.wait()
            return await super().get_session(session_id)

    srv = DiameterServer(make_config(workers=1, queue_size=2), Metrics(), GatedStore())
    await srv.start()
    try:
        c = await _open(srv)
        await c.send(ccr(session="s0", rtype=1, number=0, hbh=100))
        await asyncio.wait_for(entered.wait(), 5.0)  # the only worker holds it, blocked
        for i in range(1, 10):
            await c.send(ccr(session=f"s{i}", rtype=1, number=0, hbh=100 + i))
        busy = [await c.recv() for _ in range(7)]
        assert all(result_code(a) == ResultCode.DIAMETER_TOO_BUSY and a.flags & FLAG_E
                   for a in busy)
        gate.set()
        rest = [await c.recv() for _ in range(3)]
        assert sorted(result_code(a) for a in rest) == [2001, 2001, 2001]
        assert srv.m_shed.total() == 7
        assert 'signaling_diameter_shed_total 7.0' in srv.metrics.exposition().decode()
        await c.close()
    finally:
        gate.set()
        await srv.close(1.0)


async def test_close_sends_dpr_and_waits_for_dpa() -> None:
    srv = DiameterServer(make_config(), Metrics(), MemoryRegistry())
    await srv.start()
    c = await _open(srv)
    closing = asyncio.get_running_loop().create_task(srv.close(5.0))
    dpr = await c.recv()
    assert dpr.command_code == 282 and dpr.is_request
    cause = dpr.find(AvpCode.DISCONNECT_CAUSE)
    assert cause is not None
    await c.send(answer(dpr, 2001, CLIENT))
    assert await c.closed()
    await asyncio.wait_for(closing, 5.0)
    assert srv.peers() == []


async def test_peer_dpr_is_answered_and_peer_forgotten(server: DiameterServer) -> None:
    from protocols.diameter.builders import request

    c = await _open(server)
    dpr = request(282, 0, 5, 5, [*CLIENT.origin_avps, DICT.make("Disconnect-Cause", 0)])
    await c.send(dpr)
    dpa = await c.recv()
    assert dpa.command_code == 282 and result_code(dpa) == 2001
    assert server.peers()[0].state == "Closing"
    await c.close()
    for _ in range(100):
        if not server.peers():
            break
        await asyncio.sleep(0.01)
    assert server.peers() == []


async def test_tcc_releases_silent_sessions() -> None:
    srv = DiameterServer(make_config(tcc=0.5), Metrics(), MemoryRegistry())
    await srv.start()
    try:
        c = await _open(srv)
        await c.send(ccr(rtype=1, number=0))
        assert result_code(await c.recv()) == 2001
        assert srv.session_count() == 1
        for _ in range(40):
            if srv.session_count() == 0:
                break
            await asyncio.sleep(0.1)
        assert srv.session_count() == 0 and srv.credit_control.m_expired.total() == 1
        await c.send(ccr(rtype=2, number=1))
        assert result_code(await c.recv()) == ResultCode.DIAMETER_UNKNOWN_SESSION_ID
        await c.close()
    finally:
        await srv.close(1.0)


async def test_session_survives_server_restart_with_shared_store() -> None:
    store = MemoryRegistry()
    first = DiameterServer(make_config(), Metrics(), store)
    await first.start()
    c = await _open(first)
    await c.send(ccr(rtype=1, number=0))
    assert result_code(await c.recv()) == 2001
    await c.close()
    await first.close(0.5)
    second = DiameterServer(make_config(), Metrics(), store)
    await second.start()
    try:
        c = await _open(second)
        await c.send(ccr(rtype=2, number=1, used=5))
        assert result_code(await c.recv()) == 2001
        await c.close()
    finally:
        await second.close(0.5)


async def test_quota_policy_from_config() -> None:
    cfg = make_config(grant=Units(cc_time=60), quota=Units(cc_time=60))
    srv = DiameterServer(cfg, Metrics(), MemoryRegistry())
    await srv.start()
    try:
        c = await _open(srv)
        await c.send(ccr(rtype=1, number=0))
        assert result_code(await c.recv()) == 2001
        await c.send(ccr(rtype=2, number=1, used=60))
        assert result_code(await c.recv()) == ResultCode.DIAMETER_CREDIT_LIMIT_REACHED
        await c.close()
    finally:
        await srv.close(0.5)


async def test_connection_limit() -> None:
    srv = DiameterServer(make_config(max_connections=1, reserved_connections=0), Metrics(),
                         MemoryRegistry())
    await srv.start()
    try:
        first = await _open(srv)
        second = await Client.connect(srv.port)
        assert await second.closed()
        assert srv.m_dropped.get("connection_limit") == 1
        await first.close()
    finally:
        await srv.close(0.5)


async def test_second_connection_of_an_open_peer_is_rejected(server: DiameterServer) -> None:
    c = await _open(server)
    dup = await Client.connect(server.port)
    await dup.send(cer())
    assert await dup.closed()
    await c.send(ccr(rtype=4, number=0))
    assert result_code(await c.recv()) == 2001
    await c.close()


async def test_runs_on_uvloop() -> None:
    assert isinstance(asyncio.get_running_loop(), uvloop.Loop)


async def test_many_peers_at_once(server: DiameterServer) -> None:
    async def peer(i: int) -> None:
        c = await Client.connect(server.port)
        assert result_code(await c.handshake(f"client{i}.test")) == 2001
        sid = f"client{i}.test;1"
        for number, rtype in enumerate((1, 2, 3)):
            await c.send(ccr(session=sid, rtype=rtype, number=number, hbh=number))
            ans = await c.recv()
            assert result_code(ans) == 2001 and ans.hop_by_hop == number
        await c.close()

    await asyncio.gather(*(peer(i) for i in range(20)))
    assert server.m_requests.get("CER") == 20 and server.m_requests.get("CCR") == 60
    for _ in range(100):
        if not server.peers():
            break
        await asyncio.sleep(0.01)
    assert server.peers() == [] and server.session_count() == 0


async def test_random_requests_are_all_answered(server: DiameterServer) -> None:
    """Seeded fuzz over the socket: well-framed requests with random AVPs and header fields
    always get exactly one answer, and the server keeps serving."""
    import random

    rng = random.Random(6733)
    c = await _open(server)
    codes = [263, 264, 296, 283, 258, 461, 416, 415, 437, 446, 431, 999, 0, 1, 268, 279]
    for i in range(300):
        avps = [Avp(rng.choice(codes), rng.choice([0, 0x40, 0x40, 0x80, 0x01]),
                    rng.randbytes(rng.randint(0, 12)), rng.randint(1, 99)) for _ in range(
                        rng.randint(0, 8))]
        msg = ccr(session=f"fuzz{i}", rtype=rng.randint(0, 5), number=rng.randint(0, 3),
                  hbh=1000 + i, extra=avps)
        msg.flags = rng.choice([FLAG_R | FLAG_P, FLAG_R, FLAG_R | FLAG_P | FLAG_E])
        msg.command_code = rng.choice([272, 272, 272, 275, 9999])
        await c.send(msg)
        ans = await c.recv()
        assert ans.hop_by_hop == 1000 + i and not ans.is_request
        assert 2000 <= result_code(ans) < 6000
    await c.send(ccr(session="after-fuzz", rtype=4, number=0, hbh=1))
    assert result_code(await c.recv()) == 2001
    await c.close()


async def test_silent_connection_is_closed_after_the_cer_timeout() -> None:
    srv = DiameterServer(make_config(cer_timeout=0.3), Metrics(), MemoryRegistry())
    await srv.start()
    try:
        c = await Client.connect(srv.port)
        assert await c.closed()
        assert srv.m_dropped.get("cer_timeout") == 1 and srv.peers() == []
    finally:
        await srv.close(0.5)
