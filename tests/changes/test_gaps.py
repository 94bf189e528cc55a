"""Where no marker covers a tag: a marker that expires while the worker is down, a reshard
while following, and a server without stream updates. The gap is re-read from recorded
values (late values land, once); the table equals PI's archive as of its checkpoints, but
for edits and deletions made inside the gap, which `pidelta verify` repairs."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl

from mock_pi.truth import GroundTruth
from tests.changes.helpers import (
    SLACK,
    assert_table_as_of,
    follower_env,
    follower_ranges,
    pause,
    wait_following,
)
from tests.conftest import MockServer, SimClock
from tests.e2e.helpers import (
    checkpoints,
    fixed_past,
    metrics_port_env,
    read_table,
    scrape,
    start_worker,
    truth_for,
    wait_for,
)

TAGS = 100
CHANGES = {
    "tag_count": TAGS,
    "rate_limit": 0,
    "late_fraction": 0.2,
    "late_seconds": 8,
    "edit_fraction": 0.03,
    "delete_fraction": 0.02,
    "change_seconds": 4,
}


def _changed_within(
    truth: GroundTruth,
    ranges: dict[str, tuple[datetime, datetime]],
    lo: datetime,
    hi: datetime,
) -> pl.DataFrame:
    """Keys edited or deleted between two moments (no marker saw them)."""
    rows = []
    for webid, (start, end) in ranges.items():
        for _, value, at in truth.changes(webid, start, end):
            if (lo - SLACK).timestamp() * 1e7 <= at <= (hi + SLACK).timestamp() * 1e7:
                rows.append({"tag_webid": webid, "ts": value["Timestamp"]})
    frame = pl.DataFrame(rows, schema={"tag_webid": pl.String, "ts": pl.String})
    return frame.with_columns(
        pl.col("ts").str.to_datetime(time_unit="us", time_zone="UTC").alias("timestamp")
    ).drop("ts")


def test_marker_expires_while_the_worker_is_down(
    mock_pi_factory: Callable[..., MockServer], tmp_path: Path
) -> None:
    clock = SimClock.start()
    mock = mock_pi_factory(clock=clock, marker_retention=6, **CHANGES)
    truth = truth_for(mock)
    origin = fixed_past(5)
    target = tmp_path / "lake"
    env, port = metrics_port_env(follower_env(mock, target, origin, late_lookback=30))
    log = tmp_path / "worker.log"
    worker = start_worker("run", env=env, log=log)
    try:
        assert wait_following(target, TAGS), worker.text()[-3000:]
        assert worker.terminate() == 0, worker.text()[-3000:]
        down = clock.now()
        pause(12)  # past the markers' retention
        worker = start_worker("run", env=env, log=log)
        assert wait_for(lambda: _expired(port) >= TAGS, 90), worker.text()[-3000:]
        up = clock.now()
        pause(20)
    finally:
        assert worker.terminate() == 0, worker.text()[-3000:]
    ranges, _ = follower_ranges(target, origin)
    assert_table_as_of(
        read_table(target), truth, ranges, unseen=_changed_within(truth, ranges, down, up)
    )


def _expired(port: int) -> float:
    try:
        return sum(v for k, v in scrape(port).items() if k.startswith("pidelta_marker_expiries"))
    except OSError:
        return 0.0


def test_reshard_while_following(
    mock_pi_factory: Callable[..., MockServer], tmp_path: Path
) -> None:
    clock = SimClock.start()
    mock = mock_pi_factory(clock=clock, **CHANGES)
    truth = truth_for(mock)
    origin = fixed_past(5)
    target = tmp_path / "lake"
    base = follower_env(mock, target, origin, late_lookback=30)
    log = tmp_path / "worker.log"
    one = start_worker("run", env=base, log=log)
    workers = [one]
    try:
        assert wait_following(target, TAGS), one.text()[-3000:]
        pause(5)
        moved = clock.now()
        workers = [
            start_worker(
                "run",
                env={**base, "PIDELTA_SHARD_INDEX": str(i), "PIDELTA_SHARD_COUNT": "2"},
                log=log,
            )
            for i in range(2)
        ]
        assert wait_for(lambda: not one.alive(), 90), one.text()[-3000:]

        def following_two() -> bool:
            try:
                frame = pl.from_arrow(read_table(target, "_pidelta_markers"))
            except Exception:
                return False
            two = frame.filter(pl.col("app_id").str.ends_with("-of-2"))
            return two["tag_webid"].n_unique() >= TAGS

        assert wait_for(following_two, 120), workers[0].text()[-3000:]
        settled = clock.now()
        pause(20)
    finally:
        for w in workers:
            assert w.terminate() == 0, w.text()[-3000:]
    ranges, _ = follower_ranges(target, origin)
    # The new shards took over the old follower's markers: PI reported what changed while
    # the tags moved, so nothing is left to `pidelta verify`.
    taken = re.findall(r"took over the stream-update markers of (\d+)", log.read_text())
    assert sum(map(int, taken)) == TAGS
    assert assert_table_as_of(read_table(target), truth, ranges) > 1000
    assert moved < settled


def test_updates_switched_off_on_the_server(
    mock_pi_factory: Callable[..., MockServer], tmp_path: Path
) -> None:
    clock = SimClock.start()
    mock = mock_pi_factory(
        clock=clock, updates=False, **{**CHANGES, "edit_fraction": 0, "delete_fraction": 0}
    )
    truth = truth_for(mock)
    origin = fixed_past(5)
    target = tmp_path / "lake"
    env, port = metrics_port_env(follower_env(mock, target, origin, late_lookback=30))
    worker = start_worker("run", env=env, log=tmp_path / "worker.log")
    try:
        launched = clock.now()
        assert wait_for(lambda: _caught_up(target, launched), 120), worker.text()[-3000:]
        pause(8 + 30 / 4 + 8)
        metrics = scrape(port)
    finally:
        assert worker.terminate() == 0, worker.text()[-3000:]
    rereads = sum(v for k, v in metrics.items() if k.startswith("pidelta_fallback_rereads_total"))
    assert rereads >= TAGS
    assert read_table(target, "_pidelta_markers").num_rows == 0
    ranges, _ = follower_ranges(target, origin)
    # Values up to a look-back behind the checkpoints have had their re-reads: compare those.
    settled = {w: (s, e - timedelta(seconds=30)) for w, (s, e) in ranges.items()}
    assert_table_as_of(read_table(target), truth, settled, clock.now())


def _shard(index: int, count: int) -> dict[str, str]:
    return {"PIDELTA_SHARD_INDEX": str(index), "PIDELTA_SHARD_COUNT": str(count)}


def _caught_up(target: Path, since: datetime) -> bool:
    try:
        cps = checkpoints(target)
    except Exception:
        return False
    return len(cps) == TAGS and min(cps.values()) >= since
