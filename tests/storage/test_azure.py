"""`pidelta backfill` and `run` into Azure Blob (Azurite on loopback): tables equal the truth."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.conftest import MockServer
from tests.e2e.helpers import (
    aligned_past,
    assert_same,
    expected,
    iso,
    ok,
    pidelta,
    start_worker,
    truth_for,
    worker_env,
)
from tests.storage.conftest import Azure, merged
from tests.storage.test_s3 import latest_checkpoints

DAY = (datetime.now(UTC) - timedelta(days=2)).replace(hour=0, minute=0, second=0, microsecond=0)


def az_env(mock: MockServer, azure: Azure, prefix: str, **settings: object) -> dict[str, str]:
    return merged(worker_env(mock, Path("unused"), **settings), azure.env(prefix))


def test_backfill_into_azure_equals_truth(
    mock_pi_factory: Callable[..., MockServer], azurite: Azure
) -> None:
    mock = mock_pi_factory(tag_count=100, rate_limit=0)
    start, end = DAY, DAY + timedelta(hours=1)
    env = az_env(mock, azurite, "backfill", backfill_window=1200)
    ok(pidelta("backfill", "--start", iso(start), "--end", iso(end), env=env))
    root = "az://lake/backfill"
    cps = latest_checkpoints(
        azurite.table(f"{root}/_pidelta_checkpoints").to_pyarrow_table(), "pidelta-bf-"
    )
    assert len(cps) == 100
    assert set(cps.values()) == {end}
    truth = expected(truth_for(mock), {w: (start, end) for w in cps})
    assert_same(azurite.table(f"{root}/pi_timeseries").to_pyarrow_table(), truth)


def test_run_into_azure_equals_truth(
    mock_pi_factory: Callable[..., MockServer], azurite: Azure, tmp_path: Path
) -> None:
    mock = mock_pi_factory(tag_count=100, rate_limit=0)
    origin = aligned_past(5)
    env = az_env(
        mock, azurite, "run", start=iso(origin), poll_interval=1, safety_lag=2, late_lookback=20
    )
    worker = start_worker("run", env=env, log=tmp_path / "run.log")
    time.sleep(15)
    assert worker.terminate() == 0, worker.text()[-3000:]
    root = "az://lake/run"
    cps = latest_checkpoints(
        azurite.table(f"{root}/_pidelta_checkpoints").to_pyarrow_table(), "pidelta-ts-"
    )
    assert len(cps) == 100
    assert min(cps.values()) > datetime.now(UTC) - timedelta(minutes=1)
    truth = expected(truth_for(mock), {w: (origin, c) for w, c in cps.items()})
    assert_same(azurite.table(f"{root}/pi_timeseries").to_pyarrow_table(), truth)
