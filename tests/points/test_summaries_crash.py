"""`pi_summaries` killed with SIGKILL at random instants of its commits, against a mock-pi
whose values arrive late, on a fixed simulated clock: no bucket missing, none twice, and
the values equal what PI returns once they have all arrived."""

from __future__ import annotations

import json
import random
import time
import urllib.request
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import polars as pl
from deltalake import DeltaTable

from tests.conftest import MockServer, SimClock
from tests.e2e.helpers import fixed_past, wait_for, worker_env
from tests.mock_pi import get, url
from tests.points.sync_child import start_sync, started
from workers.lake.schemas import PI_SUMMARIES, SET_ASIDE

KILLS = 6
SEED = 20261204
TAGS = 30
STARTED = started("summaries")
SUMMARIES = {"10m": ("Average", "Count"), "1h": ("Maximum", "Total")}
SECONDS = {"10m": 600, "1h": 3600}


def served(
    mock: MockServer, webids: list[str], duration: str, start: str, end: str
) -> pl.DataFrame:
    """PI's values per (tag, type, bucket) of [start, end), null where PI has no good one."""
    types = SUMMARIES[duration]
    _, body = get(url(mock.url, "/streamsets/summary", webId=webids, startTime=start,
                      endTime=end, summaryDuration=duration, summaryType=list(types),
                      calculationBasis="TimeWeighted", timeType="EarliestTime"))  # fmt: skip
    # float() here: a Count is a JSON integer, and a column inferred from it would truncate
    # the floats of the rows after it.
    rows = [
        (s["WebId"], i["Type"], i["Value"]["Timestamp"],
         float(i["Value"]["Value"]) if i["Value"]["Good"] else None)
        for s in body["Items"]
        for i in s["Items"]
    ]  # fmt: skip
    schema = {"tag_webid": pl.String, "summary_type": pl.String, "bucket_start": pl.String,
              "value": pl.Float64}  # fmt: skip
    frame = pl.DataFrame(rows, schema=schema, orient="row")
    return frame.with_columns(
        pl.col("bucket_start").str.to_datetime(time_zone="UTC", time_unit="us")
    )


def test_kill9_during_summary_commits(
    mock_pi_factory: Callable[..., MockServer], tmp_path: Path
) -> None:
    kill9_and_check(mock_pi_factory, tmp_path, refused=0)


def test_kill9_while_pi_refuses_tags_then_answers(
    mock_pi_factory: Callable[..., MockServer], tmp_path: Path
) -> None:
    """The refused tags' ranges are noted and MERGEd in separate commits: a kill between
    them must leave no bucket of theirs missing once PI answers again."""
    kill9_and_check(mock_pi_factory, tmp_path, refused=3)


def refuse(mock: MockServer, webids: list[str]) -> None:
    """mock-pi's test switch: item errors for these WebIDs in summaries from now on."""
    request = urllib.request.Request(
        f"{mock.url}/mock/refuse", data=json.dumps({"WebIds": webids}).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert json.loads(resp.read())["WebIds"] == sorted(webids)


def kill9_and_check(
    mock_pi_factory: Callable[..., MockServer], tmp_path: Path, *, refused: int
) -> None:
    """Syncs killed at random instants (`refused` tags refused by PI meanwhile), then one
    that finishes with PI answering every tag: the table is whole and equals PI."""
    clock = SimClock.start()
    mock = mock_pi_factory(clock=clock, tag_count=TAGS, rate_limit=0, late_fraction=0.5,
                           late_seconds=600)  # fmt: skip
    if refused:
        _, body = get(url(mock.url, "/dataservers"))
        server = body["Items"][0]["WebId"]
        _, points = get(url(mock.url, f"/dataservers/{server}/points", maxCount=str(TAGS)))
        refuse(mock, sorted(p["WebId"] for p in points["Items"])[:refused])
    target = tmp_path / "lake"
    spec = ";".join(f"{d}:{','.join(t)}" for d, t in SUMMARIES.items())
    env = worker_env(mock, target, summaries=spec, summaries_max_buckets=12, safety_lag=0,
                     start=fixed_past(3 * 24 * 60).isoformat())  # fmt: skip
    log = tmp_path / "summaries.log"
    rng = random.Random(SEED)
    instants = []
    for _ in range(KILLS):
        before = log.read_text().count(STARTED) if log.exists() else 0
        worker = start_sync("summaries", env, log)
        assert wait_for(lambda w=worker, b=before: log.read_text().count(STARTED) > b
                        or not w.alive(), 120)  # fmt: skip
        instants.append(round(rng.uniform(0.0, 3.0), 2))
        time.sleep(instants[-1])
        worker.kill9()
    if refused:
        # One whole sync while refused (so ranges are noted whatever the kills hit).
        assert start_sync("summaries", env, log).process.wait(300) == 0, log.read_text()[-3000:]
        refuse(mock, [])
    final = start_sync("summaries", env, log)
    assert final.process.wait(300) == 0, log.read_text()[-3000:]

    found = pl.from_arrow(
        DeltaTable(str(target / PI_SUMMARIES)).to_pyarrow_table(
            columns=["tag_webid", "duration", "summary_type", "bucket_start", "value"]
        )
    )
    context = f"kill instants {instants}"
    key = ["tag_webid", "duration", "summary_type", "bucket_start"]
    assert found.select(key).is_duplicated().sum() == 0, context
    for duration, types in SUMMARIES.items():
        mine = found.filter(pl.col("duration") == duration)
        per_series = mine.group_by("tag_webid", "summary_type").agg(
            pl.col("bucket_start").min().alias("first"),
            pl.col("bucket_start").max().alias("last"),
            pl.len().alias("n"),
        )
        assert per_series.height == TAGS * len(types), context
        assert per_series["first"].n_unique() == per_series["last"].n_unique() == 1, context
        first, last = per_series["first"][0], per_series["last"][0]
        assert first == fixed_past(3 * 24 * 60), context
        buckets = int((last - first).total_seconds()) // SECONDS[duration] + 1
        assert (per_series["n"] == buckets).all(), context  # no bucket missing
        # Values equal PI's, but for the last buckets (late values may still change them).
        step = timedelta(seconds=SECONDS[duration])
        end = first + (last + step - timedelta(minutes=30) - first) // step * step
        fmt = "%Y-%m-%dT%H:%M:%SZ"
        truth = served(mock, sorted(per_series["tag_webid"].unique().to_list()), duration,
                       first.strftime(fmt), end.strftime(fmt))  # fmt: skip
        settled = mine.filter(pl.col("bucket_start") < end).drop("duration")
        assert settled.height == truth.height, context
        joined = settled.join(truth, on=key[:1] + key[2:], how="inner", suffix="_pi")
        assert joined.height == truth.height, context
        assert joined.filter(~pl.col("value").eq_missing(pl.col("value_pi"))).height == 0, context
    if refused:
        aside = pl.from_arrow(DeltaTable(str(target / SET_ASIDE)).to_pyarrow_table())
        noted = aside.filter(pl.col("resolved_at").is_null())
        closed = aside.filter(pl.col("resolved_at").is_not_null())
        assert noted["tag_webid"].n_unique() == refused, context
        key = ["tag_webid", "range_start", "range_end"]
        assert noted.join(closed, on=key, how="anti").height == 0, context  # all resolved
