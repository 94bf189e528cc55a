"""`pidelta verify --start T --end T [--dry-run]`: this shard's tags against PI per bucket.

Buckets are [start, end) of `PIDELTA_VERIFY_BUCKET` seconds from UTC midnight; the range
is widened to whole buckets, and buckets not yet closed (ending after now minus the safety
lag) are left for a later run. Exit 0 when every checked bucket ends equal to PI (equal or
repaired), 1 when one differs (`--dry-run`) or could not be repaired, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from datetime import UTC, datetime

import polars as pl
from deltalake import DeltaTable

from service.metrics import Metrics, MetricsObserver
from shard_config.jump_hash import owned
from workers.errors import ConfigError
from workers.lake.schemas import BATCHES, CHECKPOINTS, VERIFICATION
from workers.lake.tables import TableStore
from workers.lake.writer import DeltaWriter
from workers.pi.client import PIClient
from workers.pi.times import format_us, parse_time, to_us
from workers.settings import Settings
from workers.timeseries.checkpoints import LIVE_PREFIX
from workers.timeseries.discovery import discover_tags
from workers.timeseries.pipeline import Pipeline
from workers.timeseries.plan import LIVE
from workers.timeseries.recorded import RecordedSource
from workers.timeseries.summaries import SummarySource
from workers.verify.completeness import completeness, latest_results
from workers.verify.continuous import ContinuousVerification, horizon, tag_bounds
from workers.verify.verifier import FAILED, Verifier, VerifyReport

log = logging.getLogger("pidelta")
LISTED = 20


def verify_range(args: argparse.Namespace, settings: Settings, now: datetime) -> tuple[int, int]:
    """[start, end) in µs widened to whole buckets and ending at the last closed bucket."""
    try:
        start = to_us(parse_time(args.verify_start, now))
        end = to_us(parse_time(args.verify_end, now))
    except ValueError as exc:
        raise ConfigError(f"verify: {exc}") from None
    if end <= start:
        raise ConfigError(f"verify: --end {args.verify_end} is not after --start")
    bucket = settings.verify_bucket * 1_000_000
    closed = (to_us(now) - round(settings.safety_lag * 1_000_000)) // bucket * bucket
    return start // bucket * bucket, min(-(-end // bucket) * bucket, closed)


def verify(args: argparse.Namespace, settings: Settings) -> int:
    """Check, repair (unless --dry-run), record and print; the exit code."""
    start, end = verify_range(args, settings, datetime.now(UTC))
    report = asyncio.run(_verify(settings, start, end, args.dry_run))
    print(format_report(report, settings, start, end, args.dry_run))
    sys.stdout.flush()
    return 0 if report.all_equal else 1


async def _verify(settings: Settings, start: int, end: int, dry_run: bool) -> VerifyReport:
    async with PIClient(settings) as client:
        found = await discover_tags(client, settings)
        mine = owned((t.webid for t in found), settings.shard_index, settings.shard_count)
        tags = {t.webid: t for t, keep in zip(found, mine.tolist(), strict=True) if keep}
        store = TableStore.from_settings(settings)
        if not dry_run:
            store.create_all()
        verifier = Verifier(
            summaries=SummarySource(
                client,
                max_url_bytes=settings.pi_max_url_bytes,
                max_items=settings.pi_max_items_per_call,
                max_in_flight=settings.pi_max_concurrency,
            ),
            recorded=RecordedSource.from_settings(client, settings, tags),
            writer=DeltaWriter.from_settings(settings, store),
            tags=tags,
            bucket_us=settings.verify_bucket * 1_000_000,
            shard=(settings.shard_index, settings.shard_count),
            dry_run=dry_run,
        )
        if end <= start:
            return VerifyReport()
        return await verifier.verify(start, end)


def format_report(
    report: VerifyReport, settings: Settings, start: int, end: int, dry_run: bool
) -> str:
    """The summary lines, then the buckets that do not end equal (the first few)."""
    mode = " (dry run: nothing repaired or recorded)" if dry_run else ""
    lines = [
        f"verify shard {settings.shard_index}/{settings.shard_count}: "
        f"[{format_us(start)}, {format_us(end)}) in {settings.verify_bucket}s buckets{mode}",
        report_line(report),
        f"PI requests {report.pi_requests} (summary {report.summary_requests}, "
        f"recorded {report.recorded_requests}); values read {report.values_read}",
    ]
    if report.results:
        bad = pl.concat(report.results).filter(pl.col("result").is_in(["differs", FAILED]))
        for row in bad.head(LISTED).iter_rows(named=True):
            lines.append(
                f"  {row['result']}: {row['tag_name'] or row['tag_webid']} "
                f"[{row['bucket_start'].isoformat()}, {row['bucket_end'].isoformat()}) "
                f"PI {row['pi_count']} table {row['table_count']}"
                + (f": {row['detail']}" if row["detail"] else "")
            )
        if bad.height > LISTED:
            lines.append(f"  ... and {bad.height - LISTED} more")
    return "\n".join(lines)


async def verify_in_run(settings: Settings, pipeline: Pipeline, metrics: Metrics) -> None:
    """`run`'s verification: a pass every `verify_interval` (at once while older days are
    still due), until the worker stops. A failed pass is logged, counted and tried again."""
    if not settings.verify_horizon:
        return
    observer = MetricsObserver(metrics)
    writer = DeltaWriter.from_settings(settings, pipeline.store, observer)
    passes = ContinuousVerification(settings, pipeline.client, writer, observer)
    lifecycle = pipeline.lifecycle
    while not lifecycle.stopping:
        began = time.monotonic()
        more = False
        try:
            assert pipeline.checkpoints is not None  # prepared before `run`'s body starts
            reached = await asyncio.to_thread(pipeline.checkpoints.load_checkpoints, pipeline.tags)
            report, more = await passes.run_pass(pipeline.tags, pipeline.origins, reached)
            if report is not None:
                log.info("verify: %s", report_line(report))
        except Exception as exc:
            log.error("verification pass failed, tried again later: %s", exc)
            metrics.errors.labels(kind="verify").inc()
        if not more:
            await lifecycle.wait(settings.verify_interval - (time.monotonic() - began))


def report_line(report: VerifyReport) -> str:
    b = report.buckets
    return (
        f"buckets checked {report.checked}: equal {b.get('equal', 0)}, "
        f"repaired {b.get('repaired', 0)}, differs {b.get('differs', 0)}, "
        f"failed {b.get(FAILED, 0)}"
    )


def verification_status(settings: Settings, now: datetime) -> str:
    """`status`'s completeness block: per live shard (app id), over the horizon, the share of
    tag-buckets verified equal, the oldest bucket not verified, and the failed buckets."""
    store = TableStore.from_settings(settings)
    if not all(store.exists(n) for n in (VERIFICATION, BATCHES, CHECKPOINTS)):
        return "verification: nothing verified yet"
    start, end = horizon(settings, now)
    bucket = settings.verify_bucket * 1_000_000

    def table(name: str, columns: list[str]) -> pl.DataFrame:
        found = DeltaTable(store.uri(name), storage_options=store.options(name))
        return pl.DataFrame(pl.from_arrow(found.to_pyarrow_table(columns=columns)))

    latest = latest_results(
        DeltaTable(store.uri(VERIFICATION), storage_options=store.options(VERIFICATION)),
        start,
        end,
    )
    plans = table(BATCHES, ["tag_webid", "range_start", "kind"])
    live = plans.filter(pl.col("kind") == LIVE).group_by("tag_webid")
    first = dict(live.agg(pl.col("range_start").min()).iter_rows())
    reached = (
        table(CHECKPOINTS, ["app_id", "tag_webid", "checkpoint"])
        .filter(pl.col("app_id").str.starts_with(LIVE_PREFIX))
        .group_by("app_id", "tag_webid")
        .agg(pl.col("checkpoint").max())
    )
    lines = [
        f"verification over [{format_us(start)}, {format_us(end)}), "
        f"{settings.verify_bucket}s buckets",
        "shard\tverified\ttag_buckets\toldest_unverified\tfailed",
    ]
    for app_id in sorted(reached["app_id"].unique().to_list()):
        mine = reached.filter(pl.col("app_id") == app_id)
        checkpoints = dict(mine.select("tag_webid", "checkpoint").iter_rows())
        origins = {w: first[w] for w in checkpoints if w in first}
        found = completeness(latest, tag_bounds(origins, checkpoints, start, end, bucket), bucket)
        oldest = found.oldest_unverified.isoformat() if found.oldest_unverified else "-"
        lines.append(
            f"{app_id}\t{100 * found.share:.2f}%\t{found.tag_buckets}\t{oldest}\t"
            f"{len(found.failed)}"
        )
        lines.extend(
            f"  failed: {w} [{s.isoformat()}, {e.isoformat()})" for w, s, e in found.failed[:LISTED]
        )
    return "\n".join(lines)
