"""The ``storm`` command: import captures, synthesize storms, replay traces, rebuild reports.

    storm import capture.pcapng --out trace.jsonl
    storm synth registration-storm --users 10000 --seed 7 --out storm.jsonl
    storm replay storm.jsonl --target udp://127.0.0.1:5060 --threshold 'p99_ms<50' --html run.html
    storm report run.json --html run.html

Exit status: 0 done (and every threshold met), 1 the run or the input failed (an empty trace,
an import that found nothing), 2 usage, 3 a threshold was not met (the summary names it).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from dataclasses import fields
from importlib import metadata
from typing import Any

from loadtest.synth import PARAM_HELP, SynthParams
from loadtest.thresholds import DEFAULT_THRESHOLDS, Threshold, load_thresholds, parse_threshold

__all__ = ["MODEL_HELP", "MODEL_PARAMS", "STORM_EXTRA", "main"]

#: Which knobs each model reads (besides users, domain and seed): its own --help shows only those.
MODEL_PARAMS: dict[str, tuple[str, ...]] = {
    "registration-storm": ("window", "outage", "base_time", "max_time", "expires", "lost_ratio"),
    "reconnect": ("duration", "expires", "lost_ratio"),
    "call-storm": ("duration", "sources", "mean_ms", "sd_ms", "hold", "lost_ratio"),
    "call-mix": ("duration", "rate", "hold", "register_share", "options_share", "expires"),
    "ccr": ("duration", "rate", "hold", "updates"),
    "steady": ("kind", "duration", "rate", "hold", "expires"),
}
MODEL_HELP = {
    "registration-storm": "UAs coming back after an outage, with RFC 5626 back-off",
    "reconnect": "3GPP TR 37.868 mass reconnect: Beta(3,4) arrivals over --duration",
    "call-storm": "calls from many sources, gamma inter-arrival times",
    "call-mix": "Poisson mix of calls, REGISTERs and OPTIONS",
    "ccr": "Diameter Credit-Control sessions (CCR-I/U/T)",
    "steady": "one kind at a constant rate (benchmarks, knee measurements)",
}
#: A server started without --domain serves its own addresses (signaling.config.own_names):
#: synthesized SIP traces use one of them, so they are answered 2xx out of the box.
DEFAULT_SIP_DOMAIN = "127.0.0.1"
#: The server's default Diameter realm (signaling.config: diameter_realm).
DEFAULT_DIAMETER_REALM = "localdomain"

EXAMPLES = """examples:
  storm synth steady --rate 500 --duration 30 --out steady.jsonl
  storm replay steady.jsonl --target udp://127.0.0.1:5060 --threshold 'p99_ms<50' \\
      --threshold 'error_rate<0.001' --csv stats.csv --html run.html
  storm synth registration-storm --users 10000 --domain example.com --out storm.jsonl
  storm import capture.pcapng --sip-ports 5060,5080 --out calls.jsonl
  storm report run.json --html run.html
"""

REPLAY_EXAMPLES = """examples:
  storm replay t.jsonl --target udp://127.0.0.1:5060
  storm replay t.jsonl --target udp://10.0.0.5:5060 --speed 4 --ramp-up 60 --html run.html
  storm replay t.jsonl --ws ws://10.0.0.5:5066/ --threshold 'goodput>=900' \\
      --threshold 'p99_ms{register}<20' --threshold 'status_503==0'
  storm replay ccr.jsonl --diameter tcp://10.0.0.5:3868 --thresholds slo.txt --csv s.csv

thresholds: METRIC[{KIND}] OP NUMBER, OP one of < <= > >= == !=; METRIC one of goodput (per s),
goodput_ratio, error_rate, errors, timeouts, sent, answered, status_NNN, p50_ms, p90_ms,
p99_ms, p99.9_ms, max_ms, mean_ms, lateness_p99_ms, lateness_max_ms, calls_failed,
calls_completed, calls_established, wall_s.  KIND: register, options, invite, bye, prereg,
ccr-i, ccr-u, ccr-t.  DEFAULT is always checked unless an error_rate threshold is given.
""".replace("DEFAULT", " ".join(DEFAULT_THRESHOLDS))


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Each option's default after its help (unless the help says it), examples as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        h = action.help or ""
        d = action.default
        if "default" in h or d is None or d is False or d == [] or d == frozenset() \
                or d is argparse.SUPPRESS:
            return h
        return h + " (default: %(default)s)"


#: Metavars that say the unit: what a value is, not the option's name again.
_METAVARS = {
    "target": "udp://HOST:PORT", "ws": "ws://HOST:PORT/", "diameter": "tcp://HOST:PORT",
    "ws_share": "SHARE", "ws_connections": "N", "sockets": "N", "diameter_origin_host": "HOST",
    "diameter_realm": "REALM", "diameter_watchdog": "SECONDS", "speed": "FACTOR",
    "ramp_up": "SECONDS", "duration": "SECONDS", "max_inflight": "N", "drain": "SECONDS",
    "max_lateness": "SECONDS",
    "seed": "N", "t1": "SECONDS", "deadline": "SECONDS", "json": "PATH", "html": "PATH",
    "csv": "PATH", "live_interval": "SECONDS", "out": "PATH", "sip_ports": "PORTS",
    "diameter_ports": "PORTS", "users": "N", "domain": "DOMAIN", "window": "SECONDS",
    "outage": "SECONDS", "base_time": "SECONDS", "max_time": "SECONDS", "mean_ms": "MS",
    "sd_ms": "MS", "sources": "N", "lost_ratio": "SHARE", "hold": "SECONDS",
    "kind": "KIND", "expires": "SECONDS", "updates": "N", "register_share": "SHARE",
    "options_share": "SHARE", "rate": "PER_SECOND",
}


def _set_metavars(p: argparse.ArgumentParser) -> None:
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _set_metavars(child)
        elif action.option_strings and action.dest in _METAVARS and action.nargs != 0:
            action.metavar = _METAVARS[action.dest]


def _version() -> str:
    try:
        return metadata.version("signaling")
    except metadata.PackageNotFoundError:
        return "unknown"


def _ports(text: str) -> set[int]:
    try:
        ports = {int(x) for x in text.split(",")}
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"ports must be comma-separated numbers: {text!r}") from None
    if not all(0 < p < 65536 for p in ports):
        raise argparse.ArgumentTypeError(f"ports must be 1..65535: {text!r}")
    return ports


def _codes(text: str) -> frozenset[int]:
    try:
        return frozenset(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"codes must be comma-separated numbers: {text!r}") from None


def _threshold(text: str) -> Threshold:
    try:
        return parse_threshold(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _import_parser(sub: Any) -> None:
    p = sub.add_parser("import", help="turn a pcap/pcapng capture into a trace",
                       formatter_class=_Formatter,
                       description="Read SIP (UDP) and Diameter (TCP) from a capture and write "
                                   "the calls, registrations, OPTIONS and Credit-Control "
                                   "sessions it holds as a replayable trace.",
                       epilog="examples:\n  storm import cap.pcapng --out t.jsonl\n"
                              "  storm import cap.pcap --sip-ports any --out t.jsonl\n")
    p.add_argument("capture", help="pcap or pcapng file")
    p.add_argument("--out", required=True, help="trace file to write (JSON Lines)")
    p.add_argument("--sip-ports", default="5060",
                   help="comma-separated UDP ports that carry SIP, or 'any'")
    p.add_argument("--diameter-ports", default="3868", type=_ports,
                   help="comma-separated TCP ports that carry Diameter")


def _synth_parser(sub: Any) -> None:
    p = sub.add_parser("synth", help="write a synthesized storm trace",
                       formatter_class=_Formatter,
                       description="Write a trace from a storm model; each model has its own "
                                   "options: storm synth MODEL --help.",
                       epilog="examples:\n  storm synth steady --kind register --rate 200 "
                              "--duration 60 --out t.jsonl\n  storm synth registration-storm "
                              "--users 10000 --outage 300 --out storm.jsonl\n")
    models = p.add_subparsers(dest="model", required=True, metavar="MODEL")
    defaults = SynthParams()
    for model, params in MODEL_PARAMS.items():
        m = models.add_parser(model, help=MODEL_HELP[model], description=MODEL_HELP[model],
                              formatter_class=_Formatter)
        m.add_argument("--out", required=True, help="trace file to write (JSON Lines)")
        domain = DEFAULT_DIAMETER_REALM if model == "ccr" else DEFAULT_SIP_DOMAIN
        common = m.add_argument_group("every model")
        g = m.add_argument_group(f"{model} model")
        for f in fields(SynthParams):
            if f.name not in ("users", "domain", "seed", *params):
                continue
            default = domain if f.name == "domain" else getattr(defaults, f.name)
            (common if f.name in ("users", "domain", "seed") else g).add_argument(
                "--" + f.name.replace("_", "-"), type=type(default), default=default,
                dest=f.name, help=PARAM_HELP.get(f.name, ""))


def _replay_parser(sub: Any) -> None:
    p = sub.add_parser("replay", help="replay a trace against a server",
                       formatter_class=_Formatter, epilog=REPLAY_EXAMPLES,
                       description="Play a trace as real user agents would (RFC 3261 timers, "
                                   "Retry-After, RFC 5626 back-off) and measure the answers.")
    p.add_argument("trace", help="trace file (JSON Lines, docs/trace-format.md)")
    g = p.add_argument_group("where to send")
    g.add_argument("--target", help="SIP over UDP: udp://HOST:PORT of the server")
    g.add_argument("--ws", help="SIP over WebSocket (RFC 7118): ws://HOST:PORT/")
    g.add_argument("--ws-share", type=float, default=1.0,
                   help="share of UAs (0..1) on WebSocket when --target is given too")
    g.add_argument("--ws-connections", type=int, default=50,
                   help="WebSocket connections the UAs share")
    g.add_argument("--sockets", type=int, default=64,
                   help="UDP source ports the UAs are spread over (one port per UA)")
    g.add_argument("--diameter", help="tcp://HOST:PORT of the Diameter peer (ccr-session)")
    g.add_argument("--diameter-origin-host", default="storm.invalid",
                   help="our Diameter Origin-Host")
    g.add_argument("--diameter-realm", default="invalid", help="our Diameter Origin-Realm")
    g.add_argument("--diameter-watchdog", type=float, default=30.0,
                   help="RFC 3539 watchdog interval Tw, seconds (>= 6)")
    g = p.add_argument_group("schedule")
    g.add_argument("--speed", type=float, default=1.0,
                   help="time scale: trace times are divided by it (2 = twice the rate)")
    g.add_argument("--ramp-up", type=float, default=0.0,
                   help="ramp the rate linearly from 0 over this many seconds")
    g.add_argument("--duration", type=float, default=None,
                   help="stop offering new events after this many seconds (default: the "
                        "whole trace)")
    g.add_argument("--max-inflight", type=int, default=100_000,
                   help="client transactions in flight at most; further events wait")
    g.add_argument("--max-lateness", type=float, default=None,
                   help="an event due longer ago than this when the injector gets to it is "
                        "not sent but counted (behind-schedule): a rate test offers what it "
                        "can in time instead of stretching the schedule (default: every "
                        "event is sent, however late)")
    g.add_argument("--drain", type=float, default=None,
                   help="seconds to wait for answers after the last event (default 64*T1)")
    g.add_argument("--seed", type=int, default=1, help="random seed of back-off jitter")
    g = p.add_argument_group("user agent behaviour")
    g.add_argument("--t1", type=float, default=0.5,
                   help="RFC 3261 T1, seconds: first retransmission; Timer B/F is 64*T1")
    g.add_argument("--no-register-callees", action="store_true",
                   help="do not register the called users before the run")
    g.add_argument("--password", metavar="PATTERN",
                   help="answer 401/407 challenges with this password; {user} in it is "
                        "replaced by the UA's user part (e.g. pw-{user})")
    g.add_argument("--passwords", metavar="FILE",
                   help="answer 401/407 challenges with passwords from this file of "
                        "'user password' lines (wins over --password where it names the user)")
    g.add_argument("--no-backoff", action="store_true",
                   help="do not retry failed REGISTERs with the RFC 5626 back-off")
    g = p.add_argument_group("pass/fail (like k6 thresholds)")
    g.add_argument("--threshold", action="append", type=_threshold, default=[],
                   metavar="EXPR", help="e.g. 'p99_ms<50', 'goodput{invite}>=100'; repeatable "
                   f"(default: {' '.join(DEFAULT_THRESHOLDS)}, checked unless an error_rate "
                   "threshold is given)")
    g.add_argument("--thresholds", metavar="FILE",
                   help="file of thresholds: one per line (# comments) or a JSON list")
    g.add_argument("--expect", type=_codes, default=frozenset(), metavar="CODES",
                   help="comma-separated final status codes the scenario expects: not errors")
    g.add_argument("--deadline", type=float, default=1.0,
                   help="seconds: a 2xx within it counts as goodput")
    g = p.add_argument_group("output")
    g.add_argument("--json", default="run.json", help="JSON report path")
    g.add_argument("--html", default=None, help="HTML report path (default: none)")
    g.add_argument("--csv", default=None,
                   help="per-second statistics CSV path (default: none; columns in docs)")
    g.add_argument("--live-interval", type=int, default=5,
                   help="seconds between live lines when stdout is not a terminal (0: none)")
    g.add_argument("--strict", action="store_true", help="stop at the first bad trace line")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="storm", formatter_class=_Formatter, epilog=EXAMPLES,
        description="SIP/Diameter storm injector: synthesize or import traces, replay them "
                    "against a server, judge the run against thresholds.")
    ap.add_argument("--version", action="version", version=f"storm (signaling {_version()})")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    _import_parser(sub)
    _synth_parser(sub)
    _replay_parser(sub)
    p = sub.add_parser("report", help="rebuild the HTML report from a JSON report",
                       formatter_class=_Formatter,
                       epilog="example:\n  storm report run.json --html run.html\n")
    p.add_argument("json", help="JSON report written by storm replay")
    p.add_argument("--html", required=True, help="HTML report path to write")
    _set_metavars(ap)
    return ap


def _err(msg: str) -> None:
    print(f"storm: {msg}", file=sys.stderr)


def _cmd_import(a: Any) -> int:
    from loadtest.pcapimport import import_capture

    sip_ports = None if a.sip_ports == "any" else _ports(a.sip_ports)
    result = import_capture(a.capture, a.out, sip_ports=sip_ports,
                            diameter_ports=a.diameter_ports)
    print(f"wrote {result.events} events to {a.out} "
          f"({result.packets} packets, {result.sip_messages} SIP, "
          f"{result.diameter_messages} Diameter, {result.undecodable} undecodable)")
    if result.events:
        return 0
    looked = ("SIP on any UDP port" if sip_ports is None else
              "SIP on UDP ports " + ",".join(map(str, sorted(sip_ports))))
    looked += ", Diameter on TCP ports " + ",".join(map(str, sorted(a.diameter_ports)))
    busiest = ", ".join(f"{proto}/{port} ({n} packets)"
                        for proto, port, n in result.busiest_other_ports())
    _err(f"error: {a.capture}: no events found in {result.packets} packets (looked for "
         f"{looked})" + (f"; busiest other ports: {busiest}: try --sip-ports or "
                         "--diameter-ports with them" if busiest else ""))
    return 1


def _cmd_synth(a: Any) -> int:
    from loadtest.synth import synthesize
    from loadtest.trace import write_trace

    given = {f.name: getattr(a, f.name) for f in fields(SynthParams) if hasattr(a, f.name)}
    header, events = synthesize(a.model, SynthParams(**given))
    n = write_trace(a.out, header, events)
    span = events[-1].t if events else 0.0
    print(f"wrote {n} events over {span:.1f} s to {a.out} (domain {given['domain']})")
    if not n:
        _err(f"error: model {a.model} produced no events: raise --users, --rate or --duration")
        return 1
    return 0


def _cmd_report(a: Any) -> int:
    from loadtest.report import load_report
    from loadtest.reporthtml import render_html

    with open(a.html, "w") as fh:
        fh.write(render_html(load_report(a.json)))
    print(f"wrote {a.html}")
    return 0


def _cmd_replay(a: Any) -> int:
    from loadtest.replay import run_replay

    thresholds = list(a.threshold)
    if a.thresholds:
        try:
            thresholds += load_thresholds(a.thresholds)
        except (OSError, ValueError) as exc:
            _err(f"error: {exc}")
            return 2
    return run_replay(a, thresholds)


#: The ``storm`` extra's libraries: without them only ``--help`` and ``--version`` work.
STORM_EXTRA = ("hdrh", "dpkt", "matplotlib", "tqdm")


def _missing_extra() -> list[str]:
    return [m for m in STORM_EXTRA if importlib.util.find_spec(m) is None]


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    missing = _missing_extra()
    if missing:
        _err(f"error: the injector needs the 'storm' extra ({', '.join(missing)} missing): "
             "pip install 'signaling[storm]'")
        return 1
    handlers = {"import": _cmd_import, "synth": _cmd_synth, "replay": _cmd_replay,
                "report": _cmd_report}
    try:
        return handlers[a.cmd](a)
    except (OSError, ValueError) as exc:
        _err(f"error: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
