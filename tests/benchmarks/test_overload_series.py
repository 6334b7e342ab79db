"""bench_overload's per-poll overload counters: read from /metrics text, printed as changes."""

from __future__ import annotations

from benchmarks.overload_series import (
    COLUMNS,
    counters,
    most_busy,
    render,
    rtt_shape,
    slow_shape,
)

METRICS = """\
signaling_sip_overload_admitted_total{method="REGISTER"} 100.0
signaling_sip_overload_admitted_total{method="INVITE"} 5.0
signaling_sip_overload_dropped_total{method="unknown",reason="kernel"} 40.0
signaling_sip_overload_dropped_total{method="unknown",reason="kernel_shed"} 7.0
signaling_sip_overload_drain_late_total 3.0
signaling_sip_admission_limit 4561.9
signaling_sip_overload_kernel_shed_share 0.25
"""


def test_counters_add_label_sets_and_keep_prefixes_apart() -> None:
    got = counters(METRICS)
    assert got["admitted"] == 105.0  # both methods
    assert got["kernel"] == 40.0 and got["shed"] == 7.0  # "kernel" is not kernel_shed's
    assert got["late"] == 3.0 and got["limit"] == 4561.9 and got["share"] == 0.25
    assert got["band503"] == 0.0  # absent: 0
    assert set(got) == {name for name, _, _ in COLUMNS}


def test_render_prints_counter_changes_and_gauges_as_read() -> None:
    first = counters(METRICS)
    later = dict(first, admitted=205.0, kernel=1040.0, limit=1200.0, share=0.9)
    head, row = render([(0.0, first), (0.2, later)]).splitlines()
    assert head.split()[1:] == [name for name, _, _ in COLUMNS]
    cells = dict(zip(head.split()[1:], row.split()[1:], strict=True))
    assert row.split()[0] == "0.2"
    assert (cells["admitted"], cells["kernel"], cells["shed"]) == ("100", "1000", "0")
    assert (cells["limit"], cells["share"]) == ("1200", "0.90")


def test_slow_answers_by_the_quarter_second_of_their_first_send() -> None:
    assert slow_shape([0.1, 0.2, 0.3, 4.9]) == (
        "sipp answers over 500 ms by first send (s): 0:2 0.25:1 4.75:1")
    assert rtt_shape([10, 600, 40_000]).startswith("sipp rtt ms <=50:1 <=100:0")


def test_the_busiest_second_shows_what_the_average_hides() -> None:
    """SIPp idle for 3 s and at a full core for the last 2: 40% over the step, 100% in its
    busiest second."""
    samples = [(t / 4, 0.0) for t in range(13)] + [(3.25 + t / 4, (t + 1) / 4) for t in range(8)]
    assert abs(samples[-1][1] / samples[-1][0] - 0.4) < 1e-9
    assert abs(most_busy(samples) - 1.0) < 1e-9
    assert most_busy([(0.0, 0.0), (0.5, 0.5)]) == 0.0  # no second covered
