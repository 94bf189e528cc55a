"""Every PromQL expression the deployment ships: Grafana panel targets and alert rules.

A live-Prometheus test evaluates each of them through the HTTP API after a real scrape of
mock-pi and a worker; the static tests use the same extraction, so a query added to the
dashboard or the rules is covered without listing it twice.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "pidelta.json"
RULES = ROOT / "deploy" / "prometheus" / "rules" / "pidelta.rules.yml"

# What Grafana substitutes when every shard is selected, at a 15 s scrape interval.
GRAFANA_DEFAULTS: dict[str, str] = {
    "shard": ".*",
    "instance": ".*",
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "1h",
}

_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)")


@dataclass(frozen=True)
class Query:
    """One PromQL expression and where it comes from (for failure messages)."""

    source: str
    expr: str


def render(expr: str, variables: dict[str, str] | None = None) -> str:
    """Substitute Grafana template variables ($x, ${x}, [[x]]) so Prometheus can parse it."""
    values = {**GRAFANA_DEFAULTS, **(variables or {})}

    def sub(match: re.Match[str]) -> str:
        name = next(g for g in match.groups() if g)
        if name not in values:
            raise KeyError(f"no value for Grafana variable ${name} in {expr!r}")
        return values[name]

    return _VARIABLE.sub(sub, expr)


def load_dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    return json.loads(path.read_text())


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """All panels, including those nested in collapsed rows."""
    out: list[dict[str, Any]] = []
    for panel in dashboard.get("panels", []):
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def dashboard_queries(path: Path = DASHBOARD) -> list[Query]:
    """Every panel target's expr, raw (with Grafana variables)."""
    return [
        Query(f"panel {p['id']} {p['title']!r} target {t.get('refId')}", t["expr"])
        for p in panels(load_dashboard(path))
        for t in p.get("targets", [])
        if "expr" in t
    ]


def rule_queries(path: Path = RULES) -> list[Query]:
    """Every alerting and recording rule's expr."""
    doc = yaml.safe_load(path.read_text())
    return [
        Query(f"{'alert ' + r['alert'] if 'alert' in r else 'record ' + r['record']}", r["expr"])
        for group in doc["groups"]
        for r in group["rules"]
    ]


def all_queries(variables: dict[str, str] | None = None) -> list[Query]:
    """Dashboard and rule expressions, with Grafana variables rendered, ready for /api/v1/query."""
    return [Query(q.source, render(q.expr, variables)) for q in dashboard_queries()] + [
        Query(q.source, q.expr.strip()) for q in rule_queries()
    ]
