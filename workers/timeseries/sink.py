"""The time-series sink: one batch's rows, late rows and quarantine rows into Delta.

It sits on `DeltaWriter` (idempotent appends per (app id, batch id), retries, credentials)
and adds what is particular to pi_timeseries: late look-back rows are anti-joined against
the table, quarantine rows are listed once, and appends respect the shard-count fence.

The fence is the shard count kept as metadata of the `tag_webid` column (`fence`,
`require_fence`); why that stops every worker of an old count is in docs/DESIGN.md
("Resharding fence").
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from deltalake import DeltaTable

from workers.errors import StaleGeneration
from workers.lake.schemas import PI_TIMESERIES, QUARANTINE
from workers.lake.tables import TABLES
from workers.lake.writer import DeltaWriter

__all__ = ["KEY_COLUMNS", "Committed", "DeltaSink"]

KEY_COLUMNS = ("tag_webid", "timestamp", "sequence")
FENCE_COLUMN = "tag_webid"
FENCE_KEY = "pidelta.shard_count"


class Committed(NamedTuple):
    """What one `commit_timeseries` wrote: pi_timeseries rows, and the quarantine rows
    (those not listed already; none when the batch had landed before)."""

    rows: int
    quarantine: pa.Table | None


def require_fence(table: DeltaTable, shard_count: int) -> None:
    """StaleGeneration when the table is fenced for another shard count."""
    fenced = fenced_count(table)
    if fenced is not None and fenced != shard_count:
        raise StaleGeneration(f"pi_timeseries is fenced for {fenced} shards, not {shard_count}")


def fenced_count(table: DeltaTable) -> int | None:
    """The shard count pi_timeseries is fenced for (None before any)."""
    for f in table.schema().fields:
        if f.name == FENCE_COLUMN:
            value = f.metadata.get(FENCE_KEY)
            return int(value) if value is not None else None
    return None


class DeltaSink(DeltaWriter):
    """The writer of one shard's time series, its quarantine and its fence."""

    def drop_existing(
        self, late: pa.Table, fresh: pa.Table | None = None, name: str = PI_TIMESERIES
    ) -> pa.Table:
        """Late look-back rows whose key is neither in `fresh` nor already in table `name`
        (pi_timeseries, or the quarantine for bad values with a key).

        Duplicates among the late rows (overlapping look-backs) are dropped first; the table
        is read only for the tags, dates and times the late rows span. Keys are joined with
        the tag as its index among the late rows' tags: integer keys take a fraction of the
        memory of strings (a backfill sends a whole commit through here).
        """
        if late.num_rows == 0:
            return late
        tags = pc.unique(late.column("tag_webid"))
        keys = _int_keys(late, tags)
        keep = _first_of_each_key(keys)
        if fresh is not None and fresh.num_rows:
            keep &= ~_found(keys, _int_keys(fresh, tags))
        existing = self._existing_keys(name, late, tags)
        if existing.num_rows:
            keep &= ~_found(keys, _int_keys(existing, tags))
        if keep.all():
            return late  # nothing to drop: no copy of what may be a whole commit's rows
        return late.filter(pa.array(keep))

    def _existing_keys(self, name: str, rows: pa.Table, tags: pa.Array) -> pa.Table:
        stamps = rows.column("timestamp")
        where = (
            (ds.field("timestamp") >= pc.min(stamps))
            & (ds.field("timestamp") <= pc.max(stamps))
            & ds.field("tag_webid").isin(tags)
        )
        if "date" in TABLES[name].partition_by:
            dates = rows.column("date")
            where &= (ds.field("date") >= pc.min(dates)) & (ds.field("date") <= pc.max(dates))
        dataset = self.table(name).to_pyarrow_dataset()
        return dataset.to_table(columns=list(KEY_COLUMNS), filter=where)

    def new_quarantine(self, rows: pa.Table) -> pa.Table:
        """The quarantine rows not in the quarantine table yet: a look-back, an overlapping
        backfill or a re-run reads a bad value again, and it must be listed once.

        A row whose timestamp parsed has the key of pi_timeseries and is anti-joined like a
        late value. One without (timestamp missing or broken) has only its raw text; each
        batch reads all the values of a tag's range, so a text one batch met k times is k
        values: the table needs the most any batch met, less what it holds already.
        """
        if rows.num_rows == 0:
            return rows
        keyed = rows.column("timestamp").is_valid()
        parts = [self.drop_existing(rows.filter(keyed), name=QUARANTINE)]
        loose = rows.filter(pc.invert(keyed))
        if loose.num_rows:
            parts.append(self._new_loose(loose))
        return pa.concat_tables(parts)

    def _new_loose(self, rows: pa.Table) -> pa.Table:
        text = ["tag_webid", "raw"]
        met = pl.from_arrow(rows.select([*text, "batch_id"])).with_row_index("_row")
        need = met.group_by([*text, "batch_id"]).len().group_by(text).agg(pl.col("len").max())
        where = ds.field("timestamp").is_null() & ds.field("tag_webid").isin(
            pc.unique(rows.column("tag_webid"))
        )
        held = pl.from_arrow(
            self.table(QUARANTINE).to_pyarrow_dataset().to_table(columns=text, filter=where)
        )
        have = held.group_by(text).len().rename({"len": "have"})
        wanted = (
            met.with_columns(pl.int_range(pl.len()).over(text).alias("_nth"))
            .join(need, on=text, how="left", nulls_equal=True)
            .join(have, on=text, how="left", nulls_equal=True)
            # Signed: the table may hold more copies than this commit met (len - have < 0);
            # counts are UInt32, whose difference would wrap and list every copy again.
            .filter(pl.col("_nth") < pl.col("len").cast(pl.Int64) - pl.col("have").fill_null(0))
            .get_column("_row")
            .sort()
        )
        return rows.take(pa.array(wanted.to_numpy()))

    def commit_timeseries(
        self,
        rows: pa.Table,
        app_id: str,
        batch_id: int,
        *,
        late: pa.Table | None = None,
        quarantine: pa.Table | None = None,
        shard_count: int | None = None,
    ) -> Committed:
        """Write one batch: its quarantine rows not listed yet, then new rows plus the late
        rows not yet in. A batch that landed before writes nothing, and reads nothing more.
        """
        table = self.table(PI_TIMESERIES)
        if shard_count is not None:
            require_fence(table, shard_count)  # before the quarantine, which has no fence
        done = table.transaction_version(app_id)
        if done is not None and done >= batch_id:
            return Committed(0, None)  # its quarantine rows went in first
        listed = None
        if quarantine is not None and quarantine.num_rows:
            new = self.new_quarantine(with_batch(quarantine, app_id, batch_id))
            if self.append(QUARANTINE, new, app_id, batch_id):
                listed = new
        if late is not None and late.num_rows:
            rows = pa.concat_tables([rows, self.drop_existing(late, rows)])
        check = None if shard_count is None else lambda t: require_fence(t, shard_count)
        written = self.append(PI_TIMESERIES, rows, app_id, batch_id, check=check)
        return Committed(rows.num_rows if written else 0, listed)

    def fenced(self) -> int | None:
        """The shard count pi_timeseries is fenced for now (None before any)."""
        return fenced_count(self.table(PI_TIMESERIES))

    def fence(self, shard_count: int) -> None:
        """Fence pi_timeseries for `shard_count` shards (see the module docstring). Workers
        of one count starting together race to set it; a loser finds it set and is done."""
        self.set_column_metadata(
            PI_TIMESERIES,
            FENCE_COLUMN,
            {FENCE_KEY: str(shard_count)},
            unless=lambda table: fenced_count(table) == shard_count,
            what=f"fence for {shard_count} shards",
        )


def _int_keys(rows: pa.Table, tags: pa.Array) -> pl.DataFrame:
    """The key columns of `rows`, the tag as its index in `tags` (null when not there)."""
    return pl.from_arrow(
        pa.table(
            {
                "tag_webid": pc.index_in(rows.column("tag_webid"), value_set=tags),
                "timestamp": rows.column("timestamp").cast(pa.int64()),
                "sequence": rows.column("sequence").cast(pa.int32()),
            }
        )
    )


def _first_of_each_key(keys: pl.DataFrame) -> np.ndarray:
    """True at the first row of each key: a stable sort of integer columns, a fraction of
    the memory of a hash-based unique on a million rows."""
    tag, ts, seq = (keys.get_column(c).to_numpy() for c in KEY_COLUMNS)
    order = np.lexsort((seq, ts, tag))
    tag, ts, seq = tag[order], ts[order], seq[order]
    repeated = (tag[1:] == tag[:-1]) & (ts[1:] == ts[:-1]) & (seq[1:] == seq[:-1])
    keep = np.ones(len(order), dtype=bool)
    keep[order[1:][repeated]] = False
    return keep


def _found(keys: pl.DataFrame, known: pl.DataFrame) -> np.ndarray:
    """True where a row of `keys` is in `known`."""
    hits = (
        keys.with_row_index("_row")
        .join(known.drop_nulls(), on=list(KEY_COLUMNS), how="semi")
        .get_column("_row")
        .to_numpy()
    )
    found = np.zeros(keys.height, dtype=bool)
    found[hits] = True
    return found


def with_batch(quarantine: pa.Table, app_id: str, batch_id: int) -> pa.Table:
    """Quarantine rows stamped with the batch that met them (`batch_id` where they do not
    say it yet: the pipeline stamps each batch's rows, a commit may hold several)."""
    n = quarantine.num_rows
    index = quarantine.schema.get_field_index
    table = quarantine.set_column(index("app_id"), "app_id", pa.array([app_id] * n, pa.string()))
    batch_ids = pc.coalesce(table.column("batch_id"), pa.scalar(batch_id, pa.int64()))
    return table.set_column(index("batch_id"), "batch_id", batch_ids)
