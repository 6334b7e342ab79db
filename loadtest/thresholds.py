"""Pass/fail thresholds on a run, in the manner of k6: ``METRIC[{KIND}] OP NUMBER``.

    goodput>=500            answers in the deadline per second of offered load, all kinds
    p99_ms{register}<50     P99 latency of REGISTER transactions, milliseconds
    error_rate<0.01         share of finals + timeouts that are errors
    status_503==0           count of final 503 answers
    lateness_p99_ms<10      the injector's own lateness against its schedule

Metrics (every one but ``lateness_*``, ``calls_*`` and ``wall_s`` also per kind, ``{invite}``):

=================  ==========================================================================
goodput            2xx (Diameter 2xxx) answers within --deadline per second of the schedule
goodput_ratio      those answers / transactions sent
error_rate         errors / (final answers + timeouts)
errors             4xx/5xx/6xx finals (Diameter: non-2xxx) not in --expect, plus timeouts
timeouts           transactions that got no final answer (Timer B/F)
sent, answered     new transactions sent (retries included) / final answers received
status_NNN         final answers with status (or Result-Code) NNN
p50_ms, p90_ms, p99_ms, p99.9_ms, max_ms, mean_ms   latency of final answers
lateness_p99_ms, lateness_max_ms                    injector lateness
calls_failed, calls_completed, calls_established    calls (INVITE dialogs)
=================  ==========================================================================

The default ``error_rate<0.05`` is always checked unless a run-wide ``error_rate`` threshold is
given.  Run-wide figures leave out ``prereg`` (the callee registrations before the run are
set-up, not load); ``{prereg}`` names them explicitly.  A threshold on a metric the run has no
data for (a kind it never sent) fails: a check that cannot see its subject has not passed.
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # parsing needs none of the injector's libraries: ``storm --help`` neither
    from hdrh.histogram import HdrHistogram

    from loadtest.report import KindReport, RunReport, ThresholdReport

__all__ = [
    "DEFAULT_THRESHOLDS",
    "Threshold",
        "evaluate",
    "load_thresholds",
    "metric_value",
    "parse_threshold",
    "with_defaults",
]

#: Always checked unless the user gives a run-wide ``error_rate`` threshold of their own: a run
#: where more than 5% of the outcomes are errors or timeouts did not pass, whatever else it
#: measured (4xx/5xx/6xx and timeouts are failures unless --expect'ed).
DEFAULT_THRESHOLDS = ("error_rate<0.05",)

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, ">=": operator.ge, "==": operator.eq, "!=": operator.ne,
    "<": operator.lt, ">": operator.gt,
}
_RE = re.compile(r"^\s*([a-z][a-z0-9_.]*)(?:\{([a-z0-9-]+)\})?\s*(<=|>=|==|!=|<|>)\s*"
                 r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*$")
_PCT = {"p50_ms": 50.0, "p90_ms": 90.0, "p99_ms": 99.0, "p99.9_ms": 99.9}
_RUN_ONLY = {"lateness_p99_ms", "lateness_max_ms", "calls_failed", "calls_completed",
             "calls_established", "wall_s"}
_KIND_METRICS = {"goodput", "goodput_ratio", "error_rate", "errors", "timeouts", "sent",
                 "answered", "max_ms", "mean_ms", *_PCT}


@dataclass(frozen=True, slots=True)
class Threshold:
    text: str
    metric: str
    kind: str | None
    op: str
    value: float


def parse_threshold(text: str) -> Threshold:
    m = _RE.match(text)
    if m is None:
        raise ValueError(f"threshold {text!r} does not read METRIC[{{KIND}}] OP NUMBER, "
                         "e.g. 'p99_ms{register}<50'")
    metric, kind, op, value = m.groups()
    known = metric in _KIND_METRICS or metric in _RUN_ONLY or re.fullmatch(r"status_\d+", metric)
    if not known:
        raise ValueError(f"threshold {text!r}: unknown metric {metric!r}; known: "
                         f"{', '.join(sorted(_KIND_METRICS | _RUN_ONLY))}, status_NNN")
    if kind is not None and metric in _RUN_ONLY:
        raise ValueError(f"threshold {text!r}: {metric} is run-wide, it takes no {{kind}}")
    return Threshold(text.strip(), metric, kind, op, float(value))


def with_defaults(given: list[Threshold]) -> list[Threshold]:
    """``given`` plus each default whose metric the user did not set run-wide."""
    mine = {(t.metric, t.kind) for t in given}
    extra = [parse_threshold(d) for d in DEFAULT_THRESHOLDS]
    return given + [t for t in extra if (t.metric, t.kind) not in mine]


def load_thresholds(path: str | Path) -> list[Threshold]:
    """A file of thresholds: a JSON list of strings, or one per line (``#`` comments)."""
    text = Path(path).read_text()
    if text.lstrip().startswith("["):
        items = json.loads(text)
        if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
            raise ValueError(f"{path}: a JSON thresholds file is a list of strings")
        return [parse_threshold(x) for x in items]
    lines = (ln.split("#", 1)[0].strip() for ln in text.splitlines())
    return [parse_threshold(ln) for ln in lines if ln]


def _kinds(r: RunReport, kind: str | None) -> list[KindReport]:
    if kind is not None:
        return [r.kinds[kind]] if kind in r.kinds else []
    return [k for name, k in r.kinds.items() if name != "prereg"]


def _latency(ks: list[KindReport]) -> HdrHistogram:
    from hdrh.histogram import HdrHistogram

    from loadtest.metrics import new_histogram

    h = new_histogram()
    for k in ks:
        if k.histogram:
            h.add(HdrHistogram.decode(k.histogram))
    return h


def metric_value(r: RunReport, metric: str, kind: str | None = None) -> float | None:
    """The figure a threshold compares, or None when the run has no data for it."""
    if metric in _RUN_ONLY:
        run: dict[str, float | None] = {
            "lateness_p99_ms": r.lateness_us.get("p99", 0.0) / 1000.0,
            "lateness_max_ms": r.lateness_us.get("max", 0.0) / 1000.0,
            "calls_failed": float(r.calls.failed),
            "calls_completed": float(r.calls.completed),
            "calls_established": float(r.calls.established),
            "wall_s": r.wall_s,
        }
        return run[metric]
    ks = _kinds(r, kind)
    if not ks:
        return None
    if metric.startswith("status_"):
        code = int(metric[7:])
        return float(sum(k.codes.get(code, 0) for k in ks))
    sent = sum(k.sent for k in ks)
    answered = sum(sum(k.answered.values()) for k in ks)
    timeouts = sum(k.timeouts for k in ks)
    errors = sum(k.errors for k in ks)
    good = sum(sum(k.goodput_per_s) for k in ks)
    simple: dict[str, float | None] = {
        "sent": float(sent), "answered": float(answered), "timeouts": float(timeouts),
        "errors": float(errors),
        "error_rate": errors / (answered + timeouts) if answered + timeouts else None,
        "goodput_ratio": good / sent if sent else None,
        "goodput": good / max(r.schedule_end_s, 1.0),
    }
    if metric in simple:
        return simple[metric]
    h = _latency(ks)
    if h.get_total_count() == 0:
        return None
    if metric == "max_ms":
        return float(h.get_max_value()) / 1000.0
    if metric == "mean_ms":
        return float(h.get_mean_value()) / 1000.0
    return float(h.get_value_at_percentile(_PCT[metric])) / 1000.0


def evaluate(r: RunReport, thresholds: list[Threshold]) -> list[ThresholdReport]:
    from loadtest.report import ThresholdReport

    out = []
    for t in thresholds:
        v = metric_value(r, t.metric, t.kind)
        out.append(ThresholdReport(t.text, v, v is not None and _OPS[t.op](v, t.value)))
    return out
