"""``storm replay``: read the trace, run the engine with its live stats, judge and report.

The run is judged twice: thresholds (``thresholds``; DEFAULT_THRESHOLDS are added unless the
user sets those metrics) decide the exit status, and the diagnosis (``diagnose``) warns about what
looks wrong whatever the thresholds say.  Both go into the summary, the JSON and the HTML.
"""

from __future__ import annotations

import sys
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from loadtest.report import BUSY_CPU, RunReport
from loadtest.thresholds import Threshold, with_defaults

__all__ = ["EXIT_FAILED", "EXIT_THRESHOLDS", "print_summary", "run_replay"]

EXIT_FAILED = 1
EXIT_THRESHOLDS = 3


def _err(msg: str) -> None:
    print(f"storm: {msg}", file=sys.stderr)


def _trace_info(path: str, trace: Any) -> dict[str, Any]:
    domains = Counter(e.domain for e in trace.events)
    return {"path": path, "source": trace.header.source, "events": len(trace.events),
            "bad_lines": trace.bad_lines,
            "errors": [{"line": e.line, "reason": e.reason} for e in trace.errors[:100]],
            "domains": [d for d, _ in domains.most_common(5)]}


def run_replay(a: Any, thresholds: list[Threshold]) -> int:
    import uvloop

    from loadtest.auth import Passwords
    from loadtest.diagnose import diagnose
    from loadtest.diameter import parse_diameter_target
    from loadtest.engine import Engine, EngineConfig, parse_target
    from loadtest.live import CsvStats, LiveLines, LiveView, ProgressBar, fan_out
    from loadtest.report import build_report, save_report
    from loadtest.thresholds import evaluate
    from loadtest.trace import CcrSession, TraceFormatError, read_trace

    try:
        trace = read_trace(a.trace, strict=a.strict)
    except (TraceFormatError, OSError) as exc:
        _err(f"{a.trace}: {exc}")
        return EXIT_FAILED
    for err in trace.errors:
        _err(f"{a.trace}:{err.line}: {err.reason}")
    if trace.bad_lines > len(trace.errors):
        _err(f"... {trace.bad_lines - len(trace.errors)} more bad lines")
    if not trace.events:
        _err(f"error: {a.trace}: the trace has no events ({trace.bad_lines} bad lines): "
             "nothing to replay")
        return EXIT_FAILED
    try:
        passwords = Passwords.load(a.password, a.passwords)
    except (OSError, ValueError) as exc:
        _err(f"--passwords: {exc}")
        return EXIT_FAILED
    if a.target is None and a.ws is None and a.diameter is None:
        _err("give --target udp://HOST:PORT, --ws ws://HOST:PORT and/or "
             "--diameter tcp://HOST:PORT")
        return EXIT_FAILED
    if a.diameter is None and any(isinstance(e, CcrSession) for e in trace.events):
        _err("no --diameter peer: ccr-session events are skipped and counted")
    thresholds = with_defaults(thresholds)
    live: LiveView | None = None
    if sys.stdout.isatty():
        live = ProgressBar(len(trace.events))
    elif a.live_interval > 0:
        live = LiveLines(a.live_interval)
    csv = CsvStats(a.csv) if a.csv else None
    sinks = [s.second for s in (live, csv) if s is not None]
    cfg = EngineConfig(
        target=parse_target(a.target) if a.target else None, ws_url=a.ws,
        ws_share=a.ws_share, ws_connections=a.ws_connections, speed=a.speed,
        duration=a.duration, ramp_up=a.ramp_up, max_inflight=a.max_inflight,
        max_lateness=a.max_lateness,
        sockets=a.sockets, deadline=a.deadline, t1=a.t1, t2=max(4.0, a.t1),
        register_callees=not a.no_register_callees, backoff=not a.no_backoff,
        drain=a.drain, seed=a.seed, expected=a.expect,
        passwords=passwords,
        on_second=fan_out(*sinks) if sinks else None,
        diameter=parse_diameter_target(a.diameter) if a.diameter else None,
        diameter_origin_host=a.diameter_origin_host, diameter_realm=a.diameter_realm,
        diameter_tw=a.diameter_watchdog,
    )
    started = datetime.now(UTC).isoformat(timespec="seconds")
    try:
        result = uvloop.run(Engine(trace.events, cfg).run())
    finally:
        for s in (live, csv):
            if s is not None:
                s.close()
    conf = {k: v for k, v in vars(a).items() if k not in ("cmd", "threshold")}
    conf["expect"] = sorted(a.expect)
    conf["thresholds_file"] = a.thresholds
    conf["thresholds"] = [t.text for t in thresholds]
    report = build_report(result, _trace_info(a.trace, trace), conf, a.expect, started)
    report.thresholds = evaluate(report, thresholds)
    report.warnings = diagnose(report)
    save_report(report, a.json)
    if a.html:
        from loadtest.reporthtml import render_html

        with open(a.html, "w") as fh:
            fh.write(render_html(report))
    print_summary(report)
    return EXIT_THRESHOLDS if any(not t.passed for t in report.thresholds) else 0


def print_summary(r: RunReport) -> None:
    print(f"wall {r.wall_s:.2f}s  transactions/s {r.transactions_per_s:.0f}  "
          f"lateness P99 {r.lateness_us.get('p99', 0) / 1000:.3f} ms  "
          f"CPU {r.cpu['percent_of_one_core']:.0f}% of one core")
    for name, k in r.kinds.items():
        lat = k.latency_us
        codes = " ".join(f"{c}:{n}" for c, n in sorted(k.codes.items())) or "-"
        print(f"  {name:9s} sent {k.sent} answered {sum(k.answered.values())} "
              f"timeouts {k.timeouts} errors {k.errors} retrans {k.retransmissions} "
              f"codes {codes} P50/P99/P99.9 ms {lat.get('p50', 0) / 1000:.2f}/"
              f"{lat.get('p99', 0) / 1000:.2f}/{lat.get('p99.9', 0) / 1000:.2f}")
    g = r.generator
    if g is not None:
        print(f"  injector  CPU max {100 * g.cpu_max:.0f}% of one core, busy (>= "
              f"{100 * BUSY_CPU:.0f}%) {g.busy_seconds} of {g.offered_seconds} offered s, "
              f"answers dropped on its sockets {g.rx_drops}: "
              + ("INJECTOR-BOUND" if g.bound else "kept up"))
    c = r.calls
    if r.diameter:
        print(f"  diameter {r.diameter}")
    if c.attempted:
        print(f"  calls attempted {c.attempted} established {c.established} "
              f"completed {c.completed} failed {c.failed} abandoned {c.abandoned}")
    if r.trace.get("bad_lines"):
        print(f"  bad trace lines {r.trace['bad_lines']}")
    if r.knee is not None:
        print(f"  knee ({r.knee.reason}) at {r.knee.second}s: offered "
              f"{r.knee.offered_per_s:.0f}/s goodput {r.knee.goodput_per_s:.0f}/s")
    for w in r.warnings:
        _err(f"warning: {w}")
    for t in r.thresholds:
        seen = "no data" if t.observed is None else f"{t.observed:.6g}"
        print(f"  threshold {t.threshold}: {'ok' if t.passed else 'FAILED'} (observed {seen})")
    failed = [t.threshold for t in r.thresholds if not t.passed]
    if failed:
        _err(f"thresholds not met: {', '.join(failed)}")
