"""`pidelta points`, and the points sync, the interpolated grid and the summaries of `run`
and `once`.

Every shard syncs its own points (and shard 0 the digital state sets) and writes the grid
of its own tags, so `run`, `once` and this command are started on every shard alike.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Collection

from service.commands_af import _every
from service.metrics import Metrics, MetricsObserver
from workers.lake.schemas import PI_INTERPOLATED, PI_SUMMARIES
from workers.lake.tables import TableStore
from workers.lake.writer import DeltaWriter
from workers.lifecycle import Lifecycle
from workers.pi.client import PIClient
from workers.points.sync import sync_points
from workers.settings import Settings
from workers.timeseries.discovery import TagInfo
from workers.timeseries.interpolated import sync_interpolated
from workers.timeseries.summary_table import sync_summaries


def points(args: argparse.Namespace, settings: Settings) -> int:
    """One sync of this shard's points and of the digital state sets."""
    asyncio.run(sync_points(settings))
    return 0


async def sync_once(
    settings: Settings, client: PIClient, tags: Collection[TagInfo], metrics: Metrics
) -> None:
    """The points sync, the interpolated grid and the summaries (when on) of `pidelta once`."""
    observer = MetricsObserver(metrics)
    start_dimension(metrics, str(settings.shard_index), settings.points_interval)
    await sync_points(settings, client, observer)
    await sync_interpolated(settings, client, list(tags), _writer(settings, observer),
                            observer=observer)  # fmt: skip
    await sync_summaries(settings, client, list(tags), _writer(settings, observer),
                         observer=observer)  # fmt: skip


async def run_schedules(
    settings: Settings,
    client: PIClient,
    tags: Callable[[], Collection[TagInfo]],
    lifecycle: Lifecycle,
    metrics: Metrics,
) -> None:
    """A points sync every `points_interval`, the grid every grid step and the summaries
    every `summaries_interval` (at most the shortest duration) when they are on, until
    stopped; a failed turn is logged, counted (`pidelta_errors_total{kind="points_sync"}`,
    `"interpolated_sync"` or `"summaries_sync"`) and tried again at its next turn."""
    observer = MetricsObserver(metrics)
    start_dimension(metrics, str(settings.shard_index), settings.points_interval)
    jobs = [
        _every("points", settings.points_interval,
               lambda: sync_points(settings, client, observer), lifecycle, metrics),
    ]  # fmt: skip
    step = settings.interpolated_seconds
    if step is not None:
        writer = _writer(settings, observer)
        jobs.append(
            _every("interpolated", step,
                   lambda: sync_interpolated(settings, client, list(tags()), writer,
                                             observer=observer),
                   lifecycle, metrics)
        )  # fmt: skip
    if settings.summary_specs:
        # A bucket is written at the first turn after it closed, so a turn comes at least
        # once per shortest duration.
        every = min(settings.summaries_interval, *(s.seconds for s in settings.summary_specs))
        summaries_writer = _writer(settings, observer)
        jobs.append(
            _every("summaries", every,
                   lambda: sync_summaries(settings, client, list(tags()), summaries_writer,
                                          observer=observer),
                   lifecycle, metrics)
        )  # fmt: skip
    await asyncio.gather(*jobs)


def _writer(settings: Settings, observer: MetricsObserver) -> DeltaWriter:
    return DeltaWriter.from_settings(settings, TableStore.from_settings(settings), observer)


POINT_CHANGES = ("opened", "changed", "deleted")
AGGREGATE_TABLES = (PI_SUMMARIES, PI_INTERPOLATED)
AGGREGATE_ROWS = ("new", "rewritten")


def start_dimension(metrics: Metrics, shard: str, points_interval: float) -> None:
    """Series of the points sync and of the summary and grid cycles, from the first scrape
    (counters at 0, last successes at the process start), so every panel and alert has
    data before the first sync and whether or not summaries or the grid are on."""
    m = metrics
    for change in POINT_CHANGES:
        m.points_synced.labels(shard=shard, change=change)
    m.points_served.labels(shard=shard)
    m.points_sync_duration.labels(shard=shard)
    m.points_last_success.labels(shard=shard).set_to_current_time()
    m.points_interval.labels(shard=shard).set(points_interval)
    m.points_merge_retries.labels(shard=shard)
    m.digital_states_written.labels(shard=shard)
    for table in AGGREGATE_TABLES:
        for kind in AGGREGATE_ROWS:
            m.aggregate_rows.labels(table=table, shard=shard, kind=kind)
        m.aggregate_requests.labels(table=table, shard=shard)
        m.aggregate_refused.labels(table=table, shard=shard)
        m.aggregate_recovered.labels(table=table, shard=shard)
        m.aggregate_pending.labels(table=table, shard=shard)
        m.aggregate_oldest_pending.labels(table=table, shard=shard)
        m.aggregate_last_success.labels(table=table, shard=shard).set_to_current_time()
