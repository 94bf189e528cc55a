"""The time-series loop: discover → own → plan → fetch → buffer → commit → advance.

One `Pipeline` per worker process drives the stages for `run`, `once` and `backfill`,
following the exactly-once protocol of docs/DESIGN.md ("Exactly once"). The stages live
beside it: the shard fence
(`generations.ShardFence`), recovery of unfinished batches (`recovery.Recovery`), planning
(`plan`), fetching (`recorded.RecordedSource`), and buffering with the one commit in flight
(`commit_queue.CommitQueue`, where every `commit_max_*` rule is), and with change capture
the poll that meets the follower (`tail.Tail`, through the `tail.RecordedPath` seam).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta

import pyarrow as pa

from shard_config.jump_hash import owned
from workers.errors import PIError, RetriesAbandoned
from workers.lake.schemas import PI_TIMESERIES, PI_TIMESERIES_SCHEMA
from workers.lake.tables import TableStore
from workers.lifecycle import Lifecycle
from workers.observe import NullObserver, Observer
from workers.pi.client import PIClient
from workers.pi.times import parse_time, to_us, utcnow
from workers.settings import Settings
from workers.timeseries.checkpoints import (
    BACKFILL_PREFIX,
    LIVE_PREFIX,
    CheckpointStore,
    last_commit,
)
from workers.timeseries.commit_queue import CommitQueue
from workers.timeseries.discovery import TagInfo, discover_tags
from workers.timeseries.follow import Follower, follower_app_id
from workers.timeseries.generations import Generation, Handover, ShardFence
from workers.timeseries.plan import (
    BACKFILL,
    LIVE,
    PlannedBatch,
    TagRange,
    app_id_for,
    backfill_batch,
    clamped,
    first_checkpoint,
    next_batch,
    rereads,
    spans,
)
from workers.timeseries.recorded import RecordedSource
from workers.timeseries.recovery import Recovery
from workers.timeseries.set_aside import SetAside
from workers.timeseries.sink import DeltaSink
from workers.timeseries.source import ReadStats, Source, SourceResult
from workers.timeseries.tail import Tail
from workers.timeseries.updates import UpdatesSource

log = logging.getLogger("pidelta.pipeline")

# How often `run` folds its old plans and checkpoints: the state tables then hold about
# ten minutes of batches per tag, whatever the uptime.
STATE_COMPACT_SECONDS = 600.0


class Pipeline:
    """The loop of one shard's worker; use `async with Pipeline(...)`, then `prepare()`."""

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
        self.discovered = 0  # tags in scope at the last discovery, before sharding
        self.origins: dict[str, datetime] = {}
        # Per tag: rows up to here are anti-joined (`CheckpointStore.planned_beyond`).
        self.guarded: dict[str, datetime] = {}
        self.source = RecordedSource.from_settings(self.client, settings, self.tags)
        self.fetch_stats = ReadStats()
        self.checkpoints: CheckpointStore | None = None
        self.fence: ShardFence | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the stop from fence checks
        self.recovery: Recovery | None = None
        self.queue: CommitQueue | None = None
        self.set_aside: SetAside | None = None
        self.follower: Follower | None = None
        self.tail: Tail | None = None
        self._last_lookback = float("-inf")

    async def __aenter__(self) -> Pipeline:
        if self._own_client:
            await self.client.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._own_client:
            await self.client.__aexit__(*exc)

    @property
    def batches_done(self) -> int:
        return self.queue.batches_done if self.queue else 0

    @property
    def rows_written(self) -> int:
        return self.queue.rows_written if self.queue else 0

    # ------------------------------------------------------------------ start-up

    async def prepare(self, *, running: bool = False) -> None:
        """Tables, tags, shard generation, then recovery of unfinished batches.

        A `running` worker (`run`) asks a PI Web API that fails at start-up again every poll
        interval until it answers, instead of ending, and joins a new shard count without
        breaking the old one (`generations.ShardFence.join`).
        """
        s = self.settings
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self.store.create_all)
        self.fence = await asyncio.to_thread(
            ShardFence,
            self.store,
            self.sink,
            s.shard_count,
            self.app_id,
        )
        while True:
            try:
                await self.discover()
                break
            except PIError as exc:
                if not running:
                    raise
                self.observer.error("pi_unavailable")
                log.warning(
                    "PI not usable at start-up, asking again in %.0f s: %s", s.poll_interval, exc
                )
                await self.lifecycle.wait(s.poll_interval)
                if self.lifecycle.stopping:
                    raise RetriesAbandoned("the worker is stopping before PI answered") from None
        await self.fence.join(
            Handover(self.lifecycle.wait, self._still_committing) if running else None
        )
        # Read after the fence: the previous generation's data commits are all in.
        self.checkpoints = await asyncio.to_thread(CheckpointStore, self.sink)
        rerun: tuple[str, ...] = (self.app_id, self.backfill_app_id)
        own = rerun
        if s.updates:  # a follower's batch landed without its checkpoints is advanced too
            own += (follower_app_id(s.shard_index, s.shard_count),)
        self.recovery = Recovery(self.sink, self.checkpoints, own, s.shard_count, rerun)
        self.set_aside = await asyncio.to_thread(SetAside, self.sink)
        self.queue = CommitQueue(
            s,
            self.sink,
            self.checkpoints,
            self._check_fence,
            self.observer,
            self.shard,
            self.set_aside,
            self.clock,
        )
        self.origins.update(await asyncio.to_thread(self.recovery.origins))
        await self._recover()
        # Read after recovery advanced what it could: what is planned past a checkpoint now
        # may hold rows that never advanced it.
        self.guarded = await asyncio.to_thread(self.checkpoints.planned_beyond, list(self.tags))

    def _check_fence(self) -> Generation | None:
        """The fence check of every poll, batch and commit (in any thread). A generation of
        another count that has taken over stops the worker as SIGTERM does, whichever
        check sees it first: the commit under way still lands within the drain."""
        assert self.fence is not None
        assert self._loop is not None
        replaced = self.fence.check()
        if replaced is not None and not self.lifecycle.stopping:
            reason = (
                f"shard generation {replaced.generation} ({replaced.shard_count} shards) "
                "took over; flushing"
            )
            self._loop.call_soon_threadsafe(self.lifecycle.stop, reason)
        return replaced

    def _still_committing(self, shard_count: int) -> bool:
        """Whether a worker of `shard_count` shards advanced a checkpoint lately (within two
        commit ages, a poll and half a minute): a shard count still ingesting."""
        apps = [app_id_for(i, shard_count) for i in range(shard_count)]
        apps += [follower_app_id(i, shard_count) for i in range(shard_count)]
        last = last_commit(self.sink, apps)
        s = self.settings
        live = timedelta(seconds=2 * s.commit_max_age + s.poll_interval + 30)
        return last is not None and utcnow() - last <= live

    async def follow_updates(self) -> None:
        """`run` only: follow the tags with stream updates (`follow.Follower`), from the
        markers of this shard's last landed batch."""
        assert self.checkpoints is not None
        assert self.fence is not None
        source = UpdatesSource(self.client, self.tags, self.settings.pi_max_url_bytes)
        self.follower = Follower(
            self.settings,
            source,
            self.sink,
            self.checkpoints,
            self._check_fence,
            self.observer,
            self.clock,
            lambda: self.lifecycle.stopping,
        )
        await asyncio.to_thread(self.follower.load, self.tags)
        self.follower.forget(self.tags)
        self.tail = Tail(self.follower, self, self.tags, self.observer, self.shard, self.clock)

    async def discover(self) -> list[TagInfo]:
        """Rediscover tags; keep those this shard owns (new tags flow, deleted ones stop)."""
        tags = await discover_tags(self.client, self.settings)
        self.discovered = len(tags)
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

    async def _recover(self) -> None:
        """Finish what crashed (`Recovery`), then commit it."""
        assert self.recovery is not None
        async for batch in self.recovery.unfinished():
            await self._execute(batch)
        await self.flush()

    # ------------------------------------------------------------------ modes

    async def catch_up(
        self, until: datetime, only: set[str] | None = None, lookback: bool | None = None
    ) -> None:
        """Live batches until every owned tag's checkpoint reaches `until`.

        `only` limits it to some tags; `lookback` True re-reads the late look-back once
        (a gap no marker covered), False never, None every quarter of it (no updates).
        """
        assert self.checkpoints is not None
        assert self.queue is not None
        assert self.fence is not None
        window = timedelta(seconds=self.settings.backfill_window)
        lookback_span = timedelta(seconds=self.settings.late_lookback)
        first = True
        while not self.lifecycle.stopping:
            await asyncio.to_thread(self._check_fence)
            tags = [t for t in self.tags if only is None or t in only]
            if not tags:
                break
            committed = self.checkpoints.load_checkpoints(tags, LIVE_PREFIX)
            if only is None:
                self._update_lag(committed)
            cps = self.queue.planned(committed)
            if lookback is None:
                due = time.monotonic() - self._last_lookback >= self.settings.late_lookback / 4
            else:
                due = lookback and first
            first = False
            plan = next_batch(
                self.app_id,
                0,
                tags,
                cps,
                start=first_checkpoint(parse_time(self.settings.start, self.clock())),
                until=until,
                window=window,
                late_lookback=lookback_span if due else timedelta(0),
            )
            if not plan.forward and not (due and lookback and plan.late):
                break
            if due and lookback is None:
                self._last_lookback = time.monotonic()
                # Opted out (no follower), the look-back is the steady state: not counted,
                # so the alert on persisting fallback re-reads stays quiet.
                if plan.late and self.follower is not None:
                    self.observer.fallback_reread(self.shard, "updates_off", len(plan.late))
            await self._run_plan(self.app_id, plan, cps)
        await self.reread_set_aside()

    async def reread_set_aside(self) -> None:
        """One batch of the ranges still set aside, once a catch-up found nothing newer to
        read (other batches carry them too): they wait for no further poll."""
        assert self.set_aside is not None
        assert self.checkpoints is not None
        again = self.set_aside.due(set(self.tags))
        if again and not self.lifecycle.stopping:
            batch_id = await asyncio.to_thread(self.checkpoints.next_batch_id, self.app_id)
            await self._execute(PlannedBatch(self.app_id, batch_id, tuple(again)))

    async def backfill(
        self,
        start: datetime,
        end: datetime,
        progress: Callable[[float, float], None] | None = None,
    ) -> None:
        """Load (start, end] for the owned tags, resumable from the backfill's checkpoints."""
        assert self.checkpoints is not None
        assert self.queue is not None
        assert self.fence is not None
        window = timedelta(seconds=self.settings.backfill_window)
        total = max(1e-9, (end - start).total_seconds() * max(1, len(self.tags)))
        while not self.lifecycle.stopping:
            await asyncio.to_thread(self._check_fence)
            tags = list(self.tags)
            stored = self.checkpoints.load_checkpoints(tags, BACKFILL_PREFIX)
            cps = {w: c for w, c in self.queue.planned(stored).items() if start < c <= end}
            if progress is not None:
                done = sum((cps.get(w, start) - start).total_seconds() for w in tags)
                progress(done, total)
            plan = backfill_batch(
                self.backfill_app_id, 0, tags, cps, start=start, end=end, window=window
            )
            if not plan.ranges:
                break
            await self._run_plan(self.backfill_app_id, plan, cps)
        await self.flush()
        await self.compact_state()

    async def compact_state(self) -> None:
        """Fold this worker's older plans and checkpoints (`CheckpointStore.compact`): a
        live worker adds a row per tag per poll to each state table."""
        assert self.checkpoints is not None
        apps = [self.app_id, self.backfill_app_id]
        if self.follower is not None:
            apps.append(self.follower.app_id)
            if not await asyncio.to_thread(self.follower.compact):
                log.info("marker compaction met a concurrent commit; next time")
        for app_id in apps:
            if not await asyncio.to_thread(self.checkpoints.compact, app_id):
                log.info("state compaction of %s met a concurrent commit; next time", app_id)

    async def run_forever(self) -> None:
        """Poll every `poll_interval`, rediscover every `rediscover_interval`, and commit the
        buffer when it is old enough (waking up for it between polls), until stopped."""
        assert self.queue is not None
        if self.settings.updates and self.follower is None:
            await self.follow_updates()
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
                    if resume:  # after a failed poll: commit the complete batches, re-run
                        await self.flush()
                        await self._recover()
                        resume = False
                    if now >= next_discovery:
                        await self.discover()
                        if self.follower is not None:
                            self.follower.forget(self.tags)
                        next_discovery = now + self.settings.rediscover_interval
                    await self._poll(lag)
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
            if self.queue.should_flush():
                await self.flush()
            await self.queue.land()  # a commit a catch-up left in flight: checkpoints now
            follower = self.follower
            if follower is not None and follower.should_commit():
                await self.flush()
            wake = next_poll
            for due in (self.queue.flush_in(), follower and follower.commit_in()):
                if due is not None:
                    wake = min(wake, time.monotonic() + due)
            await self.lifecycle.wait(wake - time.monotonic())

    async def flush(self) -> int:
        """Steps 2-4 for every buffered batch, and wait until they are done; then the
        stream-update events retrieved so far (after the rows they may change)."""
        written = await self.queue.flush() if self.queue else 0
        if self.follower is not None:
            await self.follower.commit()
            assert self.checkpoints is not None
            self._update_lag(self.checkpoints.load_checkpoints(list(self.tags), LIVE_PREFIX))
        return written

    def committed(self, tags: list[str]) -> dict[str, datetime]:
        """The committed live checkpoints of `tags` (follower's included)."""
        assert self.checkpoints is not None
        return self.checkpoints.load_checkpoints(tags, LIVE_PREFIX)

    async def _poll(self, lag: timedelta) -> None:
        """One poll of `run`: recorded reads, or with stream updates on, `Tail.poll`; none
        once a generation of another shard count has taken over: then the worker stops,
        flushing as on SIGTERM, within its drain (docs/DESIGN.md "Resharding fence")."""
        if await asyncio.to_thread(self._check_fence) is not None:
            return
        if self.tail is None:
            await self.catch_up(self.clock() - lag)
        else:
            await self.tail.poll(lag)

    async def _run_plan(self, app_id: str, plan: PlannedBatch, cps: dict[str, datetime]) -> None:
        """A plan's ranges as batches whose expected rows fit one commit each."""
        assert self.queue is not None
        for ranges, expected in self.queue.split(plan.ranges, self.source.rates):
            if self.lifecycle.stopping:
                break
            await self._run_new(app_id, ranges, cps, expected)

    async def _run_new(
        self, app_id: str, ranges: list[TagRange], cps: dict[str, datetime], expected: float
    ) -> None:
        assert self.checkpoints is not None
        assert self.queue is not None
        await self.queue.make_room(expected)
        batch_id = await asyncio.to_thread(self.checkpoints.next_batch_id, app_id)
        for r in ranges:
            if r.kind == LIVE and r.webid not in cps:
                self.origins.setdefault(r.webid, r.start)
        ranges = [clamped(r, self.origins) for r in ranges]
        assert self.set_aside is not None
        ranges += self.set_aside.due({r.webid for r in ranges})
        await self._execute(PlannedBatch(app_id, batch_id, tuple(ranges)))

    async def _execute(self, batch: PlannedBatch) -> None:
        """Step 1 of the protocol (fetch) into the queue, which commits when full.

        Batches of one app id are buffered back to back and committed together with the
        highest batch id as the app transaction version (the sink counts every lower id as
        committed), their plans recorded as one just before (steps 2-4 in `CommitQueue`),
        so that neither a quiet poll nor a busy one costs a commit of its own.
        """
        assert self.checkpoints is not None
        assert self.queue is not None
        await self.queue.before(batch.app_id)
        wanted, boundary, whole = spans(batch, self.origins)
        for webid, edge in boundary.items():
            if (end := self.guarded.get(webid)) is not None:
                boundary[webid] = max(edge, to_us(end))
        result = await read_all(self.source, [wanted, rereads(batch)])
        assert self.set_aside is not None
        await asyncio.to_thread(self.set_aside.record, batch, result.set_aside)
        for webid in sorted(result.set_aside):
            self.observer.error("answer_set_aside")
            log.warning("%s set aside in batch %d of %s", webid, batch.batch_id, batch.app_id)
        rows = pa.concat_tables(result.rows) if result.rows else PI_TIMESERIES_SCHEMA.empty_table()
        self.fetch_stats.add(result.stats)
        self.observer.values_read(PI_TIMESERIES, self.shard, result.stats.values)
        log.debug(
            "batch %d of %s: %d tags, %d values in %d calls",
            batch.batch_id,
            batch.app_id,
            len(wanted),
            result.stats.values,
            result.stats.calls,
        )
        await self.queue.add(batch, rows, result.quarantine, boundary, whole)

    def _update_lag(self, committed: dict[str, datetime]) -> None:
        """Now minus the oldest committed checkpoint (a tag that never committed counts
        from where it starts): batches buffered but not committed are not in the table."""
        known = [committed.get(w) or self.origins.get(w) for w in self.tags]
        known = [moment for moment in known if moment is not None]
        if known:
            oldest = min(known)
            self.observer.lag(self.shard, (self.clock() - oldest).total_seconds())


async def read_all(source: Source, reads: list[list[tuple[str, int, int]]]) -> SourceResult:
    """One result of several reads (a source reads one span per tag per read: re-reads
    of old ranges go in a read of their own)."""
    result = SourceResult()
    for wanted in reads:
        if wanted:
            more = await source.read(wanted)
            result.rows += more.rows
            result.quarantine += more.quarantine
            result.stats.add(more.stats)
            result.set_aside |= more.set_aside
    return result
