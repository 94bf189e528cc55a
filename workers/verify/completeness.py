"""How complete a shard is over a horizon, from `_pidelta_verification`.

A tag-bucket counts as verified when its latest result is `equal` or `repaired`. Over the
buckets of each tag's bounds (the horizon, cut to what was read): the share verified, the
oldest bucket not verified, and the buckets whose latest result is `failed`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

import polars as pl
from deltalake import DeltaTable

from workers.pi.times import from_us

GOOD_RESULTS = ("equal", "repaired")


@dataclass
class Completeness:
    """Completeness of some tags over [start, end) in buckets."""

    tag_buckets: int = 0
    verified: int = 0
    oldest_unverified: datetime | None = None
    failed: list[tuple[str, datetime, datetime]] = field(default_factory=list)

    @property
    def share(self) -> float:
        return self.verified / self.tag_buckets if self.tag_buckets else 1.0


def latest_results(table: DeltaTable, start_us: int, end_us: int) -> pl.DataFrame:
    """The latest result of every (tag, bucket) checked in [start, end)."""
    frame = pl.from_arrow(
        table.to_pyarrow_table(
            columns=["tag_webid", "bucket_start", "bucket_end", "result", "checked_at"]
        )
    )
    assert isinstance(frame, pl.DataFrame)
    lo, hi = from_us(start_us), from_us(end_us)
    return (
        frame.filter((pl.col("bucket_start") >= lo) & (pl.col("bucket_start") < hi))
        .sort("checked_at")
        .unique(subset=["tag_webid", "bucket_start"], keep="last")
    )


def tag_buckets(bounds: Mapping[str, tuple[int, int]], bucket_us: int) -> pl.DataFrame:
    """(tag_webid, bucket_start µs) of the whole buckets inside each tag's (first, end)."""
    firsts = [b[0] for b in bounds.values()]
    ends = [b[1] for b in bounds.values()]
    starts = range(min(firsts, default=0), max(ends, default=0), bucket_us)
    grid = pl.DataFrame(
        {"tag_webid": list(bounds), "first": firsts, "end": ends},
        schema={"tag_webid": pl.String, "first": pl.Int64, "end": pl.Int64},
    ).join(
        pl.DataFrame({"bucket_start": list(starts)}, schema={"bucket_start": pl.Int64}), how="cross"
    )
    inside = (pl.col("bucket_start") >= pl.col("first")) & (
        pl.col("bucket_start") + bucket_us <= pl.col("end")
    )
    return grid.filter(inside).drop("first", "end")


def good_checks(latest: pl.DataFrame) -> pl.DataFrame:
    """(tag_webid, bucket_start µs, checked µs) of the buckets whose latest result is good."""
    return latest.filter(pl.col("result").is_in(GOOD_RESULTS)).select(
        "tag_webid",
        pl.col("bucket_start").dt.epoch("us"),
        pl.col("checked_at").dt.epoch("us").alias("checked"),
    )


def completeness(
    latest: pl.DataFrame, bounds: Mapping[str, tuple[int, int]], bucket_us: int
) -> Completeness:
    """Completeness of the whole buckets inside each tag's (first, end) in µs."""
    grid = tag_buckets(bounds, bucket_us)
    out = Completeness(tag_buckets=grid.height)
    if not grid.height:
        return out
    keys = ["tag_webid", "bucket_start"]
    mine = latest.with_columns(pl.col("bucket_start").dt.epoch("us")).join(grid, on=keys)
    out.verified = mine.filter(pl.col("result").is_in(GOOD_RESULTS)).height
    failed = mine.filter(pl.col("result") == "failed").sort("bucket_start", "tag_webid")
    out.failed = [
        (w, from_us(s), from_us(s + bucket_us))
        for w, s in failed.select("tag_webid", "bucket_start").iter_rows()
    ]
    missing = grid.join(good_checks(latest).select(keys), on=keys, how="anti")
    if missing.height:
        out.oldest_unverified = from_us(int(missing["bucket_start"].min()))  # type: ignore[arg-type]
    return out
