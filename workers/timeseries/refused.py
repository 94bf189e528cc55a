"""Ranges PI refused for `pi_summaries` and `pi_interpolated`, read again until it answers.

A tag PI refuses in a summaries or grid answer (an item error) has no rows for that range,
and the shard's watermark moves on without it, so the range is kept in `_pidelta_set_aside`
(the table of the time series' unreadable answers; see docs/DESIGN.md "Set-aside answers")
under the app id of the table's watermark (`pidelta-summ-...`, `pidelta-interp-...`) with
the new watermark as `batch_id`:
- noted before the MERGE that moves the watermark past it, so a crash in between leaves the
  range noted (and read again from the old watermark, which is harmless);
- read again by every later cycle of a shard that owns the tag (any shard layout: the rows
  of all layouts of the table are read), its rows upserted in the cycle's MERGE;
- resolved after that MERGE landed, so a crash in between reads it once more (the upsert
  writes the same rows again).
Ranges are [start, end) in µs (bucket starts, or grid times). A tag refused cycle after
cycle extends its open range (the old one resolved and the longer one noted in one append)
up to `max_span_us`, so a long refusal costs a few reads per cycle, not one per cycle it
lasted. A tag that is no longer discovered (a deleted point) is never due: it holds nothing
up.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import polars as pl
import pyarrow as pa

from workers.lake.schemas import SET_ASIDE, UTC_US
from workers.lake.writer import DeltaWriter
from workers.timeseries.set_aside import set_aside_rows

KEY = ["tag_webid", "range_start", "range_end"]
READ = ["app_id", "noted_at", "resolved_at"]


@dataclass(frozen=True, slots=True)
class Span:
    """An open range of one tag, [start, end) in µs, and when it was first noted (µs)."""

    webid: str
    start: int
    end: int
    noted_us: int


class RefusedRanges:
    """The open refused ranges of one watermarked table kind (`prefix`, the app id without
    its `<i>-of-<n>`), read from the table when built."""

    def __init__(self, writer: DeltaWriter, prefix: str, max_span_us: int) -> None:
        self.writer = writer
        self.max_span_us = max_span_us
        writer.store.create(SET_ASIDE)
        found = pl.from_arrow(writer.table(SET_ASIDE).to_pyarrow_table(columns=[*KEY, *READ]))
        still = (
            found.filter(pl.col("app_id").str.starts_with(prefix))  # type: ignore[union-attr]
            .group_by(KEY)
            .agg(
                pl.col("resolved_at").is_not_null().any().alias("closed"),
                pl.col("noted_at").min(),
            )
            .filter(~pl.col("closed"))
            .sort(KEY)
        )
        self._open: dict[str, list[Span]] = defaultdict(list)
        for w, s, e, n in zip(
            still["tag_webid"],
            still["range_start"].dt.epoch("us"),
            still["range_end"].dt.epoch("us"),
            still["noted_at"].dt.epoch("us"),
            strict=True,
        ):
            self._open[w].append(Span(w, s, e, n))

    def due(self, tags: Collection[str]) -> list[Span]:
        """The open ranges of `tags` (the tags this shard owns now)."""
        return [s for w in tags for s in self._open.get(w, ())]

    def oldest_us(self, tags: Collection[str]) -> int | None:
        """When the oldest open range of `tags` was noted, None when none is open."""
        return min((s.noted_us for s in self.due(tags)), default=None)

    def note(self, app_id: str, watermark_s: int, refused: Iterable[tuple[str, int, int]]) -> int:
        """Keep each refused (tag, start, end) before the commit that moves the watermark
        past it; an open range it overlaps or touches grows to cover it. New ranges."""
        now = _now_us()
        resolved: list[Span] = []
        opened: list[Span] = []
        for webid, start, end in sorted(refused):
            if end <= start:
                continue
            spans = self._open[webid]
            near = next((s for s in spans if s.start <= start <= s.end), None)
            if near is not None and near.end >= end:
                continue  # already open
            if near is not None and end - near.start <= self.max_span_us:
                resolved.append(near)
                spans.remove(near)
                grown = Span(webid, near.start, end, near.noted_us)
            else:
                grown = Span(webid, start, end, now)
            spans.append(grown)
            opened.append(grown)
        self._append(app_id, watermark_s, opened, resolved)
        return len(opened) - len(resolved)

    def resolve(self, app_id: str, watermark_s: int, read: Sequence[Span]) -> None:
        """Close ranges whose rows landed in the commit of `watermark_s`."""
        for span in read:
            spans = self._open.get(span.webid, [])
            if span in spans:
                spans.remove(span)
        self._append(app_id, watermark_s, [], list(read))

    def _append(
        self, app_id: str, watermark_s: int, opened: Sequence[Span], resolved: Sequence[Span]
    ) -> None:
        """One blind append: the ranges opened and the ones closed, atomically together."""
        spans = [*opened, *resolved]
        if not spans:
            return
        now = datetime.now(UTC)
        rows = set_aside_rows(
            [s.webid for s in spans],
            pa.array([s.start for s in spans], pa.int64()).cast(UTC_US),
            pa.array([s.end for s in spans], pa.int64()).cast(UTC_US),
            app_id,
            watermark_s,
            noted=pa.array([s.noted_us for s in spans], pa.int64()).cast(UTC_US),
            resolved=pa.array([None] * len(opened) + [now] * len(resolved), UTC_US),
        )
        self.writer.append(SET_ASIDE, rows)


def by_range(spans: Sequence[Span]) -> dict[tuple[int, int], list[Span]]:
    """Spans grouped by their range, so one request reads every tag of a range."""
    groups: dict[tuple[int, int], list[Span]] = defaultdict(list)
    for span in spans:
        groups[(span.start, span.end)].append(span)
    return dict(groups)


def _now_us() -> int:
    return int(datetime.now(UTC).timestamp() * 1_000_000)
