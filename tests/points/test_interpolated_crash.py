"""The interpolated grid killed with SIGKILL at random instants of its commits, against a
mock-pi whose values arrive late: no grid time missing, none twice, and the values equal
what PI returns once they have all arrived."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import polars as pl
from deltalake import DeltaTable

from tests.conftest import MockServer, SimClock
from tests.e2e.helpers import wait_for, worker_env
from tests.mock_pi import get, url
from tests.points.sync_child import start_sync, started
from workers.lake.schemas import PI_INTERPOLATED

KILLS = 6
SEED = 20261205
STARTED = started("interpolated")


def served(mock: MockServer, webids: list[str], start: str, end: str) -> pl.DataFrame:
    _, body = get(url(mock.url, "/streamsets/interpolated", webId=webids, startTime=start,
                      endTime=end, interval="1m"))  # fmt: skip
    # float() here: Int32 tags answer JSON integers, and a column inferred from them would
    # truncate the floats of the tags after them (group_by puts tags in any order).
    rows = [
        (s["WebId"], i["Timestamp"],
         float(i["Value"]) if isinstance(i["Value"], int | float) else None)
        for s in body["Items"]
        for i in s["Items"]
    ]  # fmt: skip
    frame = pl.DataFrame(
        rows,
        schema={"tag_webid": pl.String, "timestamp": pl.String, "value": pl.Float64},
        orient="row",
    )
    return frame.with_columns(pl.col("timestamp").str.to_datetime(time_zone="UTC", time_unit="us"))


def test_kill9_during_grid_commits(
    mock_pi_factory: Callable[..., MockServer], tmp_path: Path
) -> None:
    clock = SimClock.start()
    mock = mock_pi_factory(clock=clock, tag_count=30, rate_limit=0, late_fraction=0.5,
                           late_seconds=30)  # fmt: skip
    target = tmp_path / "lake"
    env = worker_env(mock, target, interpolated_interval="1m", start="*-3h",
                     interpolated_max_points=10, safety_lag=0)  # fmt: skip
    log = tmp_path / "grid.log"
    rng = random.Random(SEED)
    instants = []
    for _ in range(KILLS):
        before = log.read_text().count(STARTED) if log.exists() else 0
        worker = start_sync("interpolated", env, log)
        assert wait_for(lambda w=worker, b=before: log.read_text().count(STARTED) > b
                        or not w.alive(), 120)  # fmt: skip
        instants.append(round(rng.uniform(0.0, 3.0), 2))
        time.sleep(instants[-1])
        worker.kill9()
    final = start_sync("interpolated", env, log)
    assert final.process.wait(300) == 0, log.read_text()[-3000:]

    found = pl.from_arrow(
        DeltaTable(str(target / PI_INTERPOLATED)).to_pyarrow_table(
            columns=["tag_webid", "timestamp", "value"]
        )
    )
    context = f"kill instants {instants}"
    assert found.select("tag_webid", "timestamp").is_duplicated().sum() == 0, context
    per_tag = found.group_by("tag_webid").agg(
        pl.col("timestamp").min().alias("first"),
        pl.col("timestamp").max().alias("last"),
        pl.len().alias("n"),
    )
    assert per_tag.height == 30, context
    assert per_tag["first"].n_unique() == per_tag["last"].n_unique() == 1, context
    first, last = per_tag["first"][0], per_tag["last"][0]
    minutes = int((last - first).total_seconds() // 60) + 1
    assert (per_tag["n"] == minutes).all(), context  # no grid time missing
    assert minutes >= 180, context
    # Values equal PI's, up to two minutes before the end (later ones may still change).
    end = last - timedelta(minutes=2)
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    truth = served(mock, per_tag["tag_webid"].to_list(), first.strftime(fmt), end.strftime(fmt))
    mine = found.filter(pl.col("timestamp") <= end)
    assert mine.height == truth.height, context
    joined = mine.join(truth, on=["tag_webid", "timestamp"], how="inner", suffix="_pi")
    assert joined.height == truth.height, context
    assert joined.filter(~pl.col("value").eq_missing(pl.col("value_pi"))).height == 0, context
