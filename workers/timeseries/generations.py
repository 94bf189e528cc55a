"""`_pidelta_shards`: shard generations, so that a resharding fences out the old count.

See docs/DESIGN.md (resharding fence) for the protocol; this module only reads and appends
generations.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import polars as pl
import pyarrow as pa
from deltalake import write_deltalake

from workers.lake.tables import SHARDS, SHARDS_SCHEMA, TableStore
from workers.pi.times import utcnow


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

    def ever_other_than(self, shard_count: int) -> bool:
        """True when some generation had another shard count (a resharding happened)."""
        return bool((self._rows()["shard_count"] != shard_count).any())

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
        write_deltalake(
            self._table, pa.Table.from_pylist([row], schema=SHARDS_SCHEMA), mode="append"
        )
        return gen
