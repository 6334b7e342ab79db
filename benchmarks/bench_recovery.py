"""Recovery after a storm, on one running server: 0.5x, then 10x, then 0.5x again (issue 13).

Issue 13: "when the storm ends the server is back to normal latency within seconds, with no
memory left behind".  ``bench_overload`` starts a new server for each step, so it cannot see
that; here ONE server (ours, then Kamailio with the reference configuration, each held to the
same CPU quota on core 1 as in ``bench_overload``, whose quota, server start-up and SIPp
helpers this reuses) lives through

* a baseline: ``--low`` (0.5) times its capacity for ``--baseline`` seconds, offered by one SIPp
  (the reference scenarios of ``../shared/reference/sipp/``, open loop, on core 0);
* a storm: ``--storm-multiple`` (10) times the capacity for ``--storm`` seconds (the baseline's
  SIPp goes on; more SIPp processes add the rest, ``bench_overload.PER_SIPP`` each);
* the after: the baseline's rate alone again for ``--after`` seconds, while the storm's
  retransmissions (SIPp's Timer E/A, up to Timer F/B) die out;

``--storms N`` repeats storm and after, so a table or the RSS that grows from one storm to
the next (a leak) is told apart from a high-water mark that stays (the allocator keeping pages).

Per second: what was offered (SIPp's ``-fd 1`` counts), goodput (REGISTER->200 or INVITE->200
within ``--deadline`` of the request, of the transactions created in that second), P50/P99 of
every 2xx answer to those, our 503s and unanswered drops (/metrics), the server's CPU; then the
time from the storm's end until P99 is back within ``--p99-factor`` (2) times the baseline's
and goodput back to ``--kept`` (0.9) of the offered rate, for every second after.  Snapshots of
the server's memory (RSS and PSS of its process tree) and, for ours, its tables (/metrics:
transactions, dialogs, sources tracked for fairness, the admission limit, the kernel shed's
share, registered bindings, queued requests) at the baseline's end, the storm's end, 10 s and
30 s after it, and the end.

REGISTERs cycle over a fixed population of users (an injection file per SIPp process, each
registered once before the baseline from the port it will use), so the registry holds the
same bindings throughout and any memory the storm leaves is the storm's, not new users' (a
mass re-registration after an outage is the same users coming back).

    sudo python -m benchmarks.bench_recovery [--kinds register,call] [--only ours|kamailio]
        [--capacity register=4000,call=600] [--baseline 10] [--storm 15] [--after 45]
        [--storms 1] [--quota 0.25] [--ours-args '...']
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import math
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import bench_overload as bo
from benchmarks.bench_register import ServerUnderTest
from benchmarks.cgroups import CpuQuota, process_tree
from harness.serverproc import free_udp_port
from harness.sipp_runner import Sipp

#: Users per SIPp process in the REGISTER runs (each cycles over its own).
POPULATION = 4000
#: Gauges of ours read per snapshot (/metrics, the ``signaling_`` prefix left out).
TABLES = ("transactions", "dialogs", "sip_overload_sources", "sip_admission_limit",
          "sip_overload_kernel_shed_share", "registered_bindings", "queue_depth")
_SAMPLE = re.compile(r"^signaling_([a-z_]+)(\{[^}]*\})? (\S+)$")


@dataclass
class Sample:
    """One poll of the server, every second of the run."""

    t: float  # seconds from the baseline's start
    cpu: float  # the server tree's CPU seconds so far
    rss_kib: int
    pss_kib: int
    gauges: dict[str, float] = field(default_factory=dict)  # ours: TABLES, summed over labels
    rejected: float = 0.0  # ours: 503s so far (admission and the drain's)
    dropped: float = 0.0  # ours: new requests dropped unanswered so far (kernel shed apart)
    kernel_shed: float = 0.0  # ours: dropped by the kernel filter so far


@dataclass
class Second:
    t: int
    phase: str
    offered: float = 0.0
    good: int = 0
    p50: float = 0.0
    p99: float = 0.0
    answered: int = 0
    rejected: float | None = None
    dropped: float | None = None
    cpu: float = 0.0
    limit: float | None = None  # ours: the admission limit at the second's end
    shed: float | None = None  # ours: the kernel filter's share at the second's end


def _memory(pid: int) -> tuple[int, int]:
    """RSS and PSS (KiB) of ``pid``'s process tree (Kamailio's workers share its memory pool,
    which RSS counts once per process and PSS once)."""
    rss = pss = 0
    for p in process_tree(pid):
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                name, _, rest = line.partition(":")
                if name == "Rss":
                    rss += int(rest.split()[0])
                elif name == "Pss":
                    pss += int(rest.split()[0])
    return rss, pss


def _poll(server: ServerUnderTest, admin: int | None, t0: float) -> Sample:
    rss, pss = _memory(server.pid)
    s = Sample(time.monotonic() - t0, server.cpu(), rss, pss)
    if admin is None:
        return s
    with contextlib.suppress(OSError):
        for line in bo._metrics(admin).decode().splitlines():
            m = _SAMPLE.match(line)
            if m is None:
                continue
            name, labels, value = m.group(1), m.group(2) or "", float(m.group(3))
            if name in TABLES:
                s.gauges[name] = s.gauges.get(name, 0.0) + value
            elif name == "sip_overload_rejected_total" or (
                    name == "sip_shed_total" and 'reason="queue_full"' in labels):
                s.rejected += value
            elif name == "sip_overload_dropped_total":
                if 'reason="kernel' in labels:
                    s.kernel_shed += value
                elif "ack_of_503" not in labels:  # our 503s' ACKs, absorbed: not requests
                    s.dropped += value
    return s


class Poller(threading.Thread):
    """Samples the server once a second until stopped."""

    def __init__(self, server: ServerUnderTest, admin: int | None, t0: float) -> None:
        super().__init__(daemon=True)
        self.server, self.admin, self.t0 = server, admin, t0
        self.samples: list[Sample] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            with contextlib.suppress(Exception):  # a poll must never end the run
                self.samples.append(_poll(self.server, self.admin, self.t0))
            self._stop_event.wait(1.0 - (time.monotonic() - self.t0) % 1.0)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    def at(self, t: float) -> Sample | None:
        """The sample nearest ``t``."""
        return min(self.samples, key=lambda s: abs(s.t - t), default=None)


# -- SIPp ---------------------------------------------------------------------------------------


def _populations(n: int, directory: Path) -> list[tuple[Path, Path]]:
    """For each of ``n`` SIPp processes, the reference REGISTER scenario with its users taken
    from an injection file of its own (``POPULATION`` users, cycled: SIPp starts the file over
    when it is used up) and that file."""
    text = (bo.SIPP_DIR / "register.xml").read_text()
    assert "u[call_number]" in text, "reference scenario changed: no u[call_number]"
    scenario = directory / "register-population.xml"
    scenario.write_text(text.replace("u[call_number]", "[field0]"))
    out = []
    for i in range(n):
        users = directory / f"users-{i}.csv"
        users.write_text("SEQUENTIAL\n" + "".join(f"r{i}u{j};\n" for j in range(POPULATION)))
        out.append((scenario, users))
    return out


def _sipp(kind: str, remote: str, rate: float, seconds: float, port: int, linger: float,
          users: tuple[Path, Path] | None) -> Sipp:
    extra = ["-l", "1000000", "-trace_rtt", "-rtt_freq", "1", "-fd", "1"]
    calls = max(1, int(rate * seconds))
    if kind == "call":
        return Sipp(str(bo.SIPP_DIR / "uac-proxy.xml"), remote, service="uas", calls=calls,
                    rate=rate, timeout=seconds + linger, cpu=bo.SIPP_CPU, port=port,
                    extra=extra)
    assert users is not None
    # No BYE after a 503 (bench_overload: a phone sends none after a REGISTER's 503).
    return Sipp(str(users[0]), remote, calls=calls, rate=rate, timeout=seconds + linger,
                cpu=bo.SIPP_CPU, port=port,
                extra=[*extra, "-default_behaviors", "all,-bye", "-inf", str(users[1])])


Points = list[tuple[float, int]]


def _sipp_rows(s: Sipp, t0_epoch: float) -> tuple[Points, list[tuple[float, float]]]:
    """Wait for ``s``; (created-so-far points as (seconds from the run's start, total), and
    (created at, response time ms) of every 2xx it timed), from its ``-fd 1`` and
    ``-trace_rtt`` files."""
    assert s.proc is not None
    with contextlib.suppress(Exception):
        s.proc.communicate(timeout=s.timeout + 10)
    if s.proc.poll() is None:
        s.proc.kill()
        s.proc.communicate()
    created: list[tuple[float, int]] = []
    start = None
    if s.stat_file.exists():
        with s.stat_file.open(newline="", errors="replace") as f:
            rows = list(csv.reader(f, delimiter=";"))
        if len(rows) >= 2:
            head = rows[0]
            i_start, i_now, i_total = (head.index(k) for k in (
                "StartTime", "CurrentTime", "TotalCallCreated"))
            for r in rows[1:]:
                with contextlib.suppress(ValueError, IndexError):
                    start = bo._epoch(r[i_start])
                    created.append((bo._epoch(r[i_now]) - t0_epoch, int(r[i_total])))
    rtts: list[tuple[float, float]] = []
    for path in s.dir.glob("*_rtt.csv"):
        for row in csv.reader(path.open(errors="replace"), delimiter=";"):
            with contextlib.suppress(IndexError, ValueError):
                at, rtt = float(row[0]), float(row[1])
                # Date_ms: epoch ms in some SIPp builds, ms from SIPp's start in others.
                answered = at / 1000 if at > 1e11 else (start or t0_epoch) + at / 1000
                rtts.append((answered - rtt / 1000 - t0_epoch, rtt))
    shutil.rmtree(s.dir, ignore_errors=True)
    return created, rtts


def _per_second(points: list[tuple[float, int]], seconds: int) -> list[float]:
    """Calls created in each second from SIPp's cumulative points (interpolated)."""
    def total_at(t: float) -> float:
        before = (0.0, 0)
        for pt, n in points:
            if pt >= t:
                t0, n0 = before
                return n0 + (n - n0) * (t - t0) / max(pt - t0, 1e-9)
            before = (pt, n)
        return float(before[1])
    return [max(0.0, total_at(i + 1) - total_at(i)) for i in range(seconds)]


# -- one run ------------------------------------------------------------------------------------


@dataclass
class Run:
    system: str
    kind: str
    capacity: float
    seconds: list[Second]
    samples: list[Sample]
    storm_ends: list[float]
    baseline_p99: float
    warm: str = ""

    def recovery(self, factor: float, kept: float, storm_end: float,
                 until: float) -> tuple[float | None, float | None]:
        """Seconds from ``storm_end`` until P99 is within ``factor`` times the baseline's and
        goodput at ``kept`` of offered in every second up to ``until``, and the first second
        that met both (None: never)."""
        limit = max(factor * self.baseline_p99, self.baseline_p99 + 5.0)
        secs = [s for s in self.seconds if storm_end <= s.t < until]
        ok = [s.answered > 0 and s.p99 <= limit and s.good >= kept * s.offered for s in secs]
        first = next((s.t for s, o in zip(secs, ok, strict=True) if o), None)
        sustained = None
        for i in range(len(secs) - 1, -1, -1):
            if not ok[i]:
                break
            sustained = secs[i].t
        return (None if sustained is None else sustained - storm_end,
                None if first is None else first - storm_end)


def run(system: str, kind: str, capacity: float, a: argparse.Namespace,
        quota: CpuQuota) -> Run:
    low, high = a.low * capacity, min(a.storm_multiple * capacity, bo.MAX_OFFER[kind])
    cycle = a.storm + a.after
    total = a.baseline + a.storms * cycle
    directory = Path(tempfile.mkdtemp(prefix="bench-recovery-"))
    n_storm = max(1, math.ceil((high - low) / bo.PER_SIPP[kind]))
    ports = [free_udp_port() for _ in range(n_storm + 1)]
    users = _populations(n_storm + 1, directory) if kind == "register" else None
    server, admin = bo._server(system, quota)
    remote = f"127.0.0.1:{server.port}"
    uas: Sipp | None = None
    warm = ""
    try:
        if kind == "call":
            uas = Sipp(str(bo.SIPP_DIR / "uas-rr.xml"), calls=10_000_000,
                       timeout=total + 60, cpu=bo.SIPP_CPU, port=free_udp_port()).start()
            bo._generator(uas)
            bo._register_uas(server.port, uas.port)
        else:
            # Every user registered once from the port it will use (its Contact), at the
            # baseline's rate in all, so the run's REGISTERs refresh bindings only.
            w0, each = time.monotonic(), low / len(ports)
            warmers = [_sipp(kind, remote, each, POPULATION / each, port, 30, u).start()
                       for port, u in zip(ports, users or [], strict=True)]
            for w in warmers:
                bo._generator(w)
            failed = sum(w.wait().failed for w in warmers)
            warm = (f"{len(warmers) * POPULATION} users registered in "
                    f"{time.monotonic() - w0:.1f} s ({failed} failed)")
        t0, t0_epoch = time.monotonic(), time.time()
        poller = Poller(server, admin, t0)
        poller.start()
        steady = _sipp(kind, remote, low, total, ports[0], 40, users[0] if users else None)
        bo._generator(steady.start())
        storms: list[Sipp] = []
        ends = []
        for k in range(a.storms):
            start = a.baseline + k * cycle
            time.sleep(max(0.0, t0 + start - time.monotonic()))
            batch = [_sipp(kind, remote, (high - low) / n_storm, a.storm, port, 40,
                           users[i + 1] if users else None)
                     for i, port in enumerate(ports[1:])]
            for s in batch:
                bo._generator(s.start())
            storms += batch
            ends.append(start + a.storm)
        time.sleep(max(0.0, t0 + total - time.monotonic()))
        poller.stop()
        rows = [_sipp_rows(s, t0_epoch) for s in [steady, *storms]]
    finally:
        if uas is not None:
            uas.stop()
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)
    n = int(total)
    offered = [0.0] * n
    for created, _ in rows:
        for i, v in enumerate(_per_second(created, n)):
            offered[i] += v
    by_second: list[list[float]] = [[] for _ in range(n)]
    for _, rtts in rows:
        for created_at, rtt in rtts:
            if 0 <= created_at < n:
                by_second[int(created_at)].append(rtt)

    def phase(t: int) -> str:
        if t < a.baseline:
            return "baseline"
        return "storm" if (t - a.baseline) % cycle < a.storm else "after"

    seconds = []
    samples = poller.samples
    for t in range(n):
        rt = sorted(by_second[t])
        sec = Second(t, phase(t), offered[t], sum(1 for r in rt if r <= a.deadline * 1000),
                     rt[len(rt) // 2] if rt else 0.0,
                     rt[min(len(rt) - 1, int(0.99 * len(rt)))] if rt else 0.0, len(rt))
        s0, s1 = _near(samples, t), _near(samples, t + 1)
        if s0 is not None and s1 is not None and s1.t > s0.t:
            sec.cpu = (s1.cpu - s0.cpu) / (s1.t - s0.t)
            if admin is not None:
                sec.rejected, sec.dropped = s1.rejected - s0.rejected, s1.dropped - s0.dropped
                sec.limit = s1.gauges.get("sip_admission_limit")
                sec.shed = s1.gauges.get("sip_overload_kernel_shed_share")
        seconds.append(sec)
    base = sorted(r for t in range(min(n, int(a.baseline))) for r in by_second[t])
    base_p99 = base[min(len(base) - 1, int(0.99 * len(base)))] if base else 0.0
    return Run(system, kind, capacity, seconds, samples, ends, base_p99, warm)


def _near(samples: list[Sample], t: float) -> Sample | None:
    return min(samples, key=lambda s: abs(s.t - t), default=None)


# -- output -------------------------------------------------------------------------------------


def report(r: Run, a: argparse.Namespace) -> list[str]:
    out = [f"\n== {r.system} {r.kind}: capacity {r.capacity:.0f}/s, baseline {a.low:g}x "
           f"({a.low * r.capacity:.0f}/s), storm {a.storm_multiple:g}x "
           f"({min(a.storm_multiple * r.capacity, bo.MAX_OFFER[r.kind]):.0f}/s, "
           f"bench_overload's cap {bo.MAX_OFFER[r.kind]}/s) for {a.storm:g} s"
           + (f"; {r.warm}" if r.warm else "")]
    out.append(f"{'t':>4s} {'phase':8s} {'offered':>8s} {'goodput':>8s} {'P50ms':>7s} "
               f"{'P99ms':>8s} {'503s':>7s} {'drops':>7s} {'cpu':>6s} {'limit':>7s} {'shed':>5s}")
    for s in r.seconds:
        def opt(v: float | None) -> str:
            return "n/a" if v is None else f"{v:.0f}"
        out.append(f"{s.t:4d} {s.phase:8s} {s.offered:8.0f} {s.good:8d} {s.p50:7.1f} "
                   f"{s.p99:8.1f} {opt(s.rejected):>7s} {opt(s.dropped):>7s} "
                   f"{100 * s.cpu:5.1f}% {opt(s.limit):>7s} "
                   + ("  n/a" if s.shed is None else f"{s.shed:5.2f}"))
    cycle = a.storm + a.after
    limit = max(a.p99_factor * r.baseline_p99, r.baseline_p99 + 5.0)
    out.append(f"baseline P99 {r.baseline_p99:.1f} ms; back to normal = P99 <= {limit:.1f} ms "
               f"and goodput >= {100 * a.kept:.0f}% of offered")
    for k, end in enumerate(r.storm_ends):
        until = a.baseline + (k + 1) * cycle - a.margin
        # SIPp behind its schedule sends the rest of the storm's calls after the window: the
        # storm ends with the last second that offered more than the after's rate would.
        real = 1 + max((s.t for s in r.seconds if end - a.storm <= s.t < until
                        and s.offered > (a.low + 1.0) * r.capacity), default=int(end) - 1)
        for label, at in (("scheduled end", end), ("last storm second", float(real))):
            sustained, first = r.recovery(a.p99_factor, a.kept, at, until)
            out.append(f"storm {k + 1}, from its {label} ({at:.0f} s): first normal second "
                       + ("never" if first is None else f"+{first:.0f} s")
                       + "; normal in every second from "
                       + ("never" if sustained is None else f"+{sustained:.0f} s")
                       + f" (judged up to {until - at:.0f} s after)")
    points = [("baseline", a.baseline - 0.5)]
    for k, end in enumerate(r.storm_ends):
        tag = f"s{k + 1} " if len(r.storm_ends) > 1 else ""
        points += [(f"{tag}storm end", end - 0.5), (f"{tag}+10 s", end + 10),
                   (f"{tag}+30 s", end + 30)]
    points.append(("end", a.baseline + a.storms * cycle))
    names = [n for n in TABLES if any(n in s.gauges for s in r.samples)]
    out.append(f"{'snapshot':14s} {'t':>5s} {'RSS MiB':>8s} {'PSS MiB':>8s} "
               + " ".join(f"{_short(n):>10s}" for n in names) + f" {'kshed sum':>9s}")
    for label, t in points:
        p = _near(r.samples, t)
        if p is None:
            continue
        out.append(f"{label:14s} {p.t:5.0f} {p.rss_kib / 1024:8.1f} {p.pss_kib / 1024:8.1f} "
                   + " ".join(f"{p.gauges.get(n, 0.0):10.2f}" if n.endswith("share")
                              else f"{p.gauges.get(n, 0.0):10.0f}" for n in names)
                   + (f" {p.kernel_shed:9.0f}" if names else ""))
    return out


def _short(name: str) -> str:
    return {"transactions": "trans", "dialogs": "dialogs", "sip_overload_sources": "sources",
            "sip_admission_limit": "limit", "sip_overload_kernel_shed_share": "shed_share",
            "registered_bindings": "bindings", "queue_depth": "queued"}.get(name, name)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kinds", default="register,call")
    ap.add_argument("--only", choices=["ours", "kamailio"])
    ap.add_argument("--capacity", default="", help="skip the probe: e.g. register=4000,call=600")
    ap.add_argument("--probe-duration", type=float, default=4.0)
    ap.add_argument("--low", type=float, default=0.5, help="baseline and after, x capacity")
    ap.add_argument("--storm-multiple", type=float, default=10.0)
    ap.add_argument("--baseline", type=float, default=10.0)
    ap.add_argument("--storm", type=float, default=15.0)
    ap.add_argument("--after", type=float, default=45.0)
    ap.add_argument("--storms", type=int, default=1)
    ap.add_argument("--margin", type=float, default=2.0,
                    help="seconds at the end of an after not judged (its last transactions)")
    ap.add_argument("--deadline", type=float, default=1.0)
    ap.add_argument("--p99-factor", type=float, default=2.0)
    ap.add_argument("--kept", type=float, default=0.9)
    ap.add_argument("--quota", type=float, default=0.25, help="share of one core")
    ap.add_argument("--ours-args", default="")
    a = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("needs root for the cgroup CPU quota")
        return 2
    bo.OUR_ARGS[:] = a.ours_args.split()
    given = {k: float(v) for k, _, v in (p.partition("=") for p in a.capacity.split(",") if p)}
    systems = [a.only] if a.only else ["ours", "kamailio"]
    quota = CpuQuota(a.quota)
    bo.GENERATORS[:] = [CpuQuota(None, name="load")]
    print(f"server on core 1 under {quota.describe}; SIPp on core {bo.SIPP_CPU}; "
          f"load average {os.getloadavg()[0]:.2f}; {time.strftime('%H:%M:%S', time.gmtime())} "
          "UTC", flush=True)
    lines: list[str] = []
    try:
        for kind in a.kinds.split(","):
            for system in systems:
                cap = given.get(f"{system}-{kind}") or given.get(kind)
                if cap is None:
                    probe: list[bo.Step] = []
                    cap = bo.capacity(system, kind, a.probe_duration, a.deadline, quota, probe)
                r = run(system, kind, cap, a, quota)
                out = report(r, a)
                out.append(f"load average {os.getloadavg()[0]:.2f}, "
                           f"{time.strftime('%H:%M:%S', time.gmtime())} UTC")
                print("\n".join(out), flush=True)
                lines += out
    finally:
        quota.close()
        for g in bo.GENERATORS:
            g.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
