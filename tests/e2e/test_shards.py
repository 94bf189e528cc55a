"""Four worker processes own four shards of one table; then four shards become five while
running. The table equals the ground truth at both stages, with no duplicate key.

Resharding procedure exercised here: start the five new workers while the four old ones
still run. The first new worker announces generation 2 (5 shards) in `_pidelta_shards`
and the others join it; once all five have joined, the old workers see the new
generation take over at their next poll, flush what they hold and exit 0; a drain later
the new ones fence pi_timeseries and continue every tag from its per-tag checkpoint.
Size: 400 tags, 10 minutes behind now at start, on the tests' fixed clock (`SimClock`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl

from tests.conftest import MockServer, SimClock
from tests.e2e.helpers import (
    Worker,
    assert_no_duplicates,
    assert_same,
    checkpoints,
    expected,
    fixed_past,
    iso,
    read_table,
    start_worker,
    truth_for,
    wait_for,
    within,
    worker_env,
)

TAGS = 400


def _start(env: dict[str, str], count: int, logs: Path) -> list[Worker]:
    return [
        start_worker(
            "run",
            env={**env, "PIDELTA_SHARD_INDEX": str(i), "PIDELTA_SHARD_COUNT": str(count)},
            log=logs / f"shard-{i}-of-{count}.log",
        )
        for i in range(count)
    ]


def _caught_up(target: Path, since: datetime) -> Callable[[], bool]:
    def check() -> bool:
        try:
            cps = checkpoints(target)
        except Exception:
            return False
        return len(cps) == TAGS and min(cps.values()) >= since

    return check


def _check(mock: MockServer, target: Path, origin: datetime) -> dict[str, datetime]:
    """Rows up to each tag's checkpoint equal the truth; nothing anywhere is duplicated.

    Workers run meanwhile, so rows past a checkpoint (a batch between its commit and its
    checkpoint) are allowed; they are checked at the next stage.
    """
    cps = checkpoints(target)
    table = read_table(target)
    assert_no_duplicates(table)
    ranges = {w: (origin, c) for w, c in cps.items()}
    assert_same(within(table, ranges), expected(truth_for(mock), ranges))
    return cps


def test_four_shards_then_five(mock_pi_factory: Callable[..., MockServer], tmp_path: Path) -> None:
    clock = SimClock.start()
    mock = mock_pi_factory(clock=clock, tag_count=TAGS, rate_limit=0)
    origin = fixed_past(10)
    target = tmp_path / "lake"
    env = worker_env(
        mock, target, start=iso(origin), poll_interval=1, safety_lag=2, late_lookback=10
    )
    old = _start(env, 4, tmp_path)
    new: list[Worker] = []
    try:
        assert wait_for(_caught_up(target, clock.now() - timedelta(seconds=3)), 120)
        by_app = pl.from_arrow(read_table(target, "_pidelta_checkpoints"))
        # Each shard's recorded batches, and its stream-update follower's once it committed.
        apps = {a.replace("-updates-", "-") for a in by_app["app_id"].unique().to_list()}
        assert apps == {f"pidelta-ts-{i}-of-4" for i in range(4)}
        _check(mock, target, origin)

        new = _start(env, 5, tmp_path)
        for worker in old:
            assert worker.process.wait(90) == 0, worker.text()[-3000:]
            # Told within a poll, inside the drain: it flushes as on SIGTERM.
            told = "stopping: shard generation 2 (5 shards) took over; flushing"
            assert told in worker.text(), worker.text()[-3000:]
        resumed = clock.now()
        assert wait_for(_caught_up(target, resumed), 120)
        time.sleep(2)
        by_app = pl.from_arrow(read_table(target, "_pidelta_checkpoints"))
        # A new shard may follow on from the old followers' markers with no recorded read.
        apps = {a.replace("-updates-", "-") for a in by_app["app_id"].unique().to_list()}
        assert {f"pidelta-ts-{i}-of-5" for i in range(5)} <= apps
    finally:
        for worker in old + new:
            assert worker.terminate() == 0, worker.text()[-3000:]
    cps = _check(mock, target, origin)
    assert_same(
        read_table(target), expected(truth_for(mock), {w: (origin, c) for w, c in cps.items()})
    )
