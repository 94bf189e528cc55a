"""The ground truth in-process: purity, bounds, the table view, arrivals of late values."""

from __future__ import annotations

from collections import Counter

import numpy as np

from mock_pi.catalog import Catalog
from mock_pi.settings import MockSettings
from mock_pi.truth import SCHEMA, GroundTruth
from tests.conftest import FIXED_NOW
from workers.pi.times import TICKS_PER_SECOND, format_ticks, parse_pi_ticks

NOW = FIXED_NOW.timestamp()
END = NOW - 600
START = END - 3 * 3600
TICK = 1


def ticks(text: str) -> int:
    return parse_pi_ticks(text, 0)


def at(seconds: float) -> int:
    return int(seconds * 1_000_000) * 10


def truth(**settings: object) -> GroundTruth:
    return GroundTruth(MockSettings(tag_count=200, clock_start=FIXED_NOW.isoformat(), **settings))


def test_any_range_is_the_union_of_its_parts() -> None:
    t = truth()
    for index in range(0, 200, 17):
        whole = t.recorded(Catalog(42, 200).point(index).name, at(START), at(END))
        cut = at(START + 4321.5)
        parts = t.recorded(index_point(t, index), at(START), cut)
        parts += t.recorded(index_point(t, index), cut + TICK, at(END))
        assert whole == parts
        assert whole


def index_point(t: GroundTruth, index: int) -> object:
    return t.state.catalog.point(index)


def test_values_depend_on_seed_and_time_only() -> None:
    a = truth()
    b = GroundTruth(MockSettings(tag_count=200), clock=lambda: NOW + 5)
    c = truth(seed=7)
    for index in (1, 2, 3):
        rng = (at(START), at(END))
        assert a.recorded(index_point(a, index), *rng) == b.recorded(index_point(b, index), *rng)
        assert a.recorded(index_point(a, index), *rng) != c.recorded(index_point(c, index), *rng)


def test_values_stay_within_history_and_never_in_the_future() -> None:
    t = truth()
    start = t.state.history_start
    for index in range(12):
        point = index_point(t, index)
        first = t.recorded(point, at(start - 86_400), at(start + 3600))
        assert first
        assert ticks(first[0]["Timestamp"]) >= at(start)
        recent = t.recorded(point, "*-10m", "*+1h", at=NOW)
        assert recent
        assert ticks(recent[-1]["Timestamp"]) <= at(NOW)


def test_analog_values_are_in_span_and_typed() -> None:
    t = truth()
    for index in range(60):
        point = index_point(t, index)
        kind = point.kind
        if kind.point_type not in ("Float32", "Float64", "Int32"):
            continue
        for v in t.recorded(point, at(START), at(END)):
            value = v["Value"]
            if isinstance(value, dict):
                assert value["IsSystem"]
                assert not v["Good"]
                continue
            assert kind.zero <= value <= kind.zero + kind.span
            if kind.point_type == "Int32":
                assert isinstance(value, int)
            elif kind.point_type == "Float32":
                assert float(str(np.float32(value))) == value


def test_table_matches_the_dicts() -> None:
    t = truth()
    points = [index_point(t, i) for i in range(14)]
    table = t.recorded_table(points, at(START), at(END))
    assert table.schema == SCHEMA
    rows = table.to_pylist()
    dicts = [(p, v) for p in points for v in t.recorded(p, at(START), at(END))]
    assert len(rows) == len(dicts)
    runs: Counter[tuple[str, str]] = Counter()
    for row, (point, v) in zip(rows, dicts, strict=True):
        key = (point.webid, v["Timestamp"])
        assert row["sequence"] == runs[key]
        runs[key] += 1
        assert row["tag_webid"] == point.webid
        assert row["tag_name"] == point.name
        stamp = row["timestamp"].timestamp()
        assert format_ticks(round(stamp * 1_000_000) * 10) == v["Timestamp"]
        assert row["quality_good"] == v["Good"]
        assert row["quality_questionable"] == v["Questionable"]
        assert row["quality_substituted"] == v["Substituted"]
        assert row["quality_annotated"] == v["Annotated"]
        assert row["units"] == point.units
        value = v["Value"]
        if isinstance(value, dict):
            assert (row["digital_state"], row["digital_code"]) == (value["Name"], value["Value"])
            assert row["is_system_state"] == value["IsSystem"]
            assert row["value"] is None
            assert row["value_string"] is None
        elif isinstance(value, str):
            assert row["value_string"] == value
            assert row["value"] is None
        else:
            assert row["value"] == value
            assert row["digital_state"] is None
    assert max(row["sequence"] for row in rows) >= 1


def test_arrivals_are_the_values_that_became_visible() -> None:
    t = truth(late_fraction=1, late_seconds=120)
    point = index_point(t, 5)
    a, b = at(NOW - 1800), at(NOW - 1200)
    arrived = t.arrivals(point, a, b)
    pairs = t.visible_at(point, a - 200 * TICKS_PER_SECOND, b)
    expected = [v for v, seen in pairs if a < seen <= b]
    assert arrived == expected
    late = [v for v, seen in pairs if seen > ticks(v["Timestamp"])]
    assert late, "a late tag has values stamped inside an outage"
    before = t.recorded(point, a - 200 * TICKS_PER_SECOND, b, at=a / TICKS_PER_SECOND)
    after = t.recorded(point, a - 200 * TICKS_PER_SECOND, b, at=b / TICKS_PER_SECOND)
    assert len(after) == len(before) + len(arrived)
    plain = truth()
    on_time = index_point(plain, 5)
    assert plain.arrivals(on_time, a, b) == plain.recorded(on_time, a + TICK, b)


def test_values_sharing_a_timestamp_differ() -> None:
    t = truth()
    runs: dict[tuple[int, str], list[str]] = {}
    for index in range(24):
        for v in t.recorded(index_point(t, index), at(START), at(END)):
            runs.setdefault((index, v["Timestamp"]), []).append(repr(v["Value"]))
    shared = [values for values in runs.values() if len(values) > 1]
    assert len(shared) > 50
    assert {len(values) for values in shared} == {2, 3}
    distinct = sum(len(set(values)) == len(values) for values in shared)
    assert distinct >= 0.95 * len(shared)
