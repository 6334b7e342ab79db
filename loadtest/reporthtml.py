"""The HTML page of a run: one self-contained file (tables, and charts as inline PNG images).

Read top down: what was run (date, target, trace, settings, versions), whether it passed
(thresholds, warnings), the figures per kind and per status code, then the charts: the capacity
curve (goodput and P99 against offered load, knee marked and its rule stated), throughput and
errors over time, latency over time, calls in progress and calls/s, in-flight transactions and
the injector's lateness, and every final status on a log scale so a rare 503 beside 200,000
200s still shows.  Colours are the Okabe-Ito palette, told apart by colour-blind readers too.
"""

from __future__ import annotations

import base64
import html
import io
import math
from typing import Any

from loadtest.report import KindReport, RunReport

__all__ = ["render_html"]

#: Okabe-Ito: distinguishable with every common colour-vision deficiency.
BLUE, ORANGE, GREEN, RED, PURPLE, SKY, YELLOW, GREY = (
    "#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#666666")
_CLASS_COLOUR = {"1": SKY, "2": GREEN, "3": BLUE, "4": ORANGE, "5": RED, "6": PURPLE}

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1200px}
h1{margin-bottom:.2em} h2{margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}
caption{text-align:left;font-weight:bold;white-space:nowrap;padding:.3em 0}
td,th{border:1px solid #ccc;padding:3px 10px;text-align:right}
th{background:#f3f3f3} td.l,th.l{text-align:left}
.pass{color:#fff;background:#009E73} .fail{color:#fff;background:#D55E00}
.warn{background:#fff3cd;border-left:4px solid #E69F00;padding:.4em .8em;margin:.3em 0}
.note{color:#555;font-size:90%} img{max-width:100%}
"""


def _esc(x: object) -> str:
    return html.escape(str(x))


def _table(head: list[str], rows: list[list[str]], left: int = 1, caption: str = "") -> str:
    """A table; the first ``left`` columns are text (left-aligned), the rest figures."""
    def cell(tag: str, i: int, v: str, raw: bool = False) -> str:
        cls = " class='l'" if i < left else ""
        return f"<{tag}{cls}>{v if raw else _esc(v)}</{tag}>"
    th = "".join(cell("th", i, h) for i, h in enumerate(head)) if any(head) else ""
    body = "".join("<tr>" + "".join(cell("td", i, c) for i, c in enumerate(r)) + "</tr>"
                   for r in rows)
    cap = f"<caption>{_esc(caption)}</caption>" if caption else ""
    thead = f"<thead><tr>{th}</tr></thead>" if th else ""
    return f"<table>{cap}{thead}<tbody>{body}</tbody></table>"


def _ms(d: dict[str, float], key: str) -> str:
    return f"{d[key] / 1000.0:.3f}" if key in d else "-"


def _header(r: RunReport) -> str:
    c = r.config
    where = [f"{name} {c[k]}" for k, name in (("target", "SIP/UDP"), ("ws", "SIP/WebSocket"),
                                               ("diameter", "Diameter")) if c.get(k)]
    rows = [
        ["started (UTC)", r.started_at],
        ["target", ", ".join(where) or "-"],
        ["trace", f"{r.trace.get('path', '')} ({r.trace.get('source', '')}), "
                  f"{r.trace.get('events', 0)} events, domains "
                  f"{', '.join(r.trace.get('domains', [])) or '-'}"],
        ["schedule", f"speed {c.get('speed')}, ramp-up {c.get('ramp_up')} s, duration "
                     f"{c.get('duration') or 'whole trace'}, max in flight "
                     f"{c.get('max_inflight')}"],
        ["user agents", f"T1 {c.get('t1')} s, {c.get('sockets')} UDP sockets, deadline "
                        f"{c.get('deadline')} s, expected codes {c.get('expect') or 'none'}, "
                        f"back-off {'off' if c.get('no_backoff') else 'RFC 5626'}"],
        ["versions", ", ".join(f"{k} {v}" for k, v in r.versions.items())],
        ["wall time", f"{r.wall_s:.2f} s (schedule {r.schedule_end_s:.2f} s)"],
        ["injector", f"{r.cpu['percent_of_one_core']:.0f}% of one core, lateness P99 "
                     f"{_ms(r.lateness_us, 'p99')} ms, max {_ms(r.lateness_us, 'max')} ms"],
    ]
    return _table(["", ""], rows, left=2)


def _verdict(r: RunReport) -> str:
    failed = [t for t in r.thresholds if not t.passed]
    if not r.thresholds:
        head = "<p>No thresholds were given.</p>"
    else:
        head = (f"<p class='fail' style='padding:.4em'>FAILED: {len(failed)} of "
            f"{len(r.thresholds)} thresholds not met</p>" if failed else
            f"<p class='pass' style='padding:.4em'>PASSED: all {len(r.thresholds)} "
            "thresholds met</p>")
    rows = "".join(
        f"<tr><td class='l'>{_esc(t.threshold)}</td><td>"
        f"{'no data' if t.observed is None else f'{t.observed:.6g}'}</td>"
        f"<td class='{'pass' if t.passed else 'fail'}'>{'met' if t.passed else 'FAILED'}</td></tr>"
        for t in r.thresholds)
    table = ("<table><thead><tr><th class='l'>threshold</th><th>observed</th><th>result</th>"
             f"</tr></thead><tbody>{rows}</tbody></table>") if rows else ""
    warns = "".join(f"<div class='warn'>{_esc(w)}</div>" for w in r.warnings)
    return head + table + (f"<h3>Warnings</h3>{warns}" if warns else "")


def _kinds(r: RunReport) -> str:
    head = ["kind", "sent", "answered", "errors", "error %", "timeouts", "retrans", "503",
            "RA retries", "backoff", "abandoned", "P50 ms", "P99 ms", "P99.9 ms", "max ms"]
    rows = []
    for name, k in r.kinds.items():
        answered = sum(k.answered.values())
        outcomes = answered + k.timeouts
        rows.append([name, str(k.sent), str(answered), str(k.errors),
                     f"{100 * k.errors / outcomes:.2f}" if outcomes else "-", str(k.timeouts),
                     str(k.retransmissions), str(k.status_503), str(k.retry_after_honoured),
                     str(k.backoff_retries), str(k.abandoned), _ms(k.latency_us, "p50"),
                     _ms(k.latency_us, "p99"), _ms(k.latency_us, "p99.9"),
                     _ms(k.latency_us, "max")])
    return _table(head, rows)


def _outcomes(k: KindReport) -> dict[str, int]:
    out = {str(c): n for c, n in k.codes.items()}
    if k.timeouts:
        out["timeout"] = k.timeouts
    return out


def _codes(r: RunReport) -> str:
    per = {name: _outcomes(k) for name, k in r.kinds.items()}
    codes = sorted({c for d in per.values() for c in d}, key=lambda c: (c == "timeout", c))
    rows = [[name, *(str(per[name].get(c, 0)) for c in codes)] for name in per]
    return _table(["kind", *codes], rows, caption="Final answers by status code and kind")


def _other(r: RunReport) -> str:
    c = r.calls
    parts = []
    if c.attempted:
        parts.append(_table(["attempted", "established", "completed", "failed", "abandoned"],
                            [[str(c.attempted), str(c.established), str(c.completed),
                              str(c.failed), str(c.abandoned)]], left=0, caption="Calls"))
    u = r.uas
    if u.get("requests"):
        reqs = " ".join(f"{m} {n}" for m, n in sorted(u["requests"].items()))
        parts.append(_table(
            ["requests", "retransmissions absorbed", "2xx retransmitted", "ACK timeouts",
             "bad"], [[reqs, str(u["retransmissions_absorbed"]), str(u["ok_retransmitted"]),
                       str(u["ack_timeouts"]), str(u["bad"])]],
            caption="Our UAs as callees (UAS side)"))
    if r.diameter:
        parts.append(_table(list(r.diameter), [[str(v) for v in r.diameter.values()]], left=0,
                            caption="Diameter peer"))
    run = [["events started", str(r.events_started)],
           ["events skipped", ", ".join(f"{k} {v}" for k, v in r.events_skipped.items()) or "0"],
           ["events deferred by --max-inflight", str(r.deferred_by_cap)],
           ["send errors", str(r.send_errors)], ["stray responses", str(r.stray_responses)],
           ["bad trace lines", str(r.trace.get("bad_lines", 0))],
           ["transactions answered per second", f"{r.transactions_per_s:.0f}"]]
    parts.append(_table(["", ""], run, left=1, caption="Run"))
    return "".join(parts)


def _capacity_table(r: RunReport) -> str:
    if not r.capacity:
        return ""
    rows = [[f"{p.offered_per_s:.0f}", f"{p.goodput_per_s:.0f}",
             f"{100 * p.goodput_per_s / p.offered_per_s:.1f}" if p.offered_per_s else "-",
             f"{p.p99_ms:.3f}", str(p.seconds)] for p in r.capacity]
    return _table(["offered/s", "goodput/s", "goodput %", "P99 ms", "seconds"], rows, left=0,
                  caption="Capacity: goodput and P99 by offered load")


def _knee_text(r: RunReport) -> str:
    k = r.knee
    found = ("not reached: the server kept up with every offered second" if k is None else
             f"at second {k.second} ({k.reason} rule): offered {k.offered_per_s:.0f}/s, "
             f"goodput {k.goodput_per_s:.0f}/s; best goodput {k.max_goodput_per_s:.0f}/s")
    return (f"<p><b>Knee</b>: {_esc(found)}.</p><p class='note'>Rule: the knee is "
            f"{_esc(r.knee_rule)}.</p>")


# ------------------------------------------------------------------- charts

def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


#: A latency axis is logarithmic when its values span more than this factor: then a 0.9 ms
#: P99 and a 480 ms one are both readable; over a narrower range a linear axis reads better.
LOG_SPAN = 20.0


def _log_if_wide(ax: Any, values: list[float], label: str, colour: str) -> None:
    positive = [v for v in values if v > 0]
    wide = bool(positive) and max(positive) > LOG_SPAN * min(positive)
    if wide:
        ax.set_yscale("log")
    ax.set_ylabel(label.format(", log" if wide else ""), color=colour)


def _offered_good(r: RunReport) -> tuple[list[int], list[int]]:
    n = len(r.timeline)
    off, good = [0] * n, [0] * n
    for name, k in r.kinds.items():
        if name == "prereg":
            continue
        for series, acc in ((k.offered_per_s, off), (k.goodput_per_s, good)):
            for i, v in enumerate(series[:n]):
                acc[i] += v
    return off, good


def _chart_capacity(plt: Any, r: RunReport) -> Any:
    fig, ax = plt.subplots(figsize=(10, 4.2))
    xs = [p.offered_per_s for p in r.capacity]
    ax.plot(xs, xs, color=GREY, linestyle="--", linewidth=1, label="goodput = offered")
    ax.plot(xs, [p.goodput_per_s for p in r.capacity], color=GREEN, marker="o", linewidth=2,
            label="goodput/s")
    ax.set_xlabel("offered load (transactions/s)")
    ax.set_ylabel("goodput (answers in deadline /s)", color=GREEN)
    ax2 = ax.twinx()
    ax2.plot(xs, [p.p99_ms for p in r.capacity], color=RED, marker="s", linewidth=2,
             label="P99 latency")
    _log_if_wide(ax2, [p.p99_ms for p in r.capacity], "P99 latency (ms{})", RED)
    if r.knee is not None:
        ax.axvline(r.knee.offered_per_s, color=PURPLE, linestyle=":", linewidth=2)
        ax.annotate(f"knee {r.knee.offered_per_s:.0f}/s", (r.knee.offered_per_s, 0),
                    xytext=(5, 10), textcoords="offset points", color=PURPLE)
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="upper left", fontsize=9)
    ax.grid(alpha=0.3)
    return fig


def _chart_throughput(plt: Any, r: RunReport) -> Any:
    off, good = _offered_good(r)
    secs = list(range(len(off)))
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(10, 5), sharex=True,
                                  gridspec_kw={"height_ratios": [2, 1]})
    ax.fill_between(secs, off, color=GREY, alpha=0.25, step="mid", label="offered/s")
    ax.plot(secs, off, color=GREY, linewidth=1, drawstyle="steps-mid")
    ax.plot(secs, good, color=GREEN, linewidth=2, drawstyle="steps-mid",
            label="goodput/s (credited to the offered second)")
    if r.knee is not None:
        ax.axvline(r.knee.second, color=PURPLE, linestyle=":", linewidth=2, label="knee")
    ax.set_ylabel("transactions/s")
    ax.legend(loc="upper left", fontsize=9)
    ax.grid(alpha=0.3)
    tl = r.timeline
    ax2.plot([p.second for p in tl], [p.errors - p.timeouts for p in tl], color=RED,
             drawstyle="steps-mid", label="error answers/s")
    ax2.plot([p.second for p in tl], [p.timeouts for p in tl], color=ORANGE,
             drawstyle="steps-mid", linestyle="--", label="timeouts/s")
    ax2.set_ylabel("errors/s")
    ax2.set_xlabel("second of the run")
    ax2.legend(loc="upper left", fontsize=9)
    ax2.grid(alpha=0.3)
    return fig


def _chart_latency(plt: Any, r: RunReport) -> Any:
    tl = r.timeline
    fig, ax = plt.subplots(figsize=(10, 3.4))
    for attr, label, colour in (("p50_us", "P50", BLUE), ("p99_us", "P99", ORANGE),
                                ("p999_us", "P99.9", RED)):
        # A second without answers has no latency: a gap in the line, not a zero.
        ax.plot([p.second for p in tl],
                [getattr(p, attr) / 1000.0 if p.answered else math.nan for p in tl],
                label=label, color=colour, linewidth=2)
    ax.set_xlabel("second of the run")
    _log_if_wide(ax, [p.p999_us / 1000.0 for p in tl if p.answered] +
                 [p.p50_us / 1000.0 for p in tl if p.answered], "latency (ms{})", "black")
    ax.legend(loc="upper left", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    return fig


def _chart_calls(plt: Any, r: RunReport) -> Any:
    tl = r.timeline
    fig, ax = plt.subplots(figsize=(10, 3.4))
    secs = [p.second for p in tl]
    ax.plot(secs, [p.calls_up for p in tl], color=BLUE, linewidth=2, label="calls in progress")
    ax.set_ylabel("calls in progress", color=BLUE)
    ax2 = ax.twinx()
    ax2.plot(secs, [p.calls_started for p in tl], color=ORANGE, linewidth=1.5,
             drawstyle="steps-mid", label="new calls/s")
    ax2.set_ylabel("new calls/s", color=ORANGE)
    ax.set_xlabel("second of the run")
    ax.grid(alpha=0.3)
    return fig


def _chart_injector(plt: Any, r: RunReport) -> Any:
    tl = r.timeline
    fig, ax = plt.subplots(figsize=(10, 3.0))
    secs = [p.second for p in tl]
    ax.plot(secs, [p.inflight for p in tl], color=BLUE, linewidth=2,
            label="transactions in flight")
    ax.set_ylabel("in flight", color=BLUE)
    ax2 = ax.twinx()
    ax2.plot(secs, [p.late_p99_us / 1000.0 for p in tl], color=PURPLE, linewidth=1.5,
             label="lateness P99")
    ax2.set_ylabel("injector lateness P99 (ms)", color=PURPLE)
    ax.set_xlabel("second of the run")
    ax.grid(alpha=0.3)
    return fig


def _chart_codes(plt: Any, r: RunReport) -> Any | None:
    total: dict[str, int] = {}
    for k in r.kinds.values():
        for c, n in _outcomes(k).items():
            total[c] = total.get(c, 0) + n
    if not total:
        return None
    names = sorted(total, key=lambda c: (c == "timeout", c))
    fig, ax = plt.subplots(figsize=(10, 0.5 * len(names) + 1.2))
    colours = [ORANGE if c == "timeout" else _CLASS_COLOUR.get(c[0], GREY) for c in names]
    ax.barh(names, [total[c] for c in names], color=colours)
    ax.set_xscale("log")
    ax.set_xlim(0.8, max(total.values()) * 3)
    for i, c in enumerate(names):
        ax.annotate(f"{total[c]:,}", (total[c], i), xytext=(4, 0), textcoords="offset points",
                    va="center", fontsize=9)
    ax.invert_yaxis()
    ax.set_xlabel("final answers (log scale: rare codes still show)")
    ax.grid(alpha=0.3, axis="x", which="both")
    return fig


def _charts(r: RunReport) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")  # no display: render to memory only
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 10})
    makers: list[tuple[str, Any]] = []
    if r.capacity:
        makers.append(("Capacity curve: goodput and P99 against offered load", _chart_capacity))
    makers += [("Throughput and errors over time", _chart_throughput),
               ("Latency percentiles over time", _chart_latency)]
    if r.calls.attempted:
        makers.append(("Calls in progress and new calls per second", _chart_calls))
    makers += [("In-flight transactions and injector lateness", _chart_injector),
               ("Final answers by status code", _chart_codes)]
    out = []
    for title, make in makers:
        fig = make(plt, r)
        if fig is not None:
            out.append((title, _png(fig)))
            plt.close(fig)
    return out


def render_html(r: RunReport) -> str:
    imgs = "".join(f"<h2>{_esc(t)}</h2><img alt='{_esc(t)}' src='data:image/png;base64,{b}'>"
                   + (_knee_text(r) + _capacity_table(r) if t.startswith("Capacity") else "")
                   for t, b in _charts(r))
    if not r.capacity:
        imgs = _knee_text(r) + imgs
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>storm run "
        f"{_esc(r.started_at)}</title><style>{_CSS}</style></head><body>"
        f"<h1>storm run</h1>{_header(r)}<h2>Verdict</h2>{_verdict(r)}"
        f"<h2>Per kind of transaction</h2>{_kinds(r)}{_codes(r)}{_other(r)}"
        f"{imgs}</body></html>"
    )
