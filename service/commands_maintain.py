"""`pidelta maintain`, and the maintenance schedule inside `pidelta run`.

In `run`, only the shard `PIDELTA_MAINTAIN_SHARD` maintains, every `PIDELTA_MAINTAIN_INTERVAL`
seconds (the first pass one interval after start, so start-up and catch-up come first),
in a worker thread beside the pipeline's loop; a failed pass is logged and the next one
comes on schedule, so maintenance never stops ingestion.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from contextlib import suppress
from typing import TYPE_CHECKING

from workers.lake.maintenance import Maintainer, format_reports
from workers.lake.tables import TableStore
from workers.lifecycle import Lifecycle
from workers.settings import Settings

if TYPE_CHECKING:
    from workers.timeseries.pipeline import Pipeline

log = logging.getLogger("pidelta.maintain")


def maintain(args: argparse.Namespace, settings: Settings) -> int:
    """One maintenance pass over pidelta's tables (or those named by --table); exit 1 if any
    step failed."""
    reports = Maintainer.from_settings(settings).run(args.tables or None)
    sys.stdout.write(format_reports(reports) + "\n")
    failed = [r for r in reports if r.errors]
    for report in failed:
        log.error("maintain %s: %s", report.table, "; ".join(report.errors))
    return 1 if failed else 0


async def maintain_forever(settings: Settings, lifecycle: Lifecycle, store: TableStore) -> None:
    """The schedule in `run`: a pass every `maintain_interval` s on the maintaining shard."""
    if settings.maintain_interval <= 0 or settings.shard_index != settings.maintain_shard:
        return
    maintainer = Maintainer.from_settings(settings, store)
    while not await lifecycle.wait(settings.maintain_interval):
        try:
            await asyncio.to_thread(maintainer.run)  # logs a line per table
        except Exception as exc:
            log.error(
                "maintenance pass failed; next in %.0f s: %s",
                settings.maintain_interval,
                exc,
                exc_info=settings.log_level == "DEBUG",
            )


async def run_with_maintenance(pipeline: Pipeline) -> None:
    """`pipeline.run_forever()` with the maintenance schedule beside it (the body of `run`)."""
    task = asyncio.create_task(
        maintain_forever(pipeline.settings, pipeline.lifecycle, pipeline.store)
    )
    try:
        await pipeline.run_forever()
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
