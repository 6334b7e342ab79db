"""The source guard: token buckets, failure windows, blocks and their bounds (``now`` given)."""

from __future__ import annotations

from signaling.auth.guard import Guard, GuardLimits, parse_networks
from signaling.metrics import Metrics


def test_a_source_over_its_rate_is_blocked_then_released() -> None:
    guard = Guard(GuardLimits(pike_rate=10, pike_burst=5, pike_block=30))
    assert all(guard.admit("10.0.0.1", 100.0) for _ in range(5))
    assert not guard.admit("10.0.0.1", 100.0)           # the 6th in the same instant
    assert [b.reason for b in guard.active(100.0)] == ["flood"]
    assert not guard.admit("10.0.0.1", 129.0)           # blocked for 30 s, even if slow now
    assert guard.blocks["10.0.0.1"].dropped == 1
    assert guard.admit("10.0.0.1", 130.5)                # released
    assert guard.admit("10.0.0.2", 100.0)                # others were never affected


def test_a_steady_source_within_its_rate_is_never_blocked() -> None:
    guard = Guard(GuardLimits(pike_rate=10, pike_burst=5))
    assert all(guard.admit("10.0.0.1", 100.0 + i * 0.1) for i in range(1000))
    assert guard.active(200.0) == []


def test_rate_limit_off_and_trusted_sources() -> None:
    assert all(Guard(GuardLimits(pike_rate=0)).admit("10.0.0.1", 1.0) for _ in range(10_000))
    guard = Guard(GuardLimits(pike_rate=1, pike_burst=1,
                              trusted=tuple(parse_networks(["192.0.2.0/24", "::1"]))))
    assert all(guard.admit("192.0.2.7", 1.0) for _ in range(100))
    assert all(guard.admit("::1", 1.0) for _ in range(100))
    assert not guard.failed("192.0.2.7", "alice@x", 1.0)


def test_failures_per_source_within_the_window_block_it() -> None:
    guard = Guard(GuardLimits(fail_limit=3, fail_window=60, fail_block=600))
    assert not guard.failed("10.0.0.1", "a@x", 0.0)
    assert not guard.failed("10.0.0.1", "b@x", 12.0)
    assert not guard.failed("10.0.0.1", "c@x", 70.0)     # the first fell out of the window
    assert guard.failed("10.0.0.1", "d@x", 71.0)
    assert not guard.admit("10.0.0.1", 600.0)
    assert guard.admit("10.0.0.1", 672.0)


def test_failures_per_user_block_each_guessing_source() -> None:
    guard = Guard(GuardLimits(fail_limit=3))
    assert not guard.failed("10.0.0.1", "alice@x", 1.0)
    assert not guard.failed("10.0.0.2", "alice@x", 2.0)
    assert guard.failed("10.0.0.3", "alice@x", 3.0)       # third failure for alice
    assert guard.failed("10.0.0.4", "alice@x", 4.0)       # and any further guesser
    assert {b.host for b in guard.active(5.0)} == {"10.0.0.3", "10.0.0.4"}


def test_lift_and_metrics() -> None:
    metrics = Metrics()
    guard = Guard(GuardLimits(pike_rate=1, pike_burst=1, pike_block=60), metrics)
    guard.admit("10.0.0.1", 0.0)
    guard.admit("10.0.0.1", 0.0)
    guard.admit("10.0.0.1", 0.0)
    text = metrics.exposition()
    assert b'signaling_guard_blocks_total{reason="flood"} 1.0' in text
    assert b'signaling_guard_dropped_total{reason="flood"} 2.0' in text
    assert b"signaling_guard_blocked_sources 1.0" in text
    assert guard.lift("10.0.0.1") and not guard.lift("10.0.0.1")
    assert guard.admit("10.0.0.1", 1.0)


def test_tables_stay_bounded_under_forged_sources() -> None:
    guard = Guard(GuardLimits(pike_rate=1, pike_burst=1, pike_block=60, max_sources=100,
                              fail_limit=2))
    for i in range(10_000):
        host = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
        guard.admit(host, 0.0)
        guard.admit(host, 0.0)          # each one blocked at once
        guard.failed(host, f"u{i}@x", 0.0)
    assert len(guard._buckets) <= 100
    assert len(guard.blocks) <= 100
    assert len(guard._by_source) <= 100 and len(guard._by_user) <= 100
