"""`pidelta backfill` and `run` into S3 (moto server on loopback), tables equal the truth;
four shards appending to one S3 table lose no commit (put-if-absent log entries)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pyarrow as pa

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
from tests.storage.conftest import S3, merged

DAY = (datetime.now(UTC) - timedelta(days=2)).replace(hour=0, minute=0, second=0, microsecond=0)


def latest_checkpoints(table: pa.Table, prefix: str) -> dict[str, datetime]:
    frame = pl.from_arrow(table).filter(pl.col("app_id").str.starts_with(prefix))
    latest = frame.group_by("tag_webid").agg(pl.col("checkpoint").max())
    return dict(zip(latest["tag_webid"].to_list(), latest["checkpoint"].to_list(), strict=True))


def s3_env(mock: MockServer, s3: S3, prefix: str, **settings: object) -> dict[str, str]:
    base = worker_env(mock, Path("unused"), **settings)
    return merged(base, s3.env(prefix))


def test_backfill_into_s3_equals_truth(
    mock_pi_factory: Callable[..., MockServer], moto_s3: S3
) -> None:
    mock = mock_pi_factory(tag_count=100, rate_limit=0)
    start, end = DAY, DAY + timedelta(hours=1)
    env = s3_env(mock, moto_s3, "backfill", backfill_window=1200)
    ok(pidelta("backfill", "--start", iso(start), "--end", iso(end), env=env))
    root = "s3://lake/backfill"
    cps = latest_checkpoints(
        moto_s3.table(f"{root}/_pidelta_checkpoints").to_pyarrow_table(), "pidelta-bf-"
    )
    assert len(cps) == 100
    assert set(cps.values()) == {end}
    truth = expected(truth_for(mock), {w: (start, end) for w in cps})
    assert_same(moto_s3.table(f"{root}/pi_timeseries").to_pyarrow_table(), truth)


def test_four_shards_append_to_one_s3_table(
    mock_pi_factory: Callable[..., MockServer], moto_s3: S3, tmp_path: Path
) -> None:
    """Four `backfill` workers at once, small commits: every commit lands exactly once."""
    mock = mock_pi_factory(tag_count=60, rate_limit=0)
    start, end = DAY + timedelta(hours=3), DAY + timedelta(minutes=200)
    workers = []
    for shard in range(4):
        env = s3_env(
            mock,
            moto_s3,
            "four",
            shard_index=shard,
            shard_count=4,
            backfill_window=300,
            commit_max_rows=1_000,  # a commit per batch at least: many racing commits
        )
        args = ("backfill", "--start", iso(start), "--end", iso(end))
        workers.append(start_worker(*args, env=env, log=tmp_path / f"shard{shard}.log"))
    for worker in workers:
        assert worker.process.wait(240) == 0, worker.text()[-3000:]
    root = "s3://lake/four"
    table = moto_s3.table(f"{root}/pi_timeseries")
    cps = latest_checkpoints(
        moto_s3.table(f"{root}/_pidelta_checkpoints").to_pyarrow_table(), "pidelta-bf-"
    )
    assert len(cps) == 60
    truth = expected(truth_for(mock), {w: (start, end) for w in cps})
    assert_same(table.to_pyarrow_table(), truth)
    writers = {c.get("pidelta.app_id") for c in table.history() if c.get("operation") == "WRITE"}
    assert {f"pidelta-bf-{i}-of-4" for i in range(4)} <= writers
    # Many commits, from all four shards interleaved: conflicts were met and resolved.
    print(f"four shards: {table.version() + 1} versions of pi_timeseries")
    assert table.version() >= 16, table.version()


def test_run_into_s3_equals_truth(
    mock_pi_factory: Callable[..., MockServer], moto_s3: S3, tmp_path: Path
) -> None:
    mock = mock_pi_factory(tag_count=100, rate_limit=0)
    origin = aligned_past(5)
    env = s3_env(
        mock, moto_s3, "run", start=iso(origin), poll_interval=1, safety_lag=2, late_lookback=20
    )
    worker = start_worker("run", env=env, log=tmp_path / "run.log")
    time.sleep(15)
    assert worker.terminate() == 0, worker.text()[-3000:]
    root = "s3://lake/run"
    cps = latest_checkpoints(
        moto_s3.table(f"{root}/_pidelta_checkpoints").to_pyarrow_table(), "pidelta-ts-"
    )
    assert len(cps) == 100
    assert min(cps.values()) > datetime.now(UTC) - timedelta(minutes=1)
    truth = expected(truth_for(mock), {w: (origin, c) for w, c in cps.items()})
    assert_same(moto_s3.table(f"{root}/pi_timeseries").to_pyarrow_table(), truth)
