"""The history of points (slowly changing dimension, type 2), as a pure diff.

A point is keyed by (`data_server`, `point_id`): PI keeps the point ID through a rename,
while the WebID holds the path and changes with it. Against the current versions in
`pi_points`, what PI serves now gives:
- a point not in the table: its first version, valid from PI's `changedate` (the moment
  its attributes took these values), or its `creationdate`, or now;
- a point whose kept attributes differ (name, WebID, units, type, ...): the current version
  closes (`valid_to`) where the new one opens, at PI's `changedate` when it is later than
  the old version's start, else at the sync's time;
- a current point PI no longer lists: closed and marked deleted at the sync's time (PI does
  not say when a point was deleted); a re-created point has a new point ID, so a new key.
`changedate` and `changer` alone do not open a version (PI moves them for attributes the
table does not keep). The result is the source of one MERGE on (key, `valid_from`), so
applying it twice changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
import pyarrow as pa

from workers.lake.schemas import PI_POINTS_SCHEMA
from workers.points.layout import BUCKET, buckets_of
from workers.points.source import COLUMNS

KEY = ["data_server", "point_id"]
HISTORY = ("valid_from", "valid_to", "is_current", "deleted_at", "synced_at", BUCKET)
NOT_VERSIONED = frozenset({"change_date", "changer", *KEY})
COMPARED = ["tag_webid", *(c.name for c in COLUMNS if c.name not in NOT_VERSIONED)]
ATTRIBUTES = [f.name for f in PI_POINTS_SCHEMA if f.name not in HISTORY]


@dataclass(frozen=True, slots=True)
class Changes:
    """The merge source (full `pi_points` rows) and what it does."""

    rows: pa.Table
    opened: int  # first versions of new points
    changed: int  # versions closed and re-opened
    deleted: int

    @property
    def empty(self) -> bool:
        return self.rows.num_rows == 0


def diff(served: pa.Table, current: pa.Table, gone: pa.Table, now_us: int) -> Changes:
    """`served`: PI's points of this shard (data_server, tag_webid and `COLUMNS`);
    `current`: the table's current versions of those points and of `gone`;
    `gone`: keys (data_server, point_id) of current versions PI no longer lists that this
    shard closes."""
    now = pl.lit(now_us).cast(pl.Datetime("us", "UTC"))
    pi = pl.from_arrow(served).select(ATTRIBUTES)
    cur = pl.from_arrow(current).select(PI_POINTS_SCHEMA.names)
    joined = pi.join(cur, on=KEY, how="left", suffix="_old")
    known = pl.col("valid_from").is_not_null()
    differs = pl.any_horizontal([~pl.col(c).eq_missing(pl.col(f"{c}_old")) for c in COMPARED])
    first = joined.filter(~known).with_columns(
        pl.min_horizontal(pl.coalesce("change_date", "creation_date", now), now).alias("start")
    )
    later = joined.filter(known & differs).with_columns(
        pl.when((pl.col("change_date") > pl.col("valid_from")) & (pl.col("change_date") <= now))
        .then(pl.col("change_date"))
        .otherwise(pl.max_horizontal(now, pl.col("valid_from") + pl.duration(microseconds=1)))
        .alias("start")
    )
    opened = pl.concat([first, later]).select(
        *ATTRIBUTES,
        pl.col("start").alias("valid_from"),
        pl.lit(None, pl.Datetime("us", "UTC")).alias("valid_to"),
        pl.lit(True).alias("is_current"),
        pl.lit(None, pl.Datetime("us", "UTC")).alias("deleted_at"),
        now.alias("synced_at"),
    )
    closed = later.select(
        *(pl.col(f"{c}_old").alias(c) for c in ATTRIBUTES if c not in KEY),
        *KEY,
        "valid_from",
        pl.col("start").alias("valid_to"),
        pl.lit(False).alias("is_current"),
        pl.lit(None, pl.Datetime("us", "UTC")).alias("deleted_at"),
        now.alias("synced_at"),
    )
    removed = (
        cur.join(pl.from_arrow(gone).select(KEY), on=KEY, how="semi")
        .filter(pl.col("is_current"))
        .with_columns(
            now.alias("valid_to"),
            pl.lit(False).alias("is_current"),
            now.alias("deleted_at"),
            now.alias("synced_at"),
        )
    )
    names = [n for n in PI_POINTS_SCHEMA.names if n != BUCKET]
    rows = pl.concat([f.select(names) for f in (closed, opened, removed)], how="vertical")
    bucket = buckets_of(rows["data_server"].to_list(), rows["point_id"].to_list())
    rows = rows.with_columns(pl.Series(BUCKET, bucket, dtype=pl.Int32))
    return Changes(
        rows.to_arrow().cast(PI_POINTS_SCHEMA),
        opened=first.height,
        changed=later.height,
        deleted=removed.height,
    )
