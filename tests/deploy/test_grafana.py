"""The provisioned Grafana dashboard and its provisioning files are consistent."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import yaml

from tests.deploy.queries import (
    DASHBOARD,
    ROOT,
    dashboard_queries,
    load_dashboard,
    panels,
    render,
)

GRAFANA = ROOT / "deploy" / "grafana"
DATASOURCE_VARIABLE = "${datasource}"


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return load_dashboard()


def test_every_panel_has_a_prometheus_datasource_and_queries(dashboard: dict[str, Any]) -> None:
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": DATASOURCE_VARIABLE}, panel
        assert panel["targets"], f"panel {panel['title']!r} has no target"
        for target in panel["targets"]:
            assert target["expr"].strip(), f"empty expr in {panel['title']!r}"
            assert target["datasource"] == panel["datasource"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]


def test_panel_ids_are_unique_and_the_grid_does_not_overlap(dashboard: dict[str, Any]) -> None:
    all_panels = panels(dashboard)
    ids = Counter(p["id"] for p in all_panels)
    assert all(n == 1 for n in ids.values()), ids
    cells: set[tuple[int, int]] = set()
    for panel in all_panels:
        grid = panel["gridPos"]
        assert grid["w"] > 0
        assert grid["h"] > 0
        assert grid["x"] >= 0
        assert grid["y"] >= 0
        assert grid["x"] + grid["w"] <= 24, f"{panel['title']!r} is wider than the grid"
        mine = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & mine, f"{panel['title']!r} overlaps another panel"
        cells |= mine


def test_shard_variable_exists_and_filters_the_panels(dashboard: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    shard = variables["shard"]
    assert shard["type"] == "query"
    assert "label_values(" in shard["definition"]
    assert shard["definition"].endswith(", shard)")
    assert shard["multi"]
    assert shard["includeAll"]
    # Metrics without a shard label are filtered by the instances of the selected shards.
    assert "$shard" in variables["instance"]["definition"]
    exprs = [q.expr for q in dashboard_queries()]
    assert sum('shard=~"$shard"' in e for e in exprs) >= 5
    assert sum('instance=~"$instance"' in e for e in exprs) >= 5
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"


@pytest.mark.parametrize(
    ("topic", "needle"),
    [
        ("ingest rate", "rate(pidelta_values_ingested_total"),
        ("rows committed", "rate(pidelta_rows_committed_total"),
        ("lag per shard", "max by (shard) (pidelta_lag_seconds"),
        ("oldest unprocessed", "pidelta_oldest_unprocessed_seconds"),
        ("request rate", "rate(pidelta_pi_requests_total"),
        ("errors", "rate(pidelta_errors_total"),
        ("request latency", "pidelta_pi_request_duration_seconds_bucket"),
        ("commit latency", "pidelta_commit_duration_seconds_bucket"),
        ("commit size", "pidelta_commit_rows_bucket"),
        ("retries", "rate(pidelta_pi_retries_total"),
        ("tags per shard", "sum by (shard) (pidelta_tags_owned"),
        ("quarantined values", "rate(pidelta_quarantined_values_total"),
        ("buffered rows", "pidelta_buffered_rows"),
        ("table version", "pidelta_delta_table_version"),
        ("build info", "pidelta_build_info"),
    ],
)
def test_dashboard_covers(topic: str, needle: str) -> None:
    assert any(needle in q.expr for q in dashboard_queries()), topic


def test_latency_panels_use_histogram_quantile_over_le() -> None:
    for q in dashboard_queries():
        if "_bucket{" in q.expr and "histogram_quantile" in q.expr:
            assert "sum by (le," in q.expr, q.source


def test_every_expr_renders_without_grafana_variables() -> None:
    for q in dashboard_queries():
        rendered = render(q.expr)
        assert "$" not in rendered, q.source
        assert "[[" not in rendered, q.source
        assert rendered.count("(") == rendered.count(")"), q.source
        assert rendered.count("{") == rendered.count("}"), q.source


def test_provisioning_points_at_the_dashboard_and_the_compose_prometheus() -> None:
    datasources = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    assert source["isDefault"] is True
    providers = yaml.safe_load((GRAFANA / "provisioning/dashboards/pidelta.yml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    compose = yaml.safe_load((ROOT / "deploy/compose/compose.yaml").read_text())
    mounts = dict(v.rsplit(":", 2)[:2] for v in compose["services"]["grafana"]["volumes"])
    assert mounts["../grafana/dashboards"] == provider["options"]["path"]
    assert (DASHBOARD.parent.name, DASHBOARD.name) == ("dashboards", "pidelta.json")
