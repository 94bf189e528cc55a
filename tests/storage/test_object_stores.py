"""`pidelta backfill` and `run` into each object store (moto's S3, Azurite on loopback):
the tables read back equal the truth."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from tests.conftest import FIXED_NOW, MockServer, SimClock
from tests.e2e.helpers import (
    fixed_past,
    iso,
    ok,
    pidelta,
    start_worker,
)
from tests.storage.conftest import DAY, ObjectStore, store_env, store_holds_truth


def test_backfill_equals_truth(
    mock_pi_factory: Callable[..., MockServer], object_store: ObjectStore
) -> None:
    mock = mock_pi_factory(tag_count=100, rate_limit=0, clock_start=FIXED_NOW)
    start, end = DAY, DAY + timedelta(hours=1)
    env = store_env(mock, object_store, "backfill", backfill_window=1200)
    ok(pidelta("backfill", "--start", iso(start), "--end", iso(end), env=env))
    cps = store_holds_truth(mock, object_store, "backfill", "pidelta-bf-", start, end)
    assert len(cps) == 100
    assert set(cps.values()) == {end}


def test_run_equals_truth(
    mock_pi_factory: Callable[..., MockServer], object_store: ObjectStore, tmp_path: Path
) -> None:
    clock = SimClock.start()
    mock = mock_pi_factory(clock=clock, tag_count=100, rate_limit=0)
    origin = fixed_past(5)
    env = store_env(
        mock,
        object_store,
        "run",
        start=iso(origin),
        poll_interval=1,
        safety_lag=2,
        late_lookback=20,
    )
    worker = start_worker("run", env=env, log=tmp_path / "run.log")
    time.sleep(15)
    assert worker.terminate() == 0, worker.text()[-3000:]
    cps = store_holds_truth(mock, object_store, "run", "pidelta-ts-", origin)
    assert len(cps) == 100
    assert min(cps.values()) > clock.now() - timedelta(minutes=1)
