"""Folds of the state tables beside other shards' appends, and the repartition of a state
table an older pidelta made (docs/DESIGN.md "Exactly once").

The races are built exactly: a writer whose snapshot stays where it was first read commits
against it, so delta-rs must resolve the commits that landed since.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake

from workers.lake.schemas import (
    BATCHES,
    BATCHES_SCHEMA,
    CHECKPOINTS,
    MARKERS,
    PI_TIMESERIES,
    UTC_US,
)
from workers.lake.tables import TableStore
from workers.lake.writer import DeltaWriter
from workers.timeseries.checkpoints import CheckpointStore
from workers.timeseries.plan import TagRange

T = datetime(2026, 11, 27, 10, tzinfo=UTC)
SEC = timedelta(seconds=1)
A = "pidelta-ts-0-of-2"
B = "pidelta-ts-1-of-2"
TAGS = ("t1", "t2", "t3")


class Contention:
    """The writer's contention hooks, counted per table."""

    def __init__(self) -> None:
        self.conflicts: dict[str, int] = {}
        self.retries: dict[str, int] = {}

    def committed(self, table: str, shard: str, rows: int, seconds: float, version: int) -> None:
        return None

    def commit_conflicts(self, table: str, count: int) -> None:
        self.conflicts[table] = self.conflicts.get(table, 0) + count

    def commit_retried(self, table: str) -> None:
        self.retries[table] = self.retries.get(table, 0) + 1


class Stale(DeltaWriter):
    """Keeps each table at the version it first read until a commit on it is refused: its
    next commit races every commit made since by others."""

    def __init__(self, store: TableStore) -> None:
        self.contention = Contention()
        super().__init__(store, observer=self.contention)

    def table(self, name: str) -> DeltaTable:
        if name in self._tables and name not in self.contention.retries:
            return self._tables[name]
        return super().table(name)


def ranges(k: int) -> list[TagRange]:
    return [TagRange(w, T + (k - 1) * SEC, T + k * SEC) for w in TAGS]


def commit(store: CheckpointStore, app_id: str, k: int) -> None:
    """The state commits of one data commit of `app_id`: its plan, then its checkpoints."""
    store.record_plan(app_id, k, ranges(k))
    store.advance(app_id, k, ranges(k))


def rows(root: Path, name: str, app_id: str) -> pl.DataFrame:
    table = pl.from_arrow(DeltaTable(str(root / name)).to_pyarrow_table())
    return table.filter(pl.col("app_id") == app_id).sort(["batch_id", "tag_webid"])


def test_a_fold_lands_over_appends_of_another_app_id_made_since_its_snapshot(
    tmp_path: Path,
) -> None:
    store = TableStore(str(tmp_path))
    store.create_all()
    a = CheckpointStore(DeltaWriter(store))
    b = CheckpointStore(DeltaWriter(store))
    for k in range(1, 16):
        commit(a, A, k)
    stale = Stale(store)
    folding = CheckpointStore(stale)  # reads A's checkpoints now, at this version
    stale.table(BATCHES)  # and its plans
    for k in range(1, 4):
        commit(b, B, k)  # B's commits land after the fold's snapshot
    before = {n: DeltaTable(str(tmp_path / n)).version() for n in (BATCHES, CHECKPOINTS)}

    assert folding.compact(A, keep_batches=5)

    assert stale.contention.retries == {}  # delta-rs found no conflict: no retry
    assert stale.contention.conflicts == {BATCHES: 3, CHECKPOINTS: 3}  # stepped over B's
    for name in (BATCHES, CHECKPOINTS):
        assert DeltaTable(str(tmp_path / name)).version() == before[name] + 1
        assert rows(tmp_path, name, B).height == 3 * len(TAGS)  # none of B's rows lost
    plans = rows(tmp_path, BATCHES, A)
    assert plans["batch_id"].to_list() == [10] * 3 + [b for b in range(11, 16) for _ in TAGS]
    summary = plans.filter(pl.col("batch_id") == 10)
    assert summary["range_start"].to_list() == [T] * 3
    assert summary["range_end"].to_list() == [T + 10 * SEC] * 3
    cps = rows(tmp_path, CHECKPOINTS, A)
    assert cps["checkpoint"].to_list() == [T + 15 * SEC] * 3


def test_an_append_made_on_a_snapshot_before_another_app_ids_fold_lands_once(
    tmp_path: Path,
) -> None:
    """delta-rs refuses a plain append whose snapshot a concurrent delete outdated, even in
    another partition: the writer makes it again on a fresh snapshot, and it lands once."""
    store = TableStore(str(tmp_path))
    store.create_all()
    a = CheckpointStore(DeltaWriter(store))
    for k in range(1, 16):
        commit(a, A, k)
    late = Stale(store)
    b = CheckpointStore(late)  # B's snapshots, taken before A's fold
    late.table(BATCHES)
    assert a.compact(A, keep_batches=5)

    assert b.record_plan(B, 1, ranges(1))

    assert late.contention.retries == {BATCHES: 1}
    assert rows(tmp_path, BATCHES, B)["batch_id"].to_list() == [1] * len(TAGS)
    assert rows(tmp_path, BATCHES, A).height == 6 * len(TAGS)
    assert not b.record_plan(B, 1, ranges(1))  # and once only


def test_an_unpartitioned_state_table_is_rewritten_partitioned_without_losing_rows(
    tmp_path: Path,
) -> None:
    """A lakehouse an older pidelta made: the state tables gain their partitioning at start,
    keep every row and app transaction, and a row another worker appended between the
    rewrite's snapshot and its commit is not lost (the rewrite is made again)."""
    uri = str(tmp_path / BATCHES)
    DeltaTable.create(uri, BATCHES_SCHEMA, name=BATCHES)

    def plan(app_id: str, batch_id: int) -> pa.Table:
        n = len(TAGS)
        return pa.table(
            {
                "app_id": [app_id] * n,
                "batch_id": pa.array([batch_id] * n, pa.int64()),
                "tag_webid": list(TAGS),
                "range_start": pa.array([T] * n, UTC_US),
                "range_end": pa.array([T + SEC] * n, UTC_US),
                "kind": ["live"] * n,
                "planned_at": pa.array([T] * n, UTC_US),
            },
            schema=BATCHES_SCHEMA,
        )

    old = CommitProperties(app_transactions=[Transaction(A, 7)])
    write_deltalake(uri, plan(A, 7), mode="append", commit_properties=old)

    class Racing(TableStore):
        """An old worker appends right after the rewrite read its snapshot (the second
        opening of the table: the first checks its schema)."""

        opened = 0

        def open(self, name: str) -> DeltaTable:
            table = super().open(name)
            if name == BATCHES:
                self.opened += 1
                if self.opened == 2:
                    write_deltalake(uri, plan(B, 3), mode="append")
            return table

    store = Racing(str(tmp_path))
    store.create_all()
    assert store.opened == 3  # the schema, the rewrite refused, the rewrite made again
    table = DeltaTable(uri)
    assert table.metadata().partition_columns == ["app_id"]
    assert table.transaction_version(A) == 7
    got = pl.from_arrow(table.to_pyarrow_table()).sort(["app_id", "tag_webid"])
    assert got.select("app_id", "batch_id").rows() == [(A, 7)] * 3 + [(B, 3)] * 3
    assert DeltaTable(str(tmp_path / CHECKPOINTS)).metadata().partition_columns == ["app_id"]
    store.create_all()  # a second start finds it done
    assert DeltaTable(uri).version() == table.version()


def test_state_tables_keep_a_day_of_log_and_the_data_table_is_write_serializable(
    tmp_path: Path,
) -> None:
    store = TableStore(str(tmp_path))
    store.create_all()
    config = {
        name: DeltaTable(str(tmp_path / name)).metadata().configuration
        for name in (BATCHES, CHECKPOINTS, MARKERS, PI_TIMESERIES)
    }
    assert config == {
        BATCHES: {"delta.logRetentionDuration": "interval 1 days"},
        CHECKPOINTS: {"delta.logRetentionDuration": "interval 1 days"},
        MARKERS: {"delta.logRetentionDuration": "interval 1 days"},
        PI_TIMESERIES: {"delta.isolationLevel": "writeSerializable"},
    }
