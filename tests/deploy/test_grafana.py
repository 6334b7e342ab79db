"""deploy/grafana: the dashboard is loadable JSON in the shape Grafana provisions, and wired to
the provisioned datasource.  (Its expressions run against a real Prometheus scraping a node in
tests/deploy/test_prometheus.py, and name only exported metrics.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((GRAFANA / "dashboards/signaling.json").read_text())
    return data


def test_dashboard_shape() -> None:
    dash = _dashboard()
    assert dash["uid"] == "signaling-overview" and dash["schemaVersion"] >= 36
    panels = dash["panels"]
    assert len(panels) >= 10
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for p in panels:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24  # Grafana's grid is 24 wide
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"])
                for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, f"panel {p['title']} overlaps another"
        cells |= mine
        assert p["targets"] and all(t["expr"].strip() for t in p["targets"])
        assert len({t["refId"] for t in p["targets"]}) == len(p["targets"])


def test_dashboard_uses_the_provisioned_datasource() -> None:
    source = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    uid = source["datasources"][0]["uid"]
    dash = _dashboard()
    refs = [p["datasource"] for p in dash["panels"]]
    refs += [t["datasource"] for p in dash["panels"] for t in p["targets"]]
    refs += [v["datasource"] for v in dash["templating"]["list"]]
    assert all(r == {"type": "prometheus", "uid": uid} for r in refs)
    [instance] = dash["templating"]["list"]
    assert all('instance=~"$instance"' in t["expr"]
               for p in dash["panels"] for t in p["targets"])
    assert instance["name"] == "instance"


def test_provisioning_points_at_the_mounted_dashboards() -> None:
    providers = yaml.safe_load((GRAFANA / "provisioning/dashboards/signaling.yml").read_text())
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = dict(v.rsplit(":", 2)[:2] for v in compose["services"]["grafana"]["volumes"]
                  if v.startswith("./"))
    assert mounts["./deploy/grafana/dashboards"] == providers["providers"][0]["options"]["path"]
