"""One Prometheus registry per server instance.

Every subsystem receives the server's ``Metrics`` and declares its own counters, gauges and
histograms through it, so that two servers in one process (tests) never share a series and the
admin API exposes exactly one registry.  Declaring the same name twice returns the first object,
so modules can declare what they use without a central list.

Each registry also carries the standard ``process_*`` series (CPU seconds, resident memory, open
file descriptors, start time: ``prometheus_client``'s process collector, which reads /proc) and
``signaling_build_info`` (version, Python, SIP parser fast path), so a dashboard can tell which
build a node runs and how much it costs.
"""

from __future__ import annotations

import importlib.metadata
import platform
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Info, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

__all__ = ["CallbackGauge", "FastCounter", "FastCounterChild", "FastHistogram",
           "FastHistogramChild", "Metrics", "version"]


def version() -> str:
    """This installation's version (pyproject's), or "0" when run from a bare source tree."""
    try:
        return importlib.metadata.version("signaling")
    except importlib.metadata.PackageNotFoundError:
        return "0"


class FastCounter(Collector):
    """A labelled counter for the per-message hot path.

    ``prometheus_client`` counters take a lock and a label lookup per increment (about a
    microsecond); at tens of thousands of messages per second that is several percent of a core.
    This one is a dict increment, summed only when Prometheus scrapes.
    """

    def __init__(self, name: str, doc: str, labels: Sequence[str]) -> None:
        self.name = name
        self.doc = doc
        self.labels = tuple(labels)
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, *labelvalues: str, amount: float = 1.0) -> None:
        values = self.values
        values[labelvalues] = values.get(labelvalues, 0.0) + amount

    def get(self, *labelvalues: str) -> float:
        return self.values.get(labelvalues, 0.0)

    def child(self, *labelvalues: str) -> FastCounterChild:
        """One label combination bound once, for a hot path that always counts the same one
        (the registrar's 200s): its ``inc`` takes no arguments to pack into a key."""
        return FastCounterChild(self.values, labelvalues)

    def total(self) -> float:
        return sum(self.values.values())

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(self.name, self.doc, labels=self.labels)
        for key, value in list(self.values.items()):
            family.add_metric(list(key), value)
        yield family


class FastCounterChild:
    """``FastCounter.inc(*labelvalues)`` with the labels fixed (see ``FastCounter.child``)."""

    __slots__ = ("_key", "_values")

    def __init__(self, values: dict[tuple[str, ...], float], key: tuple[str, ...]) -> None:
        self._values = values
        self._key = key

    def inc(self) -> None:
        values = self._values
        key = self._key
        values[key] = values.get(key, 0.0) + 1.0


class FastHistogram(Collector):
    """A labelled histogram for the per-message hot path (the sojourn of every new request,
    every call's set-up time, every Redis REGISTER).

    ``prometheus_client``'s ``Histogram.observe`` walks the buckets in Python and takes a lock
    per bucket it increments; this one finds the bucket with ``bisect`` (C) and adds to a list,
    all on the one event-loop thread, and builds the cumulative counts only when Prometheus
    scrapes.  The exposition is the same (``_bucket``, ``_count``, ``_sum``), without the
    ``_created`` timestamp no dashboard reads.
    """

    def __init__(self, name: str, doc: str, labels: Sequence[str],
                 buckets: Sequence[float]) -> None:
        self.name = name
        self.doc = doc
        self.labelnames = tuple(labels)
        self.bounds = tuple(sorted(buckets))
        #: Per label combination: a count per bucket (the last one above every bound), then
        #: the sum of the observed values.
        self.values: dict[tuple[str, ...], list[float]] = {}
        self._unlabelled = self.labels() if not self.labelnames else None

    def labels(self, *labelvalues: str) -> FastHistogramChild:
        counts = self.values.get(labelvalues)
        if counts is None:
            counts = self.values[labelvalues] = [0.0] * (len(self.bounds) + 2)
        return FastHistogramChild(counts, self.bounds)

    def observe(self, amount: float) -> None:
        """For a histogram without labels."""
        assert self._unlabelled is not None, "a labelled histogram observes through labels()"
        self._unlabelled.observe(amount)

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, self.doc, labels=self.labelnames)
        edges = [*(repr(float(b)) for b in self.bounds), "+Inf"]
        for key, counts in list(self.values.items()):
            cumulative, buckets = 0.0, []
            for edge, count in zip(edges, counts, strict=False):
                cumulative += count
                buckets.append((edge, cumulative))
            family.add_metric(list(key), buckets, counts[-1])
        yield family


class FastHistogramChild:
    """One label combination of a ``FastHistogram``."""

    __slots__ = ("_bounds", "_counts")

    def __init__(self, counts: list[float], bounds: tuple[float, ...]) -> None:
        self._counts = counts
        self._bounds = bounds

    def observe(self, amount: float) -> None:
        counts = self._counts
        counts[bisect_left(self._bounds, amount)] += 1.0  # le: a value on a bound counts in it
        counts[-1] += amount


class CallbackGauge(Collector):
    """A gauge read from a callback at scrape time (queue depths, table sizes)."""

    def __init__(self, name: str, doc: str, labels: Sequence[str],
                 read: Callable[[], dict[tuple[str, ...], float]]) -> None:
        self.name = name
        self.doc = doc
        self.labels = tuple(labels)
        self.read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(self.name, self.doc, labels=self.labels)
        for key, value in self.read().items():
            family.add_metric(list(key), value)
        yield family

# Latency buckets in seconds, from 100 µs (a Redis call on loopback) to 10 s (a SIP timer).
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
)


class Metrics:
    """A registry plus get-or-create helpers for labelled metrics."""

    def __init__(self, namespace: str = "signaling") -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.namespace = namespace
        self._metrics: dict[str, Any] = {}
        ProcessCollector(registry=self.registry)
        Info("build", "The running build", namespace=namespace, registry=self.registry).info(
            {"version": version(), "python": platform.python_version(),
             "implementation": platform.python_implementation()})

    def counter(self, name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
        metric: Counter = self._get(Counter, name, doc, labels)
        return metric

    def gauge(self, name: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
        metric: Gauge = self._get(Gauge, name, doc, labels)
        return metric

    def histogram(
        self,
        name: str,
        doc: str,
        labels: Sequence[str] = (),
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> FastHistogram:
        if name not in self._metrics:
            metric = FastHistogram(f"{self.namespace}_{name}", doc, labels, buckets)
            self.registry.register(metric)
            self._metrics[name] = metric
        found: FastHistogram = self._metrics[name]
        return found

    def _get(self, cls: Any, name: str, doc: str, labels: Sequence[str]) -> Any:
        if name not in self._metrics:
            self._metrics[name] = cls(
                name, doc, list(labels), namespace=self.namespace, registry=self.registry
            )
        return self._metrics[name]

    def fast_counter(self, name: str, doc: str, labels: Sequence[str] = ()) -> FastCounter:
        """A hot-path counter (see ``FastCounter``); exposed as ``<namespace>_<name>_total``."""
        if name not in self._metrics:
            metric = FastCounter(f"{self.namespace}_{name}", doc, labels)
            self.registry.register(metric)
            self._metrics[name] = metric
        fast: FastCounter = self._metrics[name]
        return fast

    def callback_gauge(self, name: str, doc: str, labels: Sequence[str],
                       read: Callable[[], dict[tuple[str, ...], float]]) -> None:
        """A gauge whose labelled values ``read()`` returns at scrape time."""
        if name not in self._metrics:
            metric = CallbackGauge(f"{self.namespace}_{name}", doc, labels, read)
            self.registry.register(metric)
            self._metrics[name] = metric

    def exposition(self) -> bytes:
        """The registry in the Prometheus text exposition format."""
        return generate_latest(self.registry)
