"""`pidelta af` and `pidelta events`, and the AF/event-frame schedules of `run` and `once`.

AF and event frames are not sharded by tag: only shard `af_shard` syncs them (the others
return at once, having logged it once), so `run`, `once` and these commands can be started
on every shard alike.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from service.metrics import Metrics, MetricsObserver
from workers.af.events import sync_events
from workers.af.hierarchy import AfObserver, sync_af
from workers.lifecycle import Lifecycle
from workers.pi.client import PIClient
from workers.settings import Settings

log = logging.getLogger("pidelta.af")


class AfMetricsObserver:
    """AF/event-frame events onto the shared metric catalog (bounded labels)."""

    def __init__(self, metrics: Metrics, shard: str) -> None:
        self.metrics = metrics
        self.shard = shard

    def on_bad_input(self, kind: str, reason: str, count: int) -> None:
        self.metrics.quarantined_values.labels(reason=f"{kind}: {reason}").inc(count)

    def on_commit(self, table: str, rows: int, seconds: float, version: int) -> None:
        MetricsObserver(self.metrics).committed(table, self.shard, rows, seconds, version)


def af(args: argparse.Namespace, settings: Settings) -> int:
    """One AF hierarchy and attributes sync."""
    asyncio.run(sync_af(settings))
    return 0


def events(args: argparse.Namespace, settings: Settings) -> int:
    """One event-frame sync up to now."""
    asyncio.run(sync_events(settings))
    return 0


async def sync_once(
    settings: Settings, client: PIClient, observer: AfObserver | None = None
) -> None:
    """Both syncs once, for `pidelta once` (nothing on a shard that does not own AF)."""
    await sync_af(settings, client, observer)
    await sync_events(settings, client, observer)


async def run_schedules(
    settings: Settings,
    client: PIClient,
    lifecycle: Lifecycle,
    metrics: Metrics | None = None,
) -> None:
    """AF every `af_sync_interval` and frames every `events_sync_interval` until stopped.

    The two run side by side (a long AF sync does not hold frames back; they write
    different tables). A failed sync is logged and counted, and tried again at its next
    turn: PI or storage trouble must not stop the time series running beside it.
    """
    if settings.shard_index != settings.af_shard:
        await sync_once(settings, client)  # logs the skip once
        return
    observer = AfMetricsObserver(metrics, str(settings.shard_index)) if metrics else None
    await asyncio.gather(
        _every("af", settings.af_sync_interval, lambda: sync_af(settings, client, observer),
               lifecycle, metrics),
        _every("events", settings.events_sync_interval,
               lambda: sync_events(settings, client, observer), lifecycle, metrics),
    )  # fmt: skip


async def _every(
    name: str,
    interval: float,
    job: Callable[[], Awaitable[object]],
    lifecycle: Lifecycle,
    metrics: Metrics | None,
) -> None:
    while not lifecycle.stopping:
        began = time.monotonic()
        try:
            await job()
        except Exception as exc:
            # One line; the traceback only at PIDELTA_LOG_LEVEL=DEBUG.
            log.error(
                "%s sync failed, retried in %.0f s: %s: %s",
                name,
                interval,
                type(exc).__name__,
                exc,
                exc_info=log.isEnabledFor(logging.DEBUG),
            )
            if metrics is not None:
                metrics.errors.labels(kind=f"{name}_sync").inc()
        await lifecycle.wait(interval - (time.monotonic() - began))
