"""Events applied to real Delta tables: net effect per key, one `replace_where` commit
restricted to the touched tags, times and dates, the change log, and idempotence."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson
import polars as pl
import pyarrow as pa
import pytest
from deltalake import DeltaTable

from workers.lake.schemas import PI_TIMESERIES
from workers.lake.tables import TableStore
from workers.timeseries.apply import change_log, existing_rows, predicate, ranges, resolve
from workers.timeseries.decode import TagMeta, decode_streamset
from workers.timeseries.sink import DeltaSink
from workers.timeseries.updates import EVENT_SCHEMA

TAGS = {w: TagMeta(w, w.lower(), "Float64", "m3/h") for w in ("WA", "WB")}
NOW = datetime(2026, 11, 28, 1, tzinfo=UTC)
APP = "pidelta-ts-updates-0-of-1"


def rows(webid: str, *values: tuple[str, float]) -> pa.Table:
    items = [{"Timestamp": ts, "Value": v, "Good": True} for ts, v in values]
    raw = orjson.dumps({"Items": [{"WebId": webid, "Items": items}]})
    return decode_streamset(raw, TAGS, ingestion_time=NOW).rows


def events(order: int, action: str, webid: str, *values: tuple[str, float]) -> pa.Table:
    t = rows(webid, *values)
    t = t.append_column("action", pa.array([action] * t.num_rows, pa.string()))
    return t.append_column("order", pa.array([order] * t.num_rows, pa.int64())).cast(EVENT_SCHEMA)


@pytest.fixture
def sink(tmp_path: Path) -> DeltaSink:
    store = TableStore(str(tmp_path / "lake"))
    store.create_all()
    return DeltaSink(store)


def table(sink: DeltaSink) -> list[tuple[str, str, float]]:
    frame = pl.from_arrow(DeltaTable(sink.store.uri(PI_TIMESERIES)).to_pyarrow_table())
    frame = frame.sort(["tag_webid", "timestamp"])
    return [
        (w, t.strftime("%H:%M:%S"), v)
        for w, t, v in zip(frame["tag_webid"], frame["timestamp"], frame["value"], strict=True)
    ]


def apply(sink: DeltaSink, ev: pa.Table, covered: dict[str, datetime], n: int) -> pa.Table:
    spans, dates = ranges(ev)
    old = existing_rows(sink.table(PI_TIMESERIES).to_pyarrow_dataset(), spans, dates)
    new, changed = resolve(old, ev, covered)
    logged = change_log(changed, NOW, APP, n)
    sink.replace_where(PI_TIMESERIES, predicate(spans, dates), new, APP, n)
    return logged


def test_adds_updates_deletes_land_once_and_are_logged_once(sink: DeltaSink) -> None:
    first = [(f"2026-11-28T00:00:0{i}Z", float(i)) for i in range(6)]
    sink.append(PI_TIMESERIES, rows("WA", *first))
    sink.append(PI_TIMESERIES, rows("WB", ("2026-11-28T00:00:01Z", 10.0)))
    covered = {"WA": datetime(2026, 11, 28, 0, 0, 5, tzinfo=UTC)}
    ev = pa.concat_tables(
        [
            events(1, "Add", "WA", ("2026-11-28T00:00:02Z", 2.0), ("2026-11-28T00:00:09Z", 9.0)),
            events(1, "Add", "WA", ("2026-11-28T00:00:01.5Z", 1.5)),  # late: logged
            events(2, "Update", "WA", ("2026-11-28T00:00:03Z", 33.0)),
            events(3, "Delete", "WA", ("2026-11-28T00:00:04Z", 4.0)),
            events(4, "Update", "WA", ("2026-11-28T00:00:09Z", 99.0)),  # fresh, then edited
        ]
    )
    logged = apply(sink, ev, covered, 1)
    want = [
        ("WA", "00:00:00", 0.0),
        ("WA", "00:00:01", 1.0),
        ("WA", "00:00:01", 1.5),
        ("WA", "00:00:02", 2.0),
        ("WA", "00:00:03", 33.0),
        ("WA", "00:00:05", 5.0),
        ("WA", "00:00:09", 99.0),
        ("WB", "00:00:01", 10.0),
    ]
    assert table(sink) == want
    log = pl.from_arrow(logged).sort("timestamp")
    assert log.select("action", "old_value", "new_value").rows() == [
        ("Add", None, 1.5),
        ("Update", 3.0, 33.0),
        ("Delete", 4.0, None),
    ]
    assert log["observed_at"].to_list() == [NOW] * 3
    # The same events again (a re-run after kill -9 under a new batch id): no change, no log.
    assert apply(sink, ev, {"WA": datetime(2026, 11, 28, 0, 0, 9, tzinfo=UTC)}, 2).num_rows == 0
    assert table(sink) == want
    # A batch already in is skipped whole by its app transaction.
    assert not sink.replace_where(PI_TIMESERIES, "date IN ('2026-11-28')", rows("WA"), APP, 2)
    assert table(sink) == want


def test_the_predicate_names_dates_tags_and_times() -> None:
    ev = events(1, "Update", "W'X", ("2026-11-28T00:00:03Z", 1.0))
    spans, dates = ranges(ev)
    assert predicate(spans, dates) == (
        "date IN ('2026-11-28') AND ((tag_webid = 'W''X' AND "
        "timestamp >= '2026-11-28T00:00:03.000000Z' AND "
        "timestamp <= '2026-11-28T00:00:03.000000Z'))"
    )
