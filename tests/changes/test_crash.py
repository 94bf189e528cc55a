"""kill -9 at seeded random moments while stream-update changes are applied: after the
restarts the table equals PI's archive as of its checkpoints, and no change is logged twice."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

from tests.changes.helpers import (
    SCALE,
    assert_log_matches,
    assert_table_as_of,
    change_log,
    follower_env,
    follower_ranges,
    pause,
    wait_following,
)
from tests.conftest import MockServer, SimClock
from tests.e2e.helpers import (
    fixed_past,
    read_table,
    start_worker,
    truth_for,
    wait_for,
)

TAGS = 120
READY = " owns "  # the line a worker logs once its start-up (recovery included) is done


def ready_count(log: Path) -> int:
    return log.read_text(errors="replace").count(READY) if log.exists() else 0


def test_kill9_while_applying_changes(
    mock_pi_factory: Callable[..., MockServer], tmp_path: Path
) -> None:
    clock = SimClock.start()
    mock = mock_pi_factory(
        clock=clock,
        tag_count=TAGS,
        rate_limit=0,
        late_fraction=0.2,
        late_seconds=1800,
        edit_fraction=0.05,
        delete_fraction=0.02,
        change_seconds=8,
    )
    truth = truth_for(mock)
    origin = fixed_past(10)
    target = tmp_path / "lake"
    env = follower_env(mock, target, origin)
    env["PIDELTA_COMMIT_MAX_AGE"] = "2"
    log = tmp_path / "worker.log"
    rng = random.Random(13)
    worker = start_worker("run", env=env, log=log)
    windows = []  # from each worker's start-up to its kill: when changes are followed
    try:
        assert wait_following(target, TAGS), worker.text()[-3000:]
        since = clock.now()
        for _ in range(round(3 * SCALE)):
            pause(rng.uniform(2.0, 9.0))
            windows.append((since, clock.now()))
            worker.kill9()
            before = ready_count(log)
            worker = start_worker("run", env=env, log=log)
            assert wait_for(lambda w=worker, b=before: ready_count(log) > b or not w.alive(), 60)
            since = clock.now()
        pause(25 * SCALE)
    finally:
        assert worker.terminate() == 0, worker.text()[-3000:]
    table = read_table(target)
    ranges, at = follower_ranges(target, origin)
    windows.append((since, at))
    assert len(ranges) == TAGS
    assert assert_table_as_of(table, truth, ranges) > 1000
    late = {w for w in ranges if truth.point(w).late}
    tally = assert_log_matches(change_log(target), table, truth, ranges, windows, late)
    assert tally.get("Update", 0) > 0, tally
