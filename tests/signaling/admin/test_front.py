"""The admin front's metric merge (the front itself runs in tests/signaling/test_supervisor.py,
with real workers): counters, histograms and gauges add up; server-wide gauges do not."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from signaling.admin.front import merge_expositions
from signaling.metrics import Metrics


def _worker(requests: int, depth: float, aors: float, latencies: list[float]) -> str:
    m = Metrics()
    c = m.fast_counter("sip_requests_received", "SIP requests received", ["method"])
    c.inc("REGISTER", amount=requests)
    m.callback_gauge("queue_depth", "Requests waiting", ["shard"], lambda: {("0",): depth})
    m.callback_gauge("registered_aors", "AORs (the shared registry's)", [],
                     lambda: {(): aors})
    h = m.histogram("call_setup_seconds", "setup")
    for v in latencies:
        h.observe(v)
    return m.exposition().decode()


def _samples(text: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for f in text_string_to_metric_families(text.decode()) for s in f.samples}


def test_merge_adds_per_worker_series_and_keeps_server_wide_ones_once() -> None:
    merged = _samples(merge_expositions([
        _worker(3, 1.0, 10.0, [0.001, 0.2]), _worker(4, 2.0, 10.0, [0.3])]))
    assert merged[("signaling_sip_requests_received_total",
                   frozenset({("method", "REGISTER")}))] == 7
    assert merged[("signaling_queue_depth", frozenset({("shard", "0")}))] == 3
    assert merged[("signaling_registered_aors", frozenset())] == 10  # not 20
    assert merged[("signaling_call_setup_seconds_count", frozenset())] == 3
    assert merged[("signaling_call_setup_seconds_bucket", frozenset({("le", "0.25")}))] == 2
    assert merged[("signaling_call_setup_seconds_bucket", frozenset({("le", "+Inf")}))] == 3
    assert abs(merged[("signaling_call_setup_seconds_sum", frozenset())] - 0.501) < 1e-9
    assert not any(name.endswith("_created") for name, _ in merged)


def test_label_values_are_escaped_on_the_way_out() -> None:
    m = Metrics()
    m.fast_counter("odd", "odd labels", ["v"]).inc('a"b\\c\nd')
    merged = _samples(merge_expositions([m.exposition().decode()] * 2))
    assert merged[("signaling_odd_total", frozenset({("v", 'a"b\\c\nd')}))] == 2


def test_process_series_add_up_and_the_build_is_named_once() -> None:
    text = Metrics().exposition().decode()  # this process's own process_* and build_info
    merged = _samples(merge_expositions([text, text]))
    single = _samples(text.encode())
    none: frozenset[tuple[str, str]] = frozenset()
    rss = ("process_resident_memory_bytes", none)
    assert merged[rss] == 2 * single[rss]
    start = ("process_start_time_seconds", none)
    assert merged[start] == single[start]
    build = [k for k in merged if k[0] == "signaling_build_info"]
    assert len(build) == 1 and merged[build[0]] == 1


def test_a_share_of_each_workers_traffic_is_their_mean_and_an_expiry_the_earliest() -> None:
    """Each worker's listening socket has a kernel filter of its own (``udpshed``): the server
    sheds the mean of their shares, not their sum; the certificates every worker serves
    expire when the first does, not at the sum of their dates."""
    def worker(share: float, expiry: float) -> str:
        m = Metrics()
        m.callback_gauge("sip_overload_kernel_shed_share", "share shed", [],
                         lambda: {(): share})
        m.callback_gauge("tls_certificate_expiry_timestamp_seconds", "notAfter",
                         ["certificate"], lambda: {("sip",): expiry})
        return m.exposition().decode()

    merged = _samples(merge_expositions([worker(0.8, 2e9), worker(0.6, 2e9),
                                         worker(0.0, 1.9e9)]))
    none: frozenset[tuple[str, str]] = frozenset()
    share = merged[("signaling_sip_overload_kernel_shed_share", none)]
    assert abs(share - (0.8 + 0.6 + 0.0) / 3) < 1e-9
    assert merged[("signaling_tls_certificate_expiry_timestamp_seconds",
                   frozenset({("certificate", "sip")}))] == 1.9e9
