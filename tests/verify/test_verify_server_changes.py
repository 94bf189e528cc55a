"""`pidelta verify` finds what PI changed while no worker ran, and repairs it.

A backfill loads the minute before `FIXED_NOW`, before any of it changes; mock-pi then
edits and deletes some of those values (`MOCK_PI_CHANGE_SECONDS` after their timestamps)
with no worker running, so no stream update ever reaches pidelta. Server, worker and
truth share one simulated clock, so the window and the changes are the same on every run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import polars as pl

from tests.conftest import FIXED_NOW, MockServer, SimClock
from tests.e2e.helpers import (
    assert_same,
    expected,
    iso,
    ok,
    pidelta,
    read_table,
    truth_for,
    within,
    worker_env,
)

CHANGE_SECONDS = 90
START = FIXED_NOW - timedelta(minutes=1)
END = FIXED_NOW  # one 60 s bucket
SAFETY_LAG = 2


def test_verify_repairs_edits_and_deletions_made_while_no_worker_ran(
    mock_pi_factory: Callable[..., MockServer], tmp_path: Path
) -> None:
    # The clock starts past END + the safety lag: a backfill caps its end at now - lag, and
    # one started within the lag of END left the window's last values out (2 of 155 in a
    # CI run on a quiet machine).
    clock = SimClock.start(END + timedelta(seconds=SAFETY_LAG + 1))
    mock = mock_pi_factory(
        clock=clock,
        tag_count=20,
        rate_limit=0,
        edit_fraction=0.1,
        delete_fraction=0.05,
        change_seconds=CHANGE_SECONDS,
    )
    truth = truth_for(mock)
    # Numeric points only (TI, PI, ... SI): an edit of a digital or string value that keeps
    # the bucket's count is not visible in PI's summaries (README, Verification).
    env = worker_env(
        mock, tmp_path, tag_filter="*I-*", verify_bucket=60, safety_lag=SAFETY_LAG, updates="false"
    )
    window = ["--start", iso(START), "--end", iso(END)]
    ok(pidelta("backfill", *window, env=env))
    loaded_at = clock.time()
    first_change = START + timedelta(seconds=CHANGE_SECONDS)
    assert loaded_at < first_change.timestamp(), "the backfill ran past the first change"
    tags = read_table(tmp_path).column("tag_webid").unique().to_pylist()
    ranges = {w: (START, END - timedelta(microseconds=1)) for w in tags}
    assert_same(within(read_table(tmp_path), ranges), expected(truth, ranges, at=loaded_at))

    # Every value of the window has met its change moment: the archive differs from the table.
    time.sleep(
        max(0.0, (END + timedelta(seconds=CHANGE_SECONDS + 5) - clock.now()).total_seconds())
    )
    before, after = expected(truth, ranges, at=loaded_at), expected(truth, ranges)
    changed = pl.from_arrow(before).join(
        pl.from_arrow(after), on=list(after.column_names), how="anti"
    )
    assert changed.height > 0, "mock-pi changed nothing in the window"

    dry = pidelta("verify", *window, "--dry-run", env=env)
    assert dry.returncode == 1, dry.stderr[-2000:]
    ok(pidelta("verify", *window, env=env))
    assert_same(within(read_table(tmp_path), ranges), expected(truth, ranges))
    results = pl.from_arrow(read_table(tmp_path, "_pidelta_verification"))
    assert results.filter(pl.col("result") == "failed").height == 0
    assert results.filter(pl.col("result") == "repaired").height > 0
    ok(pidelta("verify", *window, "--dry-run", env=env))
