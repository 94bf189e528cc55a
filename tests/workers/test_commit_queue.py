"""The commit queue, recovery trimming and the shard fence, one stage at a time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pyarrow as pa

from workers.lake.tables import TableStore
from workers.observe import NullObserver
from workers.pi.times import to_us
from workers.settings import Settings
from workers.timeseries.checkpoints import CheckpointStore
from workers.timeseries.commit_queue import CommitQueue, divide
from workers.timeseries.decode import TagMeta, decode_streamset
from workers.timeseries.plan import LATE, LIVE, PlannedBatch, TagRange
from workers.timeseries.recovery import Recovery
from workers.timeseries.sink import DeltaSink

T = datetime(2026, 11, 27, 10, tzinfo=UTC)
SEC = timedelta(seconds=1)
APP = "pidelta-ts-0-of-1"
TAGS = {w: TagMeta(w, f"tag-{w}", "Float64") for w in ("A", "B")}


def values(webid: str, *seconds: int) -> pa.Table:
    items = [
        {"Timestamp": (T + s * SEC).strftime("%Y-%m-%dT%H:%M:%SZ"), "Value": float(s)}
        for s in seconds
    ]
    raw = orjson.dumps({"Items": [{"WebId": webid, "Items": items}]})
    return decode_streamset(raw, TAGS).rows


def open_queue(root: Path, max_rows: int) -> tuple[CommitQueue, CheckpointStore]:
    store = TableStore(str(root))
    store.create_all()
    sink = DeltaSink(store)
    checkpoints = CheckpointStore(sink)
    settings = Settings(_env_file=None, target=str(root), commit_max_rows=max_rows)
    return CommitQueue(settings, sink, checkpoints, lambda: None, NullObserver(), "0"), checkpoints


def test_a_live_batch_counts_its_age_from_when_its_values_were_readable(
    tmp_path: Path,
) -> None:
    """Poll after poll a batch starts about a poll interval and a safety lag ago: no
    head start. A catch-up after a restart or reshard gap commits as soon as it is read;
    look-back and backfill ranges give no head start."""
    store = TableStore(str(tmp_path))
    store.create_all()
    sink = DeltaSink(store)
    settings = Settings(
        _env_file=None, target=str(tmp_path), safety_lag=10, poll_interval=5, commit_max_age=30
    )
    now = T + 3600 * SEC
    queue = CommitQueue(
        settings, sink, CheckpointStore(sink), lambda: None, NullObserver(), "0", clock=lambda: now
    )

    def batch(start: datetime, kind: str = LIVE) -> PlannedBatch:
        return PlannedBatch(APP, 1, (TagRange("A", start, now - 10 * SEC, kind),))

    assert queue.overdue(batch(now - 15 * SEC)) == 0.0
    assert queue.overdue(batch(now - 17 * SEC)) == 2.0
    assert queue.overdue(batch(now - 95 * SEC)) == 80.0
    assert queue.overdue(batch(now - 95 * SEC, LATE)) == 0.0
    assert queue.overdue(PlannedBatch(APP, 1, ())) == 0.0


def test_split_groups_tags_whose_expected_rows_fit(tmp_path: Path) -> None:
    queue, _ = open_queue(tmp_path, 100)
    a = TagRange("a", T, T + 60 * SEC)
    b = TagRange("b", T, T + 30 * SEC)
    c = TagRange("c", T, T + 10 * SEC)
    groups = list(queue.split([a, b, c], {"a": 1.0, "b": 2.0}))
    assert groups == [([a], 60.0), ([b, c], 70.0)]


def test_divide_guards_rows_at_or_before_their_boundary() -> None:
    rows = pa.concat_tables([values("A", 1, 2, 3), values("B", 1, 2)])
    fresh, guarded = divide(rows, {"A": to_us(T + 2 * SEC), "B": to_us(T)})
    assert fresh.column("value").to_pylist() == [3.0, 1.0, 2.0]
    assert guarded.column("value").to_pylist() == [1.0, 2.0]
    assert divide(rows, {})[0] is rows


async def test_queue_commits_first_rather_than_hold_two_batches(tmp_path: Path) -> None:
    queue, checkpoints = open_queue(tmp_path, 3)
    first = PlannedBatch(APP, 1, (TagRange("A", T, T + 2 * SEC, LIVE),))
    checkpoints.record_plan(APP, 1, first.ranges)
    await queue.add(first, values("A", 1, 2), [], {"A": to_us(T)}, [])
    assert (queue.should_flush(), queue.planned({})) == (False, {"A": T + 2 * SEC})
    await queue.make_room(2.0)
    assert queue.batches == []
    assert await queue.land() == 2
    assert (queue.batches_done, queue.rows_written) == (1, 2)
    assert checkpoints.load_checkpoints(["A"]) == {"A": T + 2 * SEC}


async def test_queue_commits_when_the_guarded_rows_reach_the_limit(tmp_path: Path) -> None:
    queue, checkpoints = open_queue(tmp_path, 3)
    late = PlannedBatch(APP, 1, (TagRange("A", T, T + 3 * SEC, LATE),))
    checkpoints.record_plan(APP, 1, late.ranges)
    await queue.add(late, values("A", 1, 2, 3), [], {"A": to_us(T + 3 * SEC)}, [])
    assert queue.batches == []
    assert await queue.land() == 3
    assert checkpoints.done_version(APP) == 1


def test_still_needed_trims_what_another_app_id_committed(tmp_path: Path) -> None:
    queue, checkpoints = open_queue(tmp_path, 3)
    checkpoints.advance("pidelta-ts-1-of-2", 1, [TagRange("A", T, T + 5 * SEC)])
    recovery = Recovery(queue.sink, checkpoints, (APP,), 1)
    batch = PlannedBatch(
        APP,
        4,
        (
            TagRange("A", T - SEC, T, LATE),
            TagRange("A", T, T + 9 * SEC),
            TagRange("B", T, T + 9 * SEC),
        ),
    )
    assert recovery.still_needed(batch) == PlannedBatch(
        APP,
        4,
        (
            TagRange("A", T - SEC, T, LATE),
            TagRange("A", T + 5 * SEC, T + 9 * SEC),
            TagRange("B", T, T + 9 * SEC),
        ),
    )
    assert recovery.recoverable() == []


async def test_a_followers_pending_plan_is_advanced_or_left_to_the_follower(
    tmp_path: Path,
) -> None:
    """A follower plan whose rows landed (batch n: pi_timeseries version 2n + 1) is
    advanced; one whose replace did not land (version 2n: its append only) is not re-run
    as recorded reads (the follower re-runs it from its markers under the same id)."""
    queue, checkpoints = open_queue(tmp_path, 3)
    follower = "pidelta-ts-updates-0-of-1"
    ranges = [TagRange("A", T, T + 5 * SEC, "updates")]
    checkpoints.record_plan(follower, 1, ranges)
    queue.sink.commit_timeseries(values("A", 2, 4), follower, 3)
    checkpoints.record_plan(follower, 2, [TagRange("A", T + 5 * SEC, T + 9 * SEC, "updates")])
    queue.sink.commit_timeseries(values("A", 6), follower, 4)
    recovery = Recovery(queue.sink, checkpoints, (APP, follower), 1, (APP,))

    rerun = [batch async for batch in recovery.unfinished()]

    assert rerun == []
    assert checkpoints.done_version(follower) == 1
    assert checkpoints.load_checkpoints(["A"]) == {"A": T + 5 * SEC}
    assert queue.sink.committed_version("pi_timeseries", follower) == 4
