"""Pure planning: which time range of which tag the next batch reads. No I/O.

A range is `(start, end]`: start exclusive (the checkpoint, already delivered), end
inclusive. Where a user names a start (`backfill --start`, `PIDELTA_START`) it is
inclusive: `first_checkpoint` puts the exclusive start one microsecond before it. Live
ends stop `safety_lag` behind now, where every value is recorded, so a run of equal
timestamps is never split between batches.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from workers.pi.times import to_us

LIVE = "live"
BACKFILL = "backfill"
LATE = "late"
# A range whose answer could not be read when its batch ran (set_aside.py), read again in
# a later batch: guarded whole, read on its own span, and it moves no checkpoint.
REREAD = "reread"


def first_checkpoint(start: datetime) -> datetime:
    """The exclusive range start that loads a value stamped exactly at `start` (timestamps
    are whole microseconds), so user ranges are [start, end]."""
    return start - timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class TagRange:
    """Values of one tag with `start < timestamp <= end`."""

    webid: str
    start: datetime
    end: datetime
    kind: str = LIVE


@dataclass(frozen=True, slots=True)
class PlannedBatch:
    """The ranges of one batch; re-run exactly as planned after a crash."""

    app_id: str
    batch_id: int
    ranges: tuple[TagRange, ...]

    @property
    def forward(self) -> tuple[TagRange, ...]:
        """Ranges that move checkpoints (all but late look-backs and re-reads)."""
        return tuple(r for r in self.ranges if r.kind not in (LATE, REREAD))

    @property
    def late(self) -> tuple[TagRange, ...]:
        return tuple(r for r in self.ranges if r.kind == LATE)

    def checkpoints(self) -> dict[str, datetime]:
        """The checkpoint of each tag once this batch is committed."""
        return {r.webid: r.end for r in self.forward}


def app_id_for(shard_index: int, shard_count: int, kind: str = LIVE) -> str:
    """`pidelta-ts-<i>-of-<n>` for live runs; backfill runs get their own id and progress."""
    prefix = "pidelta-ts" if kind == LIVE else "pidelta-bf"
    return f"{prefix}-{shard_index}-of-{shard_count}"


def next_batch(
    app_id: str,
    batch_id: int,
    tags: Iterable[str],
    checkpoints: Mapping[str, datetime],
    *,
    start: datetime,
    until: datetime,
    window: timedelta,
    late_lookback: timedelta = timedelta(0),
    kind: str = LIVE,
) -> PlannedBatch:
    """Next batch: per tag `(checkpoint, min(until, checkpoint + window)]`.

    A tag without a checkpoint starts at `start`. Tags that are caught up get no forward
    range. With `late_lookback`, each tag that has a checkpoint also gets the late range
    `(checkpoint - late_lookback, checkpoint]`, whose values are kept only when absent
    from the table.
    """
    ranges: list[TagRange] = []
    for webid in sorted(set(tags)):
        checkpoint = checkpoints.get(webid)
        begin = checkpoint if checkpoint is not None else start
        end = min(until, begin + window)
        if end > begin:
            ranges.append(TagRange(webid, begin, end, kind))
        if checkpoint is not None and late_lookback > timedelta(0):
            ranges.append(TagRange(webid, checkpoint - late_lookback, checkpoint, LATE))
    ranges.sort(key=lambda r: (r.webid, r.kind, r.start))
    return PlannedBatch(app_id, batch_id, tuple(ranges))


def backfill_batch(
    app_id: str,
    batch_id: int,
    tags: Iterable[str],
    checkpoints: Mapping[str, datetime],
    *,
    start: datetime,
    end: datetime,
    window: timedelta,
) -> PlannedBatch:
    """Next backfill window of each tag, resumable from the backfill's own checkpoints."""
    return next_batch(
        app_id,
        batch_id,
        tags,
        {w: max(c, start) for w, c in checkpoints.items()},
        start=start,
        until=end,
        window=window,
        kind=BACKFILL,
    )


def clamped(r: TagRange, origins: Mapping[str, datetime]) -> TagRange:
    """A late range cut at its tag's origin (first live start): nothing was read before."""
    origin = origins.get(r.webid)
    if r.kind == LATE and origin is not None and r.start < origin:
        return TagRange(r.webid, origin, max(origin, r.end), LATE)
    return r


def spans(
    batch: PlannedBatch, origins: Mapping[str, datetime]
) -> tuple[list[tuple[str, int, int]], dict[str, int], list[str]]:
    """One span per tag covering all its ranges; rows at or before `boundary` are guarded.

    A tag's late range ends where its live range starts, so the union is one span.
    Backfill ranges and a tag's first live range are guarded whole (`whole`): a backfill
    or an earlier run may have loaded them. Re-reads are left to `rereads`, since they may
    lie far behind the rest; they only raise the tag's boundary.
    """
    lo: dict[str, int] = {}
    hi: dict[str, int] = {}
    boundary: dict[str, int] = {}
    whole: set[str] = set()
    for r in batch.ranges:
        s, e = to_us(r.start), to_us(r.end)
        if r.kind == REREAD:
            boundary[r.webid] = max(e, boundary.get(r.webid, e))
            continue
        lo[r.webid] = min(s, lo.get(r.webid, s))
        hi[r.webid] = max(e, hi.get(r.webid, e))
        if r.kind == BACKFILL or (r.kind == LIVE and origins.get(r.webid) == r.start):
            whole.add(r.webid)
        guard = e if r.kind == LATE or r.webid in whole else s
        boundary[r.webid] = max(guard, boundary.get(r.webid, guard))
    return [(w, lo[w], hi[w]) for w in lo], boundary, sorted(whole)


def rereads(batch: PlannedBatch) -> list[tuple[str, int, int]]:
    """The re-read ranges of a batch as spans of their own, one per tag (a source reads one
    span per tag per read); guarded whole by `spans`' boundary."""
    lo: dict[str, int] = {}
    hi: dict[str, int] = {}
    for r in batch.ranges:
        if r.kind == REREAD:
            s, e = to_us(r.start), to_us(r.end)
            lo[r.webid] = min(s, lo.get(r.webid, s))
            hi[r.webid] = max(e, hi.get(r.webid, e))
    return [(w, lo[w], hi[w]) for w in lo]
