"""Per-instance metrics: fast counters and callback gauges in the exposition format."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from signaling.metrics import Metrics


def _samples(m: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(m.exposition().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_fast_counter_and_callback_gauge_are_exposed() -> None:
    m = Metrics()
    c = m.fast_counter("sip_requests", "requests", ["method"])
    assert m.fast_counter("sip_requests", "again", ["method"]) is c  # declared once
    for _ in range(3):
        c.inc("INVITE")
    c.inc("BYE", amount=2)
    depth = {"v": 5.0}
    m.callback_gauge("queue_depth", "depth", ["shard"], lambda: {("0",): depth["v"]})
    depth["v"] = 7.0  # read at scrape time, not at declaration
    samples = _samples(m)
    assert samples[("signaling_sip_requests_total", (("method", "INVITE"),))] == 3
    assert samples[("signaling_sip_requests_total", (("method", "BYE"),))] == 2
    assert samples[("signaling_queue_depth", (("shard", "0"),))] == 7
    assert c.total() == 5


def test_two_instances_do_not_share_series() -> None:
    a, b = Metrics(), Metrics()
    a.counter("x", "x").inc()
    b.histogram("lat", "latency").observe(0.002)
    assert ("signaling_x_total", ()) in _samples(a)
    assert ("signaling_x_total", ()) not in _samples(b)
    assert _samples(b)[("signaling_lat_count", ())] == 1


def test_a_bound_child_counts_into_its_labels() -> None:
    m = Metrics()
    c = m.fast_counter("registrations", "outcomes", ["result"])
    ok = c.child("200")
    ok.inc()
    ok.inc()
    c.inc("200")
    c.inc("503")
    assert c.get("200") == 3 and c.get("503") == 1
    samples = _samples(m)
    assert samples[("signaling_registrations_total", (("result", "200"),))] == 3


def test_process_and_build_info_series() -> None:
    import os

    from signaling.metrics import version

    samples = _samples(Metrics())
    # Read from /proc for this very process.
    assert samples[("process_resident_memory_bytes", ())] > 1_000_000
    assert samples[("process_open_fds", ())] >= 3
    assert samples[("process_cpu_seconds_total", ())] > 0
    start = samples[("process_start_time_seconds", ())]
    assert abs(start - os.stat(f"/proc/{os.getpid()}").st_ctime) < 120
    (build,) = [labels for name, labels in samples if name == "signaling_build_info"]
    info = dict(build)
    assert info["version"] == version() != "0"
    assert info["python"].count(".") == 2


def test_fast_histogram_exposes_what_prometheus_clients_histogram_does() -> None:
    """The hot-path histogram against the library's own, fed the same values: the same
    cumulative buckets (a value on a bound counts in it: ``le``), count and sum."""
    buckets = (0.001, 0.005, 0.01, 0.1, 1.0)
    values = [0.0005, 0.001, 0.003, 0.005, 0.0099, 0.01, 0.5, 1.0, 2.0, 30.0]
    ours = Metrics()
    fast = ours.histogram("sojourn_seconds", "sojourn", ["kind"], buckets=buckets)
    assert ours.histogram("sojourn_seconds", "again", ["kind"], buckets=buckets) is fast
    reference = CollectorRegistry()
    slow = Histogram("sojourn_seconds", "sojourn", ["kind"], namespace="signaling",
                     registry=reference, buckets=buckets)
    for v in values:
        fast.labels("new").observe(v)
        slow.labels("new").observe(v)
    theirs = {}
    for family in text_string_to_metric_families(generate_latest(reference).decode()):
        for s in family.samples:
            if not s.name.endswith("_created"):
                theirs[(s.name, tuple(sorted(s.labels.items())))] = s.value
    mine = {k: v for k, v in _samples(ours).items() if k[0].startswith("signaling_sojourn")}
    assert mine == theirs
    assert mine[("signaling_sojourn_seconds_bucket", (("kind", "new"), ("le", "0.01")))] == 6


def test_an_unlabelled_fast_histogram_observes_directly() -> None:
    m = Metrics()
    h = m.histogram("setup_seconds", "setup")
    h.observe(0.2)
    h.observe(0.3)
    samples = _samples(m)
    assert samples[("signaling_setup_seconds_count", ())] == 2
    assert abs(samples[("signaling_setup_seconds_sum", ())] - 0.5) < 1e-12
