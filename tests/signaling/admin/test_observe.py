"""``/metrics`` against traffic the test sent: counters move by exactly that much.

The server is a real process; SIP goes over UDP, Diameter over TCP, and the exposition is parsed
with ``prometheus_client.parser``.  Gauges computed on the admin side (registered AORs and
bindings, refreshed once a second) are polled until the refresher has run.
"""

from __future__ import annotations

import asyncio
import random
import socket
import time

import websockets
from prometheus_client.parser import text_string_to_metric_families
from websockets.typing import Subprotocol

from harness.serverproc import ServerProcess
from harness.services import RedisServer
from signaling.admin.observe import Observer
from signaling.admin.view import view_of
from signaling.config import Config
from signaling.registry.base import ContactChange
from signaling.server import Server
from tests.signaling.admin.helpers import (
    Samples,
    call,
    register,
    register_message,
    scrape,
    send_options,
    session,
    value,
    wait_admin,
)
from tests.signaling.diameter.client import Client as DiameterClient

N_OPTIONS = 7
M_REGISTERS = 5


def _delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


async def _wait_gauge(port: int, name: str, at_least: float) -> Samples:
    """Scrape until gauge ``name`` reaches ``at_least`` (the refresher runs every second)."""
    async with session(port, token=None) as http:
        for _ in range(50):
            samples = await scrape(http)
            if value(samples, name) >= at_least:
                return samples
            await asyncio.sleep(0.1)
    raise AssertionError(f"{name} never reached {at_least}")


async def test_sip_counters_move_by_the_traffic_sent(server: ServerProcess) -> None:
    assert server.admin_port is not None
    async with session(server.admin_port, token=None) as http:
        before = await scrape(http)
    for _ in range(N_OPTIONS):
        assert send_options(server.udp_port) == 200
    prefix = f"m{random.randint(0, 1 << 30)}x"
    for i in range(M_REGISTERS):
        assert register(server.udp_port, f"{prefix}{i}", contact_port=7000 + i) == 200
    # One REGISTER retransmitted: absorbed by its transaction, answered from it (§17.2.1).
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(3.0)
        data = register_message(server.udp_port, f"{prefix}r", 7100)
        for _ in range(2):
            s.sendto(data, ("127.0.0.1", server.udp_port))
            assert s.recv(65535).startswith(b"SIP/2.0 200")
    registers = M_REGISTERS + 1
    aors_before = value(before, "signaling_registered_aors")
    after = await _wait_gauge(server.admin_port, "signaling_registered_aors",
                              aors_before + registers)

    def d(name: str, **labels: str) -> float:
        return _delta(before, after, name, **labels)

    assert d("signaling_sip_requests_received_total", method="OPTIONS",
             transport="udp") == N_OPTIONS
    assert d("signaling_sip_requests_received_total", method="REGISTER",
             transport="udp") == registers + 1  # + the retransmission
    assert d("signaling_sip_responses_sent_total", method="OPTIONS", **{"class": "2xx"},
             transport="udp") == N_OPTIONS
    assert d("signaling_sip_responses_sent_total", method="REGISTER", **{"class": "2xx"},
             transport="udp") == registers + 1
    assert d("signaling_sip_retransmissions_total", direction="received") == 1
    assert d("signaling_sip_retransmissions_total", direction="sent") == 1
    assert d("signaling_registrations_total", result="200") == registers
    assert d("signaling_registered_aors") == registers
    assert d("signaling_registered_bindings") == registers
    assert d("signaling_sip_shed_total", reason="queue_full") == 0


async def test_diameter_counters_move_by_the_traffic_sent(server: ServerProcess) -> None:
    assert server.admin_port is not None and server.diameter_port is not None
    async with session(server.admin_port, token=None) as http:
        before = await scrape(http)
        client = await DiameterClient.connect(server.diameter_port)
        try:
            await client.handshake(f"observe-{random.randint(0, 1 << 30)}.client")
            after = await scrape(http)
        finally:
            await client.close()
    assert _delta(before, after, "signaling_diameter_requests_total", command="CER") == 1
    assert _delta(before, after, "signaling_diameter_answers_total", result_code="2001") == 1
    assert _delta(before, after, "signaling_diameter_peers", state="R-Open") == 1


async def test_every_required_family_is_exposed(server: ServerProcess) -> None:
    assert server.admin_port is not None
    assert send_options(server.udp_port) == 200
    async with session(server.admin_port, token=None) as http, http.get("/metrics") as resp:
        text = await resp.text()
    families = {f.name: f.type for f in text_string_to_metric_families(text)}
    required = {
        "signaling_sip_requests_received": "counter",
        "signaling_sip_responses_sent": "counter",
        "signaling_sip_retransmissions": "counter",
        "signaling_sip_dropped": "counter",
        "signaling_sip_shed": "counter",
        "signaling_queue_depth": "gauge",
        "signaling_transactions": "gauge",
        "signaling_dialogs": "gauge",
        "signaling_registered_aors": "gauge",
        "signaling_registered_bindings": "gauge",
        "signaling_ws_connections": "gauge",
        "signaling_diameter_peers": "gauge",
        "signaling_diameter_requests": "counter",
        "signaling_diameter_answers": "counter",
        "signaling_registry_call_seconds": "histogram",
        "signaling_call_setup_seconds": "histogram",
        "signaling_uptime_seconds": "gauge",
        "signaling_admin_requests": "counter",
        "signaling_table_size": "gauge",
        "signaling_table_growth_rate": "gauge",
        "signaling_table_bound": "gauge",
        "signaling_ws_handshakes": "gauge",
        "signaling_build_info": "gauge",
        "process_resident_memory_bytes": "gauge",
    }
    missing = {name: kind for name, kind in required.items() if families.get(name) != kind}
    assert not missing, missing
    samples = {(s.name, tuple(sorted(s.labels.items()))) for f in
               text_string_to_metric_families(text) for s in f.samples}
    assert ("signaling_queue_depth", (("shard", "7"),)) in samples
    assert ("signaling_dialogs", (("state", "confirmed"),)) in samples


async def test_admin_requests_are_counted(server: ServerProcess) -> None:
    assert server.admin_port is not None
    async with session(server.admin_port, token=None) as http:
        before = await scrape(http)
        async with http.get("/api/v1/stats") as resp:
            assert resp.status == 401
        async with http.get("/nowhere") as resp:
            assert resp.status == 404
        after = await scrape(http)
    assert _delta(before, after, "signaling_admin_requests_total", method="GET",
                  status="401") == 1
    assert _delta(before, after, "signaling_admin_requests_total", method="GET",
                  status="404") == 1
    # the first scrape itself
    assert _delta(before, after, "signaling_admin_requests_total", method="GET",
                  status="200") == 1


async def test_redis_latency_and_counts_follow_registers() -> None:
    redis = RedisServer(appendonly=False).start()
    server = ServerProcess("--domain", "example.com", "--registry", redis.url, admin=True)
    try:
        server.start()
        wait_admin(server)
        assert server.admin_port is not None
        async with session(server.admin_port, token=None) as http:
            before = await scrape(http)
        for i in range(M_REGISTERS):
            assert register(server.udp_port, f"redis{i}", contact_port=7200 + i) == 200
        after = await _wait_gauge(server.admin_port, "signaling_registered_bindings",
                                  M_REGISTERS)
    finally:
        server.stop()
        redis.close()
    # One timed registry call per REGISTER (the atomic Lua register, RFC 3261 §10.3).
    assert _delta(before, after, "signaling_registry_call_seconds_count",
                  op="register") == M_REGISTERS
    assert value(after, "signaling_registry_call_seconds_bucket", op="register",
                 le="+Inf") == M_REGISTERS
    assert value(after, "signaling_registered_aors") == M_REGISTERS
    assert value(after, "signaling_registered_bindings") == M_REGISTERS


async def test_call_setup_dialog_and_websocket_gauges_follow_traffic(
        server: ServerProcess) -> None:
    assert server.admin_port is not None and server.ws_port is not None
    async with session(server.admin_port, token=None) as http:
        before = await scrape(http)
        a, b, _ = call(server.udp_port, f"obs{random.randint(0, 1 << 30)}")
        a.close()
        b.close()
        # RFC 7118 §4.1: the "sip" subprotocol, or the server refuses the handshake.
        async with websockets.connect(f"ws://127.0.0.1:{server.ws_port}",
                                      subprotocols=[Subprotocol("sip")]):
            during = await scrape(http)
    assert _delta(before, during, "signaling_call_setup_seconds_count") == 1
    assert _delta(before, during, "signaling_dialogs", state="confirmed") == 1
    assert _delta(before, during, "signaling_ws_connections") == 1


async def test_refresher_keeps_the_last_counts_while_redis_is_down() -> None:
    redis = RedisServer(appendonly=False).start()
    server = Server(Config(sip_udp=None, sip_ws=None, admin=None, diameter=None,
                           registry=redis.url, domain=["example.com"]))
    observer = Observer(view_of(server))
    try:
        now = time.time()
        for user in ("ann", "bob"):
            await server.registry.register(
                f"sip:{user}@example.com", f"c-{user}", 1,
                [ContactChange(contact=f"sip:{user}@127.0.0.1:5070", expires=600)], now)
        assert await observer.refresh() is True
        assert (observer.aors, observer.bindings) == (2, 2)
        redis.kill()
        assert await observer.refresh() is False
        assert (observer.aors, observer.bindings) == (2, 2)
        samples = server.metrics.exposition().decode()
        assert "signaling_admin_refresh_failures_total 1.0" in samples
        assert "signaling_registered_aors 2.0" in samples
    finally:
        await server.registry.close()
        redis.close()
