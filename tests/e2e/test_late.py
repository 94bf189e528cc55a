"""Late data: a tenth of the tags hold values back (interface outages, values visible
LATE_SECONDS after their timestamp). Once the late window has passed, the table equals the
ground truth exactly: the look-back re-read found every late value, and added nothing twice.
Some values are malformed: each look-back meets those of its window again, and each is
quarantined once.

Size: 300 tags (about 30 late), 4 minutes behind now at start, then about a minute live.
Server, worker and truth share one simulated clock (`SimClock`), so the window is the same on
every run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
import pyarrow as pa

from mock_pi.truth import GroundTruth
from tests.conftest import MockServer, SimClock
from tests.e2e.helpers import (
    KEY,
    assert_no_duplicates,
    assert_same,
    checkpoints,
    comparable,
    expected,
    expected_quarantine,
    fixed_past,
    iso,
    read_table,
    start_worker,
    truth_for,
    wait_for,
    within,
    worker_env,
)

LATE_SECONDS = 10
LOOKBACK = 30  # seconds; re-read every LOOKBACK / 4, so delays up to ~3/4 of it are caught


def test_late_values_land_exactly_once(
    mock_pi_factory: Callable[..., MockServer], tmp_path: Path
) -> None:
    clock = SimClock.start()
    mock = mock_pi_factory(
        clock=clock,
        tag_count=300,
        rate_limit=0,
        late_fraction=0.1,
        late_seconds=LATE_SECONDS,
        bad_fraction=0.02,
    )
    truth = truth_for(mock)
    # PI answers a range's excluded start too; a value there whose timestamp does not parse
    # cannot be told apart, so it is quarantined. This origin has none: the bound is exact.
    origin = fixed_past(4)
    assert expected_quarantine(truth, _at(truth, origin)).num_rows == 0
    target = tmp_path / "lake"
    env = worker_env(
        mock, target, start=iso(origin), poll_interval=1, safety_lag=2, late_lookback=LOOKBACK
    )
    worker = start_worker("run", env=env, log=tmp_path / "worker.log")
    try:
        launched = clock.now()
        assert wait_for(lambda: _caught_up(target, launched), 120), worker.text()[-3000:]
        time.sleep(20)
        seen_at = clock.time()
        cps = checkpoints(target)
        ranges = {w: (origin, c) for w, c in cps.items()}
        time.sleep(LATE_SECONDS + LOOKBACK / 4 + 8)
        table = read_table(target)
    finally:
        assert worker.terminate() == 0, worker.text()[-3000:]
    early = expected(truth, ranges, at=seen_at)
    final = expected(truth, ranges)
    assert final.num_rows > early.num_rows, "no value arrived late during the test"
    assert_no_duplicates(table)
    assert_same(within(table, ranges), final)
    _subset(read_table(target), truth, origin)
    reached = {w: (origin, c) for w, c in checkpoints(target).items()}
    _quarantined_once(read_table(target, "_pidelta_quarantine"), truth, ranges, reached)


def _quarantined_once(
    got: pa.Table,
    truth: GroundTruth,
    settled: dict[str, tuple[datetime, datetime]],
    reached: dict[str, tuple[datetime, datetime]],
) -> None:
    """Every bad value of the settled ranges is listed, and nothing more often than the
    source holds it up to the end of what was read (a value quarantined twice would be)."""
    key = ["tag_webid", "reason", "raw"]

    def counts(table: pa.Table) -> pl.DataFrame:
        return comparable(pl.from_arrow(table)).group_by(key).len()

    held = counts(got)
    must = counts(expected_quarantine(truth, settled))
    may = counts(expected_quarantine(truth, reached))
    assert must["len"].sum() > 50
    lost = must.join(held, on=key, how="left").filter(
        pl.col("len_right").fill_null(0) < pl.col("len")
    )
    assert lost.height == 0, lost.head(5)
    doubled = held.join(may, on=key, how="left").filter(
        pl.col("len") > pl.col("len_right").fill_null(0)
    )
    assert doubled.height == 0, doubled.head(5)


def _at(truth: GroundTruth, moment: datetime) -> dict[str, tuple[datetime, datetime]]:
    """Every tag's range holding just `moment`."""
    points = (truth.state.catalog.point(i) for i in range(truth.state.settings.tag_count))
    return {p.webid: (moment - timedelta(microseconds=1), moment) for p in points}


def _caught_up(target: Path, since: datetime) -> bool:
    try:
        cps = checkpoints(target)
    except Exception:
        return False
    return len(cps) == 300 and min(cps.values()) >= since - timedelta(seconds=3)


def _subset(table: pa.Table, truth: GroundTruth, origin: datetime) -> None:
    """Rows past the compared range are true values too (keys the truth has)."""
    got = pl.from_arrow(table.select(KEY))
    last = got.group_by("tag_webid").agg(pl.col("timestamp").max())
    ranges = dict(zip(last["tag_webid"].to_list(), last["timestamp"].to_list(), strict=True))
    want = pl.from_arrow(expected(truth, {w: (origin, c) for w, c in ranges.items()}).select(KEY))
    assert got.join(want, on=KEY, how="anti").height == 0
