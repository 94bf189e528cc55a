"""Verification inside `pidelta run`: the horizon gets verified, completeness reaches 1,
and a bucket a later commit touched (duplicates appended by another writer) is checked
again and repaired. One-minute buckets over a 20-minute horizon keep it short."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
from deltalake import write_deltalake

from tests.conftest import MockServer, SimClock
from tests.e2e.helpers import (
    fixed_past,
    iso,
    metrics_port_env,
    ok,
    pidelta,
    read_table,
    scrape,
    start_worker,
    wait_for,
    worker_env,
)

SHARD = 'shard="0"'


def gauge(port: int, name: str) -> float | None:
    try:
        found = scrape(port)
    except OSError:
        return None
    return next((v for k, v in found.items() if k.startswith(name) and SHARD in k), None)


def counter(port: int, result: str) -> float:
    try:
        found = scrape(port)
    except OSError:
        return 0.0
    key = f'pidelta_buckets_verified_total{{result="{result}",{SHARD}}}'
    return found.get(key, 0.0)


def test_run_keeps_the_horizon_verified(
    mock_pi_factory: Callable[..., MockServer], tmp_path: Path
) -> None:
    mock_pi = mock_pi_factory(clock=SimClock.start(), tag_count=1000, seed=42, rate_limit=0)
    env, port = metrics_port_env(
        worker_env(
            mock_pi,
            tmp_path,
            start=iso(fixed_past(12)),
            tag_filter="TI-00000*",
            poll_interval=1,
            safety_lag=2,
            verify_bucket=60,
            verify_horizon=1200,
            verify_interval=2,
        )
    )
    worker = start_worker("run", env=env, log=tmp_path / "run.log")
    try:
        assert wait_for(
            lambda: (
                counter(port, "equal") >= 10
                and (gauge(port, "pidelta_verified_completeness_ratio") or 0) >= 1.0
            ),
            300,
            1,
        ), worker.text()[-4000:]
        assert gauge(port, "pidelta_oldest_unverified_bucket_seconds") == 0
        checked = pl.from_arrow(read_table(tmp_path, "_pidelta_verification"))
        assert set(checked["result"].unique()) == {"equal"}

        # Another writer appends duplicates of verified rows: their bucket is due again.
        rows = pl.from_arrow(read_table(tmp_path))
        first = checked.sort("table_count", descending=True).row(0, named=True)
        in_bucket = (pl.col("tag_webid") == first["tag_webid"]) & pl.col("timestamp").is_between(
            first["bucket_start"], first["bucket_end"], closed="left"
        )
        dupes = rows.filter(in_bucket).head(3)
        assert dupes.height
        dupes = dupes.with_columns(ingestion_timestamp=pl.lit(datetime.now(UTC)))
        write_deltalake(
            str(tmp_path / "pi_timeseries"), dupes.to_arrow(), mode="append", partition_by=["date"]
        )
        assert wait_for(lambda: counter(port, "repaired") >= 1, 300, 1), worker.text()[-4000:]
        after = pl.from_arrow(read_table(tmp_path))
        assert after.filter(in_bucket).height == rows.filter(in_bucket).height
        assert after.select("tag_webid", "timestamp", "sequence").is_duplicated().sum() == 0
    finally:
        assert worker.terminate() == 0, worker.text()[-4000:]
    status = ok(pidelta("status", env=env)).stdout
    block = status[status.index("verification over") :].splitlines()
    assert block[1] == "shard\tverified\ttag_buckets\toldest_unverified\tfailed"
    shard, share, buckets, _, failed = block[2].split("\t")
    assert shard == "pidelta-ts-0-of-1"
    assert float(share.rstrip("%")) > 50
    assert int(buckets) >= 10
    assert failed == "0"
