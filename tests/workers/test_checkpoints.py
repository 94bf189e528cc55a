"""Checkpoints and plans in Delta: a crash between any two steps re-runs the same plan once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import polars as pl
import pyarrow as pa
import pytest
from deltalake import DeltaTable

from workers.lake.schemas import PI_TIMESERIES
from workers.lake.tables import TableStore
from workers.timeseries.checkpoints import BACKFILL_PREFIX, CheckpointStore
from workers.timeseries.decode import TagMeta, decode_streamset
from workers.timeseries.plan import PlannedBatch, TagRange, next_batch
from workers.timeseries.sink import DeltaSink

T = datetime(2026, 11, 27, 10, tzinfo=UTC)
SEC = timedelta(seconds=1)
TAGS = {w: TagMeta(w, f"tag-{w}", "Float64") for w in ("A", "B")}
APP = "pidelta-ts-0-of-1"


def pi_values(rng: TagRange) -> pa.Table:
    """What PI holds for a range: one value per second, two at each whole 10 s."""
    items = []
    t = rng.start + SEC
    while t <= rng.end:
        stamp = t.strftime("%Y-%m-%dT%H:%M:%SZ")
        seconds = int((t - T).total_seconds())
        items.append({"Timestamp": stamp, "Value": float(seconds)})
        if seconds % 10 == 0:
            items.append({"Timestamp": stamp, "Value": -float(seconds)})
        t += SEC
    raw = orjson.dumps({"Items": [{"WebId": rng.webid, "Items": items}]})
    return decode_streamset(raw, TAGS).rows


def fetch(batch: PlannedBatch) -> pa.Table:
    return pa.concat_tables([pi_values(r) for r in batch.ranges])


def open_state(root: Path) -> tuple[DeltaSink, CheckpointStore]:
    store = TableStore(str(root))
    store.create_all()
    sink = DeltaSink(store)
    return sink, CheckpointStore(sink)


def plan(state: CheckpointStore, until: datetime) -> PlannedBatch:
    return next_batch(
        APP,
        state.next_batch_id(APP),
        TAGS,
        state.load_checkpoints(TAGS),
        start=T,
        until=until,
        window=30 * SEC,
    )


STEPS = ("plan", "commit", "advance")


def run_batch(root: Path, until: datetime, crash_after: str | None = None) -> None:
    """One pass of the protocol from a fresh process; stop after `crash_after`."""
    sink, state = open_state(root)
    pending = state.pending_batches(APP)
    batch = pending[-1] if pending else plan(state, until)
    if not batch.ranges:
        return
    if not pending:
        state.record_plan(APP, batch.batch_id, batch.ranges)
    if crash_after == "plan":
        return
    sink.commit_timeseries(fetch(batch), APP, batch.batch_id)
    if crash_after == "commit":
        return
    state.advance(APP, batch.batch_id, batch.ranges)


def last_plan(root: Path) -> PlannedBatch | None:
    """The highest planned batch of APP, read from `_pidelta_batches` as a reader would."""
    plans = pl.from_arrow(DeltaTable(str(root / "_pidelta_batches")).to_pyarrow_table())
    plans = plans.filter(pl.col("app_id") == APP)
    if plans.is_empty():
        return None
    top = plans.filter(pl.col("batch_id") == plans["batch_id"].max())
    rows = top.sort(["tag_webid", "kind", "range_start"]).select(
        "tag_webid", "range_start", "range_end", "kind"
    )
    return PlannedBatch(APP, int(top["batch_id"][0]), tuple(TagRange(*r) for r in rows.rows()))


def table_rows(root: Path) -> pl.DataFrame:
    table = DeltaTable(str(root / PI_TIMESERIES)).to_pyarrow_table()
    return pl.from_arrow(table).select("tag_webid", "timestamp", "sequence", "value")


def expected(until: datetime) -> pl.DataFrame:
    return pl.concat(
        [pl.from_arrow(pi_values(TagRange(w, T, until))) for w in sorted(TAGS)]
    ).select("tag_webid", "timestamp", "sequence", "value")


@pytest.mark.parametrize("crash_after", STEPS)
def test_crash_between_steps_rerun_same_plan_lands_once(tmp_path: Path, crash_after: str) -> None:
    run_batch(tmp_path, T + 45 * SEC)
    before = last_plan(tmp_path)
    run_batch(tmp_path, T + 90 * SEC, crash_after=crash_after)
    _, state = open_state(tmp_path)
    planned = last_plan(tmp_path)
    assert planned is not None
    assert before is not None
    assert planned.batch_id == before.batch_id + 1
    assert planned.ranges == (
        TagRange("A", T + 30 * SEC, T + 60 * SEC),
        TagRange("B", T + 30 * SEC, T + 60 * SEC),
    )
    resumed = state.pending_batches(APP)
    assert resumed == ([] if crash_after == "advance" else [planned])
    run_batch(tmp_path, T + 90 * SEC)
    run_batch(tmp_path, T + 90 * SEC)
    _, state = open_state(tmp_path)
    assert state.load_checkpoints(["A", "B", "C"]) == {"A": T + 90 * SEC, "B": T + 90 * SEC}
    got = table_rows(tmp_path).sort(["tag_webid", "timestamp", "sequence"])
    assert got.equals(expected(T + 90 * SEC))
    assert got.height == 2 * (90 + 9)


def test_record_plan_and_advance_are_idempotent(tmp_path: Path) -> None:
    _, state = open_state(tmp_path)
    ranges = [TagRange("A", T, T + SEC)]
    assert state.record_plan(APP, 1, ranges) is True
    assert state.record_plan(APP, 1, ranges) is False
    assert state.done_version(APP) is None
    assert state.advance(APP, 1, ranges) is True
    assert state.advance(APP, 1, ranges) is False
    assert state.done_version(APP) == 1
    assert state.next_batch_id(APP) == 2
    assert last_plan(tmp_path) == PlannedBatch(APP, 1, tuple(ranges))
    assert state.done_version("unknown") is None


def test_checkpoints_follow_a_tag_across_app_ids(tmp_path: Path) -> None:
    _, state = open_state(tmp_path)
    state.advance("pidelta-ts-0-of-1", 1, [TagRange("A", T, T + SEC)])
    state.advance("pidelta-ts-1-of-2", 1, [TagRange("A", T + SEC, T + 5 * SEC)])
    state.advance("pidelta-bf-0-of-1", 1, [TagRange("A", T - SEC, T + 9 * SEC)])
    assert state.load_checkpoints(["A"]) == {"A": T + 5 * SEC}
    assert state.load_checkpoints(["A"], BACKFILL_PREFIX) == {"A": T + 9 * SEC}
    _, reopened = open_state(tmp_path)
    assert reopened.load_checkpoints(["A"]) == {"A": T + 5 * SEC}


def test_recover_advances_committed_batches_of_other_app_ids(tmp_path: Path) -> None:
    sink, state = open_state(tmp_path)
    old = "pidelta-ts-0-of-1"
    batch = PlannedBatch(old, 1, (TagRange("A", T, T + 20 * SEC),))
    state.record_plan(old, 1, batch.ranges)
    sink.commit_timeseries(fetch(batch), old, 1)
    _, after_reshard = open_state(tmp_path)
    assert after_reshard.load_checkpoints(["A"]) == {}
    assert after_reshard.recover(["pidelta-ts-0-of-10"]) == []
    assert after_reshard.recover([old]) == [batch]
    assert after_reshard.load_checkpoints(["A"]) == {"A": T + 20 * SEC}
    assert after_reshard.recover([old]) == []


def test_recover_sees_checkpoints_the_old_owner_wrote_after_the_cache_was_read(
    tmp_path: Path,
) -> None:
    """A reshard on slow storage: the old shard's data landed before the fence, its
    checkpoints after the new owner read the checkpoints (16 to 20 shards on S3 doubled
    138 rows this way). Recovery has nothing to advance, yet the new owner must plan from
    the old owner's checkpoint, not from the one before it."""
    sink, old_worker = open_state(tmp_path)
    old = "pidelta-ts-0-of-1"
    first = PlannedBatch(old, 1, (TagRange("A", T, T + 10 * SEC),))
    last = PlannedBatch(old, 2, (TagRange("A", T + 10 * SEC, T + 20 * SEC),))
    old_worker.record_plan(old, 1, first.ranges)
    sink.commit_timeseries(fetch(first), old, 1)
    old_worker.advance(old, 1, first.ranges)
    old_worker.record_plan(old, 2, last.ranges)
    sink.commit_timeseries(fetch(last), old, 2)
    _, new_owner = open_state(tmp_path)
    assert new_owner.load_checkpoints(["A"]) == {"A": T + 10 * SEC}
    old_worker.advance(old, 2, last.ranges)
    assert new_owner.recover([old]) == []
    assert new_owner.load_checkpoints(["A"]) == {"A": T + 20 * SEC}


def test_plans_past_a_checkpoint_are_named_for_an_anti_join(tmp_path: Path) -> None:
    """An older generation's follower landed its append (rows of A up to T + 30 s) and the
    fence refused its replace: recovery does not advance it, so A's checkpoint stays at
    T + 10 s while its plan names the times up to T + 30 s. B's plans end at its
    checkpoint, C has plans and no checkpoint, D has neither."""
    sink, state = open_state(tmp_path)
    live, follower = "pidelta-ts-0-of-1", "pidelta-ts-updates-0-of-1"
    first = PlannedBatch(live, 1, (TagRange("A", T, T + 10 * SEC), TagRange("B", T, T + 10 * SEC)))
    state.record_plan(live, 1, first.ranges)
    sink.commit_timeseries(fetch(first), live, 1)
    state.advance(live, 1, first.ranges)
    state.record_plan(follower, 1, (TagRange("A", T + 10 * SEC, T + 30 * SEC, "updates"),))
    state.record_plan(live, 2, (TagRange("C", T, T + 5 * SEC),))
    _, new_owner = open_state(tmp_path)
    assert new_owner.recover([live, follower]) == []
    assert new_owner.planned_beyond(["A", "B", "C", "D"]) == {
        "A": T + 30 * SEC,
        "C": T + 5 * SEC,
    }
    assert new_owner.planned_beyond([]) == {}


def test_buffered_batches_commit_under_the_highest_id(tmp_path: Path) -> None:
    sink, state = open_state(tmp_path)
    first = PlannedBatch(APP, 1, (TagRange("A", T, T + 10 * SEC),))
    second = PlannedBatch(APP, 2, (TagRange("A", T + 10 * SEC, T + 20 * SEC),))
    for b in (first, second):
        state.record_plan(APP, b.batch_id, b.ranges)
    sink.commit_timeseries(pa.concat_tables([fetch(first), fetch(second)]), APP, 2)
    _, reopened = open_state(tmp_path)
    assert reopened.pending_batches(APP) == [first, second]
    assert reopened.recover([APP]) == [first, second]
    assert reopened.pending_batches(APP) == []
    assert table_rows(tmp_path).height == 20 + 2


def plans_version(root: Path) -> int:
    return DeltaTable(str(root / "_pidelta_batches")).version()


def test_compact_keeps_latest_checkpoints_and_recent_plans(tmp_path: Path) -> None:
    _, state = open_state(tmp_path)
    other = "pidelta-ts-1-of-2"
    state.advance(other, 1, [TagRange("B", T, T + SEC)])
    for batch_id in range(1, 6):
        ranges = [TagRange("A", T + (batch_id - 1) * SEC, T + batch_id * SEC)]
        if batch_id == 2:
            ranges.append(TagRange("C", T, T + 2 * SEC))
        state.record_plan(APP, batch_id, ranges)
        if batch_id < 5:
            state.advance(APP, batch_id, ranges)
    assert state.compact(APP, keep_batches=2) is True
    _, reopened = open_state(tmp_path)
    assert reopened.load_checkpoints(["A", "B", "C"]) == {
        "A": T + 4 * SEC,
        "B": T + SEC,
        "C": T + 2 * SEC,
    }
    checkpoints = pl.from_arrow(
        DeltaTable(str(tmp_path / "_pidelta_checkpoints")).to_pyarrow_table()
    )
    assert sorted(checkpoints.select("app_id", "tag_webid", "batch_id").rows()) == [
        (APP, "A", 4),
        (APP, "C", 2),
        (other, "B", 1),
    ]
    plans = pl.from_arrow(DeltaTable(str(tmp_path / "_pidelta_batches")).to_pyarrow_table())
    assert sorted(plans.select("batch_id", "tag_webid", "range_start", "range_end").rows()) == [
        (2, "A", T, T + 2 * SEC),  # the summary of batches 1 and 2
        (2, "C", T, T + 2 * SEC),
        (3, "A", T + 2 * SEC, T + 3 * SEC),
        (4, "A", T + 3 * SEC, T + 4 * SEC),
        (5, "A", T + 4 * SEC, T + 5 * SEC),
    ]
    assert reopened.overlapping({"A": (T + SEC / 2, T + SEC), "B": (T, T + 9 * SEC)}, ()) == {"A"}
    before = plans_version(tmp_path)
    assert state.compact(APP, keep_batches=2) is True  # nothing older to fold: no rewrite
    assert plans_version(tmp_path) == before
    assert [b.batch_id for b in reopened.pending_batches(APP)] == [5]
    assert reopened.done_version(APP) == 4
    assert reopened.next_batch_id(APP) == 6
