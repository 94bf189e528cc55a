"""Prometheus scrape configuration and alert rules, checked and unit-tested by promtool.

Debian's `prometheus` package provides promtool; `.ci/run` installs it. Outside CI a
missing promtool skips these tests; in CI (CI=true) it fails them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.queries import ROOT, RULES, rule_queries

PROMETHEUS = ROOT / "deploy" / "prometheus"
RULE_TESTS = sorted((PROMETHEUS / "tests").glob("*.yml"))


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("promtool is missing: .ci/run installs Debian's prometheus package")
        pytest.skip("promtool not installed (apt-get install prometheus)")
    return path


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=60, cwd=PROMETHEUS
    )


def test_promtool_check_rules(promtool: str) -> None:
    result = run(promtool, "check", "rules", RULES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rule_queries())} rules found" in result.stdout


def test_promtool_check_config_loads_the_rules(promtool: str) -> None:
    result = run(promtool, "check", "config", PROMETHEUS / "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout


def test_promtool_unit_tests_pass(promtool: str) -> None:
    assert RULE_TESTS
    result = run(promtool, "test", "rules", *RULE_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    """promtool passes rules without tests, so coverage is checked here."""
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TESTS:
        doc = yaml.safe_load(path.read_text())
        assert doc["rule_files"] == ["../rules/pidelta.rules.yml"]
        for case in doc["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    alerts = {
        q.source.removeprefix("alert ") for q in rule_queries() if q.source.startswith("alert ")
    }
    assert alerts == firing, "alerts without a firing test: " + str(alerts - firing)
    assert alerts == quiet, "alerts without a not-firing test: " + str(alerts - quiet)


def test_every_alert_has_severity_summary_and_selects_the_pidelta_job() -> None:
    doc = yaml.safe_load(RULES.read_text())
    for rule in (r for g in doc["groups"] for r in g["rules"]):
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert 'job="pidelta"' in rule["expr"], rule["alert"]


def test_scrape_config_targets_the_compose_workers() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "pidelta"]
    targets = [t for sc in job["static_configs"] for t in sc["targets"]]
    compose = yaml.safe_load((ROOT / "deploy/compose/compose.yaml").read_text())
    workers = sorted(n for n, s in compose["services"].items() if s.get("command") == ["run"])
    (port,) = {compose["services"][w]["environment"]["PIDELTA_METRICS_PORT"] for w in workers}
    assert targets == [f"{w}:{port}" for w in workers]
    assert config["rule_files"] == ["rules/*.yml"]
    assert RULES.parent.name == "rules"
