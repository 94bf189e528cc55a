"""`pi_interpolated` against mock-pi over HTTP (its clock set by the test): the table equals
what `/streamsets/interpolated` returns for the same grid, also after late values changed
grid windows already written."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import aiohttp
from deltalake import DeltaTable

from tests.mock_pi import url
from tests.points.conftest import Clock, iso
from workers.lake.schemas import PI_INTERPOLATED
from workers.lake.tables import TableStore
from workers.lake.writer import DeltaWriter
from workers.pi.client import PIClient
from workers.settings import Settings, load_settings
from workers.timeseries.discovery import TagInfo, discover_tags
from workers.timeseries.interpolated import app_id, sync_interpolated

T0 = 1_780_000_020.0  # a whole minute: 2026-05-28T20:27:00Z
TAGS = 24


async def served_grid(base: str, tags: list[TagInfo], start: float, end: float) -> set[tuple]:
    """What PI returns for the grid, per (tag, time): the number, string or state."""
    params = {"webId": [t.webid for t in tags], "startTime": iso(start), "endTime": iso(end),
              "interval": "1m"}  # fmt: skip
    async with (
        aiohttp.ClientSession() as session,
        session.get(url(base, "/streamsets/interpolated", **params)) as resp,
    ):
        body = await resp.json()
    out = set()
    for stream in body["Items"]:
        for item in stream["Items"]:
            value = item["Value"]
            moment = datetime.fromisoformat(item["Timestamp"])
            if isinstance(value, dict):
                out.add((stream["WebId"], moment, None, None, value["Name"]))
            elif isinstance(value, str):
                out.add((stream["WebId"], moment, None, value, None))
            else:
                out.add((stream["WebId"], moment, float(value), None, None))
    return out


def table_grid(target: str) -> list[tuple]:
    rows = DeltaTable(f"{target}/{PI_INTERPOLATED}").to_pyarrow_table().to_pylist()
    return [
        (r["tag_webid"], r["timestamp"], r["value"], r["value_string"], r["digital_state"])
        for r in rows
    ]


async def grid_sync(settings: Settings, clock: Clock) -> Any:
    writer = DeltaWriter.from_settings(settings, TableStore.from_settings(settings))
    async with PIClient(settings) as client:
        tags = await discover_tags(client, settings)
        return tags, await sync_interpolated(settings, client, tags, writer,
                                             now_us=round(clock.t * 1_000_000))  # fmt: skip


def settings_for(base: str, target: str, **extra: Any) -> Settings:
    return load_settings(pi_url=base, target=target, interpolated_interval="1m",
                         start=iso(T0 - 1800), safety_lag=0, **extra)  # fmt: skip


async def test_the_grid_equals_what_pi_returns(mock_at: Callable[..., Any], tmp_path: Any) -> None:
    base, clock = await mock_at(T0, TAGS)
    target = str(tmp_path / "lake")
    tags, result = await grid_sync(settings_for(base, target, interpolated_max_points=7), clock)
    found = table_grid(target)
    assert len(found) == len(set(found)) == TAGS * 31
    assert set(found) == await served_grid(base, tags, T0 - 1800, T0)
    assert result.inserted == TAGS * 31
    assert result.commits == 5  # 31 grid times, 7 per commit
    assert result.watermark_us == T0 * 1_000_000
    table = DeltaTable(f"{target}/{PI_INTERPOLATED}")
    assert table.transaction_version(app_id(settings_for(base, target))) == T0
    # Nothing new, nothing changed: no commit.
    version = table.version()
    _, again = await grid_sync(settings_for(base, target), clock)
    assert (again.inserted, again.rewritten, again.commits) == (0, 0, 0)
    assert DeltaTable(f"{target}/{PI_INTERPOLATED}").version() == version


async def test_late_values_rewrite_the_grid_windows_they_change(
    mock_at: Callable[..., Any], tmp_path: Any
) -> None:
    base, clock = await mock_at(T0, TAGS, late_fraction=1.0, late_seconds=600)
    target = str(tmp_path / "lake")
    settings = settings_for(base, target, interpolated_lookback=3600)
    tags, _ = await grid_sync(settings, clock)
    before = await served_grid(base, tags, T0 - 1800, T0)
    assert set(table_grid(target)) == before
    clock.t = T0 + 900  # every value held back at T0 has arrived
    _, second = await grid_sync(settings, clock)
    after = await served_grid(base, tags, T0 - 1800, T0 + 900)
    found = table_grid(target)
    assert len(found) == len(set(found)) == TAGS * 46
    assert set(found) == after
    changed = {(r[0], r[1]) for r in after} - {(r[0], r[1]) for r in before}
    rewritten = {(r[0], r[1]) for r in after - before} - changed
    assert rewritten  # late values changed grid values already written
    assert second.rewritten == len(rewritten)
    assert second.inserted == TAGS * 15
