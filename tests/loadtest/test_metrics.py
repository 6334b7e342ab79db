"""Per-kind counters, HDR percentiles, the per-second series and the knee of goodput."""

from __future__ import annotations

import pytest

from loadtest.metrics import (
    HIST_MAX_US,
    MAX_SERIES_SECONDS,
    KindStats,
    SecondSeries,
    find_knee,
    is_error,
    status_class,
)


def test_record_final_counts_classes_latency_and_goodput() -> None:
    k = KindStats()
    for i in range(1, 1001):
        k.record_final(200, i, True, 0)
    k.record_final(503, 5_000, False, 1)
    k.record_final(200, HIST_MAX_US * 10, False, 1)  # clamped, still counted
    assert k.answered == {"2xx": 1001, "5xx": 1}
    assert k.goodput.values == [1000]
    p = k.percentiles()
    assert abs(p["p50"] - 500) <= 1
    assert abs(p["p99"] - 992) <= 1  # rank 0.99 * 1002 values
    assert p["max"] >= HIST_MAX_US * 0.99
    assert KindStats().percentiles() == {}
    assert status_class(183) == "1xx" and status_class(604) == "6xx"


def test_second_series_grows_on_demand_and_is_bounded() -> None:
    s = SecondSeries()
    s.add(3)
    s.add(3, 2)
    s.add(-1)
    s.add(MAX_SERIES_SECONDS)
    assert s.values == [0, 0, 0, 3]


def test_knee_found_where_goodput_stops_following_a_ramp() -> None:
    offered = [100 * (i + 1) for i in range(20)]  # ramp to 2000/s
    goodput = [min(o, 1200) for o in offered]  # the server saturates at 1200/s
    knee = find_knee(offered, goodput)
    assert knee is not None
    assert 1100 <= knee.offered_per_s <= 1300
    assert knee.max_goodput_per_s == 1200


def test_no_knee_when_goodput_keeps_up_or_a_single_second_dips() -> None:
    offered = [100 * (i + 1) for i in range(20)]
    assert find_knee(offered, list(offered)) is None
    dip = list(offered)
    dip[10] = 0  # one lost second is noise, not a knee
    assert find_knee(offered, dip, width=1) is None
    assert find_knee([], []) is None


def test_batched_recording_gives_the_same_histogram_as_one_by_one() -> None:
    import random

    from loadtest.metrics import new_histogram, record_batch

    rng = random.Random(5)
    values = [int(rng.expovariate(1 / 3000)) for _ in range(20_000)] + [0, HIST_MAX_US * 2]
    one, batch = new_histogram(), new_histogram()
    for v in values:
        one.record_value(min(max(v, 1), HIST_MAX_US))
    record_batch(batch, values)
    assert one.get_total_count() == batch.get_total_count() == len(values)
    assert one.get_min_value() == batch.get_min_value()
    assert one.get_max_value() == batch.get_max_value()
    for p in (50.0, 90.0, 99.0, 99.9, 99.99):
        assert one.get_value_at_percentile(p) == batch.get_value_at_percentile(p)


def test_knee_by_latency_when_goodput_keeps_up_but_p99_explodes() -> None:
    # The run of issue 19: goodput followed the ramp (503s were under 1%), but P99 went from
    # 0.9 ms to 480 ms: the server was past its knee.
    offered = [100 * (i + 1) for i in range(20)]
    goodput = list(offered)
    p99 = [900.0] * 12 + [480_000.0] * 8
    assert find_knee(offered, goodput) is None  # the goodput rule alone misses it
    knee = find_knee(offered, goodput, p99_us=p99)
    assert knee is not None and knee.reason == "latency"
    assert knee.second == 11 and knee.offered_per_s == 1200
    # One slow second is noise; a P99 that stays under 20 ms is no knee either.
    spike = [900.0] * 20
    spike[8] = 480_000.0
    assert find_knee(offered, goodput, p99_us=spike) is None
    assert find_knee(offered, goodput, p99_us=[900.0] * 10 + [15_000.0] * 10) is None


def test_status_codes_that_are_errors() -> None:
    expected = frozenset({401})
    assert [c for c in (100, 200, 302, 401, 403, 503, 603) if is_error(c, expected)] == [
        403, 503, 603]
    # Diameter Result-Codes: 2xxx succeed (RFC 6733 §7.1), 1xxx/3xxx/4xxx/5xxx do not.
    assert [c for c in (1001, 2001, 2002, 3004, 4010, 5030) if is_error(c, frozenset())] == [
        1001, 3004, 4010, 5030]


def test_a_server_that_never_keeps_up_has_its_knee_from_the_start() -> None:
    offered = [0, 100, 200, 300, 400]
    knee = find_knee(offered, [0, 0, 0, 0, 0])
    assert knee is not None and knee.reason == "goodput, from the start"
    assert knee.goodput_per_s == 0 and knee.max_goodput_per_s == 0


def test_the_2xx_latencies_are_kept_apart_from_every_final_answer() -> None:
    """Issue 13's P99 is of what was admitted: a fast 503 must not pull it down, nor a late
    one push it up."""
    k = KindStats()
    for _ in range(99):
        k.record_final(503, 1_000, False, 0)
    k.record_final(200, 400_000, True, 0)
    assert k.percentiles(ok=True)["p50"] == pytest.approx(400_000, rel=0.001)
    assert k.percentiles()["p50"] == pytest.approx(1_000, rel=0.001)
