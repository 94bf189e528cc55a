"""`pi_summaries` (opt-in, `PIDELTA_SUMMARIES`): PI's summaries of closed buckets per tag.

Buckets are aligned on the epoch (`1h` on whole hours, `1d` on UTC midnight). For each
duration each shard keeps one watermark, the end of the last bucket it wrote, as the version
of its app transaction `pidelta-summ-<duration>-<basis>-<i>-of-<n>` in `pi_summaries`
itself (in seconds), written in the very MERGE commit that holds the rows, as
`pi_interpolated` does: every closed bucket lands once whatever crashes.

A cycle reads `/streamsets/summary` through the shared `SummarySource` (many tags and
buckets per request):
- the buckets closed since the watermark (ending at or before now minus the safety lag),
  at most `summaries_max_buckets` per tag and commit: all of them are written;
- the written buckets of the last `summaries_lookback` seconds (at least the last one)
  again: a late, edited or deleted value changes the summary of its bucket, and such rows
  are rewritten in place. The change-capture issue's changes are to replace this re-read
  with the buckets the changes touch once they land.
`PercentGood` is always asked for, so every row carries the bucket's share of good data.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import polars as pl

from workers.lake.schemas import PI_SUMMARIES, PI_SUMMARIES_SCHEMA
from workers.lake.writer import DeltaWriter
from workers.observe import DimensionObserver
from workers.pi.client import PIClient
from workers.pi.times import format_us, parse_time, to_us
from workers.setting_values import SummarySpec
from workers.settings import Settings
from workers.timeseries.discovery import TagInfo
from workers.timeseries.refused import RefusedRanges, Span, by_range
from workers.timeseries.summaries import SummaryAsk, SummarySource
from workers.timeseries.watermarked import WatermarkedTable, report

log = logging.getLogger(__name__)

US = 1_000_000
TABLE = WatermarkedTable(
    PI_SUMMARIES, PI_SUMMARIES_SCHEMA,
    ("tag_webid", "duration", "calculation_basis", "summary_type", "bucket_start"),
    "bucket_start", "summaries",
)  # fmt: skip
UTC_US = pl.Datetime("us", "UTC")


@dataclass(frozen=True, slots=True)
class SummaryResult:
    duration: str
    watermark_us: int  # the end of the last bucket written for this shard's tags
    inserted: int  # rows of new buckets
    rewritten: int  # re-read rows that had changed
    requests: int
    commits: int
    refused: int = 0  # (tag, range)s PI refused this cycle, noted for a re-read
    recovered: int = 0  # refused ranges read and written this cycle
    pending: int = 0  # refused ranges of this shard's tags still open
    oldest_pending_us: int | None = None  # when the oldest of them was noted


def app_prefix(settings: Settings, spec: SummarySpec) -> str:
    """The app id without the shard layout: refused ranges of every layout share it."""
    return f"pidelta-summ-{spec.duration}-{settings.summaries_basis}-"


def app_id(settings: Settings, spec: SummarySpec) -> str:
    return f"{app_prefix(settings, spec)}{settings.shard_index}-of-{settings.shard_count}"


def summary_source(settings: Settings, client: PIClient) -> SummarySource:
    return SummarySource(
        client,
        max_url_bytes=settings.pi_max_url_bytes,
        max_items=settings.pi_max_items_per_call,
        max_in_flight=settings.pi_max_concurrency,
    )


async def sync_summaries(
    settings: Settings,
    client: PIClient,
    tags: Sequence[TagInfo],
    writer: DeltaWriter,
    *,
    now_us: int | None = None,
    observer: DimensionObserver | None = None,
) -> list[SummaryResult]:
    """Write every configured duration's closed buckets of `tags`; [] when summaries are off."""
    if not settings.summary_specs or not tags:
        return []
    await asyncio.to_thread(writer.store.create, PI_SUMMARIES)
    now = now_us if now_us is not None else time.time_ns() // 1000
    source = summary_source(settings, client)
    specs = settings.summary_specs
    results = [await _sync_one(settings, source, tags, writer, spec, now) for spec in specs]
    if observer is not None:
        report(observer, PI_SUMMARIES, str(settings.shard_index), results, time.time_ns() // 1000)
    return results


async def _sync_one(
    settings: Settings,
    source: SummarySource,
    tags: Sequence[TagInfo],
    writer: DeltaWriter,
    spec: SummarySpec,
    now: int,
) -> SummaryResult:
    bucket = spec.seconds * US
    target = (now - round(settings.safety_lag * US)) // bucket * bucket
    app = app_id(settings, spec)
    lookback = max(1, -(-round(settings.summaries_lookback * US) // bucket)) * bucket
    requests_before = source.stats.requests
    inserted = rewritten = commits = noted = resolved = 0
    store = await asyncio.to_thread(
        RefusedRanges, writer, app_prefix(settings, spec), settings.summaries_max_buckets * bucket
    )
    webids = {t.webid for t in tags}
    by_webid = {t.webid: t for t in tags}
    retried, recovered = await _reread(settings, source, by_webid, spec, store.due(webids))
    while True:
        done = await asyncio.to_thread(writer.committed_version, PI_SUMMARIES, app)
        if done is None:
            start = to_us(parse_time(settings.start, datetime.fromtimestamp(now / US, UTC)))
            watermark = -(-start // bucket) * bucket
        else:
            watermark = done * US
        end = min(target, watermark + settings.summaries_max_buckets * bucket)
        new_rows, refused = await _read(settings, source, tags, spec, watermark, end)
        again = 0 if done is None else lookback  # the first cycle has nothing written
        old_rows, stale = await _read(settings, source, tags, spec, watermark - again, watermark)
        changed = await asyncio.to_thread(TABLE.changed, writer, old_rows)
        rows = pl.concat([new_rows, changed, retried])
        # Refused re-reads too: late data there would otherwise go unseen.
        spans = [(w, watermark, end) for w in refused if end > watermark]
        spans += [(w, watermark - again, watermark) for w in stale]
        if spans:
            noted += await asyncio.to_thread(store.note, app, end // US, spans)
        if rows.height or end > watermark:
            await asyncio.to_thread(TABLE.commit, writer, rows, app, end // US)
            commits += 1
            inserted += new_rows.height + retried.height
            rewritten += changed.height
        if recovered:
            await asyncio.to_thread(store.resolve, app, end // US, recovered)
            resolved += len(recovered)
        retried, recovered = retried.clear(), []
        if end >= target:
            break
    requests = source.stats.requests - requests_before
    due = store.due(webids)
    log.info(
        "summaries %s of %d tags up to %s: %d new rows, %d rewritten, %d requests, %d commits; "
        "%d ranges refused, %d recovered, %d pending",
        spec.duration, len(tags), format_us(target), inserted, rewritten, requests, commits,
        noted, resolved, len(due),
    )  # fmt: skip
    return SummaryResult(
        spec.duration, target, inserted, rewritten, requests, commits, noted, resolved,
        len(due), store.oldest_us(webids),
    )  # fmt: skip


async def _reread(
    settings: Settings,
    source: SummarySource,
    by_webid: dict[str, TagInfo],
    spec: SummarySpec,
    due: list[Span],
) -> tuple[pl.DataFrame, list[Span]]:
    """Rows of the refused ranges of `due` that PI answers now, and those ranges."""
    frames = [_empty_rows()]
    read: list[Span] = []
    for (start, end), spans in sorted(by_range(due).items()):
        chunk = [by_webid[s.webid] for s in spans]
        rows, refused = await _read(settings, source, chunk, spec, start, end)
        answered = {s.webid for s in spans} - refused
        frames.append(rows.filter(pl.col("tag_webid").is_in(answered)))
        read.extend(s for s in spans if s.webid in answered)
    return pl.concat(frames), read


def _empty_rows() -> pl.DataFrame:
    return pl.from_arrow(PI_SUMMARIES_SCHEMA.empty_table())  # type: ignore[return-value]


async def _read(
    settings: Settings,
    source: SummarySource,
    tags: Sequence[TagInfo],
    spec: SummarySpec,
    start: int,
    end: int,
) -> tuple[pl.DataFrame, set[str]]:
    """Rows of `pi_summaries` for the buckets of [start, end), one per tag, bucket and type;
    and the tags PI refused."""
    if end <= start:
        return _empty_rows(), set()
    types = tuple(dict.fromkeys((*spec.types, "PercentGood")))
    ask = SummaryAsk(types, settings.summaries_basis, spec.seconds * US, detail=True)
    wide, refused = await source.read([t.webid for t in tags], start, end, ask)
    if refused:
        log.warning("summaries %s: PI refused %d tags, noted for a re-read: %s",
                    spec.duration, len(refused),
                    "; ".join(sorted(set(refused.values()))))  # fmt: skip
    names = pl.DataFrame(
        {"tag_webid": [t.webid for t in tags], "tag_name": [t.name for t in tags]}
    ).unique("tag_webid")
    ingested = datetime.now(UTC)
    long = pl.concat(
        wide.select(
            "tag_webid",
            pl.col("bucket_start").cast(UTC_US),
            pl.col("bucket_end").cast(UTC_US),
            summary_type=pl.lit(kind),
            value=pl.col(kind.lower()),
            system_state=pl.col(f"{kind.lower()}_state"),
            percent_good=pl.col("percentgood"),
            units=pl.col(f"{kind.lower()}_units"),
        )
        for kind in spec.types
    )
    rows = (
        long.join(names, on="tag_webid", how="left")
        .with_columns(
            duration=pl.lit(spec.duration),
            calculation_basis=pl.lit(settings.summaries_basis),
            ingestion_timestamp=pl.lit(ingested, dtype=UTC_US),
            date=pl.col("bucket_start").dt.date(),
        )
        .select(PI_SUMMARIES_SCHEMA.names)
    )
    return rows, set(refused)
