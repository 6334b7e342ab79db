"""Table sizes and their exponentially weighted growth rate."""

from __future__ import annotations

import asyncio
import math

from harness.serverproc import ServerProcess
from signaling.admin.growth import TAU, Growth, TableGrowth
from signaling.admin.view import view_of
from signaling.config import Config
from signaling.server import Server
from tests.signaling.admin.helpers import TOKEN, register, scrape, session, value, wait_admin


def test_steady_growth_converges_to_its_rate_and_draining_is_negative() -> None:
    size = [0]
    table = TableGrowth(lambda: size[0])
    now = 0.0
    for _ in range(600):  # ten minutes of +50 entries a second, sampled each second
        table.sample(now, TAU)
        now += 1.0
        size[0] += 50
    assert math.isclose(table.rate, 50.0, rel_tol=1e-3)
    for _ in range(600):
        table.sample(now, TAU)
        now += 1.0
    assert abs(table.rate) < 0.01  # flat again: the rate decays to zero
    for _ in range(60):
        size[0] -= 10
        table.sample(now, TAU)
        now += 1.0
    assert table.rate < -5.0


def test_a_burst_is_smoothed_and_irregular_sampling_is_not_biased() -> None:
    size = [0]
    table = TableGrowth(lambda: size[0])
    table.sample(0.0, TAU)
    size[0] = 1000  # one burst of a thousand
    table.sample(1.0, TAU)
    one_second = table.rate
    assert 0 < one_second < 1000 * (1 - math.exp(-1 / TAU)) + 1e-9
    # The same steady trend sampled every 1 s or every 5 s gives the same average.
    a, b = TableGrowth(lambda: int(sa[0])), TableGrowth(lambda: int(sb[0]))
    sa, sb = [0.0], [0.0]
    for t in range(0, 300):
        sa[0] = 20.0 * t
        a.sample(float(t), TAU)
        if t % 5 == 0:
            sb[0] = 20.0 * t
            b.sample(float(t), TAU)
    assert math.isclose(a.rate, b.rate, rel_tol=0.02)


def test_gauges_of_a_real_server() -> None:
    server = Server(Config(sip_udp=None, sip_ws=None, admin=None, diameter=None,
                           domain=["example.com"], max_dialogs=500, max_transactions=900))
    bindings = [0]
    growth = Growth(view_of(server), lambda: bindings[0])
    growth.sample(10.0)
    bindings[0] = 120
    growth.sample(11.0)
    text = server.metrics.exposition().decode()
    assert 'signaling_table_size{table="registry_bindings"} 120.0' in text
    assert 'signaling_table_size{table="transactions"} 0.0' in text
    assert 'signaling_table_bound{table="dialogs"} 500.0' in text
    assert 'signaling_table_bound{table="transactions"} 900.0' in text
    # 120 entries in one second, weighted 1 - e^(-1/60): 1.98 a second.
    assert 'signaling_table_growth_rate{table="registry_bindings"} 1.98' in text


async def test_registrations_show_as_growth_in_metrics() -> None:
    server = ServerProcess("--domain", "example.com", "--admin-token", TOKEN,
                           admin=True).start()
    try:
        wait_admin(server)
        assert server.admin_port is not None
        for i in range(100):
            assert register(server.udp_port, f"grow{i}") == 200
        async with session(server.admin_port) as http:
            async with asyncio.timeout(30):  # the observer samples once a second
                while True:
                    samples = await scrape(http)
                    if value(samples, "signaling_table_size", table="registry_bindings") == 100:
                        break
                    await asyncio.sleep(0.2)
        assert value(samples, "signaling_table_growth_rate", table="registry_bindings") > 0
    finally:
        assert server.stop() == 0
