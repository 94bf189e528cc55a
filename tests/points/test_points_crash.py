"""`pidelta points` as a subprocess against a mock-pi whose points change every few seconds,
killed with SIGKILL at random instants of its syncs: the history has no gap and no
duplicate version, and a final sync leaves one current version per point PI lists."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl

from tests.conftest import MockServer
from tests.e2e.helpers import ok, pidelta, read_table, start_worker, wait_for, worker_env
from tests.mock_pi import get, url

KILLS = 6
SEED = 20261204
STARTED = "discovered "  # logged once the sync has listed the points


def assert_history_is_whole(target: Path) -> pl.DataFrame:
    """Per point: versions one after the other, no overlap, no gap, one open at most."""
    found = pl.from_arrow(read_table(target, "pi_points")).sort("point_id", "valid_from")
    assert found.select("point_id", "valid_from").is_duplicated().sum() == 0
    chained = found.with_columns(
        pl.col("valid_from").shift(-1).over("point_id").alias("next_start"),
        pl.len().over("point_id").alias("versions"),
        (pl.int_range(pl.len()).over("point_id") + 1).alias("position"),
    )
    last = chained.filter(pl.col("position") == pl.col("versions"))
    inner = chained.filter(pl.col("position") < pl.col("versions"))
    assert (inner["valid_to"] == inner["next_start"]).all()
    assert (~inner["is_current"]).all()
    assert inner["deleted_at"].is_null().all()
    open_ = last.filter(pl.col("is_current"))
    assert open_["valid_to"].is_null().all()
    assert open_["deleted_at"].is_null().all()
    gone = last.filter(~pl.col("is_current"))
    assert (gone["valid_to"] == gone["deleted_at"]).all()
    return found


def test_kill9_during_points_syncs(
    mock_pi_factory: Callable[..., MockServer], tmp_path: Path
) -> None:
    mock = mock_pi_factory(tag_count=2000, rate_limit=0, point_changes=0.3,
                           point_change_seconds=20)  # fmt: skip
    target = tmp_path / "lake"
    env = worker_env(mock, target, points_batch_size=40)
    log = tmp_path / "points.log"
    rng = random.Random(SEED)
    instants = []
    ok(pidelta("points", env=env))  # a first version of every point
    first_sync = time.monotonic()
    for _ in range(KILLS):
        before = log.read_text().count(STARTED) if log.exists() else 0
        worker = start_worker("points", env=env, log=log)
        assert wait_for(lambda w=worker, b=before: log.read_text().count(STARTED) > b
                        or not w.alive(), 120)  # fmt: skip
        instants.append(round(rng.uniform(0.0, 2.5), 2))
        time.sleep(instants[-1])
        worker.kill9()
    # Past one change period after the first sync, every changing point has changed.
    time.sleep(max(0.0, first_sync + 21 - time.monotonic()))
    ok(pidelta("points", env=env))
    try:
        found = assert_history_is_whole(target)
    except AssertionError as exc:
        raise AssertionError(f"kill instants {instants}: {exc}") from None
    # Every point of the last sync has its one current version.
    current = found.filter(pl.col("is_current"))
    assert current["point_id"].n_unique() == current.height
    _, servers = get(mock.url + "/dataservers")
    ds = servers["Items"][0]["WebId"]
    _, listed = get(url(mock.url, f"/dataservers/{ds}/points", maxCount=5000,
                        selectedFields="Items.Id"))  # fmt: skip
    assert abs(current.height - len(listed["Items"])) <= 2000 * 0.3 / 3  # moments apart
    assert found.height > current.height  # the changes made history
