"""docker-compose.yml and the Dockerfile, checked without Docker (it cannot run here).

The compose file is parsed and cross-checked (services, dependencies, every SIGNALING_* variable
is a server option whose value the server accepts, hosts name the compose services, published
ports match the listeners); the Dockerfile's entry command is checked against pyproject's console
scripts and the server's parser; then the entry command itself runs with the compose
environment, pointed at private Redis and PostgreSQL, until ``/ready`` answers 200, and stops
cleanly on SIGTERM as ``docker stop`` would ask.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
import yaml

from harness.services import free_port
from signaling.cli import build_parser
from signaling.config import OPTIONS, load_config
from signaling.records import SCHEMA_VERSION

ROOT = Path(__file__).resolve().parent.parent

# How long the server may take to report ready (imports, migrations, Redis connect).
READY_TIMEOUT = 30.0


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def _interpolate(value: str) -> str:
    """Compose's ``${VAR:-default}`` with an empty environment: the default."""
    return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", value)


def server_env(compose: dict[str, Any]) -> dict[str, str]:
    env = compose["services"]["signaling"]["environment"]
    return {k: _interpolate(str(v)) for k, v in env.items()}


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) pairs, continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def instruction(name: str) -> list[str]:
    return [args for word, args in dockerfile() if word == name]


def test_compose_services_and_dependencies(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"redis", "postgres", "signaling", "prometheus", "grafana"}
    server = services["signaling"]
    assert server["build"] == "."
    assert set(server["depends_on"]) == {"redis", "postgres"}
    for dep in server["depends_on"].values():
        assert dep["condition"] == "service_healthy"
    for name in ("redis", "postgres"):
        assert services[name]["healthcheck"]["test"]
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):  # a bind mount of a shipped file or folder
                assert (ROOT / source).exists(), f"{source} missing"
            else:
                assert source in compose["volumes"]


def test_compose_monitoring_is_wired_to_the_node(compose: dict[str, Any]) -> None:
    """Prometheus scrapes the node's admin listener and loads the rules; Grafana gets the
    datasource and dashboard; both are published on loopback only, like the admin API."""
    services = compose["services"]
    prom = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    [job] = [j for j in prom["scrape_configs"] if j["job_name"] == "signaling"]
    [target] = job["static_configs"][0]["targets"]
    admin_port = int(server_env(compose)["SIGNALING_ADMIN"].rsplit(":", 1)[1])
    assert target == f"signaling:{admin_port}"
    assert prom["rule_files"] == ["alerts.yml"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in services["prometheus"]["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]
    grafana = services["grafana"]
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]
    assert "./deploy/grafana/dashboards:/var/lib/grafana/dashboards:ro" in grafana["volumes"]
    source = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    [ds] = source["datasources"]
    assert ds["url"] == "http://prometheus:9090" and ds["uid"] == "prometheus"
    for name in ("prometheus", "grafana"):
        assert all(p.startswith("127.0.0.1:") for p in services[name]["ports"])


def test_compose_environment_is_valid_server_configuration(compose: dict[str, Any]) -> None:
    env = server_env(compose)
    for key in env:
        assert key.startswith("SIGNALING_")
        assert key[len("SIGNALING_"):].lower() in OPTIONS, f"{key} is not a server option"
    cfg = load_config({}, env=env)  # the server's own validation
    assert cfg.registry.startswith("redis://") and cfg.database is not None
    assert cfg.sip_udp == ("0.0.0.0", 5060)
    assert cfg.sip_tcp == ("0.0.0.0", 5060)  # RFC 3261 §18: TCP beside UDP


def test_compose_hosts_and_credentials_match_services(compose: dict[str, Any]) -> None:
    env = server_env(compose)
    services = compose["services"]
    redis_url = urlsplit(env["SIGNALING_REGISTRY"])
    assert redis_url.hostname == "redis" and redis_url.port == 6379
    db = urlsplit(env["SIGNALING_DATABASE"])
    pg_env = services["postgres"]["environment"]
    assert db.hostname == "postgres" and db.port == 5432
    assert db.username == pg_env["POSTGRES_USER"]
    assert db.password == pg_env["POSTGRES_PASSWORD"]
    assert db.path.lstrip("/") == pg_env["POSTGRES_DB"]


def test_compose_publishes_the_listeners(compose: dict[str, Any]) -> None:
    env = server_env(compose)
    published = set()
    for mapping in compose["services"]["signaling"]["ports"]:
        spec, _, proto = mapping.partition("/")
        published.add((int(spec.rsplit(":", 1)[1]), proto or "tcp"))
    # SIP over TCP listens on the UDP port (RFC 3261 §18): both published.
    for var, proto in (("SIGNALING_SIP_UDP", "udp"), ("SIGNALING_SIP_UDP", "tcp"),
                       ("SIGNALING_SIP_WS", "tcp"), ("SIGNALING_ADMIN", "tcp"),
                       ("SIGNALING_DIAMETER", "tcp")):
        port = int(env[var].rsplit(":", 1)[1])
        assert (port, proto) in published, f"{var} port {port}/{proto} not published"
    # The admin API is published on loopback only.
    assert any(p.startswith("127.0.0.1:8081:") for p in compose["services"]["signaling"]["ports"])


def test_dockerfile_entry_command() -> None:
    [base] = instruction("FROM")
    assert base == "python:3.11-slim"
    [entrypoint] = instruction("ENTRYPOINT")
    [cmd] = instruction("CMD")
    entry, options = json.loads(entrypoint), json.loads(cmd)
    assert entry == ["signaling", "serve"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, func = scripts[entry[0]].partition(":")
    assert callable(getattr(__import__(module, fromlist=[func]), func))
    ns = build_parser().parse_args([*entry[1:], *options])
    assert ns.command == "serve" and ns.log_level == "info"
    for copy in instruction("COPY"):
        *sources, _ = copy.split()
        for src in sources:
            assert (ROOT / src).exists(), f"COPY source {src} missing"
    exposed = set(" ".join(instruction("EXPOSE")).split())
    assert exposed == {"5060/udp", "5060/tcp", "5066/tcp", "8081/tcp", "3868/tcp"}
    spool = next(a for a in instruction("ENV") if a.startswith("SIGNALING_SPOOL="))
    assert "SIGNALING_SPOOL" in server_env(yaml.safe_load(
        (ROOT / "docker-compose.yml").read_text()))
    assert spool.split("=", 1)[1].startswith("/var/lib/signaling/")


@pytest.fixture
def entry_process(
    compose: dict[str, Any], redis_url: str, postgres_db: str, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[bytes], int, str]]:
    """The image's ENTRYPOINT + CMD with the compose environment, hosts made local."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNALING_")}
    env.update(server_env(compose))
    admin = free_port()
    env.update({
        "SIGNALING_SIP_UDP": f"127.0.0.1:{free_port()}",
        "SIGNALING_SIP_WS": f"127.0.0.1:{free_port()}",
        "SIGNALING_ADMIN": f"127.0.0.1:{admin}",
        "SIGNALING_DIAMETER": f"127.0.0.1:{free_port()}",
        "SIGNALING_REGISTRY": redis_url,
        "SIGNALING_DATABASE": postgres_db,
        "SIGNALING_SPOOL": str(tmp_path / "records.spool"),
    })
    entry = json.loads(instruction("ENTRYPOINT")[0])
    options = json.loads(instruction("CMD")[0])
    script = Path(sys.executable).parent / entry[0]
    proc = subprocess.Popen([str(script), *entry[1:], *options], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield proc, admin, postgres_db
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


async def _schema_version(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT max(version) FROM schema_version"))
    finally:
        await conn.close()


def test_entry_command_serves_with_compose_environment(
    entry_process: tuple[subprocess.Popen[bytes], int, str],
) -> None:
    proc, admin, dsn = entry_process
    deadline = time.monotonic() + READY_TIMEOUT
    status = None
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin}/ready", timeout=2) as resp:
                status = resp.status
                break
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.1)
    assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
    assert status == 200
    # The server created the records schema at start (issue 5: migrated by the server).
    assert asyncio.run(_schema_version(dsn)) == SCHEMA_VERSION
    proc.send_signal(signal.SIGTERM)  # what `docker stop` sends (stop_signal)
    assert proc.wait(timeout=30) == 0


def test_dockerfile_builds_the_parser_fast_path() -> None:
    """The image must carry the C fast path: its build script goes in, and a build failure
    stops the image build instead of shipping the slower pure-Python parser silently."""
    copied = {src for copy in instruction("COPY") for src in copy.split()[:-1]}
    assert {"setup.py", "protocols"} <= copied
    build = next(r for r in instruction("RUN") if "pip install ." in r)
    assert "SIGNALING_REQUIRE_SPEEDUPS=1 pip install ." in build
    assert "gcc" in build


def test_package_builds_without_deprecation_warnings_and_ships_its_files(
        tmp_path: Path) -> None:
    """Issue 17: `project.license` as a table made setuptools warn on every install; the docs
    page's static files must be in the wheel, not only in the source tree."""
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-v",
                          "-w", str(tmp_path), str(ROOT)],
                         capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "DeprecationWarning" not in out.stdout + out.stderr
    [wheel] = tmp_path.glob("signaling-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"signaling/admin/static/docs.html", "signaling/admin/static/docs.js"} <= names
