"""`_pidelta_shards`: shard generations, and the fence that keeps an old count out.

The protocol is docs/DESIGN.md "Resharding fence": `ShardGenerations` reads and appends
generations; `ShardFence` joins one on start (announcing and fencing a new count) and `check`s it
before each batch and commit.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime

import polars as pl
import pyarrow as pa

from workers.errors import StaleGeneration
from workers.lake.schemas import SHARDS, SHARDS_SCHEMA
from workers.lake.tables import TableStore
from workers.lake.writer import DeltaWriter
from workers.pi.times import utcnow
from workers.timeseries.sink import DeltaSink

log = logging.getLogger("pidelta.pipeline")


@dataclass(frozen=True, slots=True)
class Generation:
    generation: int
    shard_count: int
    announced_at: datetime


class ShardGenerations:
    """`_pidelta_shards`: which shard count is current, and since when."""

    def __init__(self, store: TableStore) -> None:
        self.store = store
        store.create(SHARDS)  # many shards start at once: the race is handled there
        self.uri = store.uri(SHARDS)
        self.storage_options = store.options(SHARDS)
        self._table = store.open(SHARDS)

    def _rows(self) -> pl.DataFrame:
        self._table = self.store.refresh(SHARDS, self._table)
        return pl.from_arrow(self._table.to_pyarrow_table()).sort(["generation", "announced_at"])

    def latest(self) -> Generation | None:
        rows = self._rows()
        if rows.height == 0:
            return None
        top = rows.row(-1, named=True)
        return Generation(int(top["generation"]), int(top["shard_count"]), top["announced_at"])

    def announce(self, shard_count: int, by: str) -> Generation:
        """Append a generation of `shard_count` shards, unless one was just announced."""
        current = self.latest()
        if current is not None and current.shard_count == shard_count:
            return current
        gen = Generation((current.generation if current else 0) + 1, shard_count, utcnow())
        row = {
            "generation": gen.generation,
            "shard_count": shard_count,
            "announced_at": gen.announced_at,
            "announced_by": by,
        }
        DeltaWriter(self.store).append(SHARDS, pa.Table.from_pylist([row], schema=SHARDS_SCHEMA))
        return gen


class ShardFence:
    """One worker's shard generation: joined on start, checked before batches and commits."""

    def __init__(
        self,
        store: TableStore,
        sink: DeltaSink,
        shard_count: int,
        app_id: str,
    ) -> None:
        self.generations = ShardGenerations(store)
        self.sink = sink
        self.shard_count = shard_count
        self.app_id = app_id
        self.generation: Generation | None = None

    async def join(self) -> Generation:
        """Announce this shard count unless it is current, then fence.

        No wait for the previous generation: once this worker has seen the fence, none of
        its data commits can land, and recovery advances (then reads) whatever it landed.
        """
        count = self.shard_count
        current = await asyncio.to_thread(self.generations.latest)
        if current is None or current.shard_count != count:
            previous = current
            current = await asyncio.to_thread(self.generations.announce, count, self.app_id)
            log.info(
                "announced shard generation %d (%d shards%s)",
                current.generation,
                count,
                f", was {previous.shard_count}" if previous else "",
            )
        self.generation = current
        await asyncio.to_thread(self.sink.fence, count)
        return current

    def check(self) -> None:
        """Raise StaleGeneration when a generation with another shard count was announced."""
        assert self.generation is not None
        latest = self.generations.latest()
        if latest is not None and latest.shard_count != self.generation.shard_count:
            raise StaleGeneration(
                f"shard generation {latest.generation} has {latest.shard_count} shards"
            )
