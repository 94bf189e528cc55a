"""Ranges set aside because PI's answer for them could not be read, and their re-reads.

A source sets a stream aside when its answer stays unreadable after retries (HTML with
status 200, invalid UTF-8, ...): its rows are left out and the rest of the batch goes on.
Its checkpoint still advances with the batch, so the range is kept here, appended before
the batch commits; later batches read each open range again as a `REREAD` range (guarded:
anti-joined against the table) until one answer can be read, and a row with `resolved_at`
closes it. The re-read is part of a recorded plan before it is marked resolved (plans are
recorded when their commit starts, so the closing rows wait for it: `resolve_planned`),
and a crash in between re-runs the plan and reads it again. See docs/DESIGN.md.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import UTC, datetime

import polars as pl
import pyarrow as pa

from workers.lake.schemas import SET_ASIDE, SET_ASIDE_SCHEMA, UTC_US
from workers.lake.writer import DeltaWriter
from workers.timeseries.plan import REREAD, PlannedBatch, TagRange

KEY = ["tag_webid", "range_start", "range_end"]


# The app ids of the summary and grid tables, whose refused ranges share the table
# (workers/timeseries/refused.py) but are not the time series' to read again.
AGGREGATE_PREFIXES = ("pidelta-summ-", "pidelta-interp-")


def set_aside_rows(
    webids: Sequence[str],
    start: pa.Array,
    end: pa.Array,
    app_id: str,
    batch_id: int,
    *,
    noted: pa.Array,
    resolved: pa.Array,
) -> pa.Table:
    """`_pidelta_set_aside` rows, open (`resolved` null) or closed, of any app id."""
    n = len(webids)
    return pa.table(
        {
            "tag_webid": pa.array(webids, pa.string()),
            "range_start": start,
            "range_end": end,
            "app_id": [app_id] * n,
            "batch_id": pa.array([batch_id] * n, pa.int64()),
            "noted_at": noted,
            "resolved_at": resolved,
        },
        schema=SET_ASIDE_SCHEMA,
    )


class SetAside:
    """`_pidelta_set_aside`: ranges noted and resolved by blind appends. The open ones are
    read once when the worker starts (tags that moved here included) and kept in memory,
    so a batch asks nothing of the table."""

    def __init__(self, writer: DeltaWriter) -> None:
        self.writer = writer
        found = pl.from_arrow(
            writer.table(SET_ASIDE).to_pyarrow_table(columns=[*KEY, "app_id", "resolved_at"])
        )
        still = (
            # The refused ranges of pi_summaries and pi_interpolated are theirs (`refused`).
            found.filter(~pl.col("app_id").str.starts_with(AGGREGATE_PREFIXES[0]))
            .filter(~pl.col("app_id").str.starts_with(AGGREGATE_PREFIXES[1]))
            .group_by(KEY)
            .agg(pl.col("resolved_at").is_not_null().any().alias("closed"))
            .filter(~pl.col("closed"))
            .sort(KEY)
        )
        self._open = {
            (w, s, e): TagRange(w, s, e, REREAD)
            for w, s, e in zip(
                still["tag_webid"], still["range_start"], still["range_end"], strict=True
            )
        }
        self._read: list[TagRange] = []  # read again, closed once their plan is recorded

    def record(self, batch: PlannedBatch, aside: Collection[str]) -> None:
        """Before `batch` can commit: keep the ranges of the streams set aside this time;
        the re-reads of the others are no longer due, and are closed by `resolve_planned`
        once the plan holding them is recorded."""
        kept = [r for r in batch.ranges if r.webid in aside and r.kind != REREAD]
        self.note(batch.app_id, batch.batch_id, kept)
        read = [r for r in batch.ranges if r.kind == REREAD and r.webid not in aside]
        for r in read:
            self._open.pop((r.webid, r.start, r.end), None)
        self._read.extend(read)

    def resolve_planned(self, app_id: str, batch_id: int) -> None:
        """Close the re-reads read since the last call: plan `batch_id` of `app_id`, just
        recorded, holds them."""
        read, self._read = self._read, []
        self.resolve(app_id, batch_id, read)

    def note(self, app_id: str, batch_id: int, ranges: Sequence[TagRange]) -> None:
        """Keep `ranges` of a batch for a re-read."""
        self._append(ranges, app_id, batch_id, resolved=False)
        for r in ranges:
            self._open[(r.webid, r.start, r.end)] = TagRange(r.webid, r.start, r.end, REREAD)

    def resolve(self, app_id: str, batch_id: int, ranges: Sequence[TagRange]) -> None:
        """Close `ranges`: a batch whose plan holds them has read them."""
        self._append(ranges, app_id, batch_id, resolved=True)
        for r in ranges:
            self._open.pop((r.webid, r.start, r.end), None)

    def due(self, tags: Collection[str]) -> list[TagRange]:
        """The open ranges of `tags`, as re-read ranges."""
        return [r for r in self._open.values() if r.webid in tags]

    def _append(
        self, ranges: Sequence[TagRange], app_id: str, batch_id: int, *, resolved: bool
    ) -> None:
        if not ranges:
            return
        now = datetime.now(UTC)
        n = len(ranges)
        rows = set_aside_rows(
            [r.webid for r in ranges],
            pa.array([r.start for r in ranges], UTC_US),
            pa.array([r.end for r in ranges], UTC_US),
            app_id,
            batch_id,
            noted=pa.array([now] * n, UTC_US),
            resolved=pa.array([now if resolved else None] * n, UTC_US),
        )
        self.writer.append(SET_ASIDE, rows)
