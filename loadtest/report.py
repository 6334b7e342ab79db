"""Run reports: a JSON document (msgspec Structs) and an HTML page with plots built from it.

The JSON keeps everything the HTML shows, including each kind's full HDR histogram (its standard
compressed base64 encoding), so ``storm report run.json --html out.html`` rebuilds the page, and
runs can be merged or re-analysed later with any HdrHistogram implementation.
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import Any

import msgspec

from loadtest.engine import RunResult
from loadtest.metrics import find_knee

__all__ = [
    "REPORT_VERSION",
    "CallReport",
    "KindReport",
    "KneeReport",
    "RunReport",
    "build_report",
    "load_report",
    "render_html",
    "save_report",
]

REPORT_VERSION = 1


class KindReport(msgspec.Struct):
    sent: int
    answered: dict[str, int]
    failures: dict[int, int]
    provisional: int
    timeouts: int
    retransmissions: int
    lost_simulated: int
    status_503: int
    retry_after_honoured: int
    backoff_retries: int
    abandoned: int
    queued: int
    superseded: int
    latency_us: dict[str, float]
    histogram: str  # HdrHistogram compressed base64 encoding
    offered_per_s: list[int]
    goodput_per_s: list[int]


class CallReport(msgspec.Struct):
    attempted: int
    established: int
    failed: int
    completed: int
    abandoned: int


class KneeReport(msgspec.Struct):
    second: int
    offered_per_s: float
    goodput_per_s: float
    max_goodput_per_s: float


class SecondReport(msgspec.Struct, array_like=True):
    """One second: [second, offered, answered, good, errors, retransmissions, p50, p99, p99.9]."""

    second: int
    offered: int
    answered: int
    good: int
    errors: int
    retransmissions: int
    p50_us: float
    p99_us: float
    p999_us: float


class RunReport(msgspec.Struct):
    version: int
    trace: dict[str, Any]
    config: dict[str, Any]
    wall_s: float
    schedule_end_s: float
    events_started: int
    events_skipped: dict[str, int]
    deferred_by_cap: int
    send_errors: int
    stray_responses: int
    transactions_per_s: float
    lateness_us: dict[str, float]
    cpu: dict[str, float]
    kinds: dict[str, KindReport]
    calls: CallReport
    uas: dict[str, Any]
    diameter: dict[str, Any]
    timeline: list[SecondReport]
    knee: KneeReport | None


def _pct(h: Any) -> dict[str, float]:
    if h.get_total_count() == 0:
        return {}
    out = {f"p{p:g}": float(h.get_value_at_percentile(p)) for p in (50.0, 99.0, 99.9)}
    out["max"] = float(h.get_max_value())
    out["mean"] = float(h.get_mean_value())
    out["count"] = float(h.get_total_count())
    return out


def build_report(res: RunResult, trace: dict[str, Any], config: dict[str, Any]) -> RunReport:
    kinds = {
        name: KindReport(
            sent=k.sent, answered=dict(k.answered), failures=dict(k.failures),
            provisional=k.provisional,
            timeouts=k.timeouts, retransmissions=k.retransmissions,
            lost_simulated=k.lost_simulated, status_503=k.status_503,
            retry_after_honoured=k.retry_after_honoured, backoff_retries=k.backoff_retries,
            abandoned=k.abandoned, queued=k.queued, superseded=k.superseded,
            latency_us=k.percentiles(),
            histogram=k.latency.encode().decode("ascii"),
            offered_per_s=list(k.offered.values), goodput_per_s=list(k.goodput.values),
        )
        for name, k in sorted(res.kinds.items())
    }
    # The knee is read off the offered seconds only (the drain is not offered load), without
    # the pre-registration, which is set-up rather than load.
    # Every second that was offered, the last partial one included: goodput is credited to
    # the offered second, so the drain's late answers still count where they belong.
    n = math.ceil(res.schedule_end_s - 1e-3)
    off = [0] * n
    good = [0] * n
    for name, k in res.kinds.items():
        if name == "prereg":
            continue
        for i, v in enumerate(k.offered.values[:n]):
            off[i] += v
        for i, v in enumerate(k.goodput.values[:n]):
            good[i] += v
    knee = find_knee(off, good)
    cpu_total = res.cpu_user_s + res.cpu_sys_s
    answered = sum(sum(k.answered.values()) for name, k in res.kinds.items())
    return RunReport(
        version=REPORT_VERSION,
        trace=trace,
        config=config,
        wall_s=res.wall_s,
        schedule_end_s=res.schedule_end_s,
        events_started=res.events_started,
        events_skipped=res.events_skipped,
        deferred_by_cap=res.deferred_by_cap,
        send_errors=res.send_errors,
        stray_responses=res.stray_responses,
        transactions_per_s=answered / res.wall_s if res.wall_s > 0 else 0.0,
        lateness_us=_pct(res.lateness),
        cpu={"user_s": res.cpu_user_s, "sys_s": res.cpu_sys_s,
             "percent_of_one_core": 100.0 * cpu_total / res.wall_s if res.wall_s else 0.0},
        kinds=kinds,
        calls=CallReport(res.calls.attempted, res.calls.established, res.calls.failed,
                         res.calls.completed, res.calls.abandoned),
        uas={"requests": res.uas.requests,
             "retransmissions_absorbed": res.uas.retransmissions_absorbed,
             "ok_retransmitted": res.uas.ok_retransmitted, "ack_timeouts": res.uas.ack_timeouts,
             "bad": res.uas.bad},
        diameter=res.diameter,
        timeline=[SecondReport(p.second, p.offered, p.answered, p.good, p.errors,
                               p.retransmissions, p.p50_us, p.p99_us, p.p999_us)
                  for p in res.timeline],
        knee=None if knee is None else KneeReport(knee.second, knee.offered_per_s,
                                                  knee.goodput_per_s, knee.max_goodput_per_s),
    )


def save_report(report: RunReport, path: str | Path) -> None:
    Path(path).write_bytes(msgspec.json.format(msgspec.json.encode(report)))


def load_report(path: str | Path) -> RunReport:
    return msgspec.json.decode(Path(path).read_bytes(), type=RunReport)


# ------------------------------------------------------------------- HTML

def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _plots(r: RunReport) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")  # no display: render to memory only
    import matplotlib.pyplot as plt

    secs = [p.second for p in r.timeline]
    out: list[tuple[str, str]] = []
    fig, ax = plt.subplots(figsize=(9, 3.2))
    ax.plot(secs, [p.offered for p in r.timeline], label="offered/s")
    ax.plot(secs, [p.answered for p in r.timeline], label="answered/s")
    ax.plot(secs, [p.good for p in r.timeline], label="goodput/s (in deadline)")
    ax.plot(secs, [p.errors for p in r.timeline], label="errors/s")
    if r.knee is not None:
        ax.axvline(r.knee.second, color="red", linestyle=":", label="knee")
    ax.set_xlabel("second")
    ax.legend(loc="upper left", fontsize=8)
    out.append(("Throughput over time", _png(fig)))
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(9, 3.2))
    for attr, label in (("p50_us", "P50"), ("p99_us", "P99"), ("p999_us", "P99.9")):
        # A second without answers has no latency: a gap in the line, not a zero.
        ax.plot(secs, [getattr(p, attr) / 1000.0 if p.answered else math.nan
                       for p in r.timeline], label=label)
    ax.set_xlabel("second")
    ax.set_ylabel("latency (ms)")
    ax.set_yscale("symlog", linthresh=1.0)
    ax.legend(loc="upper left", fontsize=8)
    out.append(("Latency percentiles over time", _png(fig)))
    plt.close(fig)
    mix: dict[str, int] = {}
    for k in r.kinds.values():
        for cls, n in k.answered.items():
            mix[cls] = mix.get(cls, 0) + n
        if k.timeouts:
            mix["timeout"] = mix.get("timeout", 0) + k.timeouts
    if mix:
        fig, ax = plt.subplots(figsize=(6, 3))
        names = sorted(mix)
        ax.bar(names, [mix[n] for n in names])
        ax.set_ylabel("final outcomes")
        out.append(("Status mix", _png(fig)))
        plt.close(fig)
    return out


def _table(rows: list[list[str]], head: list[str]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def _ms(d: dict[str, float], key: str) -> str:
    return f"{d[key] / 1000.0:.3f}" if key in d else "-"


def render_html(r: RunReport) -> str:
    head = ["kind", "sent", "answered", "timeouts", "retrans", "503", "RA honoured", "backoff",
            "abandoned", "P50 ms", "P99 ms", "P99.9 ms"]
    rows = [
        [name, str(k.sent), " ".join(f"{c}:{n}" for c, n in sorted(k.answered.items())),
         str(k.timeouts), str(k.retransmissions), str(k.status_503), str(k.retry_after_honoured),
         str(k.backoff_retries), str(k.abandoned), _ms(k.latency_us, "p50"),
         _ms(k.latency_us, "p99"), _ms(k.latency_us, "p99.9")]
        for name, k in r.kinds.items()
    ]
    summary = [
        ["trace", str(r.trace.get("source", ""))],
        ["events started", str(r.events_started)],
        ["skipped", str(r.events_skipped)],
        ["deferred by --max-inflight", str(r.deferred_by_cap)],
        ["send errors / stray responses", f"{r.send_errors} / {r.stray_responses}"],
        ["bad trace lines", str(r.trace.get("bad_lines", 0))],
        ["wall time s", f"{r.wall_s:.2f}"],
        ["transactions/s", f"{r.transactions_per_s:.0f}"],
        ["lateness P99 ms", _ms(r.lateness_us, "p99")],
        ["injector CPU", f"{r.cpu['percent_of_one_core']:.0f}% of one core "
                         f"(user {r.cpu['user_s']:.2f}s, sys {r.cpu['sys_s']:.2f}s)"],
        ["calls", str(msgspec.structs.asdict(r.calls))],
        ["UAS side", str(r.uas)],
        ["Diameter", str(r.diameter) if r.diameter else "-"],
        ["knee", "not reached" if r.knee is None else
         f"at {r.knee.second}s: offered {r.knee.offered_per_s:.0f}/s, "
         f"goodput {r.knee.goodput_per_s:.0f}/s (max {r.knee.max_goodput_per_s:.0f}/s)"],
    ]
    imgs = "".join(f"<h2>{html.escape(t)}</h2><img src='data:image/png;base64,{b}'>"
                   for t, b in _plots(r))
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>storm run</title><style>"
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}</style></head><body>"
        "<h1>storm run</h1>" + _table(summary, ["", ""]) + "<h2>Per kind</h2>"
        + _table(rows, head) + imgs + "</body></html>"
    )
