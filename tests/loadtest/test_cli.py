"""The ``storm`` command end to end, against the trivial responder and the real server
(``signaling serve`` started by ``harness.serverproc``)."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from harness.serverproc import ServerProcess
from loadtest.cli import main
from loadtest.live import CSV_COLUMNS
from loadtest.trace import read_trace
from signaling.auth.subscribers import Subscriber
from tests.loadtest.test_pcapimport import _sipp_calls
from tests.siptools import registered_contacts

DOMAIN = "example.com"


@pytest.fixture
def responder() -> Iterator[int]:
    proc = subprocess.Popen([sys.executable, "-m", "loadtest.responder", "--port", "0"],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    port = int(proc.stdout.readline().split()[1])
    yield port
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    srv = ServerProcess("--domain", f"{DOMAIN},127.0.0.1").start()
    yield srv
    assert srv.stop() == 0
    assert "Traceback" not in srv.log


def _gauge(srv: ServerProcess, name: str) -> float | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{srv.admin_port}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return None


def _report(path: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads(path.read_text())
    return data


def test_synth_replay_report_round_trip(tmp_path: Path, responder: int,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "t.jsonl"
    assert main(["synth", "call-mix", "--users", "30", "--rate", "100", "--duration", "2",
                 "--hold", "0.2", "--seed", "9", "--out", str(trace)]) == 0
    run, html = tmp_path / "run.json", tmp_path / "run.html"
    assert main(["replay", str(trace), "--target", f"udp://127.0.0.1:{responder}",
                 "--json", str(run), "--html", str(html)]) == 0
    out = capsys.readouterr().out
    assert "transactions/s" in out and "calls attempted" in out  # not a TTY: no progress bar
    rep = _report(run)
    kinds = rep["kinds"]
    assert isinstance(kinds, dict)
    for name in ("invite", "bye", "register", "options"):
        assert kinds[name]["timeouts"] == 0
        assert kinds[name]["answered"] == {"2xx": kinds[name]["sent"]}
        assert set(kinds[name]["latency_us"]) >= {"p50", "p99", "p99.9"}
    assert rep["cpu"]["user_s"] > 0  # type: ignore[index]
    # The timeline's calls: every call started in some second, some were up at a second's
    # end (holding 0.2 s on average), none at the end of the run.
    timeline = rep["timeline"]
    assert isinstance(timeline, list) and timeline
    fields = ["second", "offered", "sent", "answered", "by_class", "good", "errors", "timeouts",
              "retransmissions", "inflight", "calls_started", "calls_up"]
    rows = [dict(zip(fields, p, strict=False)) for p in timeline]
    assert sum(r["calls_started"] for r in rows) == rep["calls"]["attempted"]  # type: ignore[index]
    assert max(r["calls_up"] for r in rows) > 0 and rows[-1]["calls_up"] == 0
    page = html.read_text()
    # capacity, throughput, latency, calls, in-flight/lateness, status codes
    assert page.count("data:image/png;base64,") == 6
    # The HTML is rebuilt from the JSON alone.
    html2 = tmp_path / "again.html"
    assert main(["report", str(run), "--html", str(html2)]) == 0
    assert html2.read_text() == page


def test_bad_trace_lines_are_reported_and_the_run_goes_on(
    tmp_path: Path, server: ServerProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "bad.jsonl"
    lines = [b'{"format":"storm-trace","version":1}']
    for i in range(10):
        lines.append(msgspec.json.encode({"kind": "register", "t": i * 0.01, "user": f"b{i}",
                                          "domain": DOMAIN}))
    lines.insert(3, b'{"kind":"register","t":"soon","user":"x","domain":"example.com"}')
    lines.insert(6, b'{"kind":"register","t":1,"user":"evil\\r\\nVia: x","domain":"e.com"}')
    trace.write_bytes(b"\n".join(lines) + b"\n")
    run = tmp_path / "run.json"
    target = f"udp://127.0.0.1:{server.udp_port}"
    assert main(["replay", str(trace), "--target", target, "--json", str(run)]) == 0
    err = capsys.readouterr().err
    assert f"{trace}:4: Expected `float`" in err
    assert f"{trace}:7: Expected `str` matching regex" in err
    rep = _report(run)
    assert rep["trace"]["bad_lines"] == 2  # type: ignore[index]
    assert [e["line"] for e in rep["trace"]["errors"]] == [4, 7]  # type: ignore[index]
    assert rep["kinds"]["register"]["answered"] == {"2xx": 10}  # type: ignore[index]
    # --strict stops at the first bad line: nothing is sent, no report is written.
    run2 = tmp_path / "strict.json"
    assert main(["replay", str(trace), "--strict", "--target", target,
                 "--json", str(run2)]) == 1
    assert "line 4" in capsys.readouterr().err and not run2.exists()


def test_registration_storm_registers_every_user_on_the_real_server(
    tmp_path: Path, server: ServerProcess
) -> None:
    trace = tmp_path / "storm.jsonl"
    users = 500
    assert main(["synth", "registration-storm", "--users", str(users), "--window", "2",
                 "--outage", "4", "--base-time", "1", "--max-time", "4", "--seed", "3",
                 "--domain", DOMAIN, "--out", str(trace)]) == 0
    run = tmp_path / "run.json"
    assert main(["replay", str(trace), "--target", f"udp://127.0.0.1:{server.udp_port}",
                 "--speed", "2", "--json", str(run)]) == 0
    reg = _report(run)["kinds"]["register"]  # type: ignore[index]
    assert reg["sent"] == users and reg["answered"] == {"2xx": users}
    # The registrar now holds one binding per user, pointing at the injector's UA.
    for ev in read_trace(trace).events:
        contacts = registered_contacts(server.udp_port, ev.user, DOMAIN)
        assert len(contacts) == 1 and contacts[0].startswith(f"sip:{ev.user}@")


def test_registration_storm_answers_challenges_of_a_server_with_authentication(
    tmp_path: Path
) -> None:
    """``--passwords`` (a file) and ``--password`` (a pattern for the rest) answer the 401s of
    ``signaling serve --auth on``; every user ends registered, and no challenge is an error."""
    users = 200
    trace = tmp_path / "storm.jsonl"
    assert main(["synth", "registration-storm", "--users", str(users), "--window", "2",
                 "--outage", "4", "--base-time", "1", "--max-time", "4", "--seed", "3",
                 "--domain", DOMAIN, "--out", str(trace)]) == 0
    names = sorted({ev.user for ev in read_trace(trace).events})
    listed = tmp_path / "passwords"
    listed.write_text("".join(f"{u} file-{u}\n" for u in names[:50]))
    subs = tmp_path / "subscribers.jsonl"
    with subs.open("w") as fh:
        for i, user in enumerate(names):
            password = f"file-{user}" if i < 50 else f"pw-{user}"
            fh.write(json.dumps(Subscriber.create(user, DOMAIN, password).to_json()) + "\n")
    srv = ServerProcess("--domain", DOMAIN, "--auth", "on", "--subscribers", str(subs),
                        "--pike-rate", "0", admin=True).start()
    try:
        run = tmp_path / "run.json"
        assert main(["replay", str(trace), "--target", f"udp://127.0.0.1:{srv.udp_port}",
                     "--speed", "2", "--password", "pw-{user}", "--passwords", str(listed),
                     "--json", str(run)]) == 0
        reg = _report(run)["kinds"]["register"]  # type: ignore[index]
        assert reg["answered"] == {"2xx": users} and reg["challenges_answered"] == users
        assert reg["errors"] == 0 and reg["sent"] == 2 * users
        # Every user holds a binding (a query REGISTER would be challenged: the server's own
        # gauge, refreshed each second, says it).
        deadline = time.monotonic() + 30
        while (found := _gauge(srv, "signaling_registered_aors")) != users:
            assert time.monotonic() < deadline, found
            time.sleep(0.5)
    finally:
        assert srv.stop() == 0
    assert "pw-" not in srv.log and "file-" not in srv.log


@pytest.mark.parametrize("transport", ["udp", "ws"])
def test_a_replayed_capture_reproduces_its_calls_through_the_real_proxy(
    tmp_path: Path, server: ServerProcess, transport: str
) -> None:
    pcap = _sipp_calls(tmp_path, "pcapng", calls=5, pause_ms=300)
    trace = tmp_path / "calls.jsonl"
    assert main(["import", str(pcap), "--out", str(trace), "--sip-ports", "any"]) == 0
    calls = read_trace(trace).events
    assert len(calls) == 5
    run = tmp_path / "run.json"
    where = (["--target", f"udp://127.0.0.1:{server.udp_port}"] if transport == "udp"
             else ["--ws", f"ws://127.0.0.1:{server.ws_port}/"])
    t0 = time.monotonic()
    assert main(["replay", str(trace), *where, "--json", str(run)]) == 0
    rep = _report(run)
    # Each call went caller -> proxy -> callee (our UAS, registered first) and back, the
    # caller hung up after the captured holding time.
    assert rep["calls"] == {"attempted": 5, "established": 5, "failed": 0, "completed": 5,
                            "abandoned": 0}
    assert rep["uas"]["requests"] == {"INVITE": 5, "ACK": 5, "BYE": 5}  # type: ignore[index]
    assert rep["kinds"]["prereg"]["answered"] == {"2xx": 1}  # type: ignore[index]
    assert time.monotonic() - t0 >= calls[-1].t + 0.3  # timing and holding time kept


def _storm(*args: str) -> subprocess.CompletedProcess[str]:
    """The real command in a process of its own: its exit status is what a CI job sees."""
    return subprocess.run([sys.executable, "-m", "loadtest.cli", *args], capture_output=True,
                          text=True, timeout=300)


@pytest.fixture
def default_server() -> Iterator[ServerProcess]:
    """The server as installed: no --domain, so it serves its own addresses only."""
    srv = ServerProcess().start()
    yield srv
    assert srv.stop() == 0
    assert "Traceback" not in srv.log


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames or ()) == CSV_COLUMNS
        return list(reader)


def test_thresholds_met_exit_0_and_the_csv_has_a_row_per_second(
    tmp_path: Path, default_server: ServerProcess
) -> None:
    # The synthesized domain by default is one the default server serves: all 2xx.
    trace = tmp_path / "reg.jsonl"
    r = _storm("synth", "steady", "--kind", "register", "--rate", "50", "--duration", "3",
               "--users", "40", "--out", str(trace))
    assert r.returncode == 0 and "domain 127.0.0.1" in r.stdout
    slo = tmp_path / "slo.txt"
    slo.write_text("# the service level\nstatus_200==150\nerror_rate==0  # no error at all\n")
    run, stats = tmp_path / "run.json", tmp_path / "stats.csv"
    r = _storm("replay", str(trace), "--target", f"udp://127.0.0.1:{default_server.udp_port}",
               "--deadline", "30", "--threshold", "goodput_ratio{register}>=1",
               "--threshold", "p99_ms<30000", "--thresholds", str(slo),
               "--json", str(run), "--csv", str(stats), "--live-interval", "1")
    assert r.returncode == 0, r.stderr
    for t in ("goodput_ratio{register}>=1", "p99_ms<30000", "status_200==150",
              "error_rate==0"):
        assert f"threshold {t}: ok" in r.stdout
    assert " outcomes " not in r.stderr  # no dominant-error warning
    # Not a terminal: a live line per --live-interval second.
    assert len(re.findall(r"^storm: \d+-\d+s  offered", r.stdout, re.M)) >= 3
    rep = _report(run)
    rows = _csv_rows(stats)
    timeline = rep["timeline"]
    assert isinstance(timeline, list)
    assert [int(row["second"]) for row in rows] == list(range(len(timeline)))
    assert len(rows) == int(float(rep["wall_s"])) + 1  # type: ignore[arg-type]
    assert sum(int(row["offered"]) for row in rows) == 150
    assert sum(int(row["sent"]) for row in rows) == 150
    assert sum(int(row["2xx"]) for row in rows) == 150
    assert sum(int(row["answered"]) for row in rows) == 150
    assert all(row["errors"] == "0" and row["timeouts"] == "0" for row in rows)
    assert all(float(row["p99_ms"]) > 0 for row in rows if int(row["answered"]))
    assert rep["kinds"]["register"]["codes"] == {"200": 150}  # type: ignore[index]


def test_a_threshold_not_met_exits_non_zero_and_is_named(
    tmp_path: Path, default_server: ServerProcess
) -> None:
    trace = tmp_path / "opt.jsonl"
    assert main(["synth", "steady", "--kind", "options", "--rate", "20", "--duration", "1",
                 "--out", str(trace)]) == 0
    r = _storm("replay", str(trace), "--target", f"udp://127.0.0.1:{default_server.udp_port}",
               "--threshold", "sent>=20", "--threshold", "goodput>=1000000",
               "--json", str(tmp_path / "run.json"))
    assert r.returncode == 3
    assert "threshold sent>=20: ok" in r.stdout
    assert "threshold goodput>=1000000: FAILED" in r.stdout
    assert "thresholds not met: goodput>=1000000" in r.stderr
    # A threshold the parser cannot read is a usage error before anything is sent.
    bad = _storm("replay", str(trace), "--target", "udp://127.0.0.1:9", "--threshold", "p99<1")
    assert bad.returncode == 2 and "unknown metric 'p99'" in bad.stderr


def test_a_domain_the_server_does_not_serve_warns_with_the_cause_and_fails(
    tmp_path: Path, default_server: ServerProcess
) -> None:
    trace = tmp_path / "storm.jsonl"
    assert main(["synth", "registration-storm", "--users", "60", "--window", "1",
                 "--outage", "1", "--base-time", "1", "--max-time", "2",
                 "--domain", "example.com", "--out", str(trace)]) == 0
    target = f"udp://127.0.0.1:{default_server.udp_port}"
    r = _storm("replay", str(trace), "--target", target, "--no-backoff",
               "--threshold", "p99_ms<30000", "--json", str(tmp_path / "run.json"))
    # The default threshold (error_rate<0.05), checked beside the user's latency threshold
    # since they gave no error_rate of their own, fails: every REGISTER got 403.
    assert r.returncode == 3
    assert "warning: 60 of 60 outcomes (100%) were 403" in r.stderr
    assert "does not serve the trace's domain example.com" in r.stderr
    assert "--domain" in r.stderr
    assert "thresholds not met: error_rate<0.05" in r.stderr
    # A scenario that expects the 403s passes, and its errors are zero.
    run = tmp_path / "expected.json"
    r = _storm("replay", str(trace), "--target", target, "--no-backoff", "--expect", "403",
               "--json", str(run))
    assert r.returncode == 0, r.stderr
    assert _report(run)["kinds"]["register"]["errors"] == 0  # type: ignore[index]


def test_an_empty_trace_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"format":"storm-trace","version":1}\n')
    run = tmp_path / "run.json"
    assert main(["replay", str(empty), "--target", "udp://127.0.0.1:9",
                 "--json", str(run)]) == 1
    assert "the trace has no events (0 bad lines): nothing to replay" in capsys.readouterr().err
    assert not run.exists()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"format":"storm-trace","version":1}\n{"kind":"register","t":"x"}\n')
    assert main(["replay", str(bad), "--target", "udp://127.0.0.1:9"]) == 1
    assert "the trace has no events (1 bad lines)" in capsys.readouterr().err


def test_an_import_that_finds_nothing_is_an_error_naming_the_ports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pcap = _sipp_calls(tmp_path, "pcap", calls=3, pause_ms=100)
    trace = tmp_path / "t.jsonl"
    assert main(["import", str(pcap), "--out", str(trace)]) == 1
    err = capsys.readouterr().err
    assert "no events found in" in err
    assert "looked for SIP on UDP ports 5060, Diameter on TCP ports 3868" in err
    # The hint names the port SIPp used: importing from it finds the calls.
    m = re.search(r"busiest other ports: udp/(\d+) \((\d+) packets\)", err)
    assert m is not None and int(m.group(2)) == 3 * 6
    assert main(["import", str(pcap), "--out", str(trace), "--sip-ports", m.group(1)]) == 0
    assert len(read_trace(trace).events) == 3


def test_help_says_units_defaults_and_examples_and_version_is_given() -> None:
    r = _storm("replay", "--help")
    assert r.returncode == 0
    out = " ".join(r.stdout.split())
    for text in ("--speed FACTOR", "(default: 1.0)", "--t1 SECONDS", "(default: 0.5)",
                 "--max-inflight N", "(default: 100000)", "--json PATH", "(default: run.json)",
                 "pass/fail", "examples:", "thresholds: METRIC[{KIND}] OP NUMBER"):
        assert text in out, text
    # Every option of every command has a help text.
    from loadtest.cli import build_parser

    def check(p: object) -> None:
        import argparse

        assert isinstance(p, argparse.ArgumentParser)
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child in action.choices.values():
                    check(child)
            else:
                assert action.help, (p.prog, action.dest)

    check(build_parser())
    # Model options are the model's own.
    r = _storm("synth", "registration-storm", "--help")
    assert "--outage SECONDS" in r.stdout and "--mean-ms" not in r.stdout
    assert "registration-storm model" in r.stdout
    v = _storm("--version")
    assert v.returncode == 0 and v.stdout.startswith("storm (signaling ")


def test_the_server_installs_without_the_injectors_libraries() -> None:
    """pyproject: plotting, pcap, histogram and progress libraries are the 'storm' extra, which
    the test extra pulls in; the server's own dependencies name none of them."""
    import tomllib

    from loadtest.cli import STORM_EXTRA

    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())[
        "project"]
    dists = {"hdrh": "hdrhistogram", "dpkt": "dpkt", "matplotlib": "matplotlib", "tqdm": "tqdm"}
    base = " ".join(project["dependencies"])
    storm = " ".join(project["optional-dependencies"]["storm"])
    for module in STORM_EXTRA:
        assert dists[module] not in base and dists[module] in storm
    # The tests need the injector's libraries: the test extra pulls in the storm extra.
    self_extras = [r.split("[", 1)[1].split("]", 1)[0].split(",")
                   for r in project["optional-dependencies"]["test"] if r.startswith("signaling[")]
    assert any("storm" in extras for extras in self_extras)
    # Without them, storm says what to install (here: dpkt hidden from the import system).
    code = ("import sys; sys.modules['dpkt'] = None; from loadtest.cli import main; "
            "sys.exit(main(['import', 'x.pcap', '--out', 'y.jsonl']))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "needs the 'storm' extra (dpkt missing): pip install 'signaling[storm]'" in r.stderr
