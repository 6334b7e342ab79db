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
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

__all__ = ["CallbackGauge", "FastCounter", "FastCounterChild", "Metrics", "version"]


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
    ) -> Histogram:
        if name not in self._metrics:
            self._metrics[name] = Histogram(
                name, doc, list(labels), namespace=self.namespace,
                registry=self.registry, buckets=list(buckets),
            )
        metric: Histogram = self._metrics[name]
        return metric

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
