"""Timer values derived from T1/T2/T4 (RFC 3261 §17, Table 4; RFC 6026 §8.4, §8.7)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.sip.timers import DEFAULT_TIMERS, TimerConfig, timer_values


def test_defaults_are_table_4() -> None:
    assert (DEFAULT_TIMERS.t1, DEFAULT_TIMERS.t2, DEFAULT_TIMERS.t4) == (0.5, 4.0, 5.0)
    assert DEFAULT_TIMERS.timer_c == 180.0
    udp = timer_values(DEFAULT_TIMERS, reliable=False)
    assert (udp.a, udp.b, udp.c, udp.d) == (0.5, 32.0, 180.0, 32.0)
    assert (udp.e, udp.f, udp.g, udp.h) == (0.5, 32.0, 0.5, 32.0)
    assert (udp.i, udp.j, udp.k) == (5.0, 32.0, 5.0)
    assert (udp.l, udp.m) == (32.0, 32.0)
    assert udp.t2 == 4.0 and not udp.reliable


def test_reliable_transport_zeroes_and_disables() -> None:
    tcp = timer_values(DEFAULT_TIMERS, reliable=True)
    # §17.1.1.2, §17.1.2.2, §17.2.1: no retransmissions over a reliable transport.
    assert (tcp.a, tcp.e, tcp.g) == (None, None, None)
    # Timers waiting for stray retransmissions become zero.
    assert (tcp.d, tcp.i, tcp.j, tcp.k) == (0.0, 0.0, 0.0, 0.0)
    # Give-up and RFC 6026 timers stay 64*T1 on every transport.
    assert (tcp.b, tcp.f, tcp.h, tcp.l, tcp.m) == (32.0,) * 5
    assert tcp.reliable


@given(
    t1=st.floats(min_value=0.001, max_value=10),
    factor=st.floats(min_value=1, max_value=100),
    t4=st.floats(min_value=0.001, max_value=60),
)
def test_derived_from_configured_bases(t1: float, factor: float, t4: float) -> None:
    cfg = TimerConfig(t1=t1, t2=t1 * factor, t4=t4)
    udp = timer_values(cfg, reliable=False)
    assert udp.a == udp.e == udp.g == t1
    assert udp.b == udp.f == udp.h == udp.j == udp.l == udp.m == 64 * t1
    assert udp.i == udp.k == t4
    assert udp.t2 == t1 * factor


def test_values_are_cached_and_frozen() -> None:
    assert timer_values(DEFAULT_TIMERS, False) is timer_values(TimerConfig(), False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT_TIMERS.t1 = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs",
    [{"t1": 0}, {"t1": -1}, {"t1": 2, "t2": 1}, {"t4": 0}, {"timer_c": 0}, {"timer_d": -1}],
)
def test_invalid_configs_are_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        TimerConfig(**kwargs)
