"""`Follower`: the owned tags' stream updates applied to pi_timeseries, exactly once.

`run` follows each tag with a marker once the recorded path has caught it up to the moment
of registration (docs/DESIGN.md "Exactly once", "Following stream updates", where the
protocol is written). Events are buffered over polls and applied in one batch n of the app
id `pidelta-ts-updates-<i>-of-<n>` per commit interval, in this order:

1. the plan, the change-log rows (`pi_timeseries_changes`) and quarantine rows, under n;
2. arrivals (keys the table lacks) appended blind to pi_timeseries under version 2n, and
   the keys edits and deletions touch replaced under 2n + 1 (`apply`); without edits or
   deletions the append takes 2n + 1 and there is no replace. Appends do not conflict
   with other shards' appends; the replace's predicate names only the touched tags and
   times, which other shards' live files rarely reach;
3. the tags' checkpoints (`_pidelta_checkpoints`, read like every live checkpoint), under n;
4. the markers to resume from (`_pidelta_markers`), under n.

After a crash the follower resumes from the markers of step 4: PI reports the same changes
again (or more), and applying them again changes and logs nothing, except that a batch
whose log or append landed without the rest is re-run under the same id (`load`), so
neither is written twice.
A tag whose marker PI refuses (expired, server restarted) leaves the follower: the loop
re-reads its gap through the recorded fallback and registers it again.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from deltalake import DeltaTable

from workers.errors import CommitAbandoned, SinkError, UpdatesUnavailable
from workers.lake.schemas import (
    MARKERS,
    MARKERS_SCHEMA,
    PI_TIMESERIES,
    PI_TIMESERIES_CHANGES,
    QUARANTINE,
    UTC_US,
)
from workers.lake.writer import backoff, outdated
from workers.observe import Observer
from workers.pi.times import utcnow
from workers.settings import Settings
from workers.timeseries.apply import (
    KEY,
    Resolved,
    Scope,
    at_keys,
    change_log,
    counts,
    replacement,
    resolve,
)
from workers.timeseries.checkpoints import (
    FOLLOWER_PREFIX,
    CheckpointStore,
    follower_versions,
    rows_landed,
)
from workers.timeseries.plan import TagRange
from workers.timeseries.sink import DeltaSink, require_fence, with_batch
from workers.timeseries.updates import UpdatesSource

log = logging.getLogger("pidelta.follow")

UPDATES = "updates"  # the kind of a followed tag's checkpoint range
# How long a replace that concurrent commits outdated is tried again: it conflicts with a
# commit that changed data in a file whose statistics may match its predicate (another
# shard's replace over the same times). Dozens of shards replacing every commit interval
# meet often, so the follower waits (jittered, doubling, at most 5 s between tries) rather
# than fail the worker; past this, the worker fails and its batch is re-run at restart.
REPLACE_PATIENCE = 300.0


@dataclass(frozen=True)
class Prepared:
    """A replace computed on table version `snapshot`."""

    snapshot: int
    scope: Scope
    rows: pa.Table


def follower_app_id(shard_index: int, shard_count: int) -> str:
    """Read with the live checkpoints (prefix `pidelta-ts-`), its own batch ids."""
    return f"{FOLLOWER_PREFIX}{shard_index}-of-{shard_count}"


class Follower:
    """Markers of the followed tags, the events not applied yet, and their commit."""

    def __init__(
        self,
        settings: Settings,
        source: UpdatesSource,
        sink: DeltaSink,
        checkpoints: CheckpointStore,
        check_fence: Callable[[], object],
        observer: Observer,
        clock: Callable[[], datetime] = utcnow,
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        self.app_id = follower_app_id(settings.shard_index, settings.shard_count)
        self.stopping = stopping  # the worker is stopping: a replace is not tried again
        # Every pi_timeseries commit checks the fence on the snapshot it commits against,
        # as the recorded path's do (docs/DESIGN.md "Resharding fence").
        count = settings.shard_count
        self.fenced: Callable[[DeltaTable], None] = lambda table: require_fence(table, count)
        self.shard = str(settings.shard_index)
        self.source = source
        self.sink = sink
        self.checkpoints = checkpoints
        self.check_fence = check_fence
        self.observer = observer
        self.clock = clock
        self.max_age = settings.commit_max_age
        self.max_rows = settings.commit_max_rows
        self.poll_interval = settings.poll_interval
        self.retry_off = settings.rediscover_interval
        self.markers: dict[str, str] = {}
        self.covered: dict[str, datetime] = {}  # per tag: the table is PI's archive up to here
        self.reached: dict[str, datetime] = {}  # ... and will be once the buffer is applied
        self.refused: set[str] = set()  # PI would not register them: recorded reads until
        # the next discovery
        self._events: list[pa.Table] = []
        self._quarantine: list[pa.Table] = []
        self._rows = 0
        self._since: float | None = None
        self._off_until = 0.0
        self.batch_id = 1

    @property
    def active(self) -> bool:
        """False for a while after PI answered that it has no stream updates."""
        return time.monotonic() >= self._off_until

    def load(self, owned: Iterable[str]) -> None:
        """Markers of this app id's last landed batch, and the id of the next batch.

        An owned tag without one takes over the marker that the last landed batch of another
        follower left for it (a reshard moved it; the fence has stopped that app id): PI
        reports from there all that changed since, so the move leaves no gap of edits and
        deletions for `pidelta verify`. A marker PI no longer knows is refused at the first
        retrieval, and the tag falls back to registration and a recorded re-read."""
        found = pl.from_arrow(
            self.sink.table(MARKERS)
            .to_pyarrow_dataset()
            .to_table(filter=pc.starts_with(ds.field("app_id"), FOLLOWER_PREFIX))
        )
        own = found.filter(pl.col("app_id") == self.app_id)
        latest = own.sort("batch_id").group_by("tag_webid", maintain_order=True).last()
        taken = (
            found.filter(
                (pl.col("app_id") != self.app_id)
                & pl.col("tag_webid").is_in(list(set(owned) - set(latest["tag_webid"])))
            )
            .sort("covered_until", "batch_id")
            .group_by("tag_webid", maintain_order=True)
            .last()
        )
        both = pl.concat([latest, taken])
        self.markers = dict(zip(both["tag_webid"], both["marker"], strict=True))
        self.covered = dict(zip(both["tag_webid"], both["covered_until"], strict=True))
        self.reached = dict(self.covered)
        self.batch_id = self._next_batch()
        if taken.height:
            log.info("took over the stream-update markers of %d moved tags", taken.height)
            self.observer.markers(self.shard, "taken_over", taken.height)

    def _next_batch(self) -> int:
        """The batch to run next: one whose change log or append landed without its replace
        (re-run under its id, so neither is written twice), else one past every batch."""
        data = self.sink.committed_version(PI_TIMESERIES, self.app_id) or 0
        logged = self.sink.committed_version(PI_TIMESERIES_CHANGES, self.app_id) or 0
        finished = max(
            rows_landed(self.app_id, data),
            self.sink.committed_version(MARKERS, self.app_id) or 0,
            self.checkpoints.done_version(self.app_id) or 0,
        )
        begun = max(logged, data // 2)
        return begun if begun > finished else finished + 1

    def unfollowed(self, tags: Iterable[str]) -> list[str]:
        """Owned tags not followed yet, to register (the recorded fallback reads their gap):
        a tag is followed once its catch-up after registration is done (`start`)."""
        return sorted(t for t in tags if t not in self.covered and t not in self.refused)

    def forget(self, owned: Iterable[str]) -> None:
        """After a discovery: drop the markers of tags no longer owned (deleted, moved), and
        ask PI again for the tags it refused."""
        keep = set(owned)
        self.refused.clear()
        for table in (self.markers, self.covered, self.reached):
            for webid in [w for w in table if w not in keep]:
                del table[webid]

    def switch_off(self, exc: Exception) -> None:
        log.warning(
            "stream updates unavailable (%s): recorded re-reads follow the tail, asking "
            "again in %.0f s",
            exc,
            self.retry_off,
        )
        self._off_until = time.monotonic() + self.retry_off
        self.markers.clear()
        self.covered.clear()

    async def register(self, webids: list[str]) -> list[str]:
        """Markers for `webids`; the tags registered."""
        try:
            markers, refused = await self.source.register(webids)
        except UpdatesUnavailable as exc:
            self.switch_off(exc)
            return []
        for webid, error in refused.items():
            log.warning("stream updates refused for %s: %s", webid, error)
        self.refused |= set(refused)
        self.markers.update(markers)
        self.observer.markers(self.shard, "registered", len(markers))
        return sorted(markers)

    def start(self, cps: Mapping[str, datetime]) -> None:
        """Tags just registered and caught up: the table holds PI's archive up to `cps`."""
        for webid, cp in cps.items():
            if webid in self.markers:
                self.covered[webid] = self.reached[webid] = cp

    async def poll(self) -> None:
        """Retrieve every marker once and buffer what changed."""
        followed = {w: m for w, m in self.markers.items() if w in self.covered}
        if not followed:
            return
        # Only a first poll since a commit needs it (see below); later ones skip the pass.
        oldest = min(self.covered[w] for w in followed) if self._since is None else None
        began = self.clock()
        try:
            got = await self.source.retrieve(followed)
        except UpdatesUnavailable as exc:
            self.switch_off(exc)
            return
        for webid, error in got.lost.items():
            log.info("marker of %s refused, reading its gap again: %s", webid, error)
            self.markers.pop(webid, None)
            self.covered.pop(webid, None)
        if got.lost:
            self.observer.markers(self.shard, "expired", len(got.lost))
        self.markers.update(got.markers)
        events = got.events
        self.observer.values_read(PI_TIMESERIES, self.shard, events.num_rows)
        for webid in got.markers:
            self.reached[webid] = max(self.reached.get(webid, began), began)
        # Every value reported is covered, quarantined ones too (PI's clock may run ahead).
        stamps = [x.select(["tag_webid", "timestamp"]) for x in (events, *got.quarantine)]
        latest = (
            pl.from_arrow(pa.concat_tables(stamps, promote_options="permissive"))
            .drop_nulls()
            .group_by("tag_webid")
            .agg(pl.col("timestamp").max())
        )
        for webid, t in zip(latest["tag_webid"], latest["timestamp"], strict=True):
            self.reached[webid] = max(self.reached.get(webid, t), t)
        if events.num_rows:
            self._events.append(events)
            self._rows += events.num_rows
        self._quarantine.extend(got.quarantine)
        if oldest is not None:
            # The first poll after a restart or a takeover retrieves the whole gap since the
            # last commit of the tags: its age counts from then, as a recorded catch-up's
            # does (`CommitQueue.overdue`), so it is applied at once, not a commit age later.
            gap = (began - oldest).total_seconds() - self.poll_interval
            self._since = time.monotonic() - max(0.0, gap)

    def should_commit(self) -> bool:
        return self._since is not None and (
            time.monotonic() - self._since >= self.max_age or self._rows >= self.max_rows
        )

    def commit_in(self) -> float | None:
        """Seconds until the buffer is old enough to apply; None when nothing waits."""
        return None if self._since is None else self.max_age - (time.monotonic() - self._since)

    async def commit(self) -> None:
        """Apply what was retrieved since the last commit (steps 1-4 above)."""
        if self._since is not None:
            await asyncio.to_thread(self._commit)

    def _commit(self) -> None:
        n = self.batch_id
        events = pa.concat_tables(self._events) if self._events else None
        ends = [
            TagRange(w, self.covered.get(w, self.reached[w]), self.reached[w], UPDATES)
            for w in sorted(self.reached)
        ]
        # The plan first, as for every batch: recovery advances it if its rows land and its
        # checkpoints do not, so no recorded read starts below rows written here.
        self.checkpoints.record_plan(self.app_id, n, ends)
        if self._quarantine:
            quarantine = with_batch(pa.concat_tables(self._quarantine), self.app_id, n)
            self.check_fence()
            new = self.sink.new_quarantine(quarantine)
            if self.sink.append(QUARANTINE, new, self.app_id, n):
                reasons = pl.from_arrow(new.select(["reason"])).group_by("reason").len()
                self.observer.quarantined(dict(reasons.iter_rows()))
        if events is not None:
            self._apply(events, n)
        self.checkpoints.advance(self.app_id, n, ends)
        self._save_markers(n)
        self.covered = {w: self.reached[w] for w in self.covered if w in self.reached}
        self.reached = dict(self.covered)
        self._events, self._quarantine, self._rows, self._since = [], [], 0, None
        self.batch_id = n + 1

    def _apply(self, events: pa.Table, n: int) -> None:
        """Log the changes, append the arrivals, replace the edited and removed keys."""
        first = self._resolve(events)[2]
        logged = change_log(first.changed, self.clock(), self.app_id, n)
        self.check_fence()
        if logged.num_rows:
            self.sink.append(PI_TIMESERIES_CHANGES, logged, self.app_id, n)
        appended, replaced = follower_versions(n)
        if first.replaced.height:
            if first.arrivals.num_rows:
                self.sink.append(
                    PI_TIMESERIES, first.arrivals, self.app_id, appended, check=self.fenced
                )
            self._replace(events, n)
        elif first.arrivals.num_rows:
            self.sink.append(
                PI_TIMESERIES, first.arrivals, self.app_id, replaced, check=self.fenced
            )
        self.observer.changes_applied(self.shard, counts(first.changed))

    def _resolve(self, events: pa.Table) -> tuple[int, ds.Dataset, Resolved]:
        """The latest snapshot (its version and rows), and what the events do to it."""
        table = self.sink.table(PI_TIMESERIES)
        version, dataset = table.version(), table.to_pyarrow_dataset()
        return version, dataset, resolve(at_keys(dataset, events), events, self.covered)

    def _replace(self, events: pa.Table, n: int) -> None:
        """The replace, again when a concurrent commit outdated it (another shard's replace
        over the same times: other shards' appends do not, at `writeSerializable`), resolved
        again on a fresh snapshot (a replace reads the table, so the writer does not redo
        it blindly), after a jittered, doubling pause, so shards that lost to one commit do
        not race again."""
        prepared = self._prepare(events)
        began = time.monotonic()
        for attempt in itertools.count(1):
            if prepared is None:
                return
            try:
                self._write_replace(prepared, n)
                return
            except SinkError as exc:
                late = time.monotonic() - began > REPLACE_PATIENCE
                if late or not outdated(exc.__cause__ or exc):
                    raise
                if self.stopping():
                    raise CommitAbandoned(f"replace of batch {n} of {self.app_id}") from exc
                self.observer.commit_retried(PI_TIMESERIES)
                time.sleep(backoff(attempt))
                log.info("replace of batch %d met a concurrent commit; again", n)
                prepared = self._prepare(events)

    def _prepare(self, events: pa.Table) -> Prepared | None:
        """The edited and removed keys' replacement, resolved on the latest snapshot (the
        batch's arrivals are in it by now; those of a re-run whose append had landed
        already go with the replace); None when nothing is left to replace."""
        snapshot, dataset, resolved = self._resolve(events)
        arrived = pl.from_arrow(resolved.arrivals.select([*KEY, "date"]))
        keys = pl.concat([resolved.replaced, arrived], how="vertical_relaxed")
        if keys.is_empty():
            return None
        scope = Scope.of(keys)
        return Prepared(snapshot, scope, replacement(scope.rows(dataset), resolved))

    def _write_replace(self, prepared: Prepared, n: int) -> None:
        """The replacement under version 2n + 1, against the snapshot it was computed for."""
        self.check_fence()
        _, version = follower_versions(n)
        self.sink.replace_where(
            PI_TIMESERIES,
            prepared.scope.sql(),
            prepared.rows,
            self.app_id,
            version,
            snapshot=prepared.snapshot,
            check=self.fenced,
        )

    def _save_markers(self, n: int) -> None:
        tags = sorted(w for w in self.markers if w in self.covered)
        now = self.clock()
        rows = pa.table(
            {
                "tag_webid": pa.array(tags, pa.string()),
                "marker": pa.array([self.markers[w] for w in tags], pa.string()),
                "covered_until": pa.array([self.reached.get(w, now) for w in tags], UTC_US),
                "app_id": pa.array([self.app_id] * len(tags), pa.string()),
                "batch_id": pa.array([n] * len(tags), pa.int64()),
                "noted_at": pa.array([now] * len(tags), UTC_US),
            },
            schema=MARKERS_SCHEMA,
        )
        self.sink.append(MARKERS, rows, self.app_id, n)

    def compact(self) -> bool:
        """Keep the latest marker row per tag of this app id; False when a concurrent
        commit got in the way (try again next time)."""
        table = (
            self.sink.table(MARKERS)
            .to_pyarrow_dataset()
            .to_table(filter=ds.field("app_id") == self.app_id)
        )
        if table.num_rows == 0:
            return True
        frame = pl.from_arrow(table)
        latest = frame.sort("batch_id").group_by("tag_webid", maintain_order=True).last()
        if latest.height == frame.height:
            return True
        quoted = self.app_id.replace("'", "''")
        try:
            self.sink.replace_rows(
                MARKERS, latest.to_arrow().cast(MARKERS_SCHEMA), f"app_id = '{quoted}'"
            )
        except SinkError:
            return False
        return True
