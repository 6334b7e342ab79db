"""The ``storm`` command end to end, against the trivial responder and the real server
(``signaling serve`` started by ``tests.serverproc``)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from loadtest.cli import main
from loadtest.trace import read_trace
from tests.loadtest.test_pcapimport import _sipp_calls
from tests.serverproc import ServerProcess
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
    assert rep["timeline"]
    page = html.read_text()
    assert page.count("data:image/png;base64,") == 3
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


def test_live_progress_line_shows_rate_goodput_p99_and_errors() -> None:
    from loadtest.cli import _Progress

    p = _Progress(100)
    p.update({"second": 1, "offered": 30, "good": 28, "p99_ms": 1.5, "errors": 2,
              "started": 30, "inflight": 4})
    p.update({"second": 2, "offered": 40, "good": 40, "p99_ms": 0.9, "errors": 0,
              "started": 70, "inflight": 1})
    assert p.bar.n == 70
    line = str(p.bar.postfix)
    assert "offered 40/s" in line and "good 40/s" in line and "P99 0.9ms" in line
    p.close()
