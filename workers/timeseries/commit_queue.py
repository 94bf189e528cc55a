"""What waits to be committed, and the one commit in flight: every `commit_max_*` rule.

Large commits make few, large files; the age bound keeps latency bounded when PI is quiet.
Steps 2-4 of docs/DESIGN.md "Exactly once" run here, once per commit however many polls it
holds: the plan of its batches recorded as one, the data written in a thread while the next
batches fetch, and the checkpoint advance once it has landed, before the next commit starts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from workers.lake.schemas import PI_TIMESERIES, PI_TIMESERIES_SCHEMA
from workers.observe import Observer
from workers.pi.times import utcnow
from workers.settings import Settings
from workers.timeseries.checkpoints import CheckpointStore
from workers.timeseries.plan import LIVE, PlannedBatch, TagRange
from workers.timeseries.set_aside import SetAside
from workers.timeseries.sink import Committed, DeltaSink, with_batch

log = logging.getLogger("pidelta.pipeline")


class CommitBuffer:
    """Fresh rows (appended without a join) until a commit is worth it: rows, bytes, age."""

    def __init__(
        self,
        max_rows: int,
        max_bytes: int,
        max_age: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.max_age = max_age
        self._clock = clock
        self._tables: list[pa.Table] = []
        self._rows = 0
        self._bytes = 0
        self._since: float | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> CommitBuffer:
        return cls(settings.commit_max_rows, settings.commit_max_bytes, settings.commit_max_age)

    def add(self, table: pa.Table, overdue: float = 0.0) -> None:
        """Buffer `table`; `overdue` seconds that its oldest values already waited count
        toward the age, as if they had been buffered that much earlier."""
        since = self._clock() - max(overdue, 0.0)
        self._since = since if self._since is None else min(self._since, since)
        if table.num_rows:
            self._tables.append(table)
            self._rows += table.num_rows
            self._bytes += table.nbytes

    @property
    def rows(self) -> int:
        return self._rows

    @property
    def nbytes(self) -> int:
        return self._bytes

    @property
    def age(self) -> float:
        return 0.0 if self._since is None else self._clock() - self._since

    def should_flush(self) -> bool:
        return (
            self._rows >= self.max_rows
            or self._bytes >= self.max_bytes
            or (self._since is not None and self.age >= self.max_age)
        )

    def drain(self, schema: pa.Schema) -> pa.Table:
        """All buffered rows as one table (empty with `schema` when none); resets the buffer."""
        tables, self._tables = self._tables, []
        self._rows = self._bytes = 0
        self._since = None
        return pa.concat_tables(tables) if tables else schema.empty_table()


class Pending(NamedTuple):
    """A commit in flight: its batches and the thread writing them."""

    batches: list[PlannedBatch]
    commit: asyncio.Future[Committed]
    began: float  # time.monotonic() when the commit started


class CommitQueue:
    """Every `commit_max_*` rule, the buffered batches and the one commit in flight.

    Rows after their tag's boundary are fresh (appended blindly, in `CommitBuffer`); rows at
    or before it are guarded (look-back rows: anti-joined on the key) or unsure (backfill
    and first live ranges: anti-joined only when another batch may have loaded those times,
    decided at commit). Batches of one app id are committed together under the highest
    batch id, their plans recorded as one plan under that id just before; their checkpoints
    advance once the commit has landed (`land`).
    """

    def __init__(
        self,
        settings: Settings,
        sink: DeltaSink,
        checkpoints: CheckpointStore,
        check_fence: Callable[[], object],
        observer: Observer,
        shard: str,
        set_aside: SetAside | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.shard_count = settings.shard_count
        self.set_aside = set_aside
        self.sink = sink
        self.checkpoints = checkpoints
        self.check_fence = check_fence
        self.observer = observer
        self.shard = shard
        self.fresh = CommitBuffer.from_settings(settings)
        # A live value is first readable a safety lag after its timestamp, and read by the
        # next poll: the buffer's age counts from then (`overdue`).
        self.readable_after = timedelta(seconds=settings.safety_lag + settings.poll_interval)
        self.clock = clock
        self.max_rows = self.fresh.max_rows  # also bounds the guarded rows and each group
        self.batches: list[PlannedBatch] = []
        self._ends: dict[str, datetime] = {}
        self._guarded: list[pa.Table] = []  # look-back rows: some are surely in the table
        self._unsure: list[pa.Table] = []  # backfill and first ranges: rarely in the table
        self._guarded_rows = 0
        self._quarantine: list[pa.Table] = []
        self._landing: Pending | None = None
        self.batches_done = 0
        self.rows_written = 0

    # ------------------------------------------------------------------ sizes

    def split(
        self, ranges: Sequence[TagRange], rates: Mapping[str, float]
    ) -> Iterable[tuple[list[TagRange], float]]:
        """Groups of tags whose expected rows fit one commit (memory stays bounded)."""
        by_tag: dict[str, list[TagRange]] = {}
        for r in ranges:
            by_tag.setdefault(r.webid, []).append(r)
        group: list[TagRange] = []
        expected = 0.0
        for webid, own in by_tag.items():
            rate = rates.get(webid, 1.0)
            need = sum(rate * (r.end - r.start).total_seconds() for r in own)
            if group and expected + need > self.max_rows:
                yield group, expected
                group, expected = [], 0.0
            group.extend(own)
            expected += need
        if group:
            yield group, expected

    async def make_room(self, expected: float) -> None:
        """Commit first rather than hold two batches' rows."""
        if self.fresh.rows + self._guarded_rows + expected > self.max_rows:
            await self.start_commit()

    def should_flush(self) -> bool:
        """Enough rows, bytes or age buffered for a commit."""
        return bool(self.batches) and (
            self.fresh.should_flush() or self._guarded_rows >= self.max_rows
        )

    def flush_in(self) -> float | None:
        """Seconds until the buffer is old enough to commit; None when nothing is buffered."""
        return self.fresh.max_age - self.fresh.age if self.batches else None

    def planned(self, stored: dict[str, datetime]) -> dict[str, datetime]:
        """Checkpoints as they will be once the buffered batches are committed."""
        return {**stored, **self._ends}

    # ------------------------------------------------------------------ buffering

    async def add(
        self,
        batch: PlannedBatch,
        rows: pa.Table,
        quarantine: Sequence[pa.Table],
        boundary: dict[str, int],
        whole: list[str],
    ) -> None:
        """Buffer one fetched batch (see `plan.spans` for `boundary` and `whole`); commits
        when the buffer is full. A batch of another app id commits the buffer first."""
        fresh, guarded = divide(rows, boundary)
        self.fresh.add(fresh, self.overdue(batch))
        if guarded.num_rows and len(whole) == len(boundary):
            self._unsure.append(guarded)  # a backfill batch: no copy
        elif guarded.num_rows:
            unsure = pc.is_in(guarded.column("tag_webid"), value_set=pa.array(whole, pa.string()))
            self._unsure.append(guarded.filter(unsure))
            self._guarded.append(guarded.filter(pc.invert(unsure)))
        self._guarded_rows += guarded.num_rows
        self._quarantine.extend(with_batch(q, batch.app_id, batch.batch_id) for q in quarantine)
        self.batches.append(batch)
        self._ends.update(batch.checkpoints())
        self.observer.buffered(self.shard, self.fresh.rows + self._guarded_rows, self.fresh.age)
        if self.should_flush():
            await self.start_commit()

    def overdue(self, batch: PlannedBatch) -> float:
        """Seconds the batch's oldest live values waited past the poll that could first
        read them: about 0 poll after poll, the whole gap after a restart or a reshard,
        whose catch-up then commits as soon as it is read instead of a commit age later."""
        starts = [r.start for r in batch.ranges if r.kind == LIVE]
        if not starts:
            return 0.0
        return (self.clock() - self.readable_after - min(starts)).total_seconds()

    async def before(self, app_id: str) -> None:
        """Commit what is buffered when the next batch belongs to another app id."""
        if self.batches and self.batches[0].app_id != app_id:
            await self.flush()

    # ------------------------------------------------------------------ committing

    async def flush(self) -> int:
        """Steps 2-4 for every buffered batch, and wait until they are done."""
        await self.start_commit()
        return await self.land()

    async def start_commit(self) -> None:
        """Steps 2-3 for every buffered batch: their plans recorded as one under the highest
        batch id (a no-op for a batch re-run as recorded), the set-aside re-reads that plan
        holds closed, then in a thread one idempotent data commit with that id as the app
        transaction version. The next batches fetch while it writes; `land` then advances
        the checkpoints (step 4).

        Only the commit thread touches pi_timeseries and the quarantine until `land`,
        which comes first in here, so a DeltaTable object is never used by two threads.
        """
        await self.land()
        if not self.batches:
            return
        batches = self.batches
        app_id, last_id = batches[0].app_id, batches[-1].batch_id
        ranges = [r for batch in batches for r in batch.ranges]
        await asyncio.to_thread(self.checkpoints.record_plan, app_id, last_id, ranges)
        if self.set_aside is not None:
            await asyncio.to_thread(self.set_aside.resolve_planned, app_id, last_id)
        fresh = self.fresh.drain(PI_TIMESERIES_SCHEMA)
        unsure = pa.concat_tables(self._unsure) if self._unsure else None
        if unsure is not None and unsure.num_rows:
            loaded = await asyncio.to_thread(self._possibly_loaded, unsure, batches)
            if loaded:
                held = pc.is_in(
                    unsure.column("tag_webid"), value_set=pa.array(sorted(loaded), pa.string())
                )
                self._guarded.append(unsure.filter(held))
                unsure = unsure.filter(pc.invert(held))
            fresh = pa.concat_tables([fresh, unsure])
        guarded = pa.concat_tables(self._guarded) if self._guarded else None
        quarantine = pa.concat_tables(self._quarantine) if self._quarantine else None
        await asyncio.to_thread(self.check_fence)
        commit = asyncio.to_thread(
            self.sink.commit_timeseries,
            fresh,
            app_id,
            last_id,
            late=guarded,
            quarantine=quarantine,
            shard_count=self.shard_count,
        )
        self._landing = Pending(batches, asyncio.ensure_future(commit), time.monotonic())
        self.batches, self._guarded, self._unsure, self._quarantine = [], [], [], []
        self._guarded_rows = 0
        self.observer.buffered(self.shard, 0, 0.0)

    async def land(self) -> int:
        """Wait for the commit in flight, then step 4: one checkpoint write covering all
        its batches (the highest id marks the lower ones done). Returns the rows written."""
        if self._landing is None:
            return 0
        batches, commit, began = self._landing
        self._landing = None
        written, quarantined = await commit
        seconds = time.monotonic() - began
        if quarantined is not None:
            reasons = pc.value_counts(quarantined.column("reason")).to_pylist()
            self.observer.quarantined({r["values"]: r["counts"] for r in reasons})
        app_id, last_id = batches[0].app_id, batches[-1].batch_id
        ranges = [r for batch in batches for r in batch.ranges]
        await asyncio.to_thread(self.checkpoints.advance, app_id, last_id, ranges)
        if not self.batches:
            self._ends.clear()
        self.batches_done += len(batches)
        self.rows_written += written
        log.log(
            logging.INFO if written else logging.DEBUG,
            "%s: %s",
            PI_TIMESERIES,
            commit_line(batches, written, seconds),
        )
        return written

    def _possibly_loaded(self, rows: pa.Table, batches: Sequence[PlannedBatch]) -> set[str]:
        """Tags of `rows` whose times another batch (any app id) may have loaded: only
        those are anti-joined against the table. File statistics answer first when no file
        meets these times at all."""
        if not self._table_may_hold(rows):
            return set()
        tags = set(pc.unique(rows.column("tag_webid")).to_pylist())
        spans: dict[str, tuple[datetime, datetime]] = {}
        for batch in batches:
            for r in batch.ranges:
                if r.webid in tags:
                    lo, hi = spans.get(r.webid, (r.start, r.end))
                    spans[r.webid] = (min(lo, r.start), max(hi, r.end))
        return self.checkpoints.overlapping(spans, {(b.app_id, b.batch_id) for b in batches})

    def _table_may_hold(self, rows: pa.Table) -> bool:
        """Whether a pi_timeseries file's time range meets these rows' (file stats only).

        Delta keeps timestamp statistics at millisecond precision, hence the slack.
        """
        bounds = pc.min_max(rows.column("timestamp"))
        lo = pc.subtract(bounds["min"], pa.scalar(timedelta(milliseconds=1)))
        actions = pa.table(self.sink.table(PI_TIMESERIES).get_add_actions(flatten=True))
        if actions.num_rows == 0:
            return False
        if "min.timestamp" not in actions.column_names:
            return True
        first, last = actions.column("min.timestamp"), actions.column("max.timestamp")
        meets = pc.and_kleene(pc.greater_equal(last, lo), pc.less_equal(first, bounds["max"]))
        return bool(pc.any(pc.fill_null(meets, True)).as_py())


def commit_line(batches: Sequence[PlannedBatch], rows: int, seconds: float) -> str:
    """What one landed commit holds, for the INFO line an operator follows a run by."""
    forward = [r for batch in batches for r in batch.forward]
    first, last = batches[0].batch_id, batches[-1].batch_id
    ids = f"batch {first}" if first == last else f"batches {first}-{last}"
    where = f"{ids} of {batches[0].app_id}"
    if not forward:
        return f"committed {rows} rows (re-reads only) in {seconds:.2f} s, {where}"
    # A range is (start, end] in microseconds, so its first readable moment is start + 1 µs.
    lo = min(r.start for r in forward) + timedelta(microseconds=1)
    lo = lo.isoformat(timespec="seconds").replace("+00:00", "Z")
    hi = max(r.end for r in forward).isoformat(timespec="seconds").replace("+00:00", "Z")
    tags = len({r.webid for r in forward})
    return f"committed {rows} rows of {tags} tags, {lo} .. {hi}, in {seconds:.2f} s, {where}"


def divide(rows: pa.Table, boundary: dict[str, int]) -> tuple[pa.Table, pa.Table]:
    """Rows after their tag's boundary (fresh) and at or before it (anti-joined)."""
    if rows.num_rows == 0 or not boundary:
        return rows, rows.slice(0, 0)
    webids = pa.array(list(boundary), pa.string())
    limits = np.fromiter(boundary.values(), dtype=np.int64, count=len(boundary))
    index = pc.index_in(rows.column("tag_webid"), value_set=webids).to_numpy(zero_copy_only=False)
    stamps = rows.column("timestamp").cast(pa.int64()).to_numpy()
    guarded = stamps <= limits[index]
    if not guarded.any():
        return rows, rows.slice(0, 0)
    if guarded.all():
        return rows.slice(0, 0), rows
    mask = pa.array(guarded)
    return rows.filter(pc.invert(mask)), rows.filter(mask)
