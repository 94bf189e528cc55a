"""Events applied to real Delta tables by the follower: the net effect per key, arrivals
appended blind, only edited and removed keys replaced (their dates, tags and times), the
app-transaction versions of a batch (2n, 2n + 1), the change log, and idempotence."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import polars as pl
import pyarrow as pa
import pytest
from deltalake import DeltaTable

from tests.changes.helpers import log_entries, predicate_times
from workers.errors import SinkError
from workers.lake.schemas import PI_TIMESERIES, PI_TIMESERIES_CHANGES
from workers.lake.tables import TableStore
from workers.observe import NullObserver
from workers.pi.client import PIClient
from workers.settings import Settings
from workers.timeseries.apply import PER_TAG_SPANS, TAG_LIST_MAX, Scope, at_keys, resolve
from workers.timeseries.checkpoints import CheckpointStore
from workers.timeseries.decode import TagMeta, decode_streamset
from workers.timeseries.follow import Follower
from workers.timeseries.sink import DeltaSink
from workers.timeseries.updates import EVENT_SCHEMA, Retrieval, UpdatesSource

TAGS = {w: TagMeta(w, w.lower(), "Float64", "m3/h") for w in ("WA", "WB")}
NOW = datetime(2026, 11, 28, 1, tzinfo=UTC)
APP = "pidelta-ts-updates-0-of-1"


def rows(webid: str, *values: tuple[str, float]) -> pa.Table:
    items = [{"Timestamp": ts, "Value": v, "Good": True} for ts, v in values]
    raw = orjson.dumps({"Items": [{"WebId": webid, "Items": items}]})
    return decode_streamset(raw, {webid: TagMeta(webid, webid.lower(), "Float64", "m3/h")}).rows


def events(order: int, action: str, webid: str, *values: tuple[str, float]) -> pa.Table:
    t = rows(webid, *values)
    t = t.append_column("action", pa.array([action] * t.num_rows, pa.string()))
    return t.append_column("order", pa.array([order] * t.num_rows, pa.int64())).cast(EVENT_SCHEMA)


def follower(tmp_path: Path) -> Follower:
    """A follower on real tables; its PI client is never asked anything here."""
    store = TableStore(str(tmp_path / "lake"))
    store.create_all()
    sink = DeltaSink(store)
    settings = Settings(_env_file=None, target=str(tmp_path / "lake"))
    source = UpdatesSource(PIClient(settings), TAGS, settings.pi_max_url_bytes)
    return Follower(
        settings, source, sink, CheckpointStore(sink), lambda: None, NullObserver(), lambda: NOW
    )


def table(sink: DeltaSink) -> list[tuple[str, str, float]]:
    frame = pl.from_arrow(DeltaTable(sink.store.uri(PI_TIMESERIES)).to_pyarrow_table())
    frame = frame.sort(["tag_webid", "timestamp", "sequence"])
    return [
        (w, t.strftime("%H:%M:%S.%f").rstrip("0").rstrip("."), v)
        for w, t, v in zip(frame["tag_webid"], frame["timestamp"], frame["value"], strict=True)
    ]


def logged(sink: DeltaSink) -> list[tuple[str, str, float | None, float | None, int]]:
    frame = pl.from_arrow(DeltaTable(sink.store.uri(PI_TIMESERIES_CHANGES)).to_pyarrow_table())
    frame = frame.sort(["batch_id", "timestamp"])
    return [
        (a, t.strftime("%H:%M:%S.%f").rstrip("0").rstrip("."), o, n, b)
        for a, t, o, n, b in frame.select(
            "action", "timestamp", "old_value", "new_value", "batch_id"
        ).iter_rows()
    ]


def test_arrivals_are_appended_and_only_edits_and_deletions_replaced(tmp_path: Path) -> None:
    f = follower(tmp_path)
    path = Path(f.sink.store.uri(PI_TIMESERIES))
    f.sink.append(
        PI_TIMESERIES, rows("WA", *[(f"2026-11-28T00:00:0{i}Z", float(i)) for i in range(6)])
    )
    f.sink.append(PI_TIMESERIES, rows("WB", ("2026-11-28T00:00:01Z", 10.0)))
    seeded = f.sink.table(PI_TIMESERIES).version()
    f.covered = {"WA": datetime(2026, 11, 28, 0, 0, 5, tzinfo=UTC)}
    ev = pa.concat_tables(
        [
            events(1, "Add", "WA", ("2026-11-28T00:00:02Z", 2.0), ("2026-11-28T00:00:09Z", 9.0)),
            events(1, "Add", "WA", ("2026-11-28T00:00:01.5Z", 1.5)),  # late: logged
            events(2, "Update", "WA", ("2026-11-28T00:00:03Z", 33.0)),
            events(3, "Delete", "WA", ("2026-11-28T00:00:04Z", 4.0)),
            events(3, "Delete", "WA", ("2026-11-28T00:00:07Z", 7.0)),  # not there: nothing
            events(4, "Add", "WA", ("2026-11-28T00:00:05Z", 55.0)),  # an Add that edits
            events(5, "Update", "WA", ("2026-11-28T00:00:09Z", 99.0)),  # fresh, then edited
        ]
    )
    f._apply(ev, 1)
    want = [
        ("WA", "00:00:00", 0.0),
        ("WA", "00:00:01", 1.0),
        ("WA", "00:00:01.5", 1.5),
        ("WA", "00:00:02", 2.0),
        ("WA", "00:00:03", 33.0),
        ("WA", "00:00:05", 55.0),
        ("WA", "00:00:09", 99.0),
        ("WB", "00:00:01", 10.0),
    ]
    assert table(f.sink) == want
    assert logged(f.sink) == [
        ("Add", "00:00:01.5", None, 1.5, 1),
        ("Update", "00:00:03", 3.0, 33.0, 1),
        ("Delete", "00:00:04", 4.0, None, 1),
        ("Update", "00:00:05", 5.0, 55.0, 1),
    ]
    # Batch 1: the arrivals appended under 2, the edits and deletion replaced under 3, the
    # replace over tag WA from the first to the last touched time only.
    commits = log_entries(path, seeded)
    assert [(c["mode"], c["txn"], c["adds"], c["removes"]) for c in commits] == [
        ("Append", {APP: 2}, 1, 0),
        ("Overwrite", {APP: 3}, 1, 1),
    ]
    assert "'WA'" in str(commits[1]["predicate"])
    assert "'WB'" not in str(commits[1]["predicate"])
    assert predicate_times(commits[1]["predicate"]) == [
        datetime(2026, 11, 28, 0, 0, 3, tzinfo=UTC),
        datetime(2026, 11, 28, 0, 0, 5, tzinfo=UTC),
    ]
    # The same events again (a re-run after kill -9 under a new batch id): no commit at all.
    f.covered = {"WA": datetime(2026, 11, 28, 0, 0, 9, tzinfo=UTC)}
    version = f.sink.table(PI_TIMESERIES).version()
    f._apply(ev, 2)
    assert f.sink.table(PI_TIMESERIES).version() == version
    assert table(f.sink) == want
    assert len(logged(f.sink)) == 4


def test_a_batch_of_arrivals_only_is_one_append(tmp_path: Path) -> None:
    f = follower(tmp_path)
    path = Path(f.sink.store.uri(PI_TIMESERIES))
    f.sink.append(PI_TIMESERIES, rows("WA", ("2026-11-28T00:00:01Z", 1.0)))
    seeded = f.sink.table(PI_TIMESERIES).version()
    f.covered = {"WA": datetime(2026, 11, 28, 0, 0, 1, tzinfo=UTC)}
    ev = events(1, "Add", "WA", ("2026-11-28T00:00:01Z", 1.0), ("2026-11-28T00:00:02Z", 2.0))
    f._apply(ev, 4)
    commits = log_entries(path, seeded)
    assert [(c["mode"], c["txn"], c["adds"], c["removes"]) for c in commits] == [
        ("Append", {APP: 9}, 1, 0)
    ]
    assert table(f.sink) == [("WA", "00:00:01", 1.0), ("WA", "00:00:02", 2.0)]
    assert logged(f.sink) == []  # a first write, not a change


def test_a_rerun_whose_append_landed_replaces_only(tmp_path: Path) -> None:
    """Batch 1's append (2) landed, its replace (3) did not: the re-run of 1 with more
    events (PI may report more) puts the new arrival in the replace, not in a second 2."""
    f = follower(tmp_path)
    path = Path(f.sink.store.uri(PI_TIMESERIES))
    f.sink.append(PI_TIMESERIES, rows("WA", ("2026-11-28T00:00:01Z", 1.0)))
    f.sink.append(PI_TIMESERIES, rows("WA", ("2026-11-28T00:00:02Z", 2.0)), APP, 2)
    seeded = f.sink.table(PI_TIMESERIES).version()
    ev = pa.concat_tables(
        [
            events(1, "Add", "WA", ("2026-11-28T00:00:02Z", 2.0), ("2026-11-28T00:00:03Z", 3.0)),
            events(2, "Update", "WA", ("2026-11-28T00:00:01Z", 11.0)),
        ]
    )
    f._apply(ev, 1)
    commits = log_entries(path, seeded)
    assert [(c["mode"], c["txn"]) for c in commits] == [("Overwrite", {APP: 3})]
    assert predicate_times(commits[0]["predicate"])[-1] == datetime(
        2026, 11, 28, 0, 0, 3, tzinfo=UTC
    )
    assert table(f.sink) == [
        ("WA", "00:00:01", 11.0),
        ("WA", "00:00:02", 2.0),
        ("WA", "00:00:03", 3.0),
    ]


def many_keys(count: int) -> pl.DataFrame:
    t0 = datetime(2026, 11, 28, 0, 0, tzinfo=UTC)
    return pl.DataFrame(
        {
            "tag_webid": [f"W{i:05d}" for i in range(count)],
            "timestamp": [t0 + timedelta(seconds=i % 7) for i in range(count)],
            "date": [t0.date()] * count,
        },
        schema={"tag_webid": pl.String, "timestamp": pl.Datetime("us", "UTC"), "date": pl.Date},
    )


@pytest.mark.parametrize(
    ("tags", "length"),
    [(PER_TAG_SPANS, 10_000), (PER_TAG_SPANS + 1, 1_000), (TAG_LIST_MAX, 12_000), (5000, 300)],
)
def test_the_predicate_stays_short_and_matches_what_is_read(
    tmp_path: Path, tags: int, length: int
) -> None:
    """Per tag its span, then a list of the tags, then the range of their names; the rows
    delta-rs deletes by the predicate are exactly those the scope reads back."""
    keys = many_keys(tags)
    scope = Scope.of(keys)
    assert len(scope.sql()) < length
    store = TableStore(str(tmp_path / "lake"))
    store.create_all()
    sink = DeltaSink(store)
    t0 = datetime(2026, 11, 28, 0, 0, tzinfo=UTC)
    every = pl.DataFrame(  # every tag, its neighbours' names too, over twelve seconds
        {
            "tag_webid": [f"W{i:05d}{s}" for i in range(tags + 2) for s in ("", "x")] * 12,
            "timestamp": [
                t0 + timedelta(seconds=k) for k in range(12) for _ in range(2 * (tags + 2))
            ],
        },
        schema={"tag_webid": pl.String, "timestamp": pl.Datetime("us", "UTC")},
    )
    seed = events(1, "Add", "WA", ("2026-11-28T00:00:00Z", 0.0)).drop_columns(["action", "order"])
    table_rows = pa.concat_tables(
        [seed.take([0] * every.height).set_column(0, "tag_webid", every["tag_webid"].to_arrow())]
    )
    table_rows = table_rows.set_column(
        table_rows.schema.get_field_index("timestamp"), "timestamp", every["timestamp"].to_arrow()
    )
    sink.append(PI_TIMESERIES, table_rows)
    read = scope.rows(sink.table(PI_TIMESERIES).to_pyarrow_dataset())
    assert 0 < read.num_rows < table_rows.num_rows
    deleted = sink.table(PI_TIMESERIES).delete(scope.sql())["num_deleted_rows"]
    assert deleted == read.num_rows


def test_resolve_reads_only_the_events_keys(tmp_path: Path) -> None:
    f = follower(tmp_path)
    f.sink.append(
        PI_TIMESERIES, rows("WA", *[(f"2026-11-28T00:00:0{i}Z", float(i)) for i in range(4)])
    )
    ev = events(1, "Update", "WA", ("2026-11-28T00:00:01Z", 5.0), ("2026-11-28T00:00:03Z", 3.0))
    existing = at_keys(f.sink.table(PI_TIMESERIES).to_pyarrow_dataset(), ev)
    assert existing.column("value").to_pylist() == [1.0, 3.0]
    resolved = resolve(existing, ev, {})
    assert resolved.arrivals.num_rows == 0
    assert resolved.edits.column("value").to_pylist() == [5.0]
    assert resolved.replaced["timestamp"].dt.second().to_list() == [1]


def test_a_replace_commits_against_the_snapshot_it_read(tmp_path: Path) -> None:
    """A row another writer appends inside the predicate after the rows were read is kept:
    its file was not read, so the replace removes nothing of it (pi_timeseries is at
    writeSerializable, appends are blind). A row another writer's replace wrote there
    refuses the replace, which was computed without it."""
    f = follower(tmp_path)
    f.sink.append(PI_TIMESERIES, rows("WA", ("2026-11-28T00:00:01Z", 1.0)))
    read_at = f.sink.table(PI_TIMESERIES).version()
    other = DeltaSink(TableStore(f.sink.store.target))
    other.append(PI_TIMESERIES, rows("WA", ("2026-11-28T00:00:02Z", 2.0)))
    where = "date IN ('2026-11-28') AND tag_webid = 'WA'"
    new = rows("WA", ("2026-11-28T00:00:01Z", 11.0))
    assert f.sink.replace_where(PI_TIMESERIES, where, new, APP, 3, snapshot=read_at)
    assert table(f.sink) == [("WA", "00:00:01", 11.0), ("WA", "00:00:02", 2.0)]
    read_at = f.sink.table(PI_TIMESERIES).version()
    other.replace_where(
        PI_TIMESERIES,
        f"{where} AND timestamp = '2026-11-28T00:00:03Z'",
        rows("WA", ("2026-11-28T00:00:03Z", 3.0)),
    )
    new = rows("WA", ("2026-11-28T00:00:01Z", 12.0), ("2026-11-28T00:00:02Z", 2.0))
    with pytest.raises(SinkError, match="concurrent"):
        f.sink.replace_where(PI_TIMESERIES, where, new, APP, 5, snapshot=read_at)
    assert table(f.sink) == [
        ("WA", "00:00:01", 11.0),
        ("WA", "00:00:02", 2.0),
        ("WA", "00:00:03", 3.0),
    ]


class _Markers:
    """A stream-updates source that answers every marker with a next one and no event."""

    async def retrieve(self, markers: dict[str, str]) -> Retrieval:
        return Retrieval(EVENT_SCHEMA.empty_table(), {w: m + "+" for w, m in markers.items()})


@pytest.mark.parametrize(("covered_ago", "due"), [(5, False), (60, True)])
async def test_a_first_poll_after_a_gap_is_applied_at_once(
    tmp_path: Path, covered_ago: int, due: bool
) -> None:
    """Its age counts from the tags' last commit: a restart or a takeover that resumes a
    minute-old marker applies at once; a poll a poll interval after it waits a commit age."""
    f = follower(tmp_path)
    f.source = _Markers()  # type: ignore[assignment]
    f.markers = {"WA": "m1", "WB": "m2"}
    f.covered = {"WA": NOW - timedelta(seconds=covered_ago), "WB": NOW}
    f.reached = dict(f.covered)
    await f.poll()
    assert f.should_commit() is due
    assert f.markers == {"WA": "m1+", "WB": "m2+"}
