"""Planning: exact ranges for live, late look-back and backfill batches."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from workers.pi.times import to_us
from workers.timeseries.plan import (
    BACKFILL,
    LATE,
    LIVE,
    REREAD,
    PlannedBatch,
    TagRange,
    app_id_for,
    backfill_batch,
    next_batch,
    rereads,
    spans,
)

T = datetime(2026, 11, 27, 10, tzinfo=UTC)
MIN = timedelta(minutes=1)


def test_app_ids() -> None:
    assert app_id_for(2, 5) == "pidelta-ts-2-of-5"
    assert app_id_for(0, 1, BACKFILL) == "pidelta-bf-0-of-1"


def test_live_ranges_from_checkpoints_start_window_and_lag() -> None:
    until = T + 60 * MIN - timedelta(seconds=10)
    batch = next_batch(
        "app",
        7,
        ["c", "a", "b", "d"],
        {"a": T, "b": T + 59 * MIN, "d": T + 61 * MIN},
        start=T - 30 * MIN,
        until=until,
        window=15 * MIN,
    )
    assert batch == PlannedBatch(
        "app",
        7,
        (
            TagRange("a", T, T + 15 * MIN, LIVE),
            TagRange("b", T + 59 * MIN, until, LIVE),
            TagRange("c", T - 30 * MIN, T - 15 * MIN, LIVE),
        ),
    )
    assert batch.checkpoints() == {"a": T + 15 * MIN, "b": until, "c": T - 15 * MIN}


def test_late_lookback_ranges_only_for_tags_with_a_checkpoint() -> None:
    batch = next_batch(
        "app",
        1,
        ["a", "new"],
        {"a": T},
        start=T - MIN,
        until=T + 2 * MIN,
        window=10 * MIN,
        late_lookback=5 * MIN,
    )
    assert batch.ranges == (
        TagRange("a", T - 5 * MIN, T, LATE),
        TagRange("a", T, T + 2 * MIN, LIVE),
        TagRange("new", T - MIN, T + 2 * MIN, LIVE),
    )
    assert batch.late == (TagRange("a", T - 5 * MIN, T, LATE),)
    assert batch.checkpoints() == {"a": T + 2 * MIN, "new": T + 2 * MIN}


def test_caught_up_tags_get_nothing() -> None:
    batch = next_batch("app", 1, ["a"], {"a": T}, start=T, until=T, window=MIN)
    assert batch.ranges == ()


def test_backfill_batches() -> None:
    first = backfill_batch("bf", 1, ["a", "b"], {}, start=T, end=T + 25 * MIN, window=10 * MIN)
    assert first.ranges == (
        TagRange("a", T, T + 10 * MIN, BACKFILL),
        TagRange("b", T, T + 10 * MIN, BACKFILL),
    )
    resumed = backfill_batch(
        "bf",
        3,
        ["a", "b"],
        {"a": T + 20 * MIN, "b": T + 25 * MIN},
        start=T,
        end=T + 25 * MIN,
        window=10 * MIN,
    )
    assert resumed.ranges == (TagRange("a", T + 20 * MIN, T + 25 * MIN, BACKFILL),)


def test_a_reread_range_is_read_on_its_own_span_guarded_and_moves_no_checkpoint() -> None:
    t0 = datetime(2026, 12, 1, tzinfo=UTC)
    old = TagRange("A", t0, t0 + timedelta(minutes=5), REREAD)
    live = TagRange("A", t0 + timedelta(hours=1), t0 + timedelta(hours=1, minutes=1), LIVE)
    batch = PlannedBatch("app", 7, (live, old))
    wanted, boundary, whole = spans(batch, {"A": t0})
    us = to_us
    assert wanted == [("A", us(live.start), us(live.end))]
    assert rereads(batch) == [("A", us(old.start), us(old.end))]
    assert boundary == {"A": us(live.start)}  # every re-read row lies at or before it
    assert whole == []
    assert batch.forward == (live,)
    assert batch.checkpoints() == {"A": live.end}
