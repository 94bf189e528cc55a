"""A real Prometheus scrapes a real worker: every dashboard query and alert rule evaluates.

mock-pi runs with faults, so retries and failed requests show up as series; Prometheus
loads deploy/prometheus/prometheus.yml with its targets pointed at the worker and the
intervals shortened, and the rules from deploy/prometheus/rules. Debian's `prometheus`
package provides the server (`.ci/run` installs it); a missing server fails in CI.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT, free_port, start_mock
from tests.deploy.queries import RULES, Query, all_queries, dashboard_queries, render

# Series that exist only after something went wrong: an error, a quarantined value. The
# healthy run below has neither, so their queries must parse but may return nothing.
EVENT_ONLY = frozenset({"pidelta_errors_total", "pidelta_quarantined_values_total"})
SCRAPE = "1s"


def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("prometheus is missing: .ci/run installs Debian's prometheus package")
        pytest.skip("prometheus not installed (apt-get install prometheus)")
    return path


def api(base: str, path: str, **params: str) -> Any:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}" if params else f"{base}{path}"
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return json.loads(err.read())


def query(base: str, expr: str) -> dict[str, Any]:
    return api(base, "/api/v1/query", query=expr)


def has_data(base: str, expr: str) -> bool:
    return bool(query(base, expr)["data"]["result"])


def wait_for(what: str, check: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(pidelta_\w+|process_\w+)\b", expr))


def reads_only_exported(q: Query) -> bool:
    """False for queries over series a healthy run may legitimately lack."""
    return not metric_names(q.expr) & EVENT_ONLY


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """`pidelta run` against a faulty mock-pi; yields its metrics port.

    Fault rates are high and pages small so that failed and retried requests show up
    within seconds; ingestion still proceeds through the retries.
    """
    tmp = tmp_path_factory.mktemp("live-worker")
    mock = start_mock(tag_count=60, seed=11, faults="503=0.3,429=0.1,reset=0.1")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIDELTA_")}
    env |= {
        "PIDELTA_PI_URL": mock.url,
        "PIDELTA_TARGET": str(tmp / "lakehouse"),
        "PIDELTA_START": "*-10m",
        "PIDELTA_POLL_INTERVAL": "1",
        "PIDELTA_COMMIT_MAX_AGE": "1",
        "PIDELTA_PI_PAGE_SIZE": "100",
        "PIDELTA_METRICS_PORT": str(port),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "service", "run"],
        cwd=tmp,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield port
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
        mock.stop()
    assert proc.returncode == 0, err


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory, worker: int) -> Iterator[str]:
    """Prometheus on loopback with the repo's scrape config and rules; yields its base URL.

    Ready once every panel query over always-exported series has data, so each test sees
    a scrape that has run long enough for rates and quantiles.
    """
    binary = prometheus_binary()
    tmp = tmp_path_factory.mktemp("live-prometheus")
    port = free_port()
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    config["global"] = {"scrape_interval": SCRAPE, "evaluation_interval": SCRAPE}
    config["rule_files"] = [str(RULES)]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    jobs["pidelta"]["static_configs"] = [{"targets": [f"127.0.0.1:{worker}"]}]
    jobs["prometheus"]["static_configs"] = [{"targets": [f"127.0.0.1:{port}"]}]
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={path}",
            f"--storage.tsdb.path={tmp / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    wanted = [q for q in all_queries() if q.source.startswith("panel") and reads_only_exported(q)]
    try:
        wait_for("Prometheus to be ready", lambda: _ready(base, proc), 30)
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline and not all(has_data(base, q.expr) for q in wanted):
            time.sleep(1)
        yield base
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def _ready(base: str, proc: subprocess.Popen[str]) -> bool:
    assert proc.poll() is None, proc.communicate()[1]
    try:
        with urllib.request.urlopen(f"{base}/-/ready", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def test_every_dashboard_and_rule_expression_parses(prometheus: str) -> None:
    for q in all_queries():
        answer = query(prometheus, q.expr)
        assert answer["status"] == "success", f"{q.source}: {answer.get('error')}"


def test_dashboard_queries_return_data(prometheus: str) -> None:
    wanted = [q for q in all_queries() if q.source.startswith("panel") and reads_only_exported(q)]
    missing = [q.source for q in wanted if not has_data(prometheus, q.expr)]
    assert not missing, f"dashboard queries without data after a live scrape: {missing}"


def test_every_alert_rule_evaluates_healthy(prometheus: str) -> None:
    def evaluated() -> list[dict[str, Any]]:
        groups = api(prometheus, "/api/v1/rules")["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return [r for r in rules if not r["lastEvaluation"].startswith("0001")]

    wait_for("a rule evaluation", lambda: len(evaluated()) == len(rule_names()), 30)
    for rule in evaluated():
        assert rule["health"] == "ok", f"{rule['name']}: {rule.get('lastError')}"
    assert {r["name"] for r in evaluated()} == rule_names()


def rule_names() -> set[str]:
    return {q.source.removeprefix("alert ") for q in all_queries() if q.source.startswith("alert")}


def test_every_metric_read_by_panels_and_rules_is_exported(prometheus: str) -> None:
    """Catches a renamed metric or a missing `_total` before an alert silently never fires."""
    names = set().union(*(metric_names(q.expr) for q in all_queries()))
    for name in sorted(names - EVENT_ONLY):
        family = re.sub(r"_(bucket|sum|count)$", "", name)
        selector = f'{{__name__=~"{family}(_bucket|_sum|_count)?", job="pidelta"}}'
        assert has_data(prometheus, f"count({selector})"), f"{name} is not exported"


def test_shard_variable_resolves_and_filters(prometheus: str) -> None:
    values = api(prometheus, "/api/v1/label/shard/values", **{"match[]": "pidelta_tags_owned"})
    assert values["data"] == ["0"]
    lag = next(q for q in dashboard_queries() if "max by (shard) (pidelta_lag_seconds" in q.expr)
    assert len(query(prometheus, render(lag.expr, {"shard": "0"}))["data"]["result"]) == 1
    assert query(prometheus, render(lag.expr, {"shard": "7"}))["data"]["result"] == []
