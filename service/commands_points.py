"""`pidelta points`, and the points sync of `run` and `once`.

Every shard syncs its own points (and shard 0 the digital state sets), so `run`, `once`
and this command are started on every shard alike.
"""

from __future__ import annotations

import argparse
import asyncio

from service.commands_af import _every
from service.metrics import Metrics, MetricsObserver
from workers.lifecycle import Lifecycle
from workers.pi.client import PIClient
from workers.points.sync import sync_points
from workers.settings import Settings


def points(args: argparse.Namespace, settings: Settings) -> int:
    """One sync of this shard's points and of the digital state sets."""
    asyncio.run(sync_points(settings))
    return 0


async def sync_once(settings: Settings, client: PIClient, metrics: Metrics) -> None:
    """The points sync of `pidelta once`."""
    await sync_points(settings, client, MetricsObserver(metrics))


async def run_schedule(
    settings: Settings, client: PIClient, lifecycle: Lifecycle, metrics: Metrics
) -> None:
    """A points sync every `points_interval` until stopped; a failed one is logged, counted
    (`pidelta_errors_total{kind="points_sync"}`) and tried again at its next turn."""
    observer = MetricsObserver(metrics)
    await _every(
        "points",
        settings.points_interval,
        lambda: sync_points(settings, client, observer),
        lifecycle,
        metrics,
    )
