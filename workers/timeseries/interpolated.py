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

from workers.lake.schemas import PI_INTERPOLATED, PI_INTERPOLATED_SCHEMA
from workers.lake.writer import DeltaWriter
from workers.observe import DimensionObserver
from workers.pi.client import PIClient
from workers.pi.times import format_us, parse_time, to_us
from workers.settings import Settings
from workers.timeseries.calls import SELECTED_FIELDS, webid_cost
from workers.timeseries.decode import decode_streamset
from workers.timeseries.discovery import TagInfo
from workers.timeseries.refused import RefusedRanges, Span, by_range
from workers.timeseries.watermarked import WatermarkedTable, report

log = logging.getLogger(__name__)

US = 1_000_000
GRID = WatermarkedTable(
    PI_INTERPOLATED, PI_INTERPOLATED_SCHEMA, ("tag_webid", "timestamp"), "timestamp",
    "interpolated",
)  # fmt: skip
ENDPOINT = "streamsets/interpolated"


APP_PREFIX = "pidelta-interp-"  # refused ranges of every shard layout share it


@dataclass(frozen=True, slots=True)
class GridResult:
    watermark_us: int  # the last grid time written for this shard's tags
    inserted: int  # new grid values
    rewritten: int  # re-read values that had changed
    requests: int
    commits: int
    refused: int = 0  # (tag, range)s PI refused this cycle, noted for a re-read
    recovered: int = 0  # refused ranges read and written this cycle
    pending: int = 0  # refused ranges of this shard's tags still open
    oldest_pending_us: int | None = None  # when the oldest of them was noted


def app_id(settings: Settings) -> str:
    return f"{APP_PREFIX}{settings.shard_index}-of-{settings.shard_count}"


async def sync_interpolated(
    settings: Settings,
    client: PIClient,
    tags: Sequence[TagInfo],
    writer: DeltaWriter,
    *,
    now_us: int | None = None,
    observer: DimensionObserver | None = None,
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
    inserted = rewritten = requests = commits = noted = resolved = 0
    span = settings.interpolated_max_points * step
    store = await asyncio.to_thread(RefusedRanges, writer, APP_PREFIX, span)
    webids = {t.webid for t in tags}
    retried, recovered, n_retry = await _reread(client, settings, tags, store.due(webids))
    requests += n_retry
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
        new_rows, refused, n_new = await _read(client, settings, tags, watermark + step, end)
        old_rows, stale, n_old = await _read(client, settings, tags,
                                             watermark - lookback + step, watermark)  # fmt: skip
        requests += n_new + n_old
        changed = await asyncio.to_thread(GRID.changed, writer, old_rows)
        source = pl.concat([new_rows, changed, retried])
        # Grid times as [first, last + step); refused re-reads too (late data there).
        spans = [(w, watermark + step, end + step) for w in refused if end > watermark]
        spans += [(w, watermark - lookback + step, watermark + step) for w in stale]
        if spans:
            noted += await asyncio.to_thread(store.note, app, end // US, spans)
        if source.height or end > watermark:
            await asyncio.to_thread(GRID.commit, writer, source, app, end // US)
            commits += 1
            inserted += new_rows.height + retried.height
            rewritten += changed.height
        if recovered:
            await asyncio.to_thread(store.resolve, app, end // US, recovered)
            resolved += len(recovered)
        retried, recovered = retried.clear(), []
        if end >= target:
            break
    due = store.due(webids)
    log.info(
        "interpolated grid of %d tags every %d s up to %s: %d new values, %d rewritten, "
        "%d requests, %d commits; %d ranges refused, %d recovered, %d pending",
        len(tags), step_s, format_us(target), inserted, rewritten, requests, commits,
        noted, resolved, len(due),
    )  # fmt: skip
    result = GridResult(
        target, inserted, rewritten, requests, commits, noted, resolved, len(due),
        store.oldest_us(webids),
    )  # fmt: skip
    if observer is not None:
        shard = str(settings.shard_index)
        report(observer, PI_INTERPOLATED, shard, [result], time.time_ns() // 1000)
    return result


async def _reread(
    client: PIClient, settings: Settings, tags: Sequence[TagInfo], due: list[Span]
) -> tuple[pl.DataFrame, list[Span], int]:
    """Grid values of the refused ranges of `due` that PI answers now, those ranges, and
    the request count."""
    by_webid = {t.webid: t for t in tags}
    step = (settings.interpolated_seconds or 1) * US
    frames = [_empty()]
    read: list[Span] = []
    requests = 0
    for (start, end), spans in sorted(by_range(due).items()):
        chunk = [by_webid[s.webid] for s in spans]
        rows, refused, n = await _read(client, settings, chunk, start, end - step)
        requests += n
        answered = {s.webid for s in spans} - refused
        frames.append(rows.filter(pl.col("tag_webid").is_in(answered)))
        read.extend(s for s in spans if s.webid in answered)
    return pl.concat(frames), read, requests


def _empty() -> pl.DataFrame:
    return pl.from_arrow(PI_INTERPOLATED_SCHEMA.empty_table())  # type: ignore[return-value]


async def _read(
    client: PIClient, settings: Settings, tags: Sequence[TagInfo], start: int, end: int
) -> tuple[pl.DataFrame, set[str], int]:
    """Grid values of every tag at start, start + step, ..., end; the tags PI refused (an
    item error); and the request count."""
    if end < start:
        return _empty(), set(), 0
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
    refused: dict[str, str] = {}

    async def one(chunk: list[TagInfo]) -> pa.Table:
        body = await client.get_bytes(
            ENDPOINT, params + [("webId", t.webid) for t in chunk], endpoint=ENDPOINT
        )
        decoded = decode_streamset(body, by_webid, source=ENDPOINT, refused=refused)
        if decoded.quarantined:
            log.warning("interpolated: %d values could not be read, left out",
                        decoded.quarantined)  # fmt: skip
        return decoded.rows.drop_columns(["sequence"])

    tables = await asyncio.gather(*(one(c) for c in calls))
    if refused:
        log.warning("interpolated: PI refused %d tags, noted for a re-read: %s", len(refused),
                    "; ".join(sorted(set(refused.values()))))  # fmt: skip
    frame = pl.from_arrow(pa.concat_tables(tables).cast(PI_INTERPOLATED_SCHEMA))
    return frame, set(refused), len(calls)  # type: ignore[return-value]
