"""A live worker's endpoints: `/metrics` passes `promtool check metrics`, and the probes
answer what Kubernetes acts on (`/healthz` while the loop runs, `/readyz` 503 without PI).

promtool comes with Debian's `prometheus` package, installed by `.ci/run`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from service.metrics import PI_FAILING
from tests.conftest import MockServer, start_mock
from tests.e2e.helpers import Worker, metrics_port_env, start_worker, wait_for, worker_env


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("promtool is missing: .ci/run installs Debian's prometheus package")
        pytest.skip("promtool not installed (apt-get install prometheus)")
    return path


HOST = "127.0.0.2"  # PIDELTA_METRICS_HOST: bound there alone, not on every address


def get(port: int, path: str, host: str = HOST) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except OSError:
        return 0, b""


def get_json(port: int, path: str) -> tuple[int, object]:
    status, body = get(port, path)
    return status, json.loads(body) if body else None


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MockServer, Worker, int]]:
    """`pidelta run` polling every second; yields the mock, the worker and its metrics port.

    Shared by the tests below in file order: the readiness test stops the mock, so it is last.
    """
    tmp_path = tmp_path_factory.mktemp("metrics-lint")
    mock = start_mock(tag_count=20, seed=5)
    env, port = metrics_port_env(
        worker_env(mock, tmp_path / "lake", start="*-5m", poll_interval=1, commit_max_age=1)
    )
    env["PIDELTA_METRICS_HOST"] = HOST
    worker = start_worker("run", env=env, log=tmp_path / "worker.log")
    try:
        assert wait_for(lambda: get(port, "/readyz")[0] == 200, 60), worker.text()[-3000:]
        yield mock, worker, port
    finally:
        worker.kill9()  # PI is gone by then; a graceful stop would wait out its retries
        mock.stop()


def test_live_scrape_passes_promtool_check_metrics(live: tuple[MockServer, Worker, int]) -> None:
    binary = promtool()
    _, worker, port = live
    assert wait_for(lambda: b"pidelta_rows_committed_total{" in get(port, "/metrics")[1], 30)
    status, body = get(port, "/metrics")
    assert status == 200
    result = subprocess.run(
        [binary, "check", "metrics"], input=body, capture_output=True, check=False
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b""), worker.text()[-2000:]


def test_health_and_readiness_follow_pi(live: tuple[MockServer, Worker, int]) -> None:
    mock, worker, port = live
    assert get_json(port, "/healthz") == (200, {"status": "ok"})
    assert get(port, "/healthz", host="127.0.0.1") == (0, b"")  # refused: not bound there
    assert get_json(port, "/readyz") == (200, {"status": "ready"})
    mock.stop()
    assert wait_for(lambda: get(port, "/readyz")[0] == 503, 30), worker.text()[-3000:]
    assert get_json(port, "/readyz") == (503, {"status": "not ready", "reason": PI_FAILING})
    assert get_json(port, "/healthz") == (200, {"status": "ok"})
