"""`run` follows PI's archive through stream updates: values released half an hour late,
edits (2%) and deletions (1%) land in pi_timeseries, each logged once in
pi_timeseries_changes, and the table equals the archive as of the last retrieval."""

from __future__ import annotations

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
from tests.e2e.helpers import fixed_past, read_table, start_worker, truth_for

TAGS = 150


def test_late_edited_and_deleted_values_follow_the_archive(
    mock_pi_factory: Callable[..., MockServer], tmp_path: Path
) -> None:
    clock = SimClock.start()
    mock = mock_pi_factory(
        clock=clock,
        tag_count=TAGS,
        rate_limit=0,
        late_fraction=0.2,
        late_seconds=1800,
        edit_fraction=0.02,
        delete_fraction=0.01,
        change_seconds=15,
    )
    truth = truth_for(mock)
    origin = fixed_past(35)
    target = tmp_path / "lake"
    env = follower_env(mock, target, origin)
    worker = start_worker("run", env=env, log=tmp_path / "worker.log")
    try:
        assert wait_following(target, TAGS), worker.text()[-3000:]
        since = clock.now()
        pause(45 * SCALE)
    finally:
        assert worker.terminate() == 0, worker.text()[-3000:]
    table = read_table(target)
    ranges, at = follower_ranges(target, origin)
    assert len(ranges) == TAGS
    compared = assert_table_as_of(table, truth, ranges)
    assert compared > 10_000
    late = {w for w in ranges if truth.point(w).late}
    tally = assert_log_matches(change_log(target), table, truth, ranges, [(since, at)], late)
    assert tally.get("Update", 0) > 0, tally
    assert tally.get("Delete", 0) > 0, tally
    assert tally.get("Add", 0) > 0, tally
