"""`pi_summaries` against mock-pi over HTTP (its clock set by the test): the table equals
what `/streamsets/summary` returns for the same buckets, also after late values changed
buckets already written; `pidelta once` and `pidelta run` write them; a bad
PIDELTA_SUMMARIES stops the service with exit code 2."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import polars as pl
import pytest
from deltalake import DeltaTable

from tests.conftest import MockServer, SimClock
from tests.e2e.helpers import fixed_past, ok, pidelta, start_worker, wait_for, worker_env
from tests.mock_pi import url
from tests.points.conftest import Clock, iso
from workers.lake.schemas import PI_SUMMARIES
from workers.lake.tables import TableStore
from workers.lake.writer import DeltaWriter
from workers.pi.client import PIClient
from workers.settings import Settings, load_settings
from workers.timeseries.discovery import TagInfo, discover_tags
from workers.timeseries.summary_table import SummaryResult, app_id, sync_summaries

HOUR = 3600
T0 = 1_780_002_000.0 + 300  # five minutes past a whole hour: 2026-05-28T21:05:00Z
TAGS = 12
HOURLY = ("Average", "Minimum", "Maximum", "Count", "StdDev", "PercentGood")
SUMMARIES = f"1h:{','.join(HOURLY)};1d:Average,Total"


async def served_summaries(
    base: str, tags: list[TagInfo], duration: str, seconds: int, types: tuple[str, ...],
    start: float, end: float, basis: str = "TimeWeighted",
) -> set[tuple]:  # fmt: skip
    """What PI returns for the buckets of [start, end), per (tag, bucket, type): the value
    or PI's state name, the percent good and the units."""
    params = {"webId": [t.webid for t in tags], "startTime": iso(start), "endTime": iso(end),
              "summaryDuration": duration, "summaryType": [*types, "PercentGood"],
              "calculationBasis": basis, "timeType": "EarliestTime"}  # fmt: skip
    async with (
        aiohttp.ClientSession() as session,
        session.get(url(base, "/streamsets/summary", **params)) as resp,
    ):
        assert resp.status == 200
        body = await resp.json()
    out = set()
    for stream in body["Items"]:
        items = stream["Items"]
        good = [i["Value"]["Value"] for i in items if i["Type"] == "PercentGood"]
        for kind in types:
            mine = [i["Value"] for i in items if i["Type"] == kind]
            assert len(mine) == len(good) == (end - start) // seconds
            for k, value in enumerate(mine):
                moment = datetime.fromtimestamp(start + k * seconds, UTC)
                state = value["Value"]["Name"] if isinstance(value["Value"], dict) else None
                number = None if state else float(value["Value"])
                percent = None if isinstance(good[k], dict) else float(good[k])
                out.add((stream["WebId"], duration, kind, moment, number, state, percent,
                         value["UnitsAbbreviation"]))  # fmt: skip
    return out


def table_rows(target: str, basis: str = "TimeWeighted") -> list[tuple]:
    rows = DeltaTable(f"{target}/{PI_SUMMARIES}").to_pyarrow_table().to_pylist()
    for r in rows:
        length = (r["bucket_end"] - r["bucket_start"]).total_seconds()
        assert length == {"1h": HOUR, "1d": 86_400}[r["duration"]]
        assert r["calculation_basis"] == basis
        assert r["date"] == r["bucket_start"].date()
    return [
        (r["tag_webid"], r["duration"], r["summary_type"], r["bucket_start"], r["value"],
         r["system_state"], r["percent_good"], r["units"])
        for r in rows
    ]  # fmt: skip


async def summaries_sync(settings: Settings, clock: Clock) -> tuple[list[TagInfo], Any]:
    writer = DeltaWriter.from_settings(settings, TableStore.from_settings(settings))
    async with PIClient(settings) as client:
        tags = await discover_tags(client, settings)
        return tags, await sync_summaries(settings, client, tags, writer,
                                          now_us=round(clock.t * 1_000_000))  # fmt: skip


def settings_for(base: str, target: str, **extra: Any) -> Settings:
    values = {"summaries": SUMMARIES, "start": iso(T0 - 2 * 86_400), "safety_lag": 0, **extra}
    return load_settings(pi_url=base, target=target, **values)


async def truth(base: str, tags: list[TagInfo], hourly_end: float) -> set[tuple]:
    day_start = (T0 - 2 * 86_400) // 86_400 * 86_400 + 86_400
    return await served_summaries(
        base, tags, "1h", HOUR, HOURLY, T0 - 2 * 86_400 + HOUR - 300, hourly_end
    ) | await served_summaries(base, tags, "1d", 86_400, ("Average", "Total"), day_start,
                               day_start + 86_400)  # fmt: skip


async def test_the_table_equals_what_pi_returns(mock_at: Callable[..., Any], tmp_path: Any) -> None:
    base, clock = await mock_at(T0, TAGS)
    target = str(tmp_path / "lake")
    settings = settings_for(base, target, summaries_max_buckets=10)
    tags, results = await summaries_sync(settings, clock)
    found = table_rows(target)
    hourly_end = T0 - 300
    assert len(found) == len(set(found)) == TAGS * (47 * len(HOURLY) + 2)
    assert set(found) == await truth(base, tags, hourly_end)
    hourly, daily = results
    assert isinstance(hourly, SummaryResult)
    assert (hourly.inserted, hourly.commits) == (TAGS * 47 * len(HOURLY), 5)  # 10 per commit
    assert hourly.watermark_us == hourly_end * 1_000_000
    assert (daily.inserted, daily.commits) == (TAGS * 2, 1)
    table = DeltaTable(f"{target}/{PI_SUMMARIES}")
    assert table.transaction_version(app_id(settings, settings.summary_specs[0])) == hourly_end
    # Nothing closed since, nothing changed: no commit.
    version = table.version()
    _, again = await summaries_sync(settings, clock)
    assert [(r.inserted, r.rewritten, r.commits) for r in again] == [(0, 0, 0), (0, 0, 0)]
    assert DeltaTable(f"{target}/{PI_SUMMARIES}").version() == version


async def test_late_values_rewrite_the_buckets_they_change(
    mock_at: Callable[..., Any], tmp_path: Any
) -> None:
    base, clock = await mock_at(T0, TAGS, late_fraction=1.0, late_seconds=600)
    target = str(tmp_path / "lake")
    settings = settings_for(base, target, summaries_lookback=HOUR)
    tags, _ = await summaries_sync(settings, clock)
    before = await truth(base, tags, T0 - 300)
    assert set(table_rows(target)) == before
    clock.t = T0 + HOUR  # every value held back at T0 has arrived, one more hour closed
    _, (hourly, daily) = await summaries_sync(settings, clock)
    after = await truth(base, tags, T0 - 300 + HOUR)
    found = table_rows(target)
    assert len(found) == len(set(found)) == TAGS * (48 * len(HOURLY) + 2)
    assert set(found) == after
    last = datetime.fromtimestamp(T0 - 300 - HOUR, UTC)
    rewritten = {r[:4] for r in after - before if r[3] == last}
    assert rewritten  # late values changed the last bucket already written
    assert hourly.rewritten == len(rewritten)
    assert hourly.inserted == TAGS * len(HOURLY)
    assert (daily.inserted, daily.rewritten) == (0, 0)


async def test_event_weighted_summaries_equal_what_pi_returns(
    mock_at: Callable[..., Any], tmp_path: Any
) -> None:
    base, clock = await mock_at(T0, TAGS)
    target = str(tmp_path / "lake")
    settings = settings_for(base, target, summaries=f"1h:{','.join(HOURLY)}",
                            summaries_basis="EventWeighted", summaries_max_buckets=8)  # fmt: skip
    tags, (hourly,) = await summaries_sync(settings, clock)
    found = table_rows(target, "EventWeighted")
    assert len(found) == len(set(found)) == hourly.inserted == TAGS * 47 * len(HOURLY)
    start = T0 - 2 * 86_400 + HOUR - 300
    truth = await served_summaries(base, tags, "1h", HOUR, HOURLY, start, T0 - 300,
                                   "EventWeighted")  # fmt: skip
    assert set(found) == truth
    counts = {r[4] for r in found if r[2] == "Count" and r[4] is not None}
    assert counts
    assert all(c == int(c) for c in counts)  # events, not seconds


def test_once_writes_the_closed_buckets(
    mock_pi_factory: Callable[..., MockServer], tmp_path: Path
) -> None:
    clock = SimClock.start()
    mock = mock_pi_factory(clock=clock, tag_count=TAGS, rate_limit=0)
    target = tmp_path / "lake"
    env = worker_env(mock, target, start=fixed_past(6 * 60).isoformat(), safety_lag=0,
                     summaries="1h:Average,Count")  # fmt: skip
    ok(pidelta("once", env=env))
    found = pl.from_arrow(DeltaTable(str(target / PI_SUMMARIES)).to_pyarrow_table())
    assert isinstance(found, pl.DataFrame)
    per_series = found.group_by("tag_webid", "summary_type").agg(
        pl.len(), pl.col("bucket_start").min().alias("lo")
    )
    assert per_series.height == TAGS * 2
    assert set(per_series["lo"]) == {fixed_past(6 * 60)}
    assert set(per_series["len"]) == {6}  # the hours closed by FIXED_NOW, each once


def test_run_writes_the_closed_buckets_until_stopped(
    mock_pi_factory: Callable[..., MockServer], tmp_path: Path
) -> None:
    clock = SimClock.start()
    mock = mock_pi_factory(clock=clock, tag_count=TAGS, rate_limit=0)
    target = tmp_path / "lake"
    env = worker_env(mock, target, start=fixed_past(3 * 60).isoformat(), safety_lag=0,
                     summaries="1h:Maximum")  # fmt: skip
    worker = start_worker("run", env=env, log=tmp_path / "run.log")
    log = target / PI_SUMMARIES / "_delta_log"
    try:
        assert wait_for(lambda: log.exists() and DeltaTable(str(log.parent)).version() >= 1,
                        180), worker.text()[-3000:]  # fmt: skip
    finally:
        code = worker.terminate()
    assert code == 0, worker.text()[-3000:]
    found = DeltaTable(str(log.parent)).to_pyarrow_table()
    assert found.num_rows == TAGS * 3


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("1x:Average", "PIDELTA_SUMMARIES: '1x' is not a grid interval"),
        ("1h:Mean", "PIDELTA_SUMMARIES: 'Mean' is not a summary type"),
        ("1h", "PIDELTA_SUMMARIES: '1h' is not duration:types"),
    ],
)
def test_a_bad_summaries_setting_exits_2_with_one_line(
    value: str, message: str, tmp_path: Any
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIDELTA_")}
    env.update(PIDELTA_PI_URL="http://127.0.0.1:9/piwebapi", PIDELTA_TARGET=str(tmp_path),
               PIDELTA_SUMMARIES=value)  # fmt: skip
    done = pidelta("once", env=env, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert message in lines[0], done.stderr
