"""The timeline: seconds closed in order, their percentiles and lateness, none skipped."""

from __future__ import annotations

from loadtest.timeline import LATE_SAMPLE, SecondPoint, Timeline


def test_seconds_close_with_percentiles_lateness_and_state() -> None:
    closed: list[SecondPoint] = []
    tl = Timeline(seed=1, on_second=closed.append)
    tl.cur.answered = 100
    tl.sample.extend(range(1, 101))  # latencies 1..100 µs
    tl.late_pending.extend([10, 20, 3000])
    tl.roll(1, inflight=5, calls_up=2)
    (p,) = closed
    assert (p.second, p.p50_us, p.p99_us, p.p999_us) == (0, 50.0, 99.0, 100.0)
    assert (p.late_p99_us, p.late_max_us) == (3000.0, 3000.0)
    assert (p.inflight, p.calls_up) == (5, 2)
    assert tl.lateness.get_total_count() == 3 and tl.late_pending == []
    # Seconds without anything still get their row; the sample does not leak into them.
    tl.roll(4, inflight=0, calls_up=0)
    assert [q.second for q in closed] == [0, 1, 2, 3] == [q.second for q in tl.points]
    assert all(q.p99_us == 0.0 and q.late_max_us == 0.0 for q in closed[1:])
    assert tl.cur.second == 4 and tl.second == 4


def test_the_injectors_cpu_goes_to_every_second_a_stall_closes() -> None:
    """A loop blocked for three seconds closes them in one roll: each gets the share of a
    core the injector used over them, not the first alone."""
    tl = Timeline(seed=1)
    tl.cur.rx_drops, tl.cur.started = 7, 100
    tl.roll(3, 0, 0, cpu=0.97)
    assert [p.cpu for p in tl.points] == [0.97, 0.97, 0.97]
    assert [(p.rx_drops, p.started) for p in tl.points] == [(7, 100), (0, 0), (0, 0)]


def test_lateness_sample_is_bounded_but_the_maximum_is_exact() -> None:
    tl = Timeline(seed=1)
    tl.late_pending.extend([5] * (LATE_SAMPLE + 10))
    tl.flush()
    tl.late_pending.append(999_999)
    tl.roll(1, 0, 0)
    p = tl.points[0]
    assert p.late_max_us == 999_999.0 and p.late_p99_us == 5.0
    assert tl.lateness.get_total_count() == LATE_SAMPLE + 11


def test_restart_drops_what_was_counted_before_the_run() -> None:
    tl = Timeline(seed=1)
    tl.cur.sent = 30  # the pre-registration
    tl.sample.append(5)
    tl.restart()
    assert (tl.second, tl.cur.second, tl.cur.sent, tl.sample) == (0, 0, 0, [])
