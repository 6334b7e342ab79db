"""What looks wrong in a run, said in words: the warnings of the summary and the report.

Each rule looks at the finished report and returns a sentence with the figure that triggered it
and, where one is likely, the cause and the fix.  The rules:

* one error outcome (a status code, or timeouts) is at least DOMINANT_SHARE of all outcomes;
* the injector's lateness against its schedule has a P99 above LATE_P99_LIMIT_MS, or events
  waited for --max-inflight: the server was offered less, later, than the trace says;
* messages could not be sent (ICMP errors, WebSocket drops), or events were skipped;
* the injector was at its own limit (``report.generator_report``: its CPU, answers dropped
  on its sockets, lateness, events skipped or capped): "INJECTOR-BOUND", its figures measure
  it as much as the server.
"""

from __future__ import annotations

from loadtest.metrics import is_error
from loadtest.report import LATE_P99_LIMIT_MS, RunReport

__all__ = ["DOMINANT_SHARE", "LATE_P99_LIMIT_MS", "LIKELY_CAUSES", "diagnose"]

#: An error outcome this common is the story of the run, not noise.
DOMINANT_SHARE = 0.5

LIKELY_CAUSES: dict[int, str] = {
    400: "the server finds our requests malformed: see its log for the reason phrase",
    401: "the server asks for authentication: give the UAs' passwords (--password PATTERN, "
         "--passwords FILE); if they were given, they are wrong (or the users unknown)",
    403: "the server does not serve the trace's domain {domains} (a registrar refuses other "
         "domains, RFC 3261 §10.3 step 1): synthesize with --domain set to a domain it serves "
         "(a server without --domain serves its own addresses, e.g. 127.0.0.1), or start it "
         "with --domain {first}",
    404: "the called users are not registered: see the prereg kind (callee registrations), "
         "or replay without --no-register-callees",
    407: "a proxy asks for authentication: give the UAs' passwords (--password, --passwords); "
         "if they were given, they are wrong (or the users unknown)",
    408: "the server timed out toward the callee (is the callee UA reachable from it?)",
    423: "the requested Expires is shorter than the registrar's minimum: raise --expires",
    480: "the callees are temporarily unavailable (not registered, or their bindings expired)",
    482: "the server saw a loop (Via with its own branch)",
    483: "too many hops: Max-Forwards ran out, a routing loop",
    500: "the server failed internally: see its log",
    503: "the server shed load (overload control, or a back-end such as Redis or PostgreSQL "
         "unavailable): the offered load is past its capacity, see the knee",
    504: "the server timed out toward a back-end or a peer",
}


def _outcomes(r: RunReport) -> tuple[dict[str, int], int]:
    """Error outcomes by name ("403", "timeout") and the number of all outcomes."""
    expected = frozenset(r.config.get("expect") or ())
    errors: dict[str, int] = {}
    total = 0
    for k in r.kinds.values():
        total += sum(k.codes.values()) + k.timeouts
        if k.timeouts:
            errors["timeout"] = errors.get("timeout", 0) + k.timeouts
        for code, n in k.codes.items():
            if is_error(code, expected):
                errors[str(code)] = errors.get(str(code), 0) + n
    return errors, total


def _dominant(r: RunReport) -> list[str]:
    errors, total = _outcomes(r)
    if not errors or not total:
        return []
    name, n = max(errors.items(), key=lambda kv: kv[1])
    if n < DOMINANT_SHARE * total:
        return []
    share = f"{n} of {total} outcomes ({100 * n / total:.0f}%)"
    if name == "timeout":
        where = ", ".join(str(r.config.get(k)) for k in ("target", "ws", "diameter")
                          if r.config.get(k))
        return [f"{share} were timeouts (no final answer within 64*T1): is the server running "
                f"and reachable at {where or 'the target'}? (wrong port, firewall, or far "
                "past its capacity)"]
    domains = [str(d) for d in r.trace.get("domains", [])]
    cause = LIKELY_CAUSES.get(int(name), "see the server's log")
    cause = cause.format(domains=", ".join(domains) or "?", first=domains[0] if domains else "D")
    return [f"{share} were {name}: likely cause: {cause}"]


def _lagging(r: RunReport) -> list[str]:
    out = []
    p99 = r.lateness_us.get("p99", 0.0) / 1000.0
    if p99 > LATE_P99_LIMIT_MS:
        out.append(
            f"the injector lagged its schedule: lateness P99 {p99:.1f} ms, max "
            f"{r.lateness_us.get('max', 0.0) / 1000.0:.1f} ms (limit {LATE_P99_LIMIT_MS:.0f} "
            f"ms), at {r.cpu.get('percent_of_one_core', 0.0):.0f}% of one core: the server was "
            "offered less load, later, than the trace asks; give the injector a core of its "
            "own or lower --speed")
    if r.deferred_by_cap:
        out.append(f"events waited {r.deferred_by_cap} times for --max-inflight "
                   f"{r.config.get('max_inflight')}: the offered load was capped")
    return out


def _losses(r: RunReport) -> list[str]:
    out = []
    if r.send_errors:
        out.append(f"{r.send_errors} messages could not be sent (ICMP errors on UDP, or "
                   "WebSocket frames dropped on a full or closed connection)")
    for why, n in sorted(r.events_skipped.items()):
        hint = {"ccr-session": " (give --diameter tcp://HOST:PORT)",
                "no-transport": " (the event's transport has no --target/--ws)",
                "behind-schedule": " (due over --max-lateness ago: the injector could not "
                                   "offer them in time)"}.get(why, "")
        out.append(f"{n} {why} events were skipped{hint}")
    return out


def _bound(r: RunReport) -> list[str]:
    g = r.generator
    if g is None or not g.bound:
        return []
    return [f"INJECTOR-BOUND: the injector was at its own limit ({'; '.join(g.bound)}): the "
            "run measures it as much as the server; give it more CPU (a core of its own), "
            "or lower the rate"]


def diagnose(r: RunReport) -> list[str]:
    return [*_dominant(r), *_lagging(r), *_losses(r), *_bound(r)]
