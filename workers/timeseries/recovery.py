"""Recovery of unfinished batches on start and after a failed poll (docs/DESIGN.md).

Batches whose data is in but whose checkpoints are not are advanced: this worker's own app
ids, and those of older shard generations, whose workers have stopped. App ids of the other
shards of this generation are left to their own (running) workers. This worker's other
planned batches of recorded reads are then re-run as planned, minus what other app ids
committed since. A stream-update follower's plan is only advanced, never re-run here: the
follower re-runs its own batch from its markers (`Follower.load`), and a recorded re-run
under its app id would take the id its change log already holds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import datetime

import polars as pl
import pyarrow.dataset as ds

from workers.lake.schemas import BATCHES
from workers.timeseries.checkpoints import BACKFILL_PREFIX, LIVE_PREFIX, CheckpointStore
from workers.timeseries.plan import LATE, LIVE, REREAD, PlannedBatch, TagRange
from workers.timeseries.sink import DeltaSink

log = logging.getLogger("pidelta.pipeline")


class Recovery:
    """Finds what a crash (or a failed poll) left unfinished for the app ids `own`."""

    def __init__(
        self,
        sink: DeltaSink,
        checkpoints: CheckpointStore,
        own: tuple[str, ...],
        shard_count: int,
        rerun: tuple[str, ...] | None = None,
    ) -> None:
        self.sink = sink
        self.checkpoints = checkpoints
        self.own = own
        self.shard_count = shard_count
        self.rerun = own if rerun is None else rerun  # app ids of recorded reads

    def origins(self) -> dict[str, datetime]:
        """First live range start per tag: late look-backs never reach before it."""
        dataset = self.sink.table(BATCHES).to_pyarrow_dataset()
        found = dataset.to_table(
            columns=["tag_webid", "range_start"], filter=ds.field("kind") == LIVE
        )
        if not found.num_rows:
            return {}
        first = pl.from_arrow(found).group_by("tag_webid").agg(pl.col("range_start").min())
        return dict(zip(first["tag_webid"].to_list(), first["range_start"].to_list(), strict=True))

    async def unfinished(self) -> AsyncIterator[PlannedBatch]:
        """Advance committed batches, then yield this worker's others to re-run, in order."""
        app_ids = await asyncio.to_thread(self.recoverable)
        for batch in await asyncio.to_thread(self.checkpoints.recover, app_ids):
            log.info("advanced committed batch %d of %s", batch.batch_id, batch.app_id)
        for app_id in self.rerun:
            pending = await asyncio.to_thread(self.checkpoints.pending_batches, app_id)
            for batch in pending:
                log.info("re-running unfinished batch %d of %s", batch.batch_id, app_id)
                yield self.still_needed(batch)

    def recoverable(self) -> list[str]:
        """App ids whose committed batches this worker may advance."""
        # The table is partitioned by app id: its partitions name every one, no data read.
        ids = {p["app_id"] for p in self.sink.table(BATCHES).partitions()}
        suffix = f"-of-{self.shard_count}"
        return sorted(a for a in ids if a in self.own or not a.endswith(suffix))

    def still_needed(self, batch: PlannedBatch) -> PlannedBatch:
        """A pending batch minus what other app ids committed since it was planned.

        Its data is not in the table (else `recover` advanced it), so trimming ranges that
        another shard's checkpoints already cover is safe and avoids reading them twice.
        """
        prefix = BACKFILL_PREFIX if batch.app_id.startswith(BACKFILL_PREFIX) else LIVE_PREFIX
        done = self.checkpoints.load_checkpoints({r.webid for r in batch.ranges}, prefix)
        ranges = []
        for r in batch.ranges:
            cp = done.get(r.webid)
            if r.kind not in (LATE, REREAD) and cp is not None and cp > r.start:
                if cp >= r.end:
                    continue
                r = TagRange(r.webid, cp, r.end, r.kind)
            ranges.append(r)
        return PlannedBatch(batch.app_id, batch.batch_id, tuple(ranges))
