"""The ``storm`` command: import captures, synthesize storms, replay traces, rebuild reports.

    storm import capture.pcapng --out trace.jsonl
    storm synth registration-storm --users 10000 --seed 7 --out storm.jsonl
    storm replay storm.jsonl --target udp://127.0.0.1:5060 --speed 2 --json run.json --html run.html
    storm report run.json --html run.html

Exit status: 0 done, 1 the run or the input failed, 2 usage (argparse).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from typing import Any

__all__ = ["main"]


def _synth_parser(sub: Any) -> None:
    from loadtest.synth import MODELS, PARAM_HELP, SynthParams

    p = sub.add_parser("synth", help="write a synthesized storm trace")
    p.add_argument("model", choices=sorted(MODELS))
    p.add_argument("--out", required=True)
    for f in fields(SynthParams):
        kind = type(f.default)
        p.add_argument("--" + f.name.replace("_", "-"), type=kind, default=f.default,
                       dest=f.name, help=f"{PARAM_HELP.get(f.name, '')} (default {f.default})")


def _replay_parser(sub: Any) -> None:
    p = sub.add_parser("replay", help="replay a trace against a server")
    p.add_argument("trace")
    p.add_argument("--target", help="udp://HOST:PORT of the SIP server")
    p.add_argument("--ws", help="ws://HOST:PORT/ of the SIP WebSocket (RFC 7118)")
    p.add_argument("--ws-share", type=float, default=1.0,
                   help="share of UAs on WebSocket when --target is given too")
    p.add_argument("--ws-connections", type=int, default=50)
    p.add_argument("--diameter", help="tcp://HOST:PORT of the Diameter peer")
    p.add_argument("--diameter-origin-host", default="storm.invalid")
    p.add_argument("--diameter-realm", default="invalid")
    p.add_argument("--diameter-watchdog", type=float, default=30.0,
                   help="RFC 3539 Tw in seconds (>= 6)")
    p.add_argument("--speed", type=float, default=1.0)
    p.add_argument("--duration", type=float, default=None, help="stop offering after S seconds")
    p.add_argument("--ramp-up", type=float, default=0.0, help="ramp the rate up over S seconds")
    p.add_argument("--max-inflight", type=int, default=100_000)
    p.add_argument("--sockets", type=int, default=64, help="UDP source ports")
    p.add_argument("--deadline", type=float, default=1.0, help="goodput deadline, seconds")
    p.add_argument("--drain", type=float, default=None, help="seconds to wait at the end")
    p.add_argument("--t1", type=float, default=0.5)
    p.add_argument("--no-register-callees", action="store_true")
    p.add_argument("--no-backoff", action="store_true")
    p.add_argument("--strict", action="store_true", help="stop at the first bad trace line")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", default="run.json", help="JSON report path")
    p.add_argument("--html", default=None, help="HTML report path")


def _build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="storm", description="SIP/Diameter storm injector")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("import", help="turn a pcap/pcapng capture into a trace")
    p.add_argument("capture")
    p.add_argument("--out", required=True)
    p.add_argument("--sip-ports", default="5060",
                   help="comma-separated UDP ports that carry SIP (any port: 'any')")
    p.add_argument("--diameter-ports", default="3868")
    _synth_parser(sub)
    _replay_parser(sub)
    p = sub.add_parser("report", help="rebuild the HTML report from a JSON report")
    p.add_argument("json")
    p.add_argument("--html", required=True)
    return ap


def _cmd_import(a: Any) -> int:
    from loadtest.pcapimport import import_capture

    sip_ports = None if a.sip_ports == "any" else {int(x) for x in a.sip_ports.split(",")}
    dia_ports = {int(x) for x in a.diameter_ports.split(",")}
    result = import_capture(a.capture, a.out, sip_ports=sip_ports, diameter_ports=dia_ports)
    print(f"wrote {result.events} events to {a.out} "
          f"({result.packets} packets, {result.sip_messages} SIP, "
          f"{result.diameter_messages} Diameter, {result.undecodable} undecodable)")
    return 0


def _cmd_synth(a: Any) -> int:
    from loadtest.synth import SynthParams, synthesize
    from loadtest.trace import write_trace

    params = SynthParams(**{f.name: getattr(a, f.name) for f in fields(SynthParams)})
    header, events = synthesize(a.model, params)
    n = write_trace(a.out, header, events)
    span = events[-1].t if events else 0.0
    print(f"wrote {n} events over {span:.1f} s to {a.out}")
    return 0


def _cmd_replay(a: Any) -> int:
    import uvloop

    from loadtest.diameter import parse_diameter_target
    from loadtest.engine import Engine, EngineConfig, parse_target
    from loadtest.report import build_report, render_html, save_report
    from loadtest.trace import CcrSession, TraceFormatError, read_trace

    try:
        trace = read_trace(a.trace, strict=a.strict)
    except (TraceFormatError, OSError) as exc:
        print(f"storm: {a.trace}: {exc}", file=sys.stderr)
        return 1
    for err in trace.errors:
        print(f"storm: {a.trace}:{err.line}: {err.reason}", file=sys.stderr)
    if trace.bad_lines > len(trace.errors):
        print(f"storm: ... {trace.bad_lines - len(trace.errors)} more bad lines", file=sys.stderr)
    if a.target is None and a.ws is None and a.diameter is None:
        print("storm: give --target udp://HOST:PORT, --ws ws://HOST:PORT and/or "
              "--diameter tcp://HOST:PORT", file=sys.stderr)
        return 1
    if a.diameter is None and any(isinstance(e, CcrSession) for e in trace.events):
        print("storm: no --diameter peer: ccr-session events are skipped and counted",
              file=sys.stderr)
    progress = _Progress(len(trace.events)) if sys.stdout.isatty() else None
    cfg = EngineConfig(
        target=parse_target(a.target) if a.target else None, ws_url=a.ws,
        ws_share=a.ws_share, ws_connections=a.ws_connections, speed=a.speed,
        duration=a.duration, ramp_up=a.ramp_up, max_inflight=a.max_inflight,
        sockets=a.sockets, deadline=a.deadline, t1=a.t1, t2=max(4.0, a.t1),
        register_callees=not a.no_register_callees, backoff=not a.no_backoff,
        drain=a.drain, seed=a.seed, on_second=progress.update if progress else None,
        diameter=parse_diameter_target(a.diameter) if a.diameter else None,
        diameter_origin_host=a.diameter_origin_host, diameter_realm=a.diameter_realm,
        diameter_tw=a.diameter_watchdog,
    )
    result = uvloop.run(Engine(trace.events, cfg).run())
    if progress is not None:
        progress.close()
    info = {"path": a.trace, "source": trace.header.source, "events": len(trace.events),
            "bad_lines": trace.bad_lines,
            "errors": [{"line": e.line, "reason": e.reason} for e in trace.errors[:100]]}
    conf = {k: v for k, v in vars(a).items() if k not in ("cmd",)}
    report = build_report(result, info, conf)
    save_report(report, a.json)
    if a.html:
        with open(a.html, "w") as fh:
            fh.write(render_html(report))
    _print_summary(report)
    return 0


def _print_summary(r: Any) -> None:
    print(f"wall {r.wall_s:.2f}s  transactions/s {r.transactions_per_s:.0f}  "
          f"lateness P99 {r.lateness_us.get('p99', 0) / 1000:.3f} ms  "
          f"CPU {r.cpu['percent_of_one_core']:.0f}% of one core")
    for name, k in r.kinds.items():
        lat = k.latency_us
        print(f"  {name:9s} sent {k.sent} answered {k.answered} timeouts {k.timeouts} "
              f"retrans {k.retransmissions} 503 {k.status_503} "
              f"P50/P99/P99.9 ms {lat.get('p50', 0) / 1000:.2f}/{lat.get('p99', 0) / 1000:.2f}/"
              f"{lat.get('p99.9', 0) / 1000:.2f}")
    c = r.calls
    if r.diameter:
        print(f"  diameter {r.diameter}")
    if c.attempted:
        print(f"  calls attempted {c.attempted} established {c.established} "
              f"completed {c.completed} failed {c.failed} abandoned {c.abandoned}")
    if r.trace.get("bad_lines"):
        print(f"  bad trace lines {r.trace['bad_lines']}")
    if r.knee is not None:
        print(f"  knee at {r.knee.second}s: offered {r.knee.offered_per_s:.0f}/s "
              f"goodput {r.knee.goodput_per_s:.0f}/s")


class _Progress:
    """Live line on a terminal: offered rate, goodput, P99, errors (tqdm)."""

    def __init__(self, total: int) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="ev", dynamic_ncols=True)
        self.last = 0

    def update(self, p: Any, engine: Any) -> None:
        started = engine.idx
        self.bar.update(started - self.last)
        self.last = started
        self.bar.set_postfix_str(
            f"offered {p.offered}/s good {p.good}/s "
            f"P99 {p.p99_us / 1000:.1f}ms err {p.errors} inflight {p.inflight}"
        )

    def close(self) -> None:
        self.bar.close()


def _cmd_report(a: Any) -> int:
    from loadtest.report import load_report, render_html

    with open(a.html, "w") as fh:
        fh.write(render_html(load_report(a.json)))
    print(f"wrote {a.html}")
    return 0


def main(argv: list[str] | None = None) -> int:
    a = _build_parser().parse_args(argv)
    handlers = {"import": _cmd_import, "synth": _cmd_synth, "replay": _cmd_replay,
                "report": _cmd_report}
    try:
        return handlers[a.cmd](a)
    except (OSError, ValueError) as exc:
        print(f"storm: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
