"""REGISTER with digest authentication per second on one core, side by side with Kamailio.

SIPp plays ``harness/sipp/register-auth.xml``: a unique user per call (an ``-inf`` injection file),
REGISTER, 401, REGISTER with ``[authentication]`` (MD5, qop=auth), 200.  One registration is
thus two requests and two answers.  SIPp is pinned to core 0, the server to core 1 (taskset);
every step gets a fresh server so every user is new to the location table.

- ours: ``signaling serve --auth on --auth-algorithms MD5`` with a subscriber file of HA1 hashes
  (the embedded store), nonce-count replay protection on, the rate limit off (SIPp is one
  source sending thousands per second).
- Kamailio: written here (the reference kamailio.cfg has no authentication): ``auth``'s
  ``pv_www_authenticate`` with the HA1 from an ``htable`` hash table (loaded at start from a
  ``db_text`` file in a private temporary directory: an in-memory subscriber table; auth_db
  over db_text scans its table linearly per lookup, so it slows with the number of users),
  ``qop=auth`` and ``nonce_count`` on (the same replay protection), the same identity check
  (authenticated user = To user), ``usrloc`` in memory, one UDP worker (``children=1``) like
  the reference configuration.

    python -m benchmarks.bench_register_auth [--rates 2000,4000,6000] [--duration 5]
                                             [--only ours|kamailio]

Prints one line per step and system (registrations ok/failed, achieved rate, mean response
time of the first REGISTER, server CPU and CPU per registration), then the highest rate each
kept up with 0 failures.  Target (issue 14): at least Kamailio's rate, 0 failures.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from benchmarks.bench_register import (
    KAMAILIO_SHM_MB,
    ServerUnderTest,
    Step,
    _float,
    _int,
    _ms,
    report,
    run_sipp,
)
from protocols.sip.digest import ha1
from signaling.auth.subscribers import Subscriber

__all__ = ["AuthServer", "main"]

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = ROOT / "harness" / "sipp" / "register-auth.xml"
DEFAULT_RATES = "2000,4000,6000"
GRACE = 15.0
REALM = "127.0.0.1"

KAMAILIO_CFG = """#!KAMAILIO
debug=1
log_stderror=yes
fork=yes
children=1
listen=udp:127.0.0.1:{port}
auto_aliases=no
alias="127.0.0.1"
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "db_text.so"
loadmodule "htable.so"
loadmodule "auth.so"
modparam("usrloc", "db_mode", 0)
modparam("usrloc", "hash_size", 14)
modparam("auth", "qop", "auth")
modparam("auth", "nonce_count", 1)
modparam("auth", "secret", "bench-secret-0123456789abcdef")
modparam("htable", "db_url", "text://{db}")
modparam("htable", "htable", "ha1=>size=16;dbtable=htable;")
request_route {{
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483","Too Many Hops"); exit; }}
    if (is_method("OPTIONS") && uri==myself && $rU==$null) {{ sl_send_reply("200","OK"); exit; }}
    if (is_method("REGISTER")) {{
        if (!is_present_hf("Authorization")) {{ www_challenge("$td", "1"); exit; }}
        $var(ha1) = $sht(ha1=>$au@$ar);
        if ($var(ha1) == $null || !pv_www_authenticate("$td", "$var(ha1)", "1")) {{
            www_challenge("$td", "1");
            exit;
        }}
        if ($au != $tU) {{ sl_send_reply("403", "Forbidden"); exit; }}
        consume_credentials();
        if (!save("location")) {{ sl_reply_error(); }}
        exit;
    }}
    sl_send_reply("404", "Not here");
    exit;
}}
"""


def _users(count: int) -> dict[str, str]:
    return {f"a{n}": f"pw-{n}-x" for n in range(count)}


def _injection(path: Path, users: dict[str, str]) -> None:
    lines = ["SEQUENTIAL"] + [f"{u};[authentication username={u} password={p}]"
                              for u, p in users.items()]
    path.write_text("\n".join(lines) + "\n")


class AuthServer(ServerUnderTest):
    """``ServerUnderTest`` with authentication and ``users`` as subscribers."""

    def __init__(self, system: str, users: dict[str, str]) -> None:
        super().__init__(system)
        self.users = users

    def command(self) -> list[str]:
        if self.system == "kamailio":
            db = self.dir / "db"
            db.mkdir(exist_ok=True)
            (db / "version").write_text("table_name(str) table_version(int)\nhtable:2\n")
            # key_type 0 (a plain key), value_type 0 (a string value): htable's db schema.
            rows = [f"{n}:{u}@{REALM}:0:0:{ha1('MD5', u, REALM, p)}:0"
                    for n, (u, p) in enumerate(self.users.items(), 1)]
            (db / "htable").write_text(
                "id(int,auto) key_name(str) key_type(int) value_type(int) key_value(str) "
                "expires(int)\n" + "\n".join(rows) + "\n")
            cfg = self.dir / "kamailio.cfg"
            cfg.write_text(KAMAILIO_CFG.format(port=self.port, db=db))
            return ["kamailio", "-f", str(cfg), "-DD", "-E", "-Y", str(self.dir),
                    "-m", str(KAMAILIO_SHM_MB)]
        subs = self.dir / "subscribers.jsonl"
        with subs.open("w") as fh:
            for u, p in self.users.items():
                fh.write(json.dumps(Subscriber.create(u, REALM, p).to_json()) + "\n")
        return [*super().command(), "--auth", "on", "--auth-algorithms", "MD5",
                "--subscribers", str(subs), "--auth-nonce-table", "1000000"]


def run_step(system: str, rate: int, duration: float, users: dict[str, str],
             inf: Path) -> Step:
    calls = int(rate * duration)
    server = AuthServer(system, users).start()
    try:
        cpu0, t0 = server.cpu(), time.monotonic()
        rc, stats, _ = run_sipp(SCENARIO, f"127.0.0.1:{server.port}", rate, calls,
                                duration + GRACE, ["-inf", str(inf)])
        t1, cpu1 = time.monotonic(), server.cpu()
        if not server.alive():
            print(f"  ({system} died during the step: {server.log()[-500:]})", flush=True)
    finally:
        server.stop()
    ok = _int(stats, "SuccessfulCall(C)")
    return Step(system, rate, calls, ok, calls - ok, _float(stats, "CallRate(C)"),
                _ms(stats.get("ResponseTime1(C)", "")), t1 - t0, cpu1 - cpu0, rc)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rates", default=DEFAULT_RATES)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--only", choices=["ours", "kamailio"])
    args = ap.parse_args(argv)
    rates = [int(r) for r in args.rates.split(",")]
    systems = [args.only] if args.only else ["ours", "kamailio"]
    users = _users(int(max(rates) * args.duration))
    inf = Path(tempfile.mkstemp(prefix="bench-auth-users-", suffix=".csv")[1])
    _injection(inf, users)
    print(f"REGISTER with digest auth (MD5, qop=auth, 401 then 200), unique users; "
          f"{args.duration:g} s per rate; server on core 1, SIPp on core 0; load average "
          f"before: {os.getloadavg()[0]:.2f}", flush=True)
    steps: list[Step] = []
    try:
        for rate in rates:
            for system in systems:
                steps.append(run_step(system, rate, args.duration, users, inf))
                print(steps[-1].line().replace("REGISTER", "registration"), flush=True)
    finally:
        inf.unlink(missing_ok=True)
    report(steps, systems)


if __name__ == "__main__":
    main()
