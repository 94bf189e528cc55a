"""Per-tag checkpoints and batch plans in `_pidelta_checkpoints` / `_pidelta_batches`.

Both live in Delta next to the data so that every container shares them, partitioned by
app id. They hold steps 2 (`record_plan`) and 4 (`advance`) of docs/DESIGN.md "Exactly
once": one commit each per data commit, whatever the number of polls it holds; each write
carries the commit's app transaction on its own table, so each step is idempotent.

Checkpoints are read as the latest (highest) end per tag over every app id of a prefix
(`pidelta-ts-` for live runs, `pidelta-bf-` for backfills), whatever shard wrote them, so a
tag that moves to another shard resumes where it stopped.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from workers.errors import SinkError
from workers.lake.schemas import (
    BATCHES,
    BATCHES_SCHEMA,
    CHECKPOINTS,
    CHECKPOINTS_SCHEMA,
    PI_TIMESERIES,
    UTC_US,
)
from workers.lake.writer import DeltaWriter
from workers.timeseries.plan import PlannedBatch, TagRange

LIVE_PREFIX = "pidelta-ts-"
BACKFILL_PREFIX = "pidelta-bf-"
FOLLOWER_PREFIX = "pidelta-ts-updates-"


def follower_versions(batch_id: int) -> tuple[int, int]:
    """The app-transaction versions of a stream-update follower's batch n on pi_timeseries:
    2n for the append of its arrivals, 2n + 1 for the replace of its edits and deletions
    (the append's own when there are none). docs/DESIGN.md "Following stream updates"."""
    return 2 * batch_id, 2 * batch_id + 1


def rows_landed(app_id: str, version: int | None) -> int:
    """The highest batch of `app_id` whose pi_timeseries commits are all in, given the
    table's app-transaction version of `app_id` (a follower commits two per batch)."""
    if version is None:
        return 0
    return max(0, (version - 1) // 2) if app_id.startswith(FOLLOWER_PREFIX) else version


def last_commit(sink: DeltaWriter, app_ids: Sequence[str]) -> datetime | None:
    """When any of `app_ids` last advanced a checkpoint (None: never); the table is
    partitioned by app id, so only their files are read."""
    found = (
        sink.table(CHECKPOINTS)
        .to_pyarrow_dataset()
        .to_table(columns=["committed_at"], filter=ds.field("app_id").isin(list(app_ids)))
    )
    return pc.max(found.column("committed_at")).as_py() if found.num_rows else None


class CheckpointStore:
    """Checkpoints cached in memory (reloaded on start and on demand), plans read on demand."""

    def __init__(self, sink: DeltaWriter) -> None:
        self.sink = sink
        self._latest = pl.DataFrame()
        self._issued: dict[str, int] = {}  # batch ids handed out, recorded or not
        self.reload()

    def reload(self) -> None:
        """Read the latest checkpoint of every (app id, tag) from the table.

        The cache follows this process's own `advance` calls; call `reload` when tags
        move between shards, to see what the previous owner committed.
        """
        table = self.sink.table(CHECKPOINTS).to_pyarrow_table(
            columns=["app_id", "tag_webid", "checkpoint"]
        )
        self._latest = (
            pl.from_arrow(table).group_by(["app_id", "tag_webid"]).agg(pl.col("checkpoint").max())
        )

    def load_checkpoints(
        self, tags: Iterable[str], app_prefix: str = LIVE_PREFIX
    ) -> dict[str, datetime]:
        """Latest checkpoint of each of `tags` (absent when the tag never committed)."""
        wanted = list(tags)
        latest = (
            self._latest.filter(
                pl.col("app_id").str.starts_with(app_prefix) & pl.col("tag_webid").is_in(wanted)
            )
            .group_by("tag_webid")
            .agg(pl.col("checkpoint").max())
        )
        return dict(zip(latest["tag_webid"].to_list(), latest["checkpoint"].to_list(), strict=True))

    def planned_beyond(self, tags: Collection[str]) -> dict[str, datetime]:
        """Per tag, the end of the furthest plan of any app id past its latest checkpoint.

        A batch can land rows without ever advancing: an older generation's follower whose
        append landed and whose replace the fence refused (recovery advances a follower's
        batch only once all its rows are in). Its plan still names the times, so a worker
        reads up to there with an anti-join on the key, not blind.
        """
        if not tags:
            return {}
        where = ds.field("tag_webid").isin(list(tags))
        found = (
            self.sink.table(BATCHES)
            .to_pyarrow_dataset()
            .to_table(columns=["tag_webid", "range_end"], filter=where)
        )
        if not found.num_rows:
            return {}
        ends = pl.from_arrow(found).group_by("tag_webid").agg(pl.col("range_end").max())
        cps = self.load_checkpoints(tags)
        return {
            w: end
            for w, end in zip(ends["tag_webid"].to_list(), ends["range_end"].to_list(), strict=True)
            if w not in cps or end > cps[w]
        }

    def done_version(self, app_id: str) -> int | None:
        """Highest batch id of `app_id` whose checkpoints are recorded."""
        return self.sink.committed_version(CHECKPOINTS, app_id)

    def next_batch_id(self, app_id: str) -> int:
        """A batch id above every recorded plan and every id handed out before: the polls
        buffered for one commit get ids of their own, and the commit records the highest."""
        planned = self.sink.committed_version(BATCHES, app_id)
        done = self.done_version(app_id)
        batch_id = max(planned or 0, done or 0, self._issued.get(app_id, 0)) + 1
        self._issued[app_id] = batch_id
        return batch_id

    def pending_batches(self, app_id: str) -> list[PlannedBatch]:
        """Planned batches of `app_id` not advanced yet, oldest first: re-run them as planned."""
        done = self.done_version(app_id) or 0
        plans = self._plans(app_id)
        return self._batches(app_id, plans, done + 1) if plans.num_rows else []

    def record_plan(
        self,
        app_id: str,
        batch_id: int,
        ranges: Sequence[TagRange],
        planned_at: datetime | None = None,
    ) -> bool:
        """Step 2: store the plan of one commit in one commit; a second call for the same
        batch writes nothing. The ranges of the polls it holds are merged (`merged`): one
        row per tag and kind where they are contiguous, as they are poll after poll."""
        at = planned_at or datetime.now(UTC)
        ranges = merged(ranges)
        rows = pa.Table.from_pydict(
            {
                "app_id": [app_id] * len(ranges),
                "batch_id": [batch_id] * len(ranges),
                "tag_webid": [r.webid for r in ranges],
                "range_start": pa.array([r.start for r in ranges], UTC_US),
                "range_end": pa.array([r.end for r in ranges], UTC_US),
                "kind": [r.kind for r in ranges],
                "planned_at": pa.array([at] * len(ranges), UTC_US),
            },
            schema=BATCHES_SCHEMA,
        )
        return self.sink.append(BATCHES, rows, app_id, batch_id)

    def advance(
        self,
        app_id: str,
        batch_id: int,
        ranges: Sequence[TagRange],
        committed_at: datetime | None = None,
    ) -> bool:
        """Step 4: record each tag's new checkpoint (the highest end among its ranges).

        Late look-back ranges end at the current checkpoint, so a batch of only those still
        records that it is done without moving anything.
        """
        ends: dict[str, datetime] = {}
        for r in ranges:
            ends[r.webid] = max(r.end, ends.get(r.webid, r.end))
        at = committed_at or datetime.now(UTC)
        rows = pa.Table.from_pydict(
            {
                "tag_webid": list(ends),
                "checkpoint": pa.array(list(ends.values()), UTC_US),
                "app_id": [app_id] * len(ends),
                "batch_id": [batch_id] * len(ends),
                "committed_at": pa.array([at] * len(ends), UTC_US),
            },
            schema=CHECKPOINTS_SCHEMA,
        )
        written = self.sink.append(CHECKPOINTS, rows, app_id, batch_id)
        if written:
            fresh = pl.from_arrow(rows.select(["app_id", "tag_webid", "checkpoint"]))
            self._latest = (
                pl.concat([self._latest, fresh], how="vertical_relaxed")
                .group_by(["app_id", "tag_webid"])
                .agg(pl.col("checkpoint").max())
            )
        return written

    def recover(self, app_ids: Iterable[str]) -> list[PlannedBatch]:
        """Advance the batches of `app_ids` whose data is committed but not advanced.

        Needed when a shard crashed between steps 3 and 4, and when its tags then moved to
        another app id (resharding): without this their new owner would read them again.
        The caller names the app ids: a running peer's own batches are not ours to advance.
        The cache is read again at the end: a stopping worker of the previous generation
        may have advanced its last batch itself since the cache was read (its data landed
        before the fence, its checkpoints after), and those must count too.
        """
        ids = sorted(set(app_ids))
        # One snapshot of each table for every app id: a reshard leaves dozens of old ones.
        data_table, done_table = self.sink.table(PI_TIMESERIES), self.sink.table(CHECKPOINTS)
        data = {a: rows_landed(a, data_table.transaction_version(a)) for a in ids}
        done = {a: done_table.transaction_version(a) or 0 for a in ids}
        unfinished = [a for a in ids if data[a] > done[a]]
        recovered: list[PlannedBatch] = []
        if unfinished:
            dataset = self.sink.table(BATCHES).to_pyarrow_dataset()
            plans = dataset.to_table(filter=ds.field("app_id").isin(unfinished))
            for app_id in unfinished:
                mine = plans.filter(pc.equal(plans["app_id"], app_id))
                for batch in self._batches(app_id, mine, done[app_id] + 1):
                    if batch.batch_id <= data[app_id] and self.advance(
                        app_id, batch.batch_id, batch.ranges
                    ):
                        recovered.append(batch)
        self.reload()
        return recovered

    def overlapping(
        self,
        spans: Mapping[str, tuple[datetime, datetime]],
        exclude: Collection[tuple[str, int]],
    ) -> set[str]:
        """Tags whose span (lo, hi] meets a range of a planned batch not in `exclude` (any
        app id, committed or not): their data may be in pi_timeseries already.

        A backfill into times nobody else has read then needs no anti-join against the
        table; the plans are a thousandth of the data, so asking them is cheap.
        """
        if not spans:
            return set()
        lo = pa.scalar(min(s for s, _ in spans.values()), UTC_US)
        hi = pa.scalar(max(e for _, e in spans.values()), UTC_US)
        where = (
            (ds.field("range_end") > lo)
            & (ds.field("range_start") < hi)
            & ds.field("tag_webid").isin(list(spans))
        )
        columns = ["app_id", "batch_id", "tag_webid", "range_start", "range_end"]
        dataset = self.sink.table(BATCHES).to_pyarrow_dataset()
        found = pl.from_arrow(dataset.to_table(columns=columns, filter=where))
        if found.is_empty():
            return set()
        wanted = pl.from_arrow(
            pa.table(
                {
                    "tag_webid": list(spans),
                    "lo": pa.array([s for s, _ in spans.values()], UTC_US),
                    "hi": pa.array([e for _, e in spans.values()], UTC_US),
                }
            )
        )
        mine = pl.DataFrame(
            {"app_id": [a for a, _ in exclude], "batch_id": [b for _, b in exclude]},
            schema={"app_id": pl.String, "batch_id": pl.Int64},
        )
        hits = (
            found.join(wanted, on="tag_webid")
            .filter((pl.col("range_end") > pl.col("lo")) & (pl.col("range_start") < pl.col("hi")))
            .join(mine, on=["app_id", "batch_id"], how="anti")
        )
        return set(hits["tag_webid"].unique().to_list())

    def compact(self, app_id: str, keep_batches: int = 10) -> bool:
        """Bound the state tables: keep the latest checkpoint per tag of `app_id`, its plans
        that are pending or among the last `keep_batches` done, and one summary row per tag
        and kind (earliest start, latest end) for the older ones.

        Both tables gain rows every batch, and `reload` reads them whole. The summary keeps
        what the older plans are still read for: where a tag's live data begins (look-backs
        stop there) and which times were read (`overlapping`; a summary over a gap between
        two backfills only makes an anti-join that finds nothing). Only this app id's
        partition is rewritten, each table in one atomic replace: appends of other app ids
        land in other partitions, so delta-rs finds no conflict with them; False when a
        commit to this very partition got in the way (the caller's own commits are not
        concurrent with it, so only a recovery by another worker can do that).
        """
        quoted = app_id.replace("'", "''")
        where = f"app_id = '{quoted}'"
        done = self.done_version(app_id) or 0
        mine = ds.field("app_id") == app_id
        try:
            checkpoints = pl.from_arrow(
                self.sink.table(CHECKPOINTS).to_pyarrow_dataset().to_table(filter=mine)
            )
            latest = (
                checkpoints.sort(["checkpoint", "batch_id"], descending=True)
                .unique(subset=["tag_webid"], keep="first", maintain_order=True)
                .sort("tag_webid")
            )
            if latest.height < checkpoints.height:
                self.sink.replace_where(CHECKPOINTS, where, latest.to_arrow())
            plans = pl.from_arrow(self._plans(app_id))
            recent = pl.col("batch_id") > done - keep_batches
            old = plans.filter(~recent)
            summary = old.group_by(["tag_webid", "kind"]).agg(
                pl.col("app_id").first(),
                pl.col("batch_id").max(),
                pl.col("range_start").min(),
                pl.col("range_end").max(),
                pl.col("planned_at").max(),
            )
            if summary.height < old.height:
                kept = pl.concat([summary.select(plans.columns), plans.filter(recent)])
                table = kept.sort(["batch_id", "tag_webid"]).to_arrow().cast(BATCHES_SCHEMA)
                self.sink.replace_where(BATCHES, where, table)
        except SinkError:
            return False
        return True

    def _plans(self, app_id: str) -> pa.Table:
        dataset = self.sink.table(BATCHES).to_pyarrow_dataset()
        return dataset.to_table(filter=ds.field("app_id") == app_id)

    @staticmethod
    def _batches(app_id: str, plans: pa.Table, from_id: int) -> list[PlannedBatch]:
        frame = (
            pl.from_arrow(plans)
            .filter(pl.col("batch_id") >= from_id)
            .sort(["batch_id", "tag_webid", "kind", "range_start"])
        )
        batches = []
        for (batch_id,), group in frame.group_by(["batch_id"], maintain_order=True):
            ranges = tuple(
                TagRange(w, s, e, k)
                for w, s, e, k in zip(
                    group["tag_webid"].to_list(),
                    group["range_start"].to_list(),
                    group["range_end"].to_list(),
                    group["kind"].to_list(),
                    strict=True,
                )
            )
            batches.append(PlannedBatch(app_id, int(batch_id), ranges))
        return batches


def merged(ranges: Iterable[TagRange]) -> list[TagRange]:
    """The union of `ranges` per tag and kind: ranges that meet or overlap become one.

    Polls buffered for one commit read (c0, c1], (c1, c2], ... of a tag: one range
    (c0, cn] reads the same values. Look-backs overlap each other; set-aside re-reads
    may lie apart, and then stay apart.
    """
    by_key: dict[tuple[str, str], list[TagRange]] = {}
    for r in ranges:
        by_key.setdefault((r.webid, r.kind), []).append(r)
    out: list[TagRange] = []
    for (webid, kind), own in sorted(by_key.items()):
        own.sort(key=lambda r: (r.start, r.end))
        start, end = own[0].start, own[0].end
        for r in own[1:]:
            if r.start <= end:
                end = max(end, r.end)
            else:
                out.append(TagRange(webid, start, end, kind))
                start, end = r.start, r.end
        out.append(TagRange(webid, start, end, kind))
    return out
