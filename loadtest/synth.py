"""Storm models: synthesized traces of the loads that break networks, reproducible by seed.

Every model is a pure function of its parameters and a ``random.Random(seed)``: the same
arguments give the same trace byte for byte (tests rely on it).

* ``registration-storm``: after an outage of ``outage`` s, N UAs come back.  Each UA noticed the
  outage at a uniformly jittered moment in ``window`` and retried with the RFC 5626 §4.5 back-off:
  after ``k`` failures wait uniformly between 50% and 100% of min(max-time, base-time * 2^k).  The
  trace holds each UA's first attempt after the outage, so its shape is the real storm shape.
* ``reconnect``: 3GPP TR 37.868 §6.2.2.2 "Traffic Model 2": N devices whose access attempts follow
  a Beta(3, 4) distribution over T seconds; the peak rate is about twice the mean (pdf max 2.07).
* ``call-storm``: per-source inter-arrival times from a distribution (the default mean 83 ms, sd
  41 ms, is an operator-reported attach storm), a share of first attempts lost to the network.
* ``call-mix``: steady Poisson arrivals of calls (exponential holding times), registrations and
  OPTIONS over a population.
* ``ccr``: Diameter Credit-Control sessions (RFC 4006) with exponential holding and updates.
* ``steady``: one kind at a constant rate, for benchmarks and knee measurements.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

from loadtest.trace import (
    FORMAT_NAME,
    FORMAT_VERSION,
    MAX_HOLD_S,
    Call,
    CcrSession,
    Event,
    Header,
    Options,
    Register,
)

__all__ = [
    "MAX_SYNTH_EVENTS",
    "MODELS",
    "PARAM_HELP",
    "SynthParams",
    "backoff_wait",
    "beta_peak_ratio",
    "interarrival",
    "synthesize",
]

#: A synthesized trace is held in memory and sorted: ten million events is a few GB, the limit.
MAX_SYNTH_EVENTS = 10_000_000
#: RFC 5626 §4.5 defaults: base-time 30 s when all flows failed, max-time 1800 s.
RFC5626_BASE_TIME_S = 30.0
RFC5626_MAX_TIME_S = 1800.0


@dataclass(slots=True)
class SynthParams:
    """Every knob any model reads; each model documents which it uses."""

    users: int = 1000
    #: A server started without --domain serves its own addresses (signaling.config.own_names),
    #: 127.0.0.1 among them: a synthesized trace is answered 2xx by a default local server.
    domain: str = "127.0.0.1"
    seed: int = 1
    duration: float = 60.0  # seconds of trace (steady models), T of the reconnect model
    rate: float = 100.0  # events per second (steady models)
    window: float = 60.0  # jitter window of outage detection (registration storm)
    outage: float = 300.0  # outage length (registration storm)
    base_time: float = RFC5626_BASE_TIME_S
    max_time: float = RFC5626_MAX_TIME_S
    mean_ms: float = 83.0  # call-storm per-source inter-arrival mean
    sd_ms: float = 41.0  # call-storm per-source inter-arrival standard deviation
    sources: int = 100  # call-storm sources
    lost_ratio: float = 0.0  # share of first attempts the network loses
    hold: float = 30.0  # mean holding time of calls and Diameter sessions
    kind: str = "options"  # steady model: which event kind
    expires: int = 3600
    updates: int = 2  # CCR-U per Diameter session
    register_share: float = 0.2  # call-mix: share of events that are registrations
    options_share: float = 0.1  # call-mix: share of events that are OPTIONS pings


#: One line per knob for ``storm synth --help``: which models read it and what it is.
PARAM_HELP: dict[str, str] = {
    "users": "population of UAs / subscribers (all models)",
    "domain": "SIP domain of the UAs, which the server must serve (a server without --domain "
              "serves its own addresses, e.g. 127.0.0.1); ccr: the Origin-Realm",
    "seed": "random seed: same seed, same trace",
    "duration": "trace length in s (steady models); T of the reconnect model",
    "rate": "events per second (steady, call-mix, ccr)",
    "window": "registration-storm: jitter window in which UAs notice the outage, s",
    "outage": "registration-storm: outage length, s",
    "base_time": "registration-storm: RFC 5626 base-time, s",
    "max_time": "registration-storm: RFC 5626 max-time, s",
    "mean_ms": "call-storm: per-source mean inter-arrival, ms",
    "sd_ms": "call-storm: per-source inter-arrival standard deviation, ms",
    "sources": "call-storm: number of sources",
    "lost_ratio": "share of first attempts the network loses (UA retransmits)",
    "hold": "mean holding time of calls / Diameter sessions, s (steady: exact)",
    "kind": "steady: register, options or call",
    "expires": "REGISTER expires, s",
    "updates": "ccr: CCR-Update requests per session",
    "register_share": "call-mix: share of REGISTER events",
    "options_share": "call-mix: share of OPTIONS events",
}


def backoff_wait(rng: random.Random, failures: int, base_time: float, max_time: float) -> float:
    """RFC 5626 §4.5: uniform between 50% and 100% of min(max-time, base-time * 2^failures)."""
    # Cap the exponent: 2**64 * base-time overflows nothing but is already far past max-time.
    ceiling = min(max_time, base_time * 2.0 ** min(failures, 64))
    return rng.uniform(0.5 * ceiling, ceiling)


def beta_peak_ratio(a: float = 3.0, b: float = 4.0) -> float:
    """Peak of the Beta(a, b) pdf: the ratio of peak rate to mean rate over the period."""
    mode = (a - 1) / (a + b - 2)
    log_beta = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    return math.exp((a - 1) * math.log(mode) + (b - 1) * math.log(1 - mode) - log_beta)


def _user(i: int) -> str:
    return f"u{i:07d}"


def _lost(rng: random.Random, ratio: float) -> bool:
    return ratio > 0 and rng.random() < ratio


def _registration_storm(p: SynthParams, rng: random.Random) -> list[Event]:
    events: list[Event] = []
    for i in range(p.users):
        # The UA notices the outage at a jittered moment (its refresh or keep-alive falls due),
        # then backs off after each failure until an attempt lands after the outage ends.
        t = rng.uniform(0.0, p.window)
        failures = 0
        while t < p.outage:
            failures += 1
            t += backoff_wait(rng, failures, p.base_time, p.max_time)
        events.append(
            Register(
                t=round(t - p.outage, 6),
                user=_user(i),
                domain=p.domain,
                expires=p.expires,
                lose_first=_lost(rng, p.lost_ratio),
            )
        )
    return events


def _reconnect(p: SynthParams, rng: random.Random) -> list[Event]:
    return [
        Register(
            t=round(p.duration * rng.betavariate(3.0, 4.0), 6),
            user=_user(i),
            domain=p.domain,
            expires=p.expires,
            lose_first=_lost(rng, p.lost_ratio),
        )
        for i in range(p.users)
    ]


def interarrival(rng: random.Random, mean: float, sd: float) -> float:
    """Gamma with the given mean and sd: positive, unlike a normal with sd/mean ~ 0.5."""
    if sd <= 0:
        return mean
    shape = (mean / sd) ** 2
    return rng.gammavariate(shape, sd * sd / mean)


def _call_storm(p: SynthParams, rng: random.Random) -> list[Event]:
    events: list[Event] = []
    mean, sd = p.mean_ms / 1000.0, p.sd_ms / 1000.0
    for s in range(p.sources):
        t = rng.uniform(0.0, mean)  # sources are not in phase
        while t < p.duration:
            caller = rng.randrange(p.users)
            callee = rng.randrange(p.users)
            events.append(
                Call(
                    t=round(t, 6),
                    user=_user(caller),
                    domain=p.domain,
                    callee=_user(callee),
                    hold=_hold(rng, p.hold),
                    lose_first=_lost(rng, p.lost_ratio),
                )
            )
            t += interarrival(rng, mean, sd)
            _check_size(events)
        del s
    return events


def _hold(rng: random.Random, mean: float) -> float:
    return round(min(MAX_HOLD_S, rng.expovariate(1.0 / mean)), 3) if mean > 0 else 0.0


def _check_size(events: list[Event]) -> None:
    if len(events) > MAX_SYNTH_EVENTS:
        raise ValueError(f"model would produce more than {MAX_SYNTH_EVENTS} events")


def _poisson_times(p: SynthParams, rng: random.Random) -> list[float]:
    if p.rate * p.duration > MAX_SYNTH_EVENTS:
        raise ValueError(f"model would produce more than {MAX_SYNTH_EVENTS} events")
    times: list[float] = []
    t = rng.expovariate(p.rate)
    while t < p.duration:
        times.append(round(t, 6))
        t += rng.expovariate(p.rate)
    return times


def _call_mix(p: SynthParams, rng: random.Random) -> list[Event]:
    events: list[Event] = []
    for t in _poisson_times(p, rng):
        u = _user(rng.randrange(p.users))
        x = rng.random()
        if x < p.register_share:
            events.append(Register(t=t, user=u, domain=p.domain, expires=p.expires))
        elif x < p.register_share + p.options_share:
            events.append(Options(t=t, user=u, domain=p.domain))
        else:
            callee = _user(rng.randrange(p.users))
            hold = _hold(rng, p.hold)
            events.append(Call(t=t, user=u, domain=p.domain, callee=callee, hold=hold))
    return events


def _ccr(p: SynthParams, rng: random.Random) -> list[Event]:
    return [
        CcrSession(
            t=t,
            user=f"{rng.randrange(p.users):015d}",  # IMSI-like Subscription-Id-Data
            domain=p.domain,
            hold=_hold(rng, p.hold),
            updates=p.updates,
        )
        for t in _poisson_times(p, rng)
    ]


def _steady(p: SynthParams, rng: random.Random) -> list[Event]:
    """Constant rate, one kind, users round-robin: benchmarks want no randomness in the rate."""
    n = int(p.rate * p.duration)
    if n > MAX_SYNTH_EVENTS:
        raise ValueError(f"model would produce more than {MAX_SYNTH_EVENTS} events")
    step = 1.0 / p.rate
    make: Callable[[float, str], Event]
    if p.kind == "register":
        def make(t: float, u: str) -> Event:
            return Register(t=t, user=u, domain=p.domain, expires=p.expires)
    elif p.kind == "options":
        def make(t: float, u: str) -> Event:
            return Options(t=t, user=u, domain=p.domain)
    elif p.kind == "call":
        def make(t: float, u: str) -> Event:
            callee = _user(rng.randrange(p.users))
            return Call(t=t, user=u, domain=p.domain, callee=callee, hold=p.hold)
    else:
        raise ValueError(f"steady model: unknown kind {p.kind!r}")
    return [make(round(i * step, 6), _user(i % p.users)) for i in range(n)]


MODELS: dict[str, Callable[[SynthParams, random.Random], list[Event]]] = {
    "registration-storm": _registration_storm,
    "reconnect": _reconnect,
    "call-storm": _call_storm,
    "call-mix": _call_mix,
    "ccr": _ccr,
    "steady": _steady,
}


def synthesize(model: str, params: SynthParams) -> tuple[Header, list[Event]]:
    """Run one model; returns the trace header and the events in time order."""
    try:
        fn = MODELS[model]
    except KeyError:
        raise ValueError(f"unknown model {model!r}; known: {', '.join(MODELS)}") from None
    if params.users < 1 or params.users > MAX_SYNTH_EVENTS:
        raise ValueError(f"users must be in 1..{MAX_SYNTH_EVENTS}")
    rng = random.Random(params.seed)
    events = fn(params, rng)
    events.sort(key=lambda e: e.t)
    header = Header(
        format=FORMAT_NAME,
        version=FORMAT_VERSION,
        source=f"synth {model}",
        seed=params.seed,
        meta={k: v for k, v in _meta(params).items()},
    )
    return header, events


def _meta(p: SynthParams) -> dict[str, str | int | float | bool]:
    return {name: getattr(p, name) for name in p.__slots__}
