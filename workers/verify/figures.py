"""Per (tag, bucket) figures of the table and of PI, and which buckets differ.

Both sides count events in [bucket start, bucket end). PI's side comes from event-weighted
summaries: `Count` is its good events, `PercentGood` their share, so its events are
`Count * 100 / PercentGood` (unknown when every event is bad: such a bucket is settled by
reading it). The table's side counts `pi_timeseries` rows plus the quarantined values with
a timestamp (PI holds those too, pidelta could not read them). The fingerprint (total,
minimum, maximum of good numeric values) is compared only where nothing is quarantined.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl
import pyarrow as pa
from deltalake import DeltaTable, QueryBuilder

from workers.pi.times import format_us

SUMMARY_TYPES = ("Count", "PercentGood", "Total", "Minimum", "Maximum")
REL_TOL = 1e-9


def _sql(
    table: DeltaTable, columns: Sequence[str], where: str, webids: Sequence[str]
) -> pl.DataFrame:
    """A SELECT through delta-rs's query engine, which reads every file in the table's own
    schema (files written by other tools may hold other physical string types)."""
    names = ", ".join("'" + w.replace("'", "''") + "'" for w in webids)
    select = ", ".join(f'"{c}"' for c in columns)
    query = f"SELECT {select} FROM t WHERE tag_webid IN ({names}) AND {where}"
    reader = QueryBuilder().register("t", table).execute(query)
    return pl.from_arrow(pa.table(reader))  # type: ignore[return-value]


def _between(start_us: int, end_us: int) -> str:
    return f"\"timestamp\" >= '{format_us(start_us)}' AND \"timestamp\" < '{format_us(end_us)}'"


def read_rows(
    table: DeltaTable, webids: Sequence[str], start_us: int, end_us: int, columns: list[str]
) -> pl.DataFrame:
    """`pi_timeseries` rows of the tags in [start, end), pruned by date partition."""
    days = f"date >= '{format_us(start_us)[:10]}' AND date <= '{format_us(end_us - 1)[:10]}'"
    where = f"{days} AND {_between(start_us, end_us)}"
    return _sql(table, columns, where, webids)


def read_quarantined(
    table: DeltaTable, webids: Sequence[str], start_us: int, end_us: int
) -> pl.DataFrame:
    """Distinct keys of quarantined values with a timestamp in [start, end)."""
    columns = ["tag_webid", "timestamp", "sequence"]
    return _sql(table, columns, _between(start_us, end_us), webids).unique()


def _bucket(start_us: int, bucket_us: int) -> pl.Expr:
    ts = pl.col("timestamp").dt.epoch("us")
    return start_us + (ts - start_us) // bucket_us * bucket_us


def table_figures(
    rows: pl.DataFrame, quarantined: pl.DataFrame, start_us: int, bucket_us: int
) -> pl.DataFrame:
    """tag_webid, bucket_start, table_{count,good,total,minimum,maximum}, quarantined."""
    good = ~pl.col("is_system_state").fill_null(False)
    value = pl.col("value").filter(good & pl.col("value").is_not_null())
    stored = (
        rows.with_columns(bucket_start=_bucket(start_us, bucket_us))
        .group_by("tag_webid", "bucket_start")
        .agg(
            table_count=pl.len(),
            table_good=good.sum(),
            table_total=value.sum(),
            table_minimum=value.min(),
            table_maximum=value.max(),
            valued=value.len(),
        )
        .with_columns(
            [
                pl.when(pl.col("valued") > 0).then(pl.col(c)).otherwise(None).alias(c)
                for c in ("table_total", "table_minimum", "table_maximum")
            ]
        )
        .drop("valued")
    )
    held = (
        quarantined.with_columns(bucket_start=_bucket(start_us, bucket_us))
        .group_by("tag_webid", "bucket_start")
        .agg(quarantined=pl.len())
    )
    out = stored.join(held, on=["tag_webid", "bucket_start"], how="full", coalesce=True)
    return out.with_columns(
        pl.col("quarantined").fill_null(0).cast(pl.Int64),
        (pl.col("table_count").fill_null(0) + pl.col("quarantined").fill_null(0)).cast(pl.Int64),
        (pl.col("table_good").fill_null(0) + pl.col("quarantined").fill_null(0)).cast(pl.Int64),
    )


def _close(a: str, b: str) -> pl.Expr:
    x, y = pl.col(a), pl.col(b)
    both_null = x.is_null() & y.is_null()
    near = (x - y).abs() <= REL_TOL * pl.max_horizontal(x.abs(), y.abs(), pl.lit(1.0))
    return both_null | near.fill_null(False)


def compare(pi: pl.DataFrame, table: pl.DataFrame, numeric: set[str]) -> pl.DataFrame:
    """One row per PI bucket: both sides' figures and `equal`."""
    pct = pl.col("percentgood")
    events = (
        pl.when(pct.is_null())
        .then(pl.lit(0, pl.Int64))
        .when(pct > 0)
        .then((pl.col("count") * 100.0 / pct).round(0).cast(pl.Int64))
        .otherwise(None)
    )
    joined = pi.join(table, on=["tag_webid", "bucket_start"], how="left").with_columns(
        pi_count=events,
        pi_good=pl.col("count").fill_null(0).round(0).cast(pl.Int64),
        table_count=pl.col("table_count").fill_null(0),
        table_good=pl.col("table_good").fill_null(0),
        quarantined=pl.col("quarantined").fill_null(0),
        is_numeric=pl.col("tag_webid").is_in(list(numeric)),
    )
    fingerprint = (
        ~pl.col("is_numeric")
        | (pl.col("quarantined") > 0)
        | (
            _close("total", "table_total")
            & _close("minimum", "table_minimum")
            & _close("maximum", "table_maximum")
        )
    )
    equal = (
        pl.col("pi_count").is_not_null()
        & (pl.col("pi_count") == pl.col("table_count"))
        & (pl.col("pi_good") == pl.col("table_good"))
        & fingerprint
    )
    return joined.with_columns(equal=equal).rename(
        {"total": "pi_total", "minimum": "pi_minimum", "maximum": "pi_maximum"}
    )


def rows_equal(a: pl.DataFrame, b: pl.DataFrame, columns: Sequence[str]) -> bool:
    """The same rows (as multisets) on `columns`."""
    if a.height != b.height:
        return False
    key = list(columns)
    return a.select(key).sort(key, nulls_last=True).equals(b.select(key).sort(key, nulls_last=True))


def changed_buckets(
    table: DeltaTable | None,
    webids: Sequence[str],
    start_us: int,
    end_us: int,
    bucket_us: int,
    since_us: int,
) -> pl.DataFrame:
    """(tag_webid, bucket_start µs, changed µs): the latest commit time of rows written
    after `since` into each bucket of [start, end) (file statistics prune the rest)."""
    empty = pl.DataFrame(
        schema={"tag_webid": pl.String, "bucket_start": pl.Int64, "changed": pl.Int64}
    )
    if table is None or not webids:
        return empty
    where = f"{_between(start_us, end_us)} AND ingestion_timestamp > '{format_us(since_us)}'"
    rows = _sql(table, ["tag_webid", "timestamp", "ingestion_timestamp"], where, webids)
    if not rows.height:
        return empty
    return rows.group_by("tag_webid", bucket_start=_bucket(start_us, bucket_us)).agg(
        changed=pl.col("ingestion_timestamp").dt.epoch("us").max()
    )
