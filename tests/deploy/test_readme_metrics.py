"""README's metrics catalog lists exactly what `service.metrics.Metrics` registers.

Names as Prometheus exposes them (counters end in `_total`), with their type and labels, so
a metric added, renamed or relabelled in code fails here until the catalog follows.
"""

from __future__ import annotations

import re

from prometheus_client.metrics import MetricWrapperBase

from service.metrics import Metrics
from tests.conftest import ROOT

Row = tuple[str, str, tuple[str, ...]]


def exposed(name: str, kind: str) -> str:
    return f"{name}_total" if kind == "counter" else name


def registered() -> set[Row]:
    """(exposed name, type, labels) of every family in a fresh `Metrics` registry."""
    metrics = Metrics()
    labels = {
        m._name: tuple(m._labelnames)
        for m in vars(metrics).values()
        if isinstance(m, MetricWrapperBase)
    }
    return {
        (exposed(f.name, f.type), f.type, labels.get(f.name, ()))
        for f in metrics.registry.collect()
    }


def readme_catalog() -> list[Row]:
    """Rows of the table in README's `## Metrics` section (up to the next `## `)."""
    text = (ROOT / "README.md").read_text()
    match = re.search(r"^## Metrics\n(.*?)(?=^## )", text, re.M | re.S)
    assert match, "README.md has no '## Metrics' section"
    rows = []
    for line in match.group(1).splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("| `"):
            continue
        name, kind, labels, meaning = cells
        assert meaning, f"{name}: no meaning"
        rows.append((name.strip("`"), kind, tuple(re.findall(r"`(\w+)`", labels))))
    return rows


def test_readme_lists_exactly_the_registered_metrics() -> None:
    rows = readme_catalog()
    assert len(rows) == len(set(rows)), "a metric is listed twice"
    assert set(rows) == registered()


def test_readme_metrics_section_sits_between_delivery_and_deploy() -> None:
    headings = re.findall(r"^## (.+)$", (ROOT / "README.md").read_text(), re.M)
    at = headings.index("Metrics")
    assert headings[at - 1 : at + 2] == ["Delivery guarantee", "Metrics", "Deploy"]
