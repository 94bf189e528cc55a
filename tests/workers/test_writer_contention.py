"""The one writer under contention: racing commits counted per table, refused appends made
again after a jittered backoff, with the counts the metrics export."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from service.metrics import Metrics, MetricsObserver
from tests.workers.test_sink import FrozenStore, checkpoint_rows, decoded
from workers.lake import writer
from workers.lake.schemas import CHECKPOINTS, PI_TIMESERIES
from workers.lake.tables import TableStore
from workers.lake.writer import BACKOFF_BASE, BACKOFF_CAP, DeltaWriter, backoff


@pytest.fixture
def store(tmp_path: Path) -> TableStore:
    s = TableStore(str(tmp_path / "lake"))
    s.create_all()
    return s


def counts(metrics: Metrics) -> dict[tuple[str, str], float]:
    """(metric, table) → value of the two contention counters."""
    out: dict[tuple[str, str], float] = {}
    for counter in (metrics.commit_conflicts, metrics.commit_retries):
        for family in counter.collect():
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    out[(sample.name, sample.labels["table"])] = sample.value
    return out


def test_an_append_that_lands_past_racing_commits_counts_them(store: TableStore) -> None:
    """Two commits by another shard between this writer's snapshot and its append: delta-rs
    steps over both, and the writer reports two conflicts and no retry."""
    metrics = Metrics()
    slow = DeltaWriter(FrozenStore(store.target, frozen=1), observer=MetricsObserver(metrics))
    slow.table(PI_TIMESERIES)  # the snapshot at version 0
    other = DeltaWriter(store)
    rows = decoded(("2026-11-28T00:00:01Z", 1.0))
    assert other.append(PI_TIMESERIES, rows, "pidelta-ts-1-of-2", 1)
    assert other.append(PI_TIMESERIES, rows, "pidelta-ts-1-of-2", 2)
    assert slow.append(PI_TIMESERIES, rows, "pidelta-ts-0-of-2", 1)
    assert DeltaTable(store.uri(PI_TIMESERIES)).version() == 3
    assert counts(metrics) == {
        ("pidelta_commit_conflicts_total", PI_TIMESERIES): 2.0,
        ("pidelta_commit_retries_total", PI_TIMESERIES): 0.0,
    }


def test_an_uncontended_append_counts_nothing(store: TableStore) -> None:
    metrics = Metrics()
    own = DeltaWriter(store, observer=MetricsObserver(metrics))
    assert own.append(PI_TIMESERIES, decoded(("2026-11-28T00:00:01Z", 1.0)), "a", 1)
    # Both series exist from the first commit, at 0, so a rate over them is never "no data".
    assert counts(metrics) == {
        ("pidelta_commit_conflicts_total", PI_TIMESERIES): 0.0,
        ("pidelta_commit_retries_total", PI_TIMESERIES): 0.0,
    }


def test_a_refused_append_is_retried_after_a_backoff(
    store: TableStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A concurrent delete refuses a blind append: one conflict, one retry after a pause
    drawn from the first backoff ceiling, and the append lands once."""
    pauses: list[float] = []
    monkeypatch.setattr(writer.time, "sleep", pauses.append)
    metrics = Metrics()
    other = DeltaWriter(store)
    other.append(CHECKPOINTS, checkpoint_rows("shard-1", "A", "B"), "shard-1", 1)
    slow = DeltaWriter(FrozenStore(store.target, frozen=1), observer=MetricsObserver(metrics))
    slow.table(CHECKPOINTS)
    other.replace_rows(CHECKPOINTS, checkpoint_rows("shard-1", "A"), "app_id = 'shard-1'")
    assert slow.append(CHECKPOINTS, checkpoint_rows("shard-0", "C"), "shard-0", 1) is True
    assert len(pauses) == 1
    assert 0.0 <= pauses[0] <= BACKOFF_BASE
    assert counts(metrics) == {
        ("pidelta_commit_conflicts_total", CHECKPOINTS): 1.0,
        ("pidelta_commit_retries_total", CHECKPOINTS): 1.0,
    }
    rows = DeltaTable(store.uri(CHECKPOINTS)).to_pyarrow_table()
    assert pa.compute.count_distinct(rows["tag_webid"]).as_py() == 2


def test_backoff_doubles_its_ceiling_up_to_the_cap() -> None:
    for retry in range(1, 12):
        ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (retry - 1))
        pauses = [backoff(retry) for _ in range(200)]
        assert all(0.0 <= p <= ceiling for p in pauses)
        assert max(pauses) > ceiling / 2  # jittered over the whole range, not a constant
