"""Tags PI refuses in a summaries or grid answer, against mock-pi over HTTP: their ranges are
noted in `_pidelta_set_aside`, read again every cycle until PI answers, and then the tables
hold exactly what PI returns; a tag no longer discovered (a deleted point) holds nothing up,
and the time series' set-aside never sees these ranges."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
import polars as pl
from deltalake import DeltaTable

from service.metrics import Metrics, MetricsObserver
from tests.points.test_interpolated import T0 as GRID_T0
from tests.points.test_interpolated import TAGS as GRID_TAGS
from tests.points.test_interpolated import grid_sync, served_grid, table_grid
from tests.points.test_interpolated import settings_for as grid_settings
from tests.points.test_summaries_table import HOUR, T0, TAGS, summaries_sync, table_rows, truth
from tests.points.test_summaries_table import settings_for as summary_settings
from workers.lake.schemas import PI_INTERPOLATED, SET_ASIDE
from workers.lake.tables import TableStore
from workers.lake.writer import DeltaWriter
from workers.pi.client import PIClient
from workers.timeseries.discovery import TagInfo
from workers.timeseries.interpolated import sync_interpolated
from workers.timeseries.set_aside import SetAside


async def refuse(base: str, webids: list[str]) -> None:
    """mock-pi's test switch: item errors for these WebIDs from now on."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{base}/mock/refuse", json={"WebIds": webids}) as resp,
    ):
        assert resp.status == 200
        assert (await resp.json())["WebIds"] == sorted(webids)


def open_ranges(target: str) -> set[tuple[str, str]]:
    """(tag, app id) of the ranges noted and not resolved."""
    rows = pl.from_arrow(DeltaTable(f"{target}/{SET_ASIDE}").to_pyarrow_table())
    key = ["tag_webid", "range_start", "range_end"]
    still = rows.group_by(key).agg(
        pl.col("resolved_at").is_not_null().any().alias("closed"), pl.col("app_id").first()
    )
    return {(r["tag_webid"], r["app_id"]) for r in still.filter(~pl.col("closed")).to_dicts()}


async def test_refused_summaries_are_written_once_pi_answers(
    mock_at: Callable[..., Any], tmp_path: Any
) -> None:
    base, clock = await mock_at(T0, TAGS)
    target = str(tmp_path / "lake")
    settings = summary_settings(base, target, summaries_lookback=HOUR)
    tags, _ = await summaries_sync(summary_settings(base, str(tmp_path / "probe")), clock)
    refused = {tags[2].webid, tags[7].webid}
    await refuse(base, sorted(refused))

    _, first = await summaries_sync(settings, clock)
    assert [(r.refused, r.recovered, r.pending) for r in first] == [(2, 0, 2), (2, 0, 2)]
    answered = [t for t in tags if t.webid not in refused]
    assert set(table_rows(target)) == await truth(base, answered, T0 - 300)
    assert {w for w, _ in open_ranges(target)} == refused
    assert len(open_ranges(target)) == 4  # per tag: one hourly and one daily range
    # The time series' set-aside leaves these ranges alone.
    writer = DeltaWriter.from_settings(settings, TableStore.from_settings(settings))
    assert SetAside(writer).due({t.webid for t in tags}) == []

    # Still refused an hour later: the open hourly range grows instead of a new one.
    clock.t = T0 + HOUR
    _, second = await summaries_sync(settings, clock)
    assert [(r.refused, r.recovered, r.pending) for r in second] == [(0, 0, 2), (0, 0, 2)]
    assert len(open_ranges(target)) == 4

    # PI answers again: every refused bucket is written, exactly as PI returns it.
    await refuse(base, [])
    clock.t = T0 + 2 * HOUR
    _, third = await summaries_sync(settings, clock)
    assert [(r.refused, r.recovered, r.pending) for r in third] == [(0, 2, 0), (0, 2, 0)]
    found = table_rows(target)
    expected = await truth(base, tags, T0 - 300 + 2 * HOUR)
    assert len(found) == len(set(found)) == len(expected)
    assert set(found) == expected
    assert open_ranges(target) == set()

    # Nothing left to read again.
    _, fourth = await summaries_sync(settings, clock)
    assert [(r.recovered, r.pending, r.commits) for r in fourth] == [(0, 0, 0), (0, 0, 0)]


async def test_refused_grid_is_written_once_pi_answers_and_a_gone_tag_holds_nothing_up(
    mock_at: Callable[..., Any], tmp_path: Any
) -> None:
    base, clock = await mock_at(GRID_T0, GRID_TAGS)
    target = str(tmp_path / "lake")
    settings = grid_settings(base, target)
    tags, _ = await grid_sync(grid_settings(base, str(tmp_path / "probe")), clock)
    back, gone = tags[3], tags[11]
    await refuse(base, [back.webid, gone.webid])

    metrics = Metrics(process=False)
    first = await sync_listed(settings, tags, clock, MetricsObserver(metrics))
    assert (first.refused, first.recovered, first.pending) == (2, 0, 2)
    assert sample(metrics, "pidelta_aggregate_refused_ranges_total") == 2
    assert sample(metrics, "pidelta_aggregate_pending_ranges") == 2
    assert sample(metrics, "pidelta_aggregate_rows_total", kind="new") == first.inserted
    start = GRID_T0 - 1800
    answered = [t for t in tags if t not in (back, gone)]
    assert set(table_grid(target)) == await served_grid(base, answered, start, GRID_T0)
    assert first.oldest_pending_us is not None

    # `gone` is deleted (no longer discovered), `back` is answered again.
    await refuse(base, [gone.webid])
    clock.t = GRID_T0 + 120
    listed = [t for t in tags if t is not gone]
    result = await sync_listed(settings, listed, clock, MetricsObserver(metrics))
    assert (result.refused, result.recovered, result.pending) == (0, 1, 0)
    assert sample(metrics, "pidelta_aggregate_recovered_ranges_total") == 1
    assert sample(metrics, "pidelta_aggregate_pending_ranges") == 0
    assert sample(metrics, "pidelta_aggregate_oldest_pending_seconds") == 0
    assert result.oldest_pending_us is None
    found = table_grid(target)
    expected = await served_grid(base, listed, start, GRID_T0 + 120)
    assert len(found) == len(set(found)) == len(expected)
    assert set(found) == expected
    assert open_ranges(target) == {(gone.webid, "pidelta-interp-0-of-1")}


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    """The value of one series of the grid's table, shard 0."""
    value = metrics.registry.get_sample_value(
        name, {"table": PI_INTERPOLATED, "shard": "0", **labels}
    )
    assert value is not None, name
    return value


async def sync_listed(
    settings: Any, tags: list[TagInfo], clock: Any, observer: MetricsObserver
) -> Any:
    """A grid cycle over `tags` (what discovery would list), reported to `observer`."""
    writer = DeltaWriter.from_settings(settings, TableStore.from_settings(settings))
    async with PIClient(settings) as client:
        return await sync_interpolated(
            settings, client, tags, writer, now_us=round(clock.t * 1_000_000), observer=observer
        )
