"""deploy/prometheus: the alert rules checked and unit-tested by promtool, and a real Debian
Prometheus scraping a running node and evaluating the rules against its series."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from harness.serverproc import ServerProcess, free_tcp_port
from tests.signaling.admin.helpers import TOKEN, call, register, wait_admin
from tests.tlscerts import make_pki

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "deploy" / "prometheus"
#: Bound on Prometheus starting and scraping twice (a 1 s interval here).
SCRAPE_TIMEOUT = 60.0
#: Metric names: ours and the standard process collector's.
_METRIC = re.compile(r"\b((?:signaling|process)_[a-z0-9_]+)")


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=120,
                          cwd=PROM)


def test_rules_are_valid() -> None:
    out = _promtool("check", "rules", "alerts.yml")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 14 rules found" in out.stdout


def test_alert_logic_unit_tests() -> None:
    out = _promtool("test", "rules", "alerts_test.yml")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_every_alert_has_a_unit_test() -> None:
    rules = yaml.safe_load((PROM / "alerts.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    tests = yaml.safe_load((PROM / "alerts_test.yml").read_text())
    tested = {t["alertname"] for case in tests["tests"] for t in case["alert_rule_test"]
              if t.get("exp_alerts")}
    # Alerts without a firing case: the error counter has the same shape as the shed ones.
    assert alerts - tested <= {"SignalingDiameterShedding", "SignalingHandlerErrors",
                               "SignalingPostgresSlow"}


def test_compose_configuration_is_valid() -> None:
    out = _promtool("check", "config", "prometheus.yml")
    assert out.returncode == 0, out.stdout + out.stderr


def rule_expressions() -> list[str]:
    rules = yaml.safe_load((PROM / "alerts.yml").read_text())
    return [r["expr"] for g in rules["groups"] for r in g["rules"]]


def dashboard_expressions() -> list[str]:
    dash = json.loads((ROOT / "deploy/grafana/dashboards/signaling.json").read_text())
    return [t["expr"] for p in dash["panels"] for t in p["targets"]]


# -- a real scrape ---------------------------------------------------------------------------


@pytest.fixture
async def node(redis_url: str, postgres_db: str, tmp_path: Path) -> Any:
    """A node with Redis, PostgreSQL, Diameter and a TLS listener on, after some REGISTERs
    and one call, so the histograms and record series have samples."""
    pki = make_pki(tmp_path / "pki")
    server = ServerProcess("--domain", "example.com", "--admin-token", TOKEN,
                           "--registry", redis_url, "--database", postgres_db,
                           "--sip-tls", f"127.0.0.1:{free_tcp_port()}",
                           "--tls-cert", str(pki.cert("server")),
                           "--tls-key", str(pki.key("server")),
                           admin=True, diameter=True).start()
    try:
        wait_admin(server)
        for i in range(5):
            assert register(server.udp_port, f"prom{i}-{time.monotonic_ns()}") == 200
        a, b, _ = call(server.udp_port, f"prom-callee-{time.monotonic_ns()}")
        a.close()
        b.close()
        yield server
    finally:
        assert server.stop() == 0
        assert "Traceback" not in server.log


@pytest.fixture
def prometheus(node: ServerProcess, tmp_path: Path) -> Iterator[str]:
    """Debian's Prometheus scraping ``node`` every second with the shipped rules loaded."""
    shutil.copy(PROM / "alerts.yml", tmp_path / "alerts.yml")
    with _prometheus(tmp_path, {"job_name": "signaling", "static_configs": [
            {"targets": [f"127.0.0.1:{node.admin_port}"]}]}, ["alerts.yml"]) as base:
        yield base


@contextlib.contextmanager
def _prometheus(tmp_path: Path, job: dict[str, Any], rule_files: list[str]) -> Iterator[str]:
    """Debian's Prometheus scraping ``job`` every second; its base URL."""
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": rule_files,
        "scrape_configs": [job],
    }
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_tcp_port()
    log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        ["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _get(base: str, path: str, **params: str) -> dict[str, Any]:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as resp:
        data: dict[str, Any] = json.loads(resp.read())
    return data


def _query(base: str, expr: str) -> list[dict[str, Any]]:
    data = _get(base, "/api/v1/query", query=expr)
    assert data["status"] == "success", (expr, data)
    result: list[dict[str, Any]] = data["data"]["result"]
    return result


async def _until_series(base: str, expr: str) -> list[dict[str, Any]]:
    async with asyncio.timeout(SCRAPE_TIMEOUT):
        while True:
            try:
                found = await asyncio.to_thread(_query, base, expr)
            except OSError:  # not listening yet
                found = []
            if found:
                return found
            await asyncio.sleep(0.5)


async def test_prometheus_scrapes_the_node_and_evaluates_the_rules(
        node: ServerProcess, prometheus: str) -> None:
    [up] = await _until_series(prometheus, 'up{job="signaling"}')
    assert up["value"][1] == "1"
    [build] = await _until_series(prometheus, "signaling_build_info")
    assert build["metric"]["version"] and build["metric"]["job"] == "signaling"
    registers = await _until_series(
        prometheus, 'signaling_sip_requests_received_total{method="REGISTER"}')
    assert sum(float(s["value"][1]) for s in registers) >= 6  # five and the callee's
    [rss] = await _until_series(prometheus, 'process_resident_memory_bytes{job="signaling"}')
    assert float(rss["value"][1]) > 10e6
    sizes = await _until_series(prometheus, "signaling_table_size")
    assert {s["metric"]["table"] for s in sizes} == {"registry_bindings", "transactions",
                                                     "dialogs"}
    await _until_series(prometheus, "signaling_registry_call_seconds_bucket")
    # The TLS certificate (30 days) is 30 days from expiry: the expiry alerts stay quiet.
    [expiry] = await _until_series(prometheus,
                                   "signaling_tls_certificate_expiry_timestamp_seconds")
    assert float(expiry["value"][1]) - time.time() > 29 * 86400
    # Every rule is loaded and evaluates cleanly against the real series.
    async with asyncio.timeout(SCRAPE_TIMEOUT):
        while True:
            rules = _get(prometheus, "/api/v1/rules")["data"]["groups"]
            evaluated = [r for g in rules for r in g["rules"] if r.get("lastEvaluation", "")
                         and not r["lastEvaluation"].startswith("0001")]
            if len(evaluated) == 14:
                break
            await asyncio.sleep(0.5)
    assert all(r["health"] == "ok" and not r.get("lastError") for r in evaluated), evaluated
    firing = [a for a in _get(prometheus, "/api/v1/alerts")["data"]["alerts"]
              if a["state"] == "firing"]
    assert firing == []  # a healthy, lightly loaded node raises nothing
    # The dashboard's expressions are valid PromQL over these series.
    for expr in dashboard_expressions():
        concrete = expr.replace("$__rate_interval", "1m").replace("$instance", ".*")
        _query(prometheus, concrete)


def test_rules_and_dashboard_name_only_exported_metrics(node: ServerProcess) -> None:
    """A typo in a metric name would make an alert silently never fire."""
    with urllib.request.urlopen(f"http://127.0.0.1:{node.admin_port}/metrics",
                                timeout=10) as resp:
        text = resp.read().decode()
    exported: set[str] = set()
    for family in text_string_to_metric_families(text):
        exported |= {family.name, f"{family.name}_total", f"{family.name}_bucket",
                     f"{family.name}_count", f"{family.name}_sum"}
        exported |= {s.name for s in family.samples}
    named = {m for e in rule_expressions() + dashboard_expressions() for m in _METRIC.findall(e)}
    assert named, "no metric names found"
    assert named - exported == set()


async def test_prometheus_scrapes_the_admin_listener_over_https(tmp_path: Path) -> None:
    """``--admin-tls-cert``: Prometheus scrapes over HTTPS, verifying the certificate against
    the test CA by name (``tls_config``); a job that does not know the CA fails its scrape."""
    pki = make_pki(tmp_path / "pki")
    server = ServerProcess("--admin-tls-cert", str(pki.cert("server")),
                           "--admin-tls-key", str(pki.key("server")), admin=True).start()
    target = {"targets": [f"localhost:{server.admin_port}"]}
    jobs = {"job_name": "https", "scheme": "https", "static_configs": [target],
            "tls_config": {"ca_file": str(pki.ca), "insecure_skip_verify": False}}
    try:
        wait_admin(server)
        with _prometheus(tmp_path, jobs, []) as base:
            [up] = await _until_series(base, 'up{job="https"}')
            [build] = await _until_series(base, 'signaling_build_info{job="https"}')
            assert up["value"][1] == "1" and build["metric"]["version"]
        strange = {"job_name": "stranger", "scheme": "https", "static_configs": [target]}
        with _prometheus(tmp_path / "stranger", strange, []) as base:
            [up] = await _until_series(base, 'up{job="stranger"}')
            assert up["value"][1] == "0"  # the system CAs do not know ours
            assert not await asyncio.to_thread(_query, base, "signaling_build_info")
    finally:
        assert server.stop() == 0
    assert "Traceback" not in server.log
