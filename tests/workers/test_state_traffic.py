"""State traffic per data commit, not per poll (docs/DESIGN.md "Exactly once"): a real
pipeline on mock-pi over HTTP, the Delta logs counted exactly.

Polls buffered into one data commit record one plan (one row per tag) in one
`_pidelta_batches` commit and one checkpoint row per tag in one `_pidelta_checkpoints`
commit; a plan recorded without its data is re-read whole on start; folds keep the state
tables' rows per app id bounded however many commits ran.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import polars as pl
from deltalake import DeltaTable

from tests.conftest import MockServer, SimClock
from tests.e2e.helpers import (
    assert_no_duplicates,
    assert_same,
    expected,
    fixed_past,
    iso,
    read_table,
    truth_for,
)
from workers.lake.schemas import BATCHES, CHECKPOINTS, PI_TIMESERIES
from workers.settings import Settings
from workers.timeseries.pipeline import Pipeline
from workers.timeseries.plan import LIVE, first_checkpoint

APP = "pidelta-ts-0-of-1"
TAG_COUNT = 12
ORIGIN = fixed_past(30)
STEP = timedelta(seconds=10)


def settings_for(mock: MockServer, target: Path) -> Settings:
    """Nothing commits by itself (age, rows), and the look-back is never due after the first
    poll, so every commit below is one the test asked for."""
    return Settings(
        _env_file=None,
        pi_url=mock.url,
        target=str(target),
        start=iso(ORIGIN),
        commit_max_age=3600,
        late_lookback=3600,
        safety_lag=0,
    )


def versions(target: Path) -> dict[str, int]:
    return {n: DeltaTable(str(target / n)).version() for n in (BATCHES, CHECKPOINTS, PI_TIMESERIES)}


def state(target: Path, name: str) -> pl.DataFrame:
    return pl.from_arrow(read_table(target, name)).filter(pl.col("app_id") == APP)


async def test_polls_buffered_into_one_commit_cost_one_commit_per_state_table(
    mock_pi_factory: Callable[..., MockServer], tmp_path: Path
) -> None:
    clock = SimClock.start()
    mock = mock_pi_factory(clock=clock, tag_count=TAG_COUNT, rate_limit=0)
    target = tmp_path / "lake"
    polls = 5
    async with Pipeline(settings_for(mock, target), clock=clock.now) as pipeline:
        await pipeline.prepare()
        before = versions(target)
        for k in range(1, polls + 1):
            await pipeline.catch_up(ORIGIN + k * STEP)
        assert versions(target) == before  # polls alone commit nothing
        await pipeline.flush()
    after = versions(target)
    one_each = {BATCHES: 1, CHECKPOINTS: 1, PI_TIMESERIES: 1}
    assert {n: after[n] - before[n] for n in after} == one_each

    end = ORIGIN + polls * STEP
    version = DeltaTable(str(target / PI_TIMESERIES)).transaction_version(APP)
    assert version == polls  # one batch id per poll; the commit carries the highest
    assert DeltaTable(str(target / BATCHES)).transaction_version(APP) == version
    assert DeltaTable(str(target / CHECKPOINTS)).transaction_version(APP) == version
    plans = state(target, BATCHES)
    assert plans.height == TAG_COUNT  # one row per tag, the union of the five polls
    assert plans["batch_id"].unique().to_list() == [version]
    assert plans["kind"].unique().to_list() == [LIVE]
    assert plans["range_start"].unique().to_list() == [first_checkpoint(ORIGIN)]
    assert plans["range_end"].unique().to_list() == [end]
    cps = state(target, CHECKPOINTS)
    assert cps.height == TAG_COUNT
    assert cps["checkpoint"].unique().to_list() == [end]

    truth = truth_for(mock)
    table = read_table(target)
    assert_no_duplicates(table)
    assert_same(table, expected(truth, {w: (ORIGIN, end) for w in plans["tag_webid"]}))


async def test_a_recorded_plan_whose_data_did_not_land_is_read_again_whole(
    mock_pi_factory: Callable[..., MockServer], tmp_path: Path
) -> None:
    """A crash between the plan's commit and the data's: the next start re-reads the union
    of the polls, commits it under the plan's id, and advances to its end, once."""
    clock = SimClock.start()
    mock = mock_pi_factory(clock=clock, tag_count=TAG_COUNT, rate_limit=0)
    target = tmp_path / "lake"
    polls = 4
    async with Pipeline(settings_for(mock, target), clock=clock.now) as crashed:
        await crashed.prepare()
        await crashed.catch_up(ORIGIN + STEP)
        await crashed.flush()  # one committed batch before: the plan re-read starts after it
        for k in range(2, polls + 1):
            await crashed.catch_up(ORIGIN + k * STEP)
        assert crashed.queue is not None
        assert crashed.checkpoints is not None
        buffered = crashed.queue.batches
        ranges = [r for batch in buffered for r in batch.ranges]
        crashed.checkpoints.record_plan(APP, buffered[-1].batch_id, ranges)  # then kill -9
    planned = buffered[-1].batch_id
    assert DeltaTable(str(target / PI_TIMESERIES)).transaction_version(APP) == 1
    plan = state(target, BATCHES).filter(pl.col("batch_id") == planned)
    assert plan.height == TAG_COUNT
    assert plan["range_start"].unique().to_list() == [ORIGIN + STEP]

    async with Pipeline(settings_for(mock, target), clock=clock.now) as restarted:
        await restarted.prepare()  # recovery re-runs the plan and commits it
    end = ORIGIN + polls * STEP
    assert DeltaTable(str(target / PI_TIMESERIES)).transaction_version(APP) == planned
    assert DeltaTable(str(target / CHECKPOINTS)).transaction_version(APP) == planned
    cps = state(target, CHECKPOINTS).group_by("tag_webid").agg(pl.col("checkpoint").max())
    assert cps["checkpoint"].unique().to_list() == [end]
    table = read_table(target)
    assert_no_duplicates(table)
    assert_same(table, expected(truth_for(mock), {w: (ORIGIN, end) for w in cps["tag_webid"]}))


async def test_state_rows_per_app_id_stay_bounded_over_many_commits(
    mock_pi_factory: Callable[..., MockServer], tmp_path: Path
) -> None:
    """Folded every ten commits: the plans of the last ten batch ids and one summary row
    per tag, the latest checkpoint per tag; the same after 30 commits as after 50."""
    clock = SimClock.start()
    mock = mock_pi_factory(clock=clock, tag_count=TAG_COUNT, rate_limit=0)
    target = tmp_path / "lake"
    rows: dict[int, tuple[int, int]] = {}
    async with Pipeline(settings_for(mock, target), clock=clock.now) as pipeline:
        await pipeline.prepare()
        for k in range(1, 51):
            await pipeline.catch_up(ORIGIN + k * STEP)
            await pipeline.flush()
            if k % 10 == 0:
                await pipeline.compact_state()
                rows[k] = (state(target, BATCHES).height, state(target, CHECKPOINTS).height)
    bound = (TAG_COUNT * 11, TAG_COUNT)  # ten recent plans and a summary; one checkpoint
    assert rows == {10: (TAG_COUNT * 10, TAG_COUNT), 20: bound, 30: bound, 40: bound, 50: bound}
    summary = state(target, BATCHES).filter(pl.col("batch_id") <= 40)
    assert summary["range_start"].unique().to_list() == [first_checkpoint(ORIGIN)]
    assert summary["range_end"].unique().to_list() == [ORIGIN + 40 * STEP]
    table = read_table(target)
    assert_no_duplicates(table)
    end = ORIGIN + 50 * STEP
    tags = state(target, CHECKPOINTS)["tag_webid"]
    assert_same(table, expected(truth_for(mock), {w: (ORIGIN, end) for w in tags}))
