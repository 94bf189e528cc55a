"""Stream-update events applied to `pi_timeseries`, and the change log they leave.

Per key, the net effect of its events (`resolve`): an `Add` or `Update` of a key the table
lacks is an arrival, appended blind (an `Update` without a value to replace inserts, as the
AF SDK says); an `Add` or `Update` of a key the table holds with another value is an edit;
a `Delete` of a key the table holds is a removal; anything else (a re-run, a value the
recorded read already had, a deletion of what is not there) changes nothing. Only edited and
removed keys are replaced, in one `replace_where` commit whose predicate (`Scope`) names
their dates, tags and times as tightly as its length allows: delta-rs refuses a replace when
a concurrent commit added a file whose statistics may match the predicate, and other shards
keep adding files over every tag at the live times, which edits rarely reach.

Every key whose row changed, other than a value first written here (an `Add` past the
tag's covered time), gets one `pi_timeseries_changes` row: its action, the row before and
after (an `Add` that changed a row is logged as the `Update` it was). Applying the same
events twice changes nothing and logs nothing the second time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import NamedTuple

import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds

from workers.lake.schemas import (
    CHANGE_VALUE_COLUMNS,
    PI_TIMESERIES_CHANGES_SCHEMA,
    PI_TIMESERIES_SCHEMA,
    UTC_US,
)

KEY = ["tag_webid", "timestamp", "sequence"]
COMPARED = [name for name, _ in CHANGE_VALUE_COLUMNS] + ["value_error"]
ROW_COLUMNS = PI_TIMESERIES_SCHEMA.names
# A replace names each touched tag with its own time span up to this many tags; beyond, the
# tags in one list with the times of them all; beyond TAG_LIST_MAX tags (about 50 kB of
# predicate, which every commit's log entry repeats), the range of their names.
PER_TAG_SPANS = 64
TAG_LIST_MAX = 1000


class Resolved(NamedTuple):
    """The net effect of a batch of events on the table (`resolve`)."""

    arrivals: pa.Table  # rows of keys the table lacks: appended
    edits: pa.Table  # the new rows of edited keys: written by the replace
    replaced: pl.DataFrame  # keys (and date) edited or removed: the replace's scope
    changed: pl.DataFrame  # keys to log (`change_log`)


def at_keys(dataset: ds.Dataset, events: pa.Table) -> pa.Table:
    """The table's rows at the keys of `events` (read by date, tag and the overall times,
    then cut to the keys)."""
    if events.num_rows == 0:
        return PI_TIMESERIES_SCHEMA.empty_table()
    frame = pl.from_arrow(events.select([*KEY, "date"]))
    where = (
        ds.field("date").isin(pa.array(frame["date"].unique().to_list(), pa.date32()))
        & ds.field("tag_webid").isin(pa.array(frame["tag_webid"].unique().to_list(), pa.string()))
        & (ds.field("timestamp") >= pa.scalar(frame["timestamp"].min(), UTC_US))
        & (ds.field("timestamp") <= pa.scalar(frame["timestamp"].max(), UTC_US))
    )
    rows = dataset.to_table(filter=where)
    if rows.num_rows == 0:
        return rows.select(ROW_COLUMNS).cast(PI_TIMESERIES_SCHEMA)
    kept = pl.from_arrow(rows.select(ROW_COLUMNS)).join(
        frame.select(KEY).unique(), on=KEY, how="semi"
    )
    return kept.to_arrow().cast(PI_TIMESERIES_SCHEMA)


def resolve(existing: pa.Table, events: pa.Table, covered: Mapping[str, datetime]) -> Resolved:
    """What the events do to the table, whose rows at their keys are `existing`.

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
        pl.all().exclude(KEY).last(), pl.col("action").first().alias("_first")
    )
    joined = (
        per_key.join(old, on=KEY, how="left", suffix="_was")
        .join(cover, on="tag_webid", how="left")
        .with_columns(pl.col("_old").fill_null(False))
    )
    present = pl.col("action") != "Delete"
    same = pl.lit(True)
    for c in COMPARED:
        same = same & pl.col(c).eq_missing(pl.col(f"{c}_was"))
    fresh = (
        (pl.col("_first") == "Add")
        & ~pl.col("_old")
        & (pl.col("_covered").is_null() | (pl.col("timestamp") > pl.col("_covered")))
    )
    joined = joined.with_columns(
        present.alias("_present"),
        fresh.alias("_fresh"),
        (present & ~pl.col("_old")).alias("_arrival"),
        (present & pl.col("_old") & ~same).alias("_edit"),
        (~present & pl.col("_old")).alias("_removal"),
    )
    joined = joined.with_columns(  # an `Add` that changed a row is the edit it was
        pl.when(pl.col("_edit")).then(pl.lit("Update")).otherwise("action").alias("action")
    )
    touched = pl.col("_edit") | pl.col("_removal")
    changed = joined.filter((pl.col("_arrival") & ~pl.col("_fresh")) | touched)
    return Resolved(
        arrivals=_rows(joined.filter(pl.col("_arrival"))),
        edits=_rows(joined.filter(pl.col("_edit"))),
        replaced=joined.filter(touched).select([*KEY, "date"]),
        changed=changed,
    )


def _rows(frame: pl.DataFrame) -> pa.Table:
    return frame.select(ROW_COLUMNS).sort(KEY).to_arrow().cast(PI_TIMESERIES_SCHEMA)


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _stamp(t: datetime) -> str:
    return _quoted(t.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))


@dataclass(frozen=True)
class Box:
    """Rows of some tags (a list, or a range of names when `span` is set) over a time span."""

    tags: tuple[str, ...]
    lo: datetime
    hi: datetime
    span: bool = False

    def sql(self) -> str:
        if self.span:
            first, last = self.tags
            tag = f"tag_webid >= {_quoted(first)} AND tag_webid <= {_quoted(last)}"
        elif len(self.tags) == 1:
            tag = f"tag_webid = {_quoted(self.tags[0])}"
        else:
            tag = f"tag_webid IN ({', '.join(_quoted(w) for w in self.tags)})"
        return f"{tag} AND timestamp >= {_stamp(self.lo)} AND timestamp <= {_stamp(self.hi)}"

    def expression(self) -> ds.Expression:
        if self.span:
            first, last = self.tags
            tag = (ds.field("tag_webid") >= first) & (ds.field("tag_webid") <= last)
        else:
            tag = ds.field("tag_webid").isin(pa.array(self.tags, pa.string()))
        return (
            tag
            & (ds.field("timestamp") >= pa.scalar(self.lo, UTC_US))
            & (ds.field("timestamp") <= pa.scalar(self.hi, UTC_US))
        )


@dataclass(frozen=True)
class Scope:
    """The rows a replace deletes and writes again: its predicate (`sql`) and the same
    condition to read them (`expression`), so the two cannot disagree."""

    dates: tuple[date, ...]
    boxes: tuple[Box, ...]

    @classmethod
    def of(cls, keys: pl.DataFrame) -> Scope:
        """The tightest scope over `keys` (tag_webid, timestamp, date) of bounded length:
        per tag its time span (few tags), else the tags and the times of them all."""
        dates = tuple(sorted(keys["date"].unique().to_list()))
        spans = (
            keys.group_by("tag_webid")
            .agg(pl.col("timestamp").min().alias("lo"), pl.col("timestamp").max().alias("hi"))
            .sort("tag_webid")
        )
        tags = spans["tag_webid"].to_list()
        if len(tags) <= PER_TAG_SPANS:
            boxes = tuple(
                Box((w,), lo, hi)
                for w, lo, hi in zip(
                    tags, spans["lo"].to_list(), spans["hi"].to_list(), strict=True
                )
            )
            return cls(dates, boxes)
        lo, hi = keys["timestamp"].min(), keys["timestamp"].max()
        if len(tags) <= TAG_LIST_MAX:
            return cls(dates, (Box(tuple(tags), lo, hi),))
        return cls(dates, (Box((tags[0], tags[-1]), lo, hi, span=True),))

    def sql(self) -> str:
        days = ", ".join(_quoted(d.isoformat()) for d in self.dates)
        boxes = " OR ".join(f"({b.sql()})" for b in self.boxes)
        return f"date IN ({days}) AND ({boxes})"

    def expression(self) -> ds.Expression:
        either = self.boxes[0].expression()
        for b in self.boxes[1:]:
            either = either | b.expression()
        return ds.field("date").isin(pa.array(self.dates, pa.date32())) & either

    def rows(self, dataset: ds.Dataset) -> pa.Table:
        """The table's rows in the scope."""
        found = dataset.to_table(filter=self.expression())
        return found.select(ROW_COLUMNS).cast(PI_TIMESERIES_SCHEMA)


def replacement(in_scope: pa.Table, resolved: Resolved) -> pa.Table:
    """The rows that replace `in_scope`: those not touched, the edits, and arrivals (a
    re-run's arrivals when its append is in already go with the replace)."""
    kept = pl.from_arrow(in_scope).join(resolved.replaced.select(KEY), on=KEY, how="anti")
    rows = pl.concat(
        [kept, pl.from_arrow(resolved.edits), pl.from_arrow(resolved.arrivals)],
        how="vertical_relaxed",
    ).sort(KEY)
    return rows.to_arrow().cast(PI_TIMESERIES_SCHEMA)


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
        "pi_change_time": pa.nulls(n, UTC_US),
        "applied_at": pa.array([applied_at] * n, UTC_US),
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
