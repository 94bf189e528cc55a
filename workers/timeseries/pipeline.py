"""The time-series pipeline: discover → own → plan → fetch → decode → buffer → commit → advance.

One `Pipeline` per worker process drives the stages for `run`, `once` and `backfill`, with
the exactly-once protocol of docs/DESIGN.md: a batch's plan is recorded before its fetch,
its rows are appended with `Transaction(app_id, batch_id)` (skipped when the table already
holds that batch), then the checkpoints advance. Consecutive batches of one app id are
buffered (rows, bytes, age: `commit_max_*`) and committed together under the highest batch
id, which the sink counts as committing every lower one; then one checkpoint write advances
them all. A commit runs in a thread while the next batches fetch (one in flight at most).
On start, batches whose data is in but whose checkpoints are not are advanced (this
worker's own app ids, and those of older shard generations, whose workers have stopped),
and this worker's other planned batches are re-run as planned.

Rows that may already be in the table go through the sink's anti-join on the key instead
of being appended blindly: late look-back rows always; backfill rows and the first range of
a tag with no live checkpoint only when another planned batch of any app id covered the
same tag and times (`CheckpointStore.overlapping`): a backfill into times nobody has read
skips the join, however full the table already is.

Resharding: `_pidelta_shards` holds generations (shard count, announced when). A worker
whose shard count differs from the latest generation announces a new one and fences
pi_timeseries for its count (`DeltaSink.fence`): from then on no append of another count
can land, however slow (a Delta conflict, or the fence seen on the snapshot it commits
against). Workers of an older generation also see the announcement before their next batch
and right before a commit, and stop without committing what they buffered. Every worker of
a generation waits `shard_grace` after the announcement before reading checkpoints, and
then advances the batches the old generation committed but did not advance (`_recover`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from shard_config.ring import owned
from workers.errors import PIError
from workers.lake.tables import (
    BATCHES,
    PI_TIMESERIES,
    PI_TIMESERIES_SCHEMA,
    TableStore,
)
from workers.lifecycle import Lifecycle
from workers.observe import NullObserver, Observer
from workers.pi.client import PIClient
from workers.pi.times import parse_time, to_us, utcnow
from workers.settings import Settings
from workers.timeseries.checkpoints import BACKFILL_PREFIX, LIVE_PREFIX, CheckpointStore
from workers.timeseries.commit_queue import CommitBuffer
from workers.timeseries.discovery import TagInfo, discover_tags
from workers.timeseries.generations import Generation, ShardGenerations
from workers.timeseries.plan import (
    BACKFILL,
    LATE,
    LIVE,
    PlannedBatch,
    TagRange,
    app_id_for,
    backfill_batch,
    next_batch,
)
from workers.timeseries.recorded import RecordedSource
from workers.timeseries.sink import Committed, DeltaSink, StaleGeneration, with_batch
from workers.timeseries.source import ReadStats

log = logging.getLogger("pidelta.pipeline")

# How often `run` folds its old plans and checkpoints: the state tables then hold about
# ten minutes of batches per tag, whatever the uptime.
STATE_COMPACT_SECONDS = 600.0


class Pipeline:
    """The stages of one shard's worker; use `async with Pipeline(...)`."""

    def __init__(
        self,
        settings: Settings,
        *,
        observer: Observer | None = None,
        lifecycle: Lifecycle | None = None,
        client: PIClient | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.observer: Observer = observer or NullObserver()
        self.lifecycle = lifecycle or Lifecycle()
        self.clock = clock
        self.shard = str(settings.shard_index)
        self.app_id = app_id_for(settings.shard_index, settings.shard_count, LIVE)
        self.backfill_app_id = app_id_for(settings.shard_index, settings.shard_count, BACKFILL)
        self.client = client or PIClient(settings, self.observer)
        self._own_client = client is None
        self.store = TableStore.from_settings(settings)
        self.sink = DeltaSink.from_settings(settings, self.store, self.observer)
        self.tags: dict[str, TagInfo] = {}
        self.origins: dict[str, datetime] = {}
        self.source = RecordedSource(
            self.client,
            max_url_bytes=settings.pi_max_url_bytes,
            max_items=settings.pi_max_items_per_call,
            page_size=settings.pi_page_size,
            max_attempts=settings.pi_max_attempts,
            tags=self.tags,
            on_retry=self.client.observer.on_retry,
            max_in_flight=settings.pi_max_concurrency,
        )
        self.checkpoints: CheckpointStore | None = None
        self.generations: ShardGenerations | None = None
        self.generation: Generation | None = None
        self.buffer = CommitBuffer.from_settings(settings)
        self._buffered: list[PlannedBatch] = []
        self._buffered_ends: dict[str, datetime] = {}
        self._guarded: list[pa.Table] = []  # look-back rows: some are surely in the table
        self._unsure: list[pa.Table] = []  # backfill and first ranges: rarely in the table
        self._guarded_rows = 0
        self._quarantine: list[pa.Table] = []
        self._landing: tuple[list[PlannedBatch], asyncio.Future[Committed]] | None = None
        self._oldest_buffered: float | None = None
        self._last_lookback = float("-inf")
        self.batches_done = 0
        self.fetch_stats = ReadStats()
        self.rows_written = 0

    async def __aenter__(self) -> Pipeline:
        if self._own_client:
            await self.client.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._own_client:
            await self.client.__aexit__(*exc)

    # ------------------------------------------------------------------ start-up

    async def prepare(self) -> None:
        """Tables, tags, shard generation, then recovery of unfinished batches."""
        await asyncio.to_thread(self.store.create_all)
        self.generations = await asyncio.to_thread(ShardGenerations, self.store)
        await self.discover()
        await self._join_generation()
        # Read after the grace period: the last commits of the previous generation count.
        self.checkpoints = await asyncio.to_thread(CheckpointStore, self.sink)
        await asyncio.to_thread(self._load_origins)
        await self._recover()

    async def discover(self) -> list[TagInfo]:
        """Rediscover tags; keep those this shard owns (new tags flow, deleted ones stop)."""
        tags = await discover_tags(self.client, self.settings)
        mine = owned([t.webid for t in tags], self.settings.shard_index, self.settings.shard_count)
        kept = {t.webid: t for t, keep in zip(tags, mine, strict=True) if keep}
        gone = set(self.tags) - set(kept)
        new = set(kept) - set(self.tags)
        self.tags.clear()
        self.tags.update(kept)
        if gone or new:
            log.info("tags owned: %d (%d new, %d gone)", len(kept), len(new), len(gone))
        self.observer.tags_owned(self.shard, len(kept))
        return list(kept.values())

    async def _join_generation(self) -> None:
        assert self.generations is not None
        count = self.settings.shard_count
        current = await asyncio.to_thread(self.generations.latest)
        if current is None or current.shard_count != count:
            previous = current
            current = await asyncio.to_thread(self.generations.announce, count, self.app_id)
            log.info(
                "announced shard generation %d (%d shards%s)",
                current.generation,
                count,
                f", was {previous.shard_count}" if previous else "",
            )
        self.generation = current
        await asyncio.to_thread(self.sink.fence, count)
        wait = (current.announced_at + self.shard_grace - self.clock()).total_seconds()
        if wait > 0 and await asyncio.to_thread(self.generations.ever_other_than, count):
            log.info("waiting %.1f s for workers of the previous generation to stop", wait)
            await self.lifecycle.wait(wait)

    @property
    def shard_grace(self) -> timedelta:
        """Longer than an old worker's last check-to-commit; see the module docstring."""
        return timedelta(seconds=10 + 2 * self.settings.poll_interval)

    def check_generation(self) -> None:
        """Raise StaleGeneration when a generation with another shard count was announced."""
        assert self.generations is not None
        assert self.generation is not None
        latest = self.generations.latest()
        if latest is not None and latest.shard_count != self.generation.shard_count:
            raise StaleGeneration(
                f"shard generation {latest.generation} has {latest.shard_count} shards"
            )

    def _load_origins(self) -> None:
        """First live range start per tag: late look-backs never reach before it."""
        dataset = self.sink.table(BATCHES).to_pyarrow_dataset()
        found = dataset.to_table(
            columns=["tag_webid", "range_start"], filter=ds.field("kind") == LIVE
        )
        if found.num_rows:
            first = pl.from_arrow(found).group_by("tag_webid").agg(pl.col("range_start").min())
            self.origins.update(
                zip(first["tag_webid"].to_list(), first["range_start"].to_list(), strict=True)
            )

    async def _resume(self) -> None:
        """After a failed poll: commit the complete batches, then re-run the failed one."""
        await self.flush()
        await self._recover()

    async def _recover(self) -> None:
        """Finish what crashed: advance committed batches, then re-run this app's others.

        Batches of app ids of other shard counts (older generations, stopped by now) and of
        this worker's own app ids are advanced when their data is in; app ids of the other
        shards of this generation are left to their own (running) workers.
        """
        assert self.checkpoints is not None
        app_ids = await asyncio.to_thread(self._recoverable)
        for batch in await asyncio.to_thread(self.checkpoints.recover, app_ids):
            log.info("advanced committed batch %d of %s", batch.batch_id, batch.app_id)
        for app_id in (self.app_id, self.backfill_app_id):
            pending = await asyncio.to_thread(self.checkpoints.pending_batches, app_id)
            for batch in pending:
                log.info("re-running unfinished batch %d of %s", batch.batch_id, app_id)
                await self._execute(self._still_needed(batch), record=False)
        await self.flush()

    def _recoverable(self) -> list[str]:
        ids = pl.from_arrow(self.sink.table(BATCHES).to_pyarrow_table(columns=["app_id"]))
        mine = {self.app_id, self.backfill_app_id}
        suffix = f"-of-{self.settings.shard_count}"
        return sorted(
            a for a in ids["app_id"].unique().to_list() if a in mine or not a.endswith(suffix)
        )

    def _still_needed(self, batch: PlannedBatch) -> PlannedBatch:
        """A pending batch minus what other app ids committed since it was planned.

        Its data is not in the table (else `recover` advanced it), so trimming ranges that
        another shard's checkpoints already cover is safe and avoids reading them twice.
        """
        assert self.checkpoints is not None
        prefix = BACKFILL_PREFIX if batch.app_id.startswith(BACKFILL_PREFIX) else LIVE_PREFIX
        done = self.checkpoints.load_checkpoints({r.webid for r in batch.ranges}, prefix)
        ranges = []
        for r in batch.ranges:
            cp = done.get(r.webid)
            if r.kind != LATE and cp is not None and cp > r.start:
                if cp >= r.end:
                    continue
                r = TagRange(r.webid, cp, r.end, r.kind)
            ranges.append(r)
        return PlannedBatch(batch.app_id, batch.batch_id, tuple(ranges))

    # ------------------------------------------------------------------ modes

    async def catch_up(self, until: datetime) -> None:
        """Live batches until every owned tag's checkpoint reaches `until`."""
        assert self.checkpoints is not None
        window = timedelta(seconds=self.settings.backfill_window)
        lookback = timedelta(seconds=self.settings.late_lookback)
        while not self.lifecycle.stopping:
            await asyncio.to_thread(self.check_generation)
            tags = list(self.tags)
            cps = self._planned(self.checkpoints.load_checkpoints(tags, LIVE_PREFIX))
            self._update_lag(cps)
            due = time.monotonic() - self._last_lookback >= self.settings.late_lookback / 4
            plan = next_batch(
                self.app_id,
                0,
                tags,
                cps,
                start=self._start(),
                until=until,
                window=window,
                late_lookback=lookback if due else timedelta(0),
            )
            if not plan.forward:
                break
            if due:
                self._last_lookback = time.monotonic()
            for ranges, expected in self._split(plan.ranges):
                if self.lifecycle.stopping:
                    break
                await self._run_new(self.app_id, ranges, cps, expected)

    async def backfill(
        self,
        start: datetime,
        end: datetime,
        progress: Callable[[float, float], None] | None = None,
    ) -> None:
        """Load (start, end] for the owned tags, resumable from the backfill's checkpoints."""
        assert self.checkpoints is not None
        window = timedelta(seconds=self.settings.backfill_window)
        total = max(1e-9, (end - start).total_seconds() * max(1, len(self.tags)))
        while not self.lifecycle.stopping:
            await asyncio.to_thread(self.check_generation)
            tags = list(self.tags)
            stored = self.checkpoints.load_checkpoints(tags, BACKFILL_PREFIX)
            cps = {w: c for w, c in self._planned(stored).items() if start < c <= end}
            if progress is not None:
                done = sum((cps.get(w, start) - start).total_seconds() for w in tags)
                progress(done, total)
            plan = backfill_batch(
                self.backfill_app_id, 0, tags, cps, start=start, end=end, window=window
            )
            if not plan.ranges:
                break
            for ranges, expected in self._split(plan.ranges):
                if self.lifecycle.stopping:
                    break
                await self._run_new(self.backfill_app_id, ranges, cps, expected)
        await self.flush()
        await self.compact_state()

    async def compact_state(self) -> None:
        """Fold this worker's older plans and checkpoints (`CheckpointStore.compact`): a
        live worker adds a row per tag per poll to each state table."""
        assert self.checkpoints is not None
        for app_id in (self.app_id, self.backfill_app_id):
            if not await asyncio.to_thread(self.checkpoints.compact, app_id):
                log.info("state compaction of %s met a concurrent commit; next time", app_id)

    async def run_forever(self) -> None:
        """Poll every `poll_interval`, rediscover every `rediscover_interval`, and commit the
        buffer when it is old enough (waking up for it between polls), until stopped."""
        lag = timedelta(seconds=self.settings.safety_lag)
        next_discovery = time.monotonic() + self.settings.rediscover_interval
        next_compaction = time.monotonic() + STATE_COMPACT_SECONDS
        next_poll = time.monotonic()
        resume = False
        while not self.lifecycle.stopping:
            now = time.monotonic()
            if now >= next_poll:
                next_poll = now + self.settings.poll_interval
                try:
                    if resume:
                        await self._resume()
                        resume = False
                    if now >= next_discovery:
                        await self.discover()
                        next_discovery = now + self.settings.rediscover_interval
                    await self.catch_up(self.clock() - lag)
                    if now >= next_compaction:
                        await self.compact_state()
                        next_compaction = now + STATE_COMPACT_SECONDS
                except PIError as exc:
                    if self.lifecycle.stopping:
                        break
                    self.observer.error("pi_unavailable")
                    log.warning(
                        "poll failed, retrying in %.0f s: %s", self.settings.poll_interval, exc
                    )
                    resume = True
            if self._buffered and self.buffer.should_flush():
                await self.flush()
            await self._land()  # a commit a catch-up left in flight: checkpoints now
            wake = next_poll
            if self._buffered:
                wake = min(wake, time.monotonic() + self.settings.commit_max_age - self.buffer.age)
            await self.lifecycle.wait(wake - time.monotonic())

    # ------------------------------------------------------------------ one batch

    def _start(self) -> datetime:
        return parse_time(self.settings.start, self.clock())

    def _planned(self, stored: dict[str, datetime]) -> dict[str, datetime]:
        """Checkpoints as they will be once the buffered batches are committed."""
        return {**stored, **self._buffered_ends}

    def _split(self, ranges: Sequence[TagRange]) -> Iterable[tuple[list[TagRange], float]]:
        """Groups of tags whose expected rows fit one commit (memory stays bounded)."""
        by_tag: dict[str, list[TagRange]] = {}
        for r in ranges:
            by_tag.setdefault(r.webid, []).append(r)
        group: list[TagRange] = []
        expected = 0.0
        limit = self.settings.commit_max_rows
        for webid, own in by_tag.items():
            rate = self.source.rates.get(webid, 1.0)
            need = sum(rate * (r.end - r.start).total_seconds() for r in own)
            if group and expected + need > limit:
                yield group, expected
                group, expected = [], 0.0
            group.extend(own)
            expected += need
        if group:
            yield group, expected

    async def _run_new(
        self, app_id: str, ranges: list[TagRange], cps: dict[str, datetime], expected: float
    ) -> None:
        assert self.checkpoints is not None
        if self.buffer.rows + self._guarded_rows + expected > self.settings.commit_max_rows:
            await self._start_commit()  # commit first rather than hold two batches' rows
        batch_id = await asyncio.to_thread(self.checkpoints.next_batch_id, app_id)
        for r in ranges:
            if r.kind == LIVE and r.webid not in cps:
                self.origins.setdefault(r.webid, r.start)
        ranges = [self._clamped(r) for r in ranges]
        await self._execute(PlannedBatch(app_id, batch_id, tuple(ranges)), record=True)

    def _clamped(self, r: TagRange) -> TagRange:
        origin = self.origins.get(r.webid)
        if r.kind == LATE and origin is not None and r.start < origin:
            return TagRange(r.webid, origin, max(origin, r.end), LATE)
        return r

    async def _execute(self, batch: PlannedBatch, *, record: bool) -> None:
        """Steps 1-2 of the protocol (plan, fetch) into the buffer; commits when it is full.

        Batches of one app id are buffered back to back and committed together with the
        highest batch id as the app transaction version (the sink counts every lower id as
        committed), then advanced in order, so that a quiet poll does not make a file.
        """
        assert self.checkpoints is not None
        if self._buffered and self._buffered[0].app_id != batch.app_id:
            await self.flush()
        if record:
            await asyncio.to_thread(
                self.checkpoints.record_plan, batch.app_id, batch.batch_id, list(batch.ranges)
            )
        spans, boundary, whole = self._spans(batch)
        result = await self.source.read(spans)
        rows = pa.concat_tables(result.rows) if result.rows else PI_TIMESERIES_SCHEMA.empty_table()
        fresh, guarded = self._divide(rows, boundary)
        self.buffer.add(fresh)
        if guarded.num_rows and len(whole) == len(boundary):
            self._unsure.append(guarded)  # a backfill batch: no copy
        elif guarded.num_rows:
            unsure = pc.is_in(guarded.column("tag_webid"), value_set=pa.array(whole, pa.string()))
            self._unsure.append(guarded.filter(unsure))
            self._guarded.append(guarded.filter(pc.invert(unsure)))
        self._guarded_rows += guarded.num_rows
        self._quarantine.extend(
            with_batch(q, batch.app_id, batch.batch_id) for q in result.quarantine
        )
        self.fetch_stats.add(result.stats)
        self._buffered.append(batch)
        self._buffered_ends.update(batch.checkpoints())
        if self._oldest_buffered is None:
            self._oldest_buffered = time.time()
        self.observer.values_read(PI_TIMESERIES, self.shard, result.stats.values)
        self.observer.buffered(
            self.shard, self.buffer.rows + self._guarded_rows, time.time() - self._oldest_buffered
        )
        log.debug(
            "batch %d of %s: %d tags, %d values in %d calls",
            batch.batch_id,
            batch.app_id,
            len(spans),
            result.stats.values,
            result.stats.calls,
        )
        if self.buffer.should_flush() or self._guarded_rows >= self.settings.commit_max_rows:
            await self._start_commit()

    async def flush(self) -> int:
        """Steps 3-4 for every buffered batch, and wait until they are done."""
        await self._start_commit()
        return await self._land()

    async def _start_commit(self) -> None:
        """Step 3 for every buffered batch, in a thread: one idempotent commit with the
        highest batch id as the app transaction version. The next batches fetch while it
        writes; `_land` then advances the checkpoints (step 4).

        Only the commit thread touches pi_timeseries and the quarantine until `_land`,
        which comes first in here, so a DeltaTable object is never used by two threads.
        """
        await self._land()
        if not self._buffered:
            return
        batches = self._buffered
        app_id, last_id = batches[0].app_id, batches[-1].batch_id
        fresh = self.buffer.drain(PI_TIMESERIES_SCHEMA)
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
        await asyncio.to_thread(self.check_generation)
        commit = asyncio.to_thread(
            self.sink.commit_timeseries,
            fresh,
            app_id,
            last_id,
            late=guarded,
            quarantine=quarantine,
            shard_count=self.settings.shard_count,
        )
        self._landing = (batches, asyncio.ensure_future(commit))
        self._buffered, self._guarded, self._unsure, self._quarantine = [], [], [], []
        self._guarded_rows = 0
        self._oldest_buffered = None
        self.observer.buffered(self.shard, 0, 0.0)

    async def _land(self) -> int:
        """Wait for the commit in flight, then step 4: one checkpoint write covering all
        its batches (the highest id marks the lower ones done). Returns the rows written."""
        if self._landing is None:
            return 0
        assert self.checkpoints is not None
        batches, commit = self._landing
        self._landing = None
        written, quarantined = await commit
        if quarantined is not None:
            reasons = pc.value_counts(quarantined.column("reason")).to_pylist()
            self.observer.quarantined({r["values"]: r["counts"] for r in reasons})
        app_id, last_id = batches[0].app_id, batches[-1].batch_id
        ranges = [r for batch in batches for r in batch.ranges]
        await asyncio.to_thread(self.checkpoints.advance, app_id, last_id, ranges)
        if not self._buffered:
            self._buffered_ends.clear()
        self.batches_done += len(batches)
        self.rows_written += written
        log.debug("committed batches up to %d of %s: %d rows", last_id, app_id, written)
        return written

    def _spans(
        self, batch: PlannedBatch
    ) -> tuple[list[tuple[str, int, int]], dict[str, int], list[str]]:
        """One span per tag covering all its ranges; rows at or before `boundary` are guarded.

        A tag's late range ends where its live range starts, so the union is one span.
        Backfill ranges and a tag's first live range are guarded whole (`whole`): a backfill
        or an earlier run may have loaded them.
        """
        lo: dict[str, int] = {}
        hi: dict[str, int] = {}
        boundary: dict[str, int] = {}
        whole: set[str] = set()
        for r in batch.ranges:
            s, e = to_us(r.start), to_us(r.end)
            lo[r.webid] = min(s, lo.get(r.webid, s))
            hi[r.webid] = max(e, hi.get(r.webid, e))
            if r.kind == BACKFILL or (r.kind == LIVE and self.origins.get(r.webid) == r.start):
                whole.add(r.webid)
            guard = e if r.kind == LATE or r.webid in whole else s
            boundary[r.webid] = max(guard, boundary.get(r.webid, guard))
        return [(w, lo[w], hi[w]) for w in lo], boundary, sorted(whole)

    def _possibly_loaded(self, rows: pa.Table, batches: Sequence[PlannedBatch]) -> set[str]:
        """Tags of `rows` whose times another batch (any app id) may have loaded: only
        those are anti-joined against the table. File statistics answer first when no file
        meets these times at all."""
        assert self.checkpoints is not None
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

    @staticmethod
    def _divide(rows: pa.Table, boundary: dict[str, int]) -> tuple[pa.Table, pa.Table]:
        """Rows after their tag's boundary (new) and at or before it (anti-joined)."""
        if rows.num_rows == 0 or not boundary:
            return rows, rows.slice(0, 0)
        webids = pa.array(list(boundary), pa.string())
        limits = np.fromiter(boundary.values(), dtype=np.int64, count=len(boundary))
        index = pc.index_in(rows.column("tag_webid"), value_set=webids).to_numpy(
            zero_copy_only=False
        )
        stamps = rows.column("timestamp").cast(pa.int64()).to_numpy()
        guarded = stamps <= limits[index]
        if not guarded.any():
            return rows, rows.slice(0, 0)
        if guarded.all():
            return rows.slice(0, 0), rows
        mask = pa.array(guarded)
        return rows.filter(pc.invert(mask)), rows.filter(mask)

    def _update_lag(self, cps: dict[str, datetime]) -> None:
        if not self.tags:
            return
        known = [cps[w] for w in self.tags if w in cps]
        if known:
            oldest = min(known)
            self.observer.lag(self.shard, (self.clock() - oldest).total_seconds())
