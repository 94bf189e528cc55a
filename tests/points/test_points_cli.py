"""`pidelta once` and `pidelta run` sync the points and write the grid beside the time series."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import polars as pl
from deltalake import DeltaTable

from tests.conftest import MockServer, SimClock
from tests.e2e.helpers import fixed_past, iso, ok, pidelta, start_worker, wait_for, worker_env
from workers.lake.schemas import PI_DIGITAL_STATE_SETS, PI_INTERPOLATED, PI_POINTS

TAGS = 40


def table(target: Path, name: str) -> pl.DataFrame:
    return pl.from_arrow(DeltaTable(str(target / name)).to_pyarrow_table())  # type: ignore[return-value]


def assert_whole_grid(target: Path) -> None:
    grid = table(target, PI_INTERPOLATED)
    assert grid.select("tag_webid", "timestamp").is_duplicated().sum() == 0
    per_tag = grid.group_by("tag_webid").agg(pl.len(), pl.col("timestamp").min().alias("lo"),
                                             pl.col("timestamp").max().alias("hi"))  # fmt: skip
    assert per_tag.height == TAGS
    for row in per_tag.iter_rows(named=True):
        assert row["len"] == (row["hi"] - row["lo"]).total_seconds() // 60 + 1


def test_once_syncs_points_and_writes_the_grid(
    mock_pi_factory: Callable[..., MockServer], tmp_path: Path
) -> None:
    # A fixed clock: grid times 11:51 .. 11:59 of FIXED_NOW's day on every run (whatever
    # second of a real minute the test starts in).
    mock = mock_pi_factory(clock=SimClock.start(), tag_count=TAGS, rate_limit=0)
    target = tmp_path / "lake"
    start = iso(fixed_past(10) + timedelta(seconds=30))
    env = worker_env(mock, target, start=start, interpolated_interval="1m")
    ok(pidelta("once", env=env))
    points = table(target, PI_POINTS)
    assert points.height == points.filter(pl.col("is_current")).height == TAGS
    assert table(target, PI_DIGITAL_STATE_SETS).height > 0
    assert_whole_grid(target)
    assert table(target, PI_INTERPOLATED).height >= TAGS * 9


def test_run_syncs_points_and_the_grid_until_stopped(
    mock_pi_factory: Callable[..., MockServer], tmp_path: Path
) -> None:
    mock = mock_pi_factory(tag_count=TAGS, rate_limit=0)
    target = tmp_path / "lake"
    env = worker_env(mock, target, start="*-5m", interpolated_interval="1m", points_interval=1)
    worker = start_worker("run", env=env, log=tmp_path / "run.log")
    try:
        assert wait_for(
            lambda: (
                (target / PI_INTERPOLATED / "_delta_log").exists()
                and DeltaTable(str(target / PI_INTERPOLATED)).version() >= 1
                and (target / PI_POINTS / "_delta_log").exists()
                and DeltaTable(str(target / PI_POINTS)).version() >= 1
            ),
            180,
        ), worker.text()[-3000:]
    finally:
        code = worker.terminate()
    assert code == 0, worker.text()[-3000:]
    assert table(target, PI_POINTS).filter(pl.col("is_current")).height == TAGS
    assert_whole_grid(target)
