"""`pidelta maintain` on S3 (moto): compaction to the target size and vacuum keep the table
equal to the truth; maintenance beside writing shards fails none of their commits; `run`
schedules it on the maintaining shard; a pass skips steps with nothing to do."""

from __future__ import annotations

import collections
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from deltalake.table import TableOptimizer

from tests.conftest import FIXED_NOW, MockServer, SimClock
from tests.e2e.helpers import (
    fixed_past,
    iso,
    ok,
    pidelta,
    start_worker,
    wait_for,
)
from tests.storage.conftest import DAY, S3, store_env, store_holds_truth
from workers.lake.maintenance import COMPACT_ATTEMPTS, Maintainer, format_reports
from workers.lake.schemas import PI_TIMESERIES, PI_TIMESERIES_SCHEMA, SHARDS, SHARDS_SCHEMA
from workers.lake.tables import TableStore
from workers.lake.writer import DeltaWriter

MB = 1024 * 1024


def sizes(table: object) -> list[int]:
    actions = pa.table(table.get_add_actions(flatten=True))  # type: ignore[attr-defined]
    return actions.column("size_bytes").to_pylist()


def test_compaction_and_vacuum_keep_the_truth(
    mock_pi_factory: Callable[..., MockServer], moto_s3: S3
) -> None:
    mock = mock_pi_factory(tag_count=200, rate_limit=0, clock_start=FIXED_NOW)
    start, end = DAY, DAY + timedelta(hours=3)
    env = store_env(mock, moto_s3, "maint", backfill_window=900, commit_max_rows=20_000)
    ok(pidelta("backfill", "--start", iso(start), "--end", iso(end), env=env))
    uri = "s3://lake/maint/pi_timeseries"
    table = moto_s3.table(uri)
    before = sizes(table)
    # Let vacuum delete what compaction removed: the table's own retention goes to 0 so
    # that the enforced check (never below the table's setting) allows 0 hours.
    table.alter.set_table_properties({"delta.deletedFileRetentionDuration": "interval 0 hours"})
    env.update(PIDELTA_COMPACT_TARGET_SIZE=str(2 * MB), PIDELTA_VACUUM_RETENTION_HOURS="0")
    result = ok(pidelta("maintain", env=env))
    table = moto_s3.table(uri)
    after = sizes(table)
    assert len(after) < len(before) / 3, (len(before), len(after))
    # All but the last file of each partition are near the target size.
    big = sorted(after)[1:]
    assert all(1 * MB <= s <= 3 * MB for s in big), after
    assert "pi_timeseries" in result.stdout
    history = [c.get("operation") for c in table.history()]
    assert "OPTIMIZE" in history, history
    assert "VACUUM END" in history, history
    store_holds_truth(mock, moto_s3, "maint", "pidelta-bf-", start, end)


def test_maintenance_beside_writers_fails_no_commit(
    mock_pi_factory: Callable[..., MockServer], moto_s3: S3, tmp_path: Path
) -> None:
    """Two shards append small commits while `pidelta maintain` compacts in a loop."""
    mock = mock_pi_factory(tag_count=60, rate_limit=0, clock_start=FIXED_NOW)
    start, end = DAY + timedelta(hours=6), DAY + timedelta(hours=7)
    envs = [
        store_env(
            mock,
            moto_s3,
            "busy",
            shard_index=shard,
            shard_count=2,
            backfill_window=300,
            commit_max_rows=3_000,
        )
        for shard in range(2)
    ]
    args = ("backfill", "--start", iso(start), "--end", iso(end))
    # Tables first, so that maintenance has something to do from the first pass.
    ok(
        pidelta(
            "backfill",
            "--start",
            iso(start),
            "--end",
            iso(start + timedelta(minutes=5)),
            env=envs[0],
        )
    )
    workers = [
        start_worker(*args, env=env, log=tmp_path / f"shard{i}.log") for i, env in enumerate(envs)
    ]
    maintain_env = {**envs[0], "PIDELTA_COMPACT_TARGET_SIZE": str(MB)}
    passes = 0
    while any(w.alive() for w in workers):
        result = pidelta("maintain", "--table", "pi_timeseries", env=maintain_env)
        assert result.returncode == 0, result.stderr[-3000:]
        passes += 1
    print(f"{passes} maintenance passes beside the writers")
    for worker in workers:
        assert worker.process.wait(10) == 0, worker.text()[-3000:]
        assert " ERROR " not in worker.text(), worker.text()[-3000:]
    table = moto_s3.table("s3://lake/busy/pi_timeseries")
    operations = [c.get("operation") for c in reversed(table.history())]
    optimized = [i for i, op in enumerate(operations) if op == "OPTIMIZE"]
    assert passes >= 2, operations
    assert optimized, operations
    # Compactions landed between the shards' appends, not only after them.
    assert any(op == "WRITE" for op in operations[optimized[0] + 1 :]), operations
    assert len(store_holds_truth(mock, moto_s3, "busy", "pidelta-bf-", start, end)) == 60


def test_run_maintains_on_its_schedule(
    mock_pi_factory: Callable[..., MockServer], moto_s3: S3, tmp_path: Path
) -> None:
    """`run` on the maintaining shard compacts every PIDELTA_MAINTAIN_INTERVAL seconds."""
    mock = mock_pi_factory(clock=SimClock.start(), tag_count=50, rate_limit=0)
    origin = fixed_past(3)
    env = store_env(
        mock,
        moto_s3,
        "scheduled",
        start=iso(origin),
        poll_interval=1,
        safety_lag=2,
        late_lookback=20,
        commit_max_age=1,
        maintain_interval=5,
    )
    worker = start_worker("run", env=env, log=tmp_path / "run.log")
    # A pass is logged once it has done every table; on a busy machine one takes a while.
    maintained = wait_for(lambda: "maintained pi_timeseries" in worker.text(), 180)
    assert worker.terminate() == 0, worker.text()[-3000:]
    text = worker.text()
    assert maintained, text[-3000:]
    assert " ERROR " not in text, text[-3000:]
    table = moto_s3.table("s3://lake/scheduled/pi_timeseries")
    assert "OPTIMIZE" in [c.get("operation") for c in table.history()]
    assert len(store_holds_truth(mock, moto_s3, "scheduled", "pidelta-ts-", origin)) == 50


def test_a_pass_skips_the_steps_with_nothing_to_do(tmp_path: Path) -> None:
    """Compaction only where a partition has small files to merge; the checkpoint and the
    log clean-up only after a commit of the pass: a second pass over an unchanged table
    commits nothing and writes no checkpoint."""
    store = TableStore(str(tmp_path))
    store.create(SHARDS)
    for generation in (1, 2, 3):
        row = {
            "generation": generation,
            "shard_count": generation,
            "announced_at": FIXED_NOW,
            "announced_by": "test",
        }
        DeltaWriter(store).append(SHARDS, pa.Table.from_pylist([row], schema=SHARDS_SCHEMA))
    maintainer = Maintainer(store, target_size=MB, retention_hours=168)
    first = maintainer.run([SHARDS])[0]
    assert (first.files_before, first.files_after, first.checkpoint) == (3, 1, True)
    assert list(first.seconds) == ["compact", "vacuum", "checkpoint", "log clean-up"]
    second = maintainer.run([SHARDS])[0]
    assert (second.version, second.files_after, second.checkpoint) == (first.version, 1, False)
    assert list(second.seconds) == ["vacuum"]


def test_a_partition_other_writers_keep_rewriting_is_left_to_the_next_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before every compaction of one day, another writer deletes a row of that day (a
    follower's replace): that day is skipped after every attempt lost, the older day is
    compacted, and the pass reports no error (`pidelta maintain` exits 0)."""
    store = TableStore(str(tmp_path))
    store.create(PI_TIMESERIES)
    writer = DeltaWriter(store)
    days = (date(2026, 12, 1), date(2026, 12, 2))
    for day in days:
        for second in range(3):
            writer.append(PI_TIMESERIES, timeseries_rows(day, second))
    busy = days[1].isoformat()
    compact = TableOptimizer.compact
    deletes = iter(range(3 * COMPACT_ATTEMPTS))

    def meet_a_delete(self: TableOptimizer, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if kwargs["partition_filters"] == [("date", "=", busy)]:
            rival = store.open(PI_TIMESERIES)
            rival.delete(f"date = '{busy}' AND sequence = {next(deletes)}")
        return compact(self, *args, **kwargs)

    monkeypatch.setattr(TableOptimizer, "compact", meet_a_delete)
    report = Maintainer(store, target_size=MB, retention_hours=168).run([PI_TIMESERIES])[0]
    assert report.errors == []
    assert report.skipped == [
        f"compact date={busy}: other writers' commits met all {COMPACT_ATTEMPTS} attempts"
    ]
    assert (report.files_removed, report.files_added) == (3, 1)
    files = pa.table(store.open(PI_TIMESERIES).get_add_actions(flatten=True))
    per_day = collections.Counter(files.column("partition.date").to_pylist())
    assert per_day == {days[0]: 1, days[1]: 3}
    assert "skipped\terrors" in format_reports([report]).splitlines()[0]


def timeseries_rows(day: date, second: int) -> pa.Table:
    """Ten rows of one tag on `day`, their sequences 10 * second .. 10 * second + 9."""
    at = datetime(day.year, day.month, day.day, 0, 0, second, tzinfo=UTC)
    n = 10
    columns: dict[str, list[Any]] = {
        "tag_webid": ["W1"] * n,
        "tag_name": ["t1"] * n,
        "timestamp": [at] * n,
        "sequence": [10 * second + i for i in range(n)],
        "value": [float(i) for i in range(n)],
        "ingestion_timestamp": [at] * n,
        "date": [day] * n,
    }
    return pa.Table.from_pydict(
        {f.name: pa.array(columns.get(f.name, [None] * n), f.type) for f in PI_TIMESERIES_SCHEMA},
        schema=PI_TIMESERIES_SCHEMA,
    )
