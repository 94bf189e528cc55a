"""Stream-update events applied to `pi_timeseries`, and the change log they leave.

An `Add` inserts its row (nothing when the key is there: a re-run, or a value the recorded
read already had), an `Update` replaces the row at its key (inserts it when absent, as the
AF SDK says of an update without a value to replace) and a `Delete` removes it. The net
effect per key is decided in columns (`resolve`); the rows of the touched tags over the
touched times are then replaced in one commit (`DeltaWriter.replace_where`), restricted by
partition date, tag and time so that only the files holding those rows are rewritten.

Every key whose row changed, other than a value first written here (an `Add` past the
tag's covered time), gets one `pi_timeseries_changes` row: its action, the row before and
after. Applying the same events twice changes nothing and logs nothing the second time.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime

import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds

from workers.lake.schemas import (
    CHANGE_VALUE_COLUMNS,
    PI_TIMESERIES_CHANGES_SCHEMA,
    PI_TIMESERIES_SCHEMA,
)

KEY = ["tag_webid", "timestamp", "sequence"]
COMPARED = [name for name, _ in CHANGE_VALUE_COLUMNS] + ["value_error"]
ROW_COLUMNS = PI_TIMESERIES_SCHEMA.names


def ranges(events: pa.Table) -> tuple[dict[str, tuple[datetime, datetime]], list[date]]:
    """Per tag the earliest and latest timestamp of its events, and the dates they fall on."""
    frame = pl.from_arrow(events.select(["tag_webid", "timestamp", "date"]))
    spans = frame.group_by("tag_webid").agg(
        pl.col("timestamp").min().alias("lo"), pl.col("timestamp").max().alias("hi")
    )
    out = {
        w: (lo, hi)
        for w, lo, hi in zip(
            spans["tag_webid"].to_list(), spans["lo"].to_list(), spans["hi"].to_list(), strict=True
        )
    }
    return out, sorted(frame["date"].unique().to_list())


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _stamp(t: datetime) -> str:
    return _quoted(t.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))


def predicate(spans: Mapping[str, tuple[datetime, datetime]], dates: list[date]) -> str:
    """The rows `replace_where` replaces: these dates, and per tag its time span."""
    days = ", ".join(_quoted(d.isoformat()) for d in dates)
    per_tag = " OR ".join(
        f"(tag_webid = {_quoted(w)} AND timestamp >= {_stamp(lo)} AND timestamp <= {_stamp(hi)})"
        for w, (lo, hi) in sorted(spans.items())
    )
    return f"date IN ({days}) AND ({per_tag})"


def existing_rows(
    dataset: ds.Dataset, spans: Mapping[str, tuple[datetime, datetime]], dates: list[date]
) -> pa.Table:
    """The table's rows the predicate matches (read by date, tag and the overall times,
    then cut to each tag's span)."""
    lo = min(s for s, _ in spans.values())
    hi = max(e for _, e in spans.values())
    where = (
        ds.field("date").isin(pa.array(dates, pa.date32()))
        & ds.field("tag_webid").isin(pa.array(list(spans), pa.string()))
        & (ds.field("timestamp") >= pa.scalar(lo, pa.timestamp("us", tz="UTC")))
        & (ds.field("timestamp") <= pa.scalar(hi, pa.timestamp("us", tz="UTC")))
    )
    rows = dataset.to_table(filter=where)
    if rows.num_rows == 0:
        return rows.select(ROW_COLUMNS).cast(PI_TIMESERIES_SCHEMA)
    bounds = pl.DataFrame(
        {
            "tag_webid": list(spans),
            "_lo": [s for s, _ in spans.values()],
            "_hi": [e for _, e in spans.values()],
        },
        schema={
            "tag_webid": pl.String,
            "_lo": pl.Datetime("us", "UTC"),
            "_hi": pl.Datetime("us", "UTC"),
        },
    )
    kept = (
        pl.from_arrow(rows.select(ROW_COLUMNS))
        .join(bounds, on="tag_webid")
        .filter((pl.col("timestamp") >= pl.col("_lo")) & (pl.col("timestamp") <= pl.col("_hi")))
        .drop(["_lo", "_hi"])
    )
    return kept.to_arrow().cast(PI_TIMESERIES_SCHEMA)


def resolve(
    existing: pa.Table, events: pa.Table, covered: Mapping[str, datetime]
) -> tuple[pa.Table, pl.DataFrame]:
    """(the rows that replace `existing`, the changed keys with their old and new rows).

    `covered` is each tag's time up to which the table held PI's archive before these
    events: an `Add` after it is a value written for the first time, not a change.
    """
    old = pl.from_arrow(existing).with_columns(pl.lit(True).alias("_old"))
    ev = pl.from_arrow(events).sort("order", maintain_order=True)
    cover = pl.DataFrame(
        {"tag_webid": list(covered), "_covered": list(covered.values())},
        schema={"tag_webid": pl.String, "_covered": pl.Datetime("us", "UTC")},
    )
    per_key = ev.group_by(KEY, maintain_order=True).agg(
        pl.all().exclude(KEY).last(),
        pl.col("action").first().alias("_first"),
        (pl.col("action") == "Delete").any().alias("_deleted"),
    )
    joined = (
        per_key.join(old, on=KEY, how="left", suffix="_was")
        .join(cover, on="tag_webid", how="left")
        .with_columns(pl.col("_old").fill_null(False))
    )
    keep_old = (pl.col("action") == "Add") & pl.col("_old") & ~pl.col("_deleted")
    present = (pl.col("action") != "Delete") & ~keep_old
    fresh = (
        (pl.col("_first") == "Add")
        & ~pl.col("_old")
        & (pl.col("_covered").is_null() | (pl.col("timestamp") > pl.col("_covered")))
    )
    same = pl.lit(True)
    for c in COMPARED:
        same = same & pl.col(c).eq_missing(pl.col(f"{c}_was"))
    joined = joined.with_columns(
        keep_old.alias("_keep_old"),
        present.alias("_present"),
        fresh.alias("_fresh"),
        same.alias("_same"),
    )
    new_rows = joined.filter(pl.col("_present")).select(ROW_COLUMNS)
    untouched = pl.from_arrow(existing).join(per_key.select(KEY), on=KEY, how="anti")
    kept_old = old.join(joined.filter(pl.col("_keep_old")).select(KEY), on=KEY, how="semi")
    rows = pl.concat(
        [untouched, kept_old.select(ROW_COLUMNS), new_rows], how="vertical_relaxed"
    ).sort(KEY)
    changed = joined.filter(
        ~pl.col("_keep_old")
        & ~pl.col("_fresh")
        & ((pl.col("_present") != pl.col("_old")) | (pl.col("_present") & ~pl.col("_same")))
    )
    return rows.to_arrow().cast(PI_TIMESERIES_SCHEMA), changed


def change_log(changed: pl.DataFrame, applied_at: datetime, app_id: str, batch_id: int) -> pa.Table:
    """`pi_timeseries_changes` rows of the changed keys (`resolve`); observed when the
    retrieval that reported the change decoded it (the event's ingestion time)."""
    present = pl.col("_present")
    was = pl.col("_old")
    columns = [
        pl.col("tag_webid"),
        pl.coalesce("tag_name", "tag_name_was").alias("tag_name"),
        pl.col("timestamp"),
        pl.col("sequence"),
        pl.col("action"),
        pl.col("ingestion_timestamp").alias("observed_at"),
    ]
    for name, _ in CHANGE_VALUE_COLUMNS:
        columns.append(pl.when(was).then(pl.col(f"{name}_was")).alias(f"old_{name}"))
    for name, _ in CHANGE_VALUE_COLUMNS:
        columns.append(pl.when(present).then(pl.col(name)).alias(f"new_{name}"))
    n = changed.height
    table = changed.select(columns).to_arrow()
    extra = {
        "pi_change_time": pa.nulls(n, pa.timestamp("us", tz="UTC")),
        "applied_at": pa.array([applied_at] * n, pa.timestamp("us", tz="UTC")),
        "app_id": pa.array([app_id] * n, pa.string()),
        "batch_id": pa.array([batch_id] * n, pa.int64()),
    }
    for name, column in extra.items():
        table = table.append_column(name, column)
    return table.select(PI_TIMESERIES_CHANGES_SCHEMA.names).cast(PI_TIMESERIES_CHANGES_SCHEMA)


def counts(changed: pl.DataFrame) -> dict[str, int]:
    """Applied changes by action (for the metric)."""
    if changed.is_empty():
        return {}
    tally = changed.group_by("action").len()
    return dict(zip(tally["action"].to_list(), tally["len"].to_list(), strict=True))
