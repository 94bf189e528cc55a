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
from service.metrics import Metrics, MetricsObserver, start_dimension
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
