"""Sink: real Delta tables, idempotent appends, partitions, exact schemas, late anti-join."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import orjson
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable, write_deltalake

from service.metrics import Metrics, MetricsObserver, MetricsServer, Readiness
from workers.errors import SinkError, StaleGeneration
from workers.lake.schemas import (
    CHECKPOINTS,
    CHECKPOINTS_SCHEMA,
    PI_TIMESERIES,
    PI_TIMESERIES_SCHEMA,
    QUARANTINE,
    QUARANTINE_SCHEMA,
    SHARDS,
    SHARDS_SCHEMA,
)
from workers.lake.tables import TABLES, TableStore
from workers.lake.writer import DeltaWriter
from workers.timeseries.commit_queue import CommitBuffer
from workers.timeseries.decode import TagMeta, decode_streamset
from workers.timeseries.sink import Committed, DeltaSink, with_batch

TAGS = {"WF": TagMeta("WF", "flow", "Float64", "m3/h")}
NOW = datetime(2026, 11, 28, 1, tzinfo=UTC)


def decoded(*values: tuple[str, object]) -> pa.Table:
    items = [{"Timestamp": ts, "Value": v, "Good": True} for ts, v in values]
    raw = orjson.dumps({"Items": [{"WebId": "WF", "Items": items}]})
    return decode_streamset(raw, TAGS, ingestion_time=NOW).rows


@pytest.fixture
def store(tmp_path: Path) -> TableStore:
    s = TableStore(str(tmp_path / "lake"))
    s.create_all()
    return s


def read(store: TableStore, name: str = PI_TIMESERIES) -> pl.DataFrame:
    return pl.from_arrow(DeltaTable(store.uri(name)).to_pyarrow_table()).sort(
        ["tag_webid", "timestamp", "sequence"]
    )


def test_tables_created_with_declared_schemas_idempotently(store: TableStore) -> None:
    store.create_all()
    TableStore(store.target).create_all()
    for name, spec in TABLES.items():
        table = DeltaTable(store.uri(name))
        assert table.version() == 0
        assert pa.schema(table.schema().to_arrow()) == spec.schema
        assert table.metadata().partition_columns == list(spec.partition_by)


def test_concurrent_creators_make_one_version_zero(tmp_path: Path) -> None:
    target = str(tmp_path / "race")
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda _: TableStore(target).create_all(), range(6)))
    for name in TABLES:
        assert DeltaTable(f"{target}/{name}").version() == 0


def test_schema_mismatch_is_a_sink_error(tmp_path: Path) -> None:
    s = TableStore(str(tmp_path))
    DeltaTable.create(s.uri(QUARANTINE), pa.schema([("x", pa.int64())]))
    with pytest.raises(SinkError, match="differs"):
        s.create(QUARANTINE)


def test_append_is_idempotent_per_app_and_batch(store: TableStore) -> None:
    metrics = Metrics(process=False)
    sink = DeltaSink(store, observer=MetricsObserver(metrics), shard="3")
    rows = decoded(("2026-11-27T10:00:00Z", 1.0), ("2026-11-28T00:00:00Z", 2.0))
    assert sink.append(PI_TIMESERIES, rows, "app", 1) is True
    assert sink.append(PI_TIMESERIES, rows, "app", 1) is False
    assert DeltaSink(store).append(PI_TIMESERIES, rows, "app", 1) is False
    assert sink.committed_version(PI_TIMESERIES, "app") == 1
    more = decoded(("2026-11-28T00:00:01Z", 3.0))
    assert sink.append(PI_TIMESERIES, more, "app", 2) is True
    assert sink.append(PI_TIMESERIES, more, "app", 1) is False
    assert sink.append(PI_TIMESERIES, rows, "other", 1) is True
    table = read(store)
    assert table.height == 5
    assert table.filter(pl.col("value") == 1.0).height == 2
    assert DeltaTable(store.uri(PI_TIMESERIES)).transaction_version("app") == 2
    labels = {"table": PI_TIMESERIES, "shard": "3"}
    assert metrics.registry.get_sample_value("pidelta_rows_committed_total", labels) == 5
    assert (
        metrics.registry.get_sample_value("pidelta_delta_table_version", {"table": PI_TIMESERIES})
        == 3
    )
    assert b"pidelta_commit_duration_seconds_count" in metrics.render()


def test_partitions_and_exact_schema(store: TableStore) -> None:
    rows = decoded(("2026-11-27T23:59:59.9999999Z", 1.0), ("2026-11-28T00:00:00Z", 2.0))
    DeltaSink(store).append(PI_TIMESERIES, rows, "app", 1)
    table = DeltaTable(store.uri(PI_TIMESERIES))
    folders = {Path(f).parent.name for f in table.file_uris()}
    assert folders == {"date=2026-11-27", "date=2026-11-28"}
    data = table.to_pyarrow_table()
    assert data.schema == PI_TIMESERIES_SCHEMA
    history = table.history(1)[0]
    assert history["pidelta.app_id"] == "app"
    assert history["pidelta.batch_id"] == "1"
    meta = pq.ParquetFile(table.file_uris()[0]).metadata.row_group(0)
    chunks = {meta.column(i).path_in_schema: meta.column(i) for i in range(meta.num_columns)}
    assert {c.compression for c in chunks.values()} == {"ZSTD"}
    assert chunks["value"].dictionary_page_offset is None
    assert chunks["tag_webid"].dictionary_page_offset is not None


def test_empty_batch_writes_nothing(store: TableStore) -> None:
    sink = DeltaSink(store)
    assert sink.append(PI_TIMESERIES, PI_TIMESERIES_SCHEMA.empty_table(), "app", 1) is False
    assert DeltaTable(store.uri(PI_TIMESERIES)).version() == 0


def test_writer_appends_blindly_and_overwrites_with_commit_metadata(store: TableStore) -> None:
    writer = DeltaWriter(store)
    first = {"generation": 1, "shard_count": 2, "announced_at": NOW, "announced_by": "w0"}
    second = {**first, "generation": 2, "shard_count": 3}
    assert writer.append(SHARDS, pa.Table.from_pylist([first], schema=SHARDS_SCHEMA)) is True
    assert writer.append(SHARDS, SHARDS_SCHEMA.empty_table()) is False
    table = DeltaTable(store.uri(SHARDS))
    assert table.to_pyarrow_table().to_pylist() == [first]
    assert "pidelta.app_id" not in table.history(1)[0]
    rows = pa.Table.from_pylist([second], schema=SHARDS_SCHEMA)
    assert writer.overwrite(SHARDS, rows, {"pidelta.test": "x"}) == 2
    table = DeltaTable(store.uri(SHARDS))
    assert table.to_pyarrow_table().to_pylist() == [second]
    assert table.history(1)[0]["pidelta.test"] == "x"


def test_commit_timeseries_keeps_only_new_late_values_and_quarantine(store: TableStore) -> None:
    sink = DeltaSink(store)
    first = decoded(("2026-11-27T10:00:00Z", 1.0), ("2026-11-27T10:00:00Z", 2.0))
    assert sink.commit_timeseries(first, "app", 1).rows == 2
    late = decoded(
        ("2026-11-27T10:00:00Z", 1.0),
        ("2026-11-27T10:00:00Z", 2.0),
        ("2026-11-27T10:00:00Z", 2.5),
        ("2026-11-27T10:00:05Z", 3.0),
    )
    fresh = decoded(("2026-11-27T10:00:05Z", 3.0), ("2026-11-27T10:00:06Z", 4.0))
    quarantine = decode_streamset(
        orjson.dumps({"Items": [{"WebId": "WF", "Items": [{"Value": 1.0}]}]}), TAGS
    ).quarantine
    landed = sink.commit_timeseries(fresh, "app", 2, late=late, quarantine=quarantine)
    assert (landed.rows, landed.quarantine.column("reason").to_pylist()) == (
        3,
        ["missing_timestamp"],
    )
    again = sink.commit_timeseries(fresh, "app", 2, late=late, quarantine=quarantine)
    assert again == Committed(0, None)
    table = read(store)
    assert table.select("value", "sequence").rows() == [
        (1.0, 0),
        (2.0, 1),
        (2.5, 2),
        (3.0, 0),
        (4.0, 0),
    ]
    q = read_quarantine(store)
    assert q == [("WF", "missing_timestamp", "app", 2)]


def test_drop_existing_keeps_every_new_late_row_without_a_copy(store: TableStore) -> None:
    sink = DeltaSink(store)
    assert sink.commit_timeseries(decoded(("2026-11-27T10:00:00Z", 1.0)), "app", 1).rows == 1
    late = decoded(("2026-11-27T10:00:01Z", 2.0), ("2026-11-27T10:00:02Z", 3.0))
    assert sink.drop_existing(late) is late
    again = decoded(("2026-11-27T10:00:00Z", 1.0), ("2026-11-27T10:00:02Z", 3.0))
    assert sink.drop_existing(again).column("value").to_pylist() == [3.0]
    twice = pa.concat_tables([late, again, late])
    assert sink.drop_existing(twice).column("value").to_pylist() == [2.0, 3.0]
    fresh = decoded(("2026-11-27T10:00:01Z", 2.0))
    assert sink.drop_existing(twice, fresh).column("value").to_pylist() == [3.0]


def read_quarantine(store: TableStore) -> list[tuple[object, ...]]:
    table = DeltaTable(store.uri(QUARANTINE)).to_pyarrow_table()
    return pl.from_arrow(table).select("tag_webid", "reason", "app_id", "batch_id").rows()


def test_commit_buffer_flushes_by_rows_bytes_and_age() -> None:
    clock = [0.0]
    rows = decoded(("2026-11-27T10:00:00Z", 1.0), ("2026-11-27T10:00:01Z", 2.0))
    by_rows = CommitBuffer(max_rows=3, max_bytes=10**9, max_age=60, clock=lambda: clock[0])
    assert not by_rows.should_flush()
    by_rows.add(rows)
    assert (by_rows.rows, by_rows.should_flush()) == (2, False)
    by_rows.add(rows)
    assert by_rows.should_flush()
    drained = by_rows.drain(PI_TIMESERIES_SCHEMA)
    assert (drained.num_rows, by_rows.rows, by_rows.nbytes) == (4, 0, 0)
    by_bytes = CommitBuffer(max_rows=10**9, max_bytes=rows.nbytes, max_age=60)
    by_bytes.add(rows)
    assert by_bytes.should_flush()
    by_age = CommitBuffer(max_rows=10**9, max_bytes=10**9, max_age=30, clock=lambda: clock[0])
    by_age.add(rows)
    clock[0] = 29.9
    assert not by_age.should_flush()
    clock[0] = 30.0
    assert by_age.should_flush()
    assert by_age.drain(PI_TIMESERIES_SCHEMA).num_rows == 2
    assert by_age.drain(PI_TIMESERIES_SCHEMA).num_rows == 0
    by_age.add(rows, overdue=20.0)
    clock[0] = 39.9
    assert not by_age.should_flush()
    by_age.add(rows, overdue=31.0)
    assert by_age.should_flush()


async def test_metrics_server_serves_metrics_health_and_readiness() -> None:
    metrics = Metrics("1.2.3", process=False)
    MetricsObserver(metrics).committed(PI_TIMESERIES, "0", 10, 0.2, 4)
    ready = [Readiness(False, "PI unreachable")]

    async def check() -> Readiness:
        return ready[0]

    server = MetricsServer(metrics, 0, check, host="127.0.0.1")
    port = await server.start()
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as client:
            async with client.get(f"{base}/metrics") as resp:
                text = await resp.text()
                assert resp.status == 200
            assert 'pidelta_build_info{version="1.2.3"} 1.0' in text
            assert 'pidelta_commit_rows_sum{table="pi_timeseries"} 10.0' in text
            async with client.get(f"{base}/healthz") as resp:
                assert resp.status == 200
            async with client.get(f"{base}/readyz") as resp:
                assert (resp.status, await resp.json()) == (
                    503,
                    {"status": "not ready", "reason": "PI unreachable"},
                )
            ready[0] = Readiness(True)
            async with client.get(f"{base}/readyz") as resp:
                assert resp.status == 200
    finally:
        await server.stop()


class FrozenStore(TableStore):
    """Hands back tables as they are for its first `frozen` refreshes: an append then
    commits against an old snapshot, as a slow worker's would when a fence lands between
    its refresh and its commit."""

    def __init__(self, target: str, frozen: int) -> None:
        super().__init__(target)
        self.frozen = frozen
        self.refreshes = 0

    def refresh(self, name: str, table: DeltaTable) -> DeltaTable:
        self.refreshes += 1
        if self.frozen > 0:
            self.frozen -= 1
            return table
        return super().refresh(name, table)


def test_fence_stops_appends_of_another_shard_count(store: TableStore) -> None:
    rows = decoded(("2026-11-28T00:00:01Z", 1.0))
    old = DeltaSink(FrozenStore(store.target, frozen=99))
    old.table(PI_TIMESERIES)  # caches the snapshot from before the fence
    DeltaSink(store).fence(5)
    with pytest.raises(SinkError, match="Metadata changed since last commit"):
        old.append(PI_TIMESERIES, rows, "pidelta-ts-0-of-4", 1)
    with pytest.raises(StaleGeneration, match="fenced for 5 shards, not 4"):
        DeltaSink(store).commit_timeseries(rows, "pidelta-ts-0-of-4", 1, shard_count=4)
    assert read(store).height == 0
    assert DeltaTable(store.uri(QUARANTINE)).to_pyarrow_table().num_rows == 0
    assert DeltaSink(store).commit_timeseries(rows, "pidelta-ts-0-of-5", 1, shard_count=5).rows == 1
    assert read(store)["value"].to_list() == [1.0]


def test_an_append_outdated_by_a_fence_for_its_own_count_lands(store: TableStore) -> None:
    """A metadata change that leaves the fence on this worker's count is looked at again,
    not taken for a stale generation."""
    rows = decoded(("2026-11-28T00:00:01Z", 1.0))
    frozen = FrozenStore(store.target, frozen=2)  # the fence check, the first append
    slow = DeltaSink(frozen)
    slow.table(PI_TIMESERIES)
    DeltaSink(store).fence(5)
    assert slow.commit_timeseries(rows, "pidelta-ts-0-of-5", 1, shard_count=5).rows == 1
    assert frozen.refreshes == 3  # the conflict made it look at the table again
    assert read(store)["value"].to_list() == [1.0]
    assert [c["operation"] for c in DeltaTable(store.uri(PI_TIMESERIES)).history(2)] == [
        "WRITE",
        "UPDATE FIELD METADATA",
    ]


def checkpoint_rows(app_id: str, *tags: str) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "tag_webid": t,
                "checkpoint": NOW,
                "app_id": app_id,
                "batch_id": 1,
                "committed_at": NOW,
            }
            for t in tags
        ],
        schema=CHECKPOINTS_SCHEMA,
    )


def test_an_append_outdated_by_another_shards_delete_lands_once(store: TableStore) -> None:
    """delta-rs 1.x refuses even a blind append when a concurrent commit deleted rows (here
    another shard compacting its own state rows): the append is made again on a fresh
    snapshot, not failed, and lands once."""
    other = DeltaSink(store)
    other.append(CHECKPOINTS, checkpoint_rows("shard-1", "A", "B"), "shard-1", 1)
    frozen = FrozenStore(store.target, frozen=1)
    slow = DeltaSink(frozen)
    slow.table(CHECKPOINTS)  # the snapshot from before the delete
    other.replace_rows(CHECKPOINTS, checkpoint_rows("shard-1", "A"), "app_id = 'shard-1'")
    assert slow.append(CHECKPOINTS, checkpoint_rows("shard-0", "C"), "shard-0", 1) is True
    assert frozen.refreshes == 2  # the refused attempt, then the fresh snapshot
    assert slow.append(CHECKPOINTS, checkpoint_rows("shard-0", "C"), "shard-0", 1) is False
    table = pl.from_arrow(DeltaTable(store.uri(CHECKPOINTS)).to_pyarrow_table())
    assert table.sort("tag_webid").select("app_id", "tag_webid").rows() == [
        ("shard-1", "A"),
        ("shard-0", "C"),
    ]


def bad_values(*items: dict[str, object]) -> pa.Table:
    raw = orjson.dumps({"Items": [{"WebId": "WF", "Items": list(items)}]})
    return decode_streamset(raw, TAGS, ingestion_time=NOW).quarantine


LIST_AT_1 = {"Timestamp": "2026-11-28T00:00:01Z", "Value": [1], "Good": True}
MONTH_13 = {"Timestamp": "2026-13-28T00:00:02Z", "Value": 2.0, "Good": True}
LIST_AT_3 = {"Timestamp": "2026-11-28T00:00:03Z", "Value": [3], "Good": True}


def quarantine_rows(store: TableStore) -> list[tuple[object, ...]]:
    table = pl.from_arrow(DeltaTable(store.uri(QUARANTINE)).to_pyarrow_table())
    return sorted(table.select("raw", "timestamp", "sequence", "batch_id").rows(), key=str)


def test_a_bad_value_read_again_is_quarantined_once(store: TableStore) -> None:
    """Look-backs and overlapping reads meet bad values again. Those with a timestamp are
    known by their key; those without by their text, counted per read: a read that met a
    text twice stands for two values, and two reads that met it once each for one."""
    sink = DeltaSink(store)
    empty = PI_TIMESERIES_SCHEMA.empty_table()
    first = with_batch(bad_values(LIST_AT_1, MONTH_13, MONTH_13), "app", 1)
    landed = sink.commit_timeseries(empty, "app", 1, quarantine=first).quarantine
    assert landed is not None
    assert landed.sort_by("raw") == first.sort_by("raw")
    look_back = with_batch(bad_values(LIST_AT_1, MONTH_13, MONTH_13, LIST_AT_3), "app", 2)
    next_poll = with_batch(bad_values(MONTH_13, MONTH_13, LIST_AT_3), "app", 3)
    both = pa.concat_tables([look_back, next_poll])
    new = sink.new_quarantine(both)
    assert new.column("raw").to_pylist() == [orjson.dumps(LIST_AT_3).decode()]
    assert new.column("batch_id").to_pylist() == [2]
    assert sink.commit_timeseries(empty, "app", 3, quarantine=both).quarantine == new
    third = with_batch(bad_values(MONTH_13, MONTH_13, MONTH_13), "app", 4)
    assert sink.new_quarantine(third).num_rows == 1  # a third value with that text came
    at_1, at_3 = (datetime(2026, 11, 28, 0, 0, s, tzinfo=UTC) for s in (1, 3))
    month_13 = orjson.dumps(MONTH_13).decode()
    assert quarantine_rows(store) == sorted(
        [
            (orjson.dumps(LIST_AT_1).decode(), at_1, 0, 1),
            (month_13, None, None, 1),
            (month_13, None, None, 1),
            (orjson.dumps(LIST_AT_3).decode(), at_3, 0, 2),
        ],
        key=str,
    )


def test_a_text_the_table_holds_more_often_than_a_read_met_is_not_listed_again(
    store: TableStore,
) -> None:
    """The table holds a text twice (two values); a later read meets it once: nothing is
    new. (The count difference once wrapped around as unsigned and listed it again.)"""
    sink = DeltaSink(store)
    empty = PI_TIMESERIES_SCHEMA.empty_table()
    twice = with_batch(bad_values(MONTH_13, MONTH_13), "app", 1)
    assert sink.commit_timeseries(empty, "app", 1, quarantine=twice).quarantine == twice
    once = with_batch(bad_values(MONTH_13), "app", 2)
    assert sink.new_quarantine(once).num_rows == 0
    assert sink.commit_timeseries(empty, "app", 2, quarantine=once).quarantine is None
    assert len(quarantine_rows(store)) == 2


def test_quarantine_made_before_the_key_columns_gains_them(tmp_path: Path) -> None:
    old_schema = pa.schema(list(QUARANTINE_SCHEMA)[:-2])
    uri = str(tmp_path / "lake" / QUARANTINE)
    DeltaTable.create(uri, old_schema)
    old_row = {"raw": "[1]", "reason": "not_an_object", "ingestion_timestamp": NOW}
    write_deltalake(uri, pa.Table.from_pylist([old_row], schema=old_schema), mode="append")
    store = TableStore(str(tmp_path / "lake"))
    store.create_all()
    store.create_all()
    table = DeltaTable(uri)
    assert table.version() == 2  # created, appended, columns added once
    assert pa.schema(table.schema().to_arrow()) == QUARANTINE_SCHEMA
    assert table.to_pyarrow_table().select(["raw", "timestamp", "sequence"]).to_pylist() == [
        {"raw": "[1]", "timestamp": None, "sequence": None}
    ]


def test_the_anti_join_opens_only_files_whose_times_meet_the_rows(store: TableStore) -> None:
    """File statistics choose what is read (deltalake hands them to the pyarrow dataset): a
    file of other hours is never opened (here it is gone from disk, and reading it would
    fail; on S3 each file opened is a request), and a file whose last timestamp has
    sub-millisecond digits (Delta's statistic is truncated to the millisecond) is read."""
    sink = DeltaSink(store)
    sink.commit_timeseries(decoded(("2026-11-27T10:00:00Z", 1.0)), "app", 1)
    early = {Path(u) for u in DeltaTable(store.uri(PI_TIMESERIES)).file_uris()}
    sink.commit_timeseries(decoded(("2026-11-27T12:00:00.0005Z", 2.0)), "app", 2)
    for path in early:
        path.unlink()
    late = decoded(("2026-11-27T12:00:00.0005Z", 2.0), ("2026-11-27T12:00:01Z", 3.0))
    kept = sink.drop_existing(late)
    assert kept.column("value").to_pylist() == [3.0]
