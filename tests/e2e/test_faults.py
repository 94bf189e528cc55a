"""Faults from the server (503, 429, resets, slow answers, cut bodies): the table still
equals the ground truth, and the worker's retry metrics count exactly what the mock injected.

Size: 200 tags, 45 minutes of catch-up in `run` mode with maxCount 100, so that streams page
(some 2000 requests: every fault kind happens, paging included), compared once the worker
is idle between two polls.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from tests.conftest import MockServer, SimClock, get_json
from tests.e2e.helpers import (
    assert_same,
    checkpoints,
    expected,
    fixed_past,
    iso,
    metrics_port_env,
    read_table,
    scrape,
    start_worker,
    truth_for,
    wait_for,
    worker_env,
)

FAULTS = "503=0.05,429=0.05,reset=0.01,slow=0.02,truncate=0.01"


def requests_counted(metrics: dict[str, float]) -> float:
    return sum(v for k, v in metrics.items() if k.startswith("pidelta_pi_requests_total{"))


def quiet_snapshot(port: int, mock_url: str) -> tuple[dict[str, float], dict[str, object]]:
    """The worker's metrics and the mock's fault counts at a moment no request is in flight.

    In `run` the worker may send a request (a poll, a points sync) at any moment: the mock
    counts it on arrival, the worker once it is answered. A snapshot counts only when the
    mock's figures did not move across the scrape and both sides agree on the request count;
    a real mismatch never settles and fails the test below.
    """
    metrics: dict[str, float] = {}
    faults: dict[str, object] = {}
    for _ in range(40):
        status, before = get_json(f"{mock_url}/mock/faults")
        assert status == 200
        metrics = scrape(port)
        _, after = get_json(f"{mock_url}/mock/faults")
        assert isinstance(after, dict)
        faults = after
        if before == faults and requests_counted(metrics) == faults["Requests"]:
            break
        time.sleep(0.5)
    return metrics, faults


def test_faults_table_exact_and_retries_counted(
    mock_pi_factory: Callable[..., MockServer], tmp_path: Path
) -> None:
    clock = SimClock.start()
    mock = mock_pi_factory(clock=clock, tag_count=200, rate_limit=0, faults=FAULTS, seed=7)
    origin = fixed_past(45)
    target = tmp_path / "lake"
    env, port = metrics_port_env(
        worker_env(
            mock,
            target,
            start=iso(origin),
            poll_interval=120,
            safety_lag=2,
            backfill_window=60,
            pi_page_size=2000,
            pi_max_url_bytes=4000,
        )
    )
    launched = clock.now()
    worker = start_worker("run", env=env, log=tmp_path / "worker.log")

    def caught_up() -> bool:
        try:
            cps = checkpoints(target)
        except Exception:
            return False
        return len(cps) == 200 and min(cps.values()) >= launched - timedelta(seconds=3)

    try:
        assert wait_for(caught_up, 180, 0.5), worker.text()[-3000:]
        metrics, faults = quiet_snapshot(port, mock.url)
    finally:
        assert worker.terminate() == 0, worker.text()[-3000:]
    injected = faults["Injected"]
    retries = {
        name.split('reason="')[1].rstrip('"}'): value
        for name, value in metrics.items()
        if name.startswith("pidelta_pi_retries_total{")
    }
    for kind in ("503", "429", "reset", "slow", "truncate"):
        assert injected[kind] > 0, f"no {kind} fault happened: {faults}"
    assert retries.get("429", 0) == injected["429"], (retries, injected)
    assert retries.get("5xx", 0) == injected["503"] + injected["500"], (retries, injected)
    assert retries.get("reset", 0) == injected["reset"], (retries, injected)
    assert retries.get("truncated", 0) + retries.get("decode", 0) == injected["truncate"], (
        retries,
        injected,
    )
    requests = requests_counted(metrics)
    assert requests == faults["Requests"], (requests, faults)
    cps = checkpoints(target)
    truth = expected(truth_for(mock), {w: (origin, c) for w, c in cps.items()})
    assert_same(read_table(target), truth)
