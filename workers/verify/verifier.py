"""Verify buckets of this shard's tags against PI, repair the ones that differ, record all.

For each window (a day of buckets) and group of tags: PI's event-weighted summaries and
the table's figures are compared (`workers.verify.figures`). A bucket that differs is read
with `recorded` (the worker's `RecordedSource`), and if its rows are not the table's, the
tag's rows in that bucket are replaced by them in one commit through the one writer
(`DeltaWriter.replace_where`, app id `pidelta-verify-<i>-of-<n>`). A commit is atomic, so a
crash leaves the old rows or the new ones, and a re-run finds what is left and repairs it.
Every checked bucket gets a row in `_pidelta_verification` (not with `dry_run`, which
writes nothing).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import polars as pl
import pyarrow as pa

from workers.errors import SinkError
from workers.lake.schemas import (
    PI_TIMESERIES,
    PI_TIMESERIES_SCHEMA,
    QUARANTINE,
    VERIFICATION,
    VERIFICATION_SCHEMA,
)
from workers.lake.writer import DeltaWriter
from workers.observe import VerifyObserver
from workers.pi.times import format_us
from workers.timeseries.discovery import TagInfo
from workers.timeseries.source import Source
from workers.timeseries.summaries import SummaryAsk, SummarySource
from workers.verify.figures import (
    SUMMARY_TYPES,
    compare,
    read_quarantined,
    read_rows,
    rows_equal,
    table_figures,
)

DAY_US = 86_400_000_000
TAG_GROUP = 500
REPAIRS_PER_COMMIT = 64
NUMERIC_TYPES = frozenset({"Float16", "Float32", "Float64", "Int16", "Int32", "Int64"})
VALUE_COLUMNS = (
    "tag_webid",
    "timestamp",
    "sequence",
    "value",
    "value_string",
    "digital_state",
    "digital_code",
    "is_system_state",
    "quality_good",
    "quality_questionable",
    "quality_substituted",
    "quality_annotated",
    "value_error",
)
EQUAL, REPAIRED, FAILED, DIFFERS = "equal", "repaired", "failed", "differs"


@dataclass
class VerifyReport:
    """What a verification found and did; `results` is one row per checked bucket."""

    buckets: dict[str, int] = field(default_factory=dict)
    summary_requests: int = 0
    recorded_requests: int = 0
    values_read: int = 0
    results: list[pl.DataFrame] = field(default_factory=list)

    @property
    def checked(self) -> int:
        return sum(self.buckets.values())

    @property
    def pi_requests(self) -> int:
        return self.summary_requests + self.recorded_requests

    @property
    def all_equal(self) -> bool:
        return not (self.buckets.get(FAILED) or self.buckets.get(DIFFERS))


class Verifier:
    """Checks, repairs and records buckets of the given tags (see the module docstring)."""

    def __init__(
        self,
        *,
        summaries: SummarySource,
        recorded: Source,
        writer: DeltaWriter,
        tags: Mapping[str, TagInfo],
        bucket_us: int,
        shard: tuple[int, int],
        dry_run: bool = False,
        bounds: Mapping[str, tuple[int, int]] | None = None,
        observer: VerifyObserver | None = None,
    ) -> None:
        self.summaries = summaries
        self.recorded = recorded
        self.writer = writer
        self.tags = tags
        self.bucket_us = bucket_us
        self.shard = shard
        self.dry_run = dry_run
        self.bounds = bounds
        self.observer = observer
        self.app_id = f"pidelta-verify-{shard[0]}-of-{shard[1]}"
        self.numeric = {w for w, t in tags.items() if (t.point_type or "") in NUMERIC_TYPES}

    async def verify(self, start_us: int, end_us: int) -> VerifyReport:
        """Every bucket in [start, end) (bucket-aligned) of every tag; with `bounds`, only
        the buckets inside each tag's (first, end) in µs (what `run` has read and committed:
        the rest is not its to repair)."""
        report = VerifyReport()
        webids = sorted(self.tags)
        step = max(DAY_US, self.bucket_us)
        for lo in range(start_us, end_us, step):
            hi = min(lo + step, end_us)
            for i in range(0, len(webids), TAG_GROUP):
                await self._window(webids[i : i + TAG_GROUP], lo, hi, report)
        report.summary_requests = self.summaries.stats.requests
        return report

    async def _window(self, webids: list[str], lo: int, hi: int, report: VerifyReport) -> None:
        ask = SummaryAsk(SUMMARY_TYPES, "EventWeighted", self.bucket_us)
        pi, refused = await self.summaries.read(webids, lo, hi, ask)
        stored = await asyncio.to_thread(self._table_figures, webids, lo, hi)
        checked = compare(pi, stored, self.numeric)
        if self.bounds is not None:
            tag = pl.col("tag_webid")
            first = tag.replace_strict({w: b[0] for w, b in self.bounds.items()}, default=None)
            last = tag.replace_strict({w: b[1] for w, b in self.bounds.items()}, default=None)
            inside = (pl.col("bucket_start") >= first) & (pl.col("bucket_end") <= last)
            checked = checked.filter(inside)
        checked = checked.with_columns(
            result=pl.when("equal").then(pl.lit(EQUAL)).otherwise(pl.lit(DIFFERS)),
            detail=pl.lit(None, pl.String),
        )
        if refused:
            checked = pl.concat([checked, self._refused(refused, lo, hi)], how="diagonal_relaxed")
        differing = checked.filter(pl.col("result") == DIFFERS)
        if differing.height:
            settled = await self._settle(differing, lo, hi, report)
            checked = checked.update(settled, on=["tag_webid", "bucket_start"])
        await asyncio.to_thread(self._record, checked, report)

    def _table_figures(self, webids: list[str], lo: int, hi: int) -> pl.DataFrame:
        columns = ["tag_webid", "timestamp", "value", "is_system_state"]
        rows = self._rows(webids, lo, hi, columns)
        quarantined = pl.DataFrame(
            schema={"tag_webid": pl.String, "timestamp": pl.Datetime("us", "UTC")}
        )
        if self.writer.store.exists(QUARANTINE):
            quarantined = read_quarantined(self.writer.table(QUARANTINE), webids, lo, hi)
        return table_figures(rows, quarantined, lo, self.bucket_us)

    def _rows(self, webids: Sequence[str], lo: int, hi: int, columns: list[str]) -> pl.DataFrame:
        if not self.writer.store.exists(PI_TIMESERIES):
            empty = PI_TIMESERIES_SCHEMA.empty_table().select(columns)
            return pl.from_arrow(empty)  # type: ignore[return-value]
        return read_rows(self.writer.table(PI_TIMESERIES), webids, lo, hi, columns)

    def _refused(self, refused: Mapping[str, str], lo: int, hi: int) -> pl.DataFrame:
        starts = list(range(lo, hi, self.bucket_us))
        return pl.DataFrame(
            {
                "tag_webid": [w for w in refused for _ in starts],
                "bucket_start": starts * len(refused),
                "bucket_end": [min(s + self.bucket_us, hi) for s in starts] * len(refused),
                "result": FAILED,
                "detail": [
                    f"PI refused the summary: {refused[w]}" for w in refused for _ in starts
                ],
            }
        )

    async def _settle(
        self, differing: pl.DataFrame, lo: int, hi: int, report: VerifyReport
    ) -> pl.DataFrame:
        """Read the differing buckets; equal rows settle them, else repair (or report)."""
        keys = differing.select("tag_webid", "bucket_start", "bucket_end", "pi_count")
        fresh, requarantined, unread = await self._read_buckets(keys, report)
        webids = keys["tag_webid"].unique().to_list()
        stored = await asyncio.to_thread(self._rows, webids, lo, hi, list(VALUE_COLUMNS))
        held = self._in_buckets(stored, keys)
        outcomes: list[tuple[str, int, str, str | None]] = []
        to_repair: list[tuple[str, int, int]] = []
        by_key = ["tag_webid", "bucket_start"]
        fresh_parts = fresh.partition_by(by_key, as_dict=True)
        held_parts = held.partition_by(by_key, as_dict=True)
        for w, s, e, pi_count in keys.iter_rows():
            new = fresh_parts.get((w, s), fresh.clear())
            old = held_parts.get((w, s), held.clear())
            seen = new.height + requarantined.get((w, s), 0)
            consistent = pi_count is None or pi_count == seen
            if (w, s) in unread:
                outcomes.append((w, s, FAILED, "PI's recorded answer could not be read"))
            elif rows_equal(new, old, VALUE_COLUMNS):
                detail = None if consistent else f"summary counts {pi_count}, recorded {seen}"
                outcomes.append((w, s, EQUAL if consistent else FAILED, detail))
            elif self.dry_run:
                outcomes.append((w, s, DIFFERS, f"table {old.height} rows, PI {new.height}"))
            else:
                to_repair.append((w, s, e))
                detail = None if consistent else f"summary counts {pi_count}, recorded {seen}"
                outcomes.append((w, s, REPAIRED if consistent else FAILED, detail))
        failed_repairs = await asyncio.to_thread(self._repair, to_repair, fresh)
        rows = [
            (w, s, FAILED if (w, s) in failed_repairs else r, failed_repairs.get((w, s), d))
            for w, s, r, d in outcomes
        ]
        return pl.DataFrame(
            rows,
            schema={
                "tag_webid": pl.String,
                "bucket_start": pl.Int64,
                "result": pl.String,
                "detail": pl.String,
            },
            orient="row",
        )

    async def _read_buckets(
        self, keys: pl.DataFrame, report: VerifyReport
    ) -> tuple[pl.DataFrame, dict[tuple[str, int], int], set[tuple[str, int]]]:
        """PI's recorded rows of each (tag, bucket), the values it quarantined per bucket,
        and the buckets whose answer could not be read. A read takes one span per tag, so
        the k-th bucket of every tag goes into the k-th read; a quarantined value belongs
        to the bucket its read asked for, whether or not its timestamp could be read."""
        rounds: dict[int, list[tuple[str, int, int]]] = {}
        seen: dict[str, int] = {}
        for w, s, e, _ in keys.iter_rows():
            k = seen.get(w, 0)
            seen[w] = k + 1
            rounds.setdefault(k, []).append((w, s, e))
        rows: list[pa.Table] = []
        quarantined: dict[tuple[str, int], int] = {}
        unread: set[tuple[str, int]] = set()
        for spans in rounds.values():
            read = await self.recorded.read([(w, s - 1, e - 1) for w, s, e in spans])
            report.recorded_requests += read.stats.calls
            report.values_read += read.stats.values
            rows.extend(read.rows)
            start_of = {w: s for w, s, _ in spans}
            for q in read.quarantine:
                for w in q.column("tag_webid").to_pylist():
                    key = (w, start_of[w])
                    quarantined[key] = quarantined.get(key, 0) + 1
            unread.update((w, start_of[w]) for w in read.set_aside)
        fresh = self._in_buckets(_frame(rows, PI_TIMESERIES_SCHEMA), keys)
        return fresh, quarantined, unread

    def _in_buckets(self, rows: pl.DataFrame, keys: pl.DataFrame) -> pl.DataFrame:
        """Rows of the (tag, bucket) pairs in `keys`, with their bucket_start."""
        ts = pl.col("timestamp").dt.epoch("us")
        b = self.bucket_us
        tagged = rows.with_columns(bucket_start=ts // b * b)
        return tagged.join(
            keys.select("tag_webid", "bucket_start"), on=["tag_webid", "bucket_start"]
        )

    def _repair(
        self, buckets: list[tuple[str, int, int]], fresh: pl.DataFrame
    ) -> dict[tuple[str, int], str]:
        """Replace each bucket's rows, REPAIRS_PER_COMMIT buckets per commit; the failures."""
        failed: dict[tuple[str, int], str] = {}
        for i in range(0, len(buckets), REPAIRS_PER_COMMIT):
            group = buckets[i : i + REPAIRS_PER_COMMIT]
            keys = pl.DataFrame(
                [(w, s) for w, s, _ in group],
                schema={"tag_webid": pl.String, "bucket_start": pl.Int64},
                orient="row",
            )
            rows = fresh.join(keys, on=["tag_webid", "bucket_start"]).drop("bucket_start")
            predicate = " OR ".join(_bucket_predicate(w, s, e) for w, s, e in group)
            version = (self.writer.committed_version(PI_TIMESERIES, self.app_id) or 0) + 1
            before = self.writer.table(PI_TIMESERIES).version()
            try:
                written = self.writer.replace_where(
                    PI_TIMESERIES, predicate, rows.to_arrow(), self.app_id, version
                )
            except SinkError as exc:
                failed.update({(w, s): f"repair failed: {exc}" for w, s, _ in group})
                continue
            if written and self._met_own_append(before, version):
                failed.update({(w, s): MET_OWN_APPEND for w, s, _ in group})
        return failed

    def _met_own_append(self, before: int, version: int) -> bool:
        """Whether an append of this shard's app ids landed after version `before` and
        before the repair committed as batch `version`. pi_timeseries is at
        writeSerializable isolation, so the repair was not refused for it and may have
        written a row that append also holds: the buckets are checked again
        (docs/DESIGN.md "Concurrent writers")."""
        table = self.writer.table(PI_TIMESERIES)
        newer = table.history(table.version() - before)  # newest first
        ours = {"pidelta.app_id": self.app_id, "pidelta.batch_id": str(version)}
        mine = next(
            (i for i, c in enumerate(newer) if all(c.get(k) == v for k, v in ours.items())),
            len(newer),
        )
        suffix = f"-{self.shard[0]}-of-{self.shard[1]}"
        return any(
            str(commit.get("pidelta.app_id", "")).endswith(suffix)
            and commit.get("isBlindAppend") is True
            for commit in newer[mine + 1 :]
        )

    def _record(self, checked: pl.DataFrame, report: VerifyReport) -> None:
        counts = dict(checked.group_by("result").len().iter_rows())
        for result, n in counts.items():
            report.buckets[result] = report.buckets.get(result, 0) + n
        if self.observer is not None:
            self.observer.verified(str(self.shard[0]), counts)
        names = {w: t.name for w, t in self.tags.items()}
        rows = checked.with_columns(
            tag_name=pl.col("tag_webid").replace_strict(names, default=None),
            bucket_start=pl.from_epoch("bucket_start", "us").dt.replace_time_zone("UTC"),
            bucket_end=pl.from_epoch("bucket_end", "us").dt.replace_time_zone("UTC"),
            table_count=pl.col("table_count").fill_null(0),
            shard_index=pl.lit(self.shard[0], pl.Int64),
            shard_count=pl.lit(self.shard[1], pl.Int64),
            checked_at=pl.lit(datetime.now(UTC)).dt.cast_time_unit("us"),
        )
        for column in VERIFICATION_SCHEMA.names:
            if column not in rows.columns:
                rows = rows.with_columns(pl.lit(None).alias(column))
        table = rows.select(VERIFICATION_SCHEMA.names).to_arrow().cast(VERIFICATION_SCHEMA)
        report.results.append(pl.from_arrow(table))  # type: ignore[arg-type]
        if not self.dry_run:
            self.writer.append(VERIFICATION, table)


MET_OWN_APPEND = "repaired beside an append of this shard's tags: verify again"


def _frame(tables: list[pa.Table], schema: pa.Schema) -> pl.DataFrame:
    if not tables:
        return pl.from_arrow(schema.empty_table())  # type: ignore[return-value]
    return pl.from_arrow(pa.concat_tables(tables, promote_options="permissive"))  # type: ignore[return-value]


def _bucket_predicate(webid: str, start_us: int, end_us: int) -> str:
    """SQL for one tag's rows in [start, end), with the date partitions it spans."""
    first = format_us(start_us)[:10]
    last = format_us(end_us - 1)[:10]
    quoted = webid.replace("'", "''")
    return (
        f"(date >= '{first}' AND date <= '{last}' AND tag_webid = '{quoted}' "
        f"AND \"timestamp\" >= '{format_us(start_us)}' AND \"timestamp\" < '{format_us(end_us)}')"
    )
