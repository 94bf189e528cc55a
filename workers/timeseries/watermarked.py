"""Tables written exactly once by MERGE with an app-transaction watermark: `pi_interpolated`
and `pi_summaries`.

The watermark (seconds) is the version of an app transaction of the table, committed in
the very MERGE that holds the rows: a crash before the commit leaves it where it was, one
after it leaves nothing to redo. Rows are upserted on (`date`, key), so re-read rows that
changed are rewritten in place.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import polars as pl
import pyarrow as pa
from deltalake import Transaction
from deltalake.table import TableMerger

from workers.errors import SinkError
from workers.lake.writer import DeltaWriter
from workers.observe import DimensionObserver
from workers.pi.times import format_us

log = logging.getLogger(__name__)

MERGE_ATTEMPTS = 5
US = 1_000_000
NOT_COMPARED = ("ingestion_timestamp", "date")


@dataclass(frozen=True, slots=True)
class WatermarkedTable:
    """A table name, its schema, its key (without `date`), the time column of the key
    (which `date` is the day of) and a label for logs and commit metadata."""

    name: str
    schema: pa.Schema
    key: tuple[str, ...]
    time_column: str
    label: str
    compared: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        skip = {*self.key, *NOT_COMPARED}
        object.__setattr__(self, "compared", tuple(c for c in self.schema.names if c not in skip))

    def changed(self, writer: DeltaWriter, reread: pl.DataFrame) -> pl.DataFrame:
        """The re-read rows that differ from the written ones (never a row the table does
        not hold: a re-read only corrects what was written)."""
        if reread.height == 0:
            return reread
        column = self.time_column
        lo, hi = reread[column].min(), reread[column].max()
        written = pl.from_arrow(
            writer.table(self.name).to_pyarrow_table(
                columns=[*self.key, *self.compared],
                filters=[
                    ("date", ">=", lo.date()),  # type: ignore[union-attr]
                    ("date", "<=", hi.date()),  # type: ignore[union-attr]
                    (column, ">=", lo),
                    (column, "<=", hi),
                ],
            )
        )
        joined = reread.join(written, on=list(self.key), how="inner", suffix="_old")  # type: ignore[arg-type]
        differs = pl.any_horizontal(
            [~pl.col(c).eq_missing(pl.col(f"{c}_old")) for c in self.compared]
        )
        return joined.filter(differs).select(reread.columns)

    def commit(self, writer: DeltaWriter, rows: pl.DataFrame, app: str, watermark_s: int) -> None:
        """One MERGE of the rows with the new watermark; again after a race with another
        shard."""
        source = rows.to_arrow().cast(self.schema)
        metadata = {f"pidelta.{self.label}.watermark": format_us(watermark_s * 1_000_000)}
        merge_key = " AND ".join(f"t.{c} = s.{c}" for c in ("date", *self.key))
        for attempt in range(1, MERGE_ATTEMPTS + 1):
            done = writer.committed_version(self.name, app)
            if done is not None and done >= watermark_s and rows.height == 0:
                return
            try:
                writer.merge(self.name, source, merge_key, _upsert, metadata,
                             transaction=Transaction(app, watermark_s))  # fmt: skip
                return
            except SinkError as exc:
                if attempt == MERGE_ATTEMPTS:
                    raise
                log.info("%s merge lost a race (%s), tried again", self.label, exc)
                time.sleep(0.2 * attempt)


class CycleResult(Protocol):
    """What `report` reads of a cycle's result (a `GridResult` or a `SummaryResult`)."""

    inserted: int
    rewritten: int
    requests: int
    refused: int
    recovered: int
    pending: int
    oldest_pending_us: int | None


def report(
    observer: DimensionObserver,
    table: str,
    shard: str,
    results: Sequence[CycleResult],
    now_us: int,
) -> None:
    """One cycle's figures (summed over the durations of `pi_summaries`) to `observer`."""
    oldest = min((r.oldest_pending_us for r in results if r.oldest_pending_us), default=None)
    observer.aggregate_synced(
        table, shard,
        {"new": sum(r.inserted for r in results), "rewritten": sum(r.rewritten for r in results)},
        sum(r.requests for r in results),
        {"noted": sum(r.refused for r in results),
         "recovered": sum(r.recovered for r in results),
         "pending": sum(r.pending for r in results)},
        0.0 if oldest is None else max(0.0, (now_us - oldest) / US),
    )  # fmt: skip


def _upsert(merger: TableMerger) -> TableMerger:
    return merger.when_matched_update_all().when_not_matched_insert_all()
