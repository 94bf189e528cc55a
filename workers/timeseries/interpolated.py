"""`pi_interpolated` (opt-in, `PIDELTA_INTERPOLATED_INTERVAL`): a regular grid per tag.

The grid is aligned on the epoch (every `1m` falls on a whole minute). Each shard keeps one
watermark, the last grid time it wrote for its tags, as the version of its app transaction
`pidelta-interp-<i>-of-<n>` in `pi_interpolated` itself (in seconds), written in the very
MERGE commit that holds the rows: a crash before the commit leaves the watermark where it
was, a crash after it leaves nothing to redo, so every grid value lands once.

A cycle reads from `/streamsets/interpolated`, many tags per request:
- new grid times (watermark, end], end = now minus the safety lag, at most
  `interpolated_max_points` per tag and commit: all of them are written;
- the written grid of the last `interpolated_lookback` seconds again: a late, edited or
  deleted value changes an interpolation near it, and such rows are rewritten in place.
Values come through the decoder of the time series; a value it cannot read is counted in
the log and left out (the re-read of the next cycles meets it again).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import polars as pl
import pyarrow as pa

from workers.lake.tables import PI_INTERPOLATED, PI_INTERPOLATED_SCHEMA
from workers.lake.writer import DeltaWriter
from workers.pi.client import PIClient
from workers.pi.times import format_us, parse_time, to_us
from workers.settings import Settings
from workers.timeseries.calls import SELECTED_FIELDS, webid_cost
from workers.timeseries.decode import decode_streamset
from workers.timeseries.discovery import TagInfo
from workers.timeseries.watermarked import WatermarkedTable

log = logging.getLogger(__name__)

US = 1_000_000
GRID = WatermarkedTable(
    PI_INTERPOLATED, PI_INTERPOLATED_SCHEMA, ("tag_webid", "timestamp"), "timestamp",
    "interpolated",
)  # fmt: skip
ENDPOINT = "streamsets/interpolated"


@dataclass(frozen=True, slots=True)
class GridResult:
    watermark_us: int  # the last grid time written for this shard's tags
    inserted: int  # new grid values
    rewritten: int  # re-read values that had changed
    requests: int
    commits: int


def app_id(settings: Settings) -> str:
    return f"pidelta-interp-{settings.shard_index}-of-{settings.shard_count}"


async def sync_interpolated(
    settings: Settings,
    client: PIClient,
    tags: Sequence[TagInfo],
    writer: DeltaWriter,
    *,
    now_us: int | None = None,
) -> GridResult | None:
    """Write the grid of `tags` up to now minus the safety lag; None when the grid is off."""
    step_s = settings.interpolated_seconds
    if step_s is None or not tags:
        return None
    await asyncio.to_thread(writer.store.create, PI_INTERPOLATED)
    step = step_s * US
    now = now_us if now_us is not None else time.time_ns() // 1000
    target = (now - round(settings.safety_lag * US)) // step * step
    app = app_id(settings)
    inserted = rewritten = requests = commits = 0
    while True:
        done = await asyncio.to_thread(writer.committed_version, PI_INTERPOLATED, app)
        first = done is None
        if done is None:
            start = to_us(parse_time(settings.start, datetime.fromtimestamp(now / US, UTC)))
            watermark = -(-start // step) * step - step
        else:
            watermark = done * US
        end = min(target, watermark + settings.interpolated_max_points * step)
        lookback = 0 if first else settings.interpolated_lookback * US // step * step
        new_rows, n_new = await _read(client, settings, tags, watermark + step, end)
        old_rows, n_old = await _read(client, settings, tags, watermark - lookback + step,
                                      watermark)  # fmt: skip
        requests += n_new + n_old
        changed = await asyncio.to_thread(GRID.changed, writer, old_rows)
        source = pl.concat([new_rows, changed]) if changed.height else new_rows
        if source.height or end > watermark:
            await asyncio.to_thread(GRID.commit, writer, source, app, end // US)
            commits += 1
            inserted += new_rows.height
            rewritten += changed.height
        if end >= target:
            break
    log.info(
        "interpolated grid of %d tags every %d s up to %s: %d new values, %d rewritten, "
        "%d requests, %d commits",
        len(tags), step_s, format_us(target), inserted, rewritten, requests, commits,
    )  # fmt: skip
    return GridResult(target, inserted, rewritten, requests, commits)


async def _read(
    client: PIClient, settings: Settings, tags: Sequence[TagInfo], start: int, end: int
) -> tuple[pl.DataFrame, int]:
    """Grid values of every tag at start, start + step, ..., end; and the request count."""
    empty = pl.from_arrow(PI_INTERPOLATED_SCHEMA.empty_table())
    if end < start:
        return empty, 0  # type: ignore[return-value]
    step_s = settings.interpolated_seconds or 1
    points = (end - start) // (step_s * US) + 1
    params = [
        ("startTime", format_us(start)),
        ("endTime", format_us(end)),
        ("interval", f"{step_s}s"),
        ("selectedFields", SELECTED_FIELDS),
    ]
    room = settings.pi_max_url_bytes - client.url_length(ENDPOINT, params)
    per_call = max(1, settings.pi_max_items_per_call // points)
    calls: list[list[TagInfo]] = [[]]
    used = 0
    for tag in tags:
        cost = webid_cost(tag.webid)
        if calls[-1] and (used + cost > room or len(calls[-1]) >= per_call):
            calls.append([])
            used = 0
        calls[-1].append(tag)
        used += cost
    by_webid = {t.webid: t for t in tags}

    async def one(chunk: list[TagInfo]) -> pa.Table:
        body = await client.get_bytes(
            ENDPOINT, params + [("webId", t.webid) for t in chunk], endpoint=ENDPOINT
        )
        decoded = decode_streamset(body, by_webid, source=ENDPOINT)
        if decoded.quarantined:
            log.warning("interpolated: %d values could not be read, left out",
                        decoded.quarantined)  # fmt: skip
        return decoded.rows.drop_columns(["sequence"])

    tables = await asyncio.gather(*(one(c) for c in calls))
    frame = pl.from_arrow(pa.concat_tables(tables).cast(PI_INTERPOLATED_SCHEMA))
    return frame, len(calls)  # type: ignore[return-value]
