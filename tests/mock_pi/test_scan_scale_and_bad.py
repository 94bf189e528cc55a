"""MOCK_PI_SCAN_SCALE (coarser scans for long ranges), MOCK_PI_BAD_FRACTION (malformed
values the ground truth tells apart) and the `badjson` fault."""

from __future__ import annotations

import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import numpy as np
import orjson
import pyarrow.compute as pc
import pytest

from mock_pi import series as ser
from mock_pi.catalog import SCAN_PERIODS, Catalog
from mock_pi.faults import BROKEN_JSON
from mock_pi.settings import MockSettings
from mock_pi.truth import QUARANTINE_REASON, GroundTruth
from tests.conftest import FIXED_NOW, MockServer, get_json, start_mock

DAY = datetime(2026, 1, 5, tzinfo=UTC)
AFTER = (DAY + timedelta(days=2)).timestamp()
# Two days before the clock of `bad_mock`: inside its archive, the same on every run.
RECENT = FIXED_NOW - timedelta(days=2)


def fixed(**settings: object) -> GroundTruth:
    """A truth whose archive starts at the epoch, so fixed dates give fixed answers."""
    return GroundTruth(MockSettings(tag_count=1000, **settings), history_start=0)


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def raw_get(mock: MockServer, path: str, **query: object) -> tuple[int, bytes]:
    url = f"{mock.url}/{path}?{urlencode(query, doseq=True)}"
    with urllib.request.urlopen(url, timeout=30) as resp:
        return resp.status, resp.read()


def test_scan_scale_multiplies_every_scan_period() -> None:
    plain, coarse = Catalog(42, 1000), Catalog(42, 1000, scan_scale=4.5)
    for i in range(1000):
        assert coarse.point(i).scan_seconds == plain.point(i).scan_seconds * 4.5
        assert coarse.point(i).name == plain.point(i).name
    assert {plain.point(i).scan_seconds for i in range(1000)} == set(SCAN_PERIODS)


def test_scaled_values_sit_on_the_scaled_grid() -> None:
    truth = fixed(scan_scale=3)
    one_second = [p for p in map(truth.state.catalog.point, range(200)) if p.scan_seconds == 3]
    assert one_second
    for point in one_second[:10]:
        _, ev = truth.events(point, DAY, DAY + timedelta(hours=1), at=AFTER)
        assert len(ev) > 100
        assert not np.any((ev.ticks // ser.TICKS) % 3)  # jitter stays below one second


def test_scan_scale_one_is_the_default_series() -> None:
    default, one = fixed(), fixed(scan_scale=1)
    for index in (0, 7, 99):
        point = default.state.catalog.point(index)
        rng = (DAY, DAY + timedelta(hours=2))
        assert default.recorded(point, *rng, at=AFTER) == one.recorded(point, *rng, at=AFTER)


def test_scale_thins_a_day_and_keeps_every_kind() -> None:
    names = [Catalog(42, 1000).point(i).name for i in range(100)]
    full = fixed().recorded_table(names, DAY, DAY + timedelta(days=1), at=AFTER)
    scaled = fixed(scan_scale=4.5).recorded_table(names, DAY, DAY + timedelta(days=1), at=AFTER)
    assert (full.num_rows, scaled.num_rows) == (1_635_530, 364_281)
    assert pc.sum(pc.greater(scaled["sequence"], 0)).as_py() == 23_685
    assert pc.sum(scaled["is_system_state"]).as_py() == 1_041


def test_bad_fraction_zero_serves_nothing_malformed() -> None:
    truth = fixed()
    for index in range(50):
        _, ev = truth.events(truth.state.catalog.point(index), DAY, DAY + timedelta(hours=1))
        assert not ev.bad.any()


def test_bad_values_are_chosen_per_value_and_told_apart() -> None:
    clean, bad = fixed(), fixed(bad_fraction=0.1)
    kinds: Counter[int] = Counter()
    for index in range(100):
        point = bad.state.catalog.point(index)
        rng = (DAY, DAY + timedelta(hours=1))
        s, ev = bad.events(point, *rng, at=AFTER)
        _, plain = clean.events(point, *rng, at=AFTER)
        # The events behind the renderings are those of the clean series.
        assert np.array_equal(ev.ticks, plain.ticks)
        assert np.array_equal(ev.seq, plain.seq)
        assert not np.any(ev.bad[ev.system])
        alone = np.isin(ev.bad, (ser.BAD_MISSING_TIMESTAMP, ser.BAD_TIMESTAMP, ser.BAD_NOT_OBJECT))
        shared = np.zeros(len(ev), bool)
        shared[1:] |= ev.ticks[1:] == ev.ticks[:-1]
        shared[:-1] |= ev.ticks[1:] == ev.ticks[:-1]
        assert not np.any(alone & shared)
        if not s.numeric:
            assert not np.any(np.isin(ev.bad, (ser.BAD_NAN, ser.BAD_INF, ser.BAD_NEG_INF)))
        kinds.update(ev.bad.tolist())
    assert sorted(kinds) == list(range(11))
    assert kinds[ser.BAD_NONE] == 61_211
    assert sum(kinds.values()) - kinds[ser.BAD_NONE] == 6_667


def test_renderings_of_each_bad_kind() -> None:
    truth = fixed(bad_fraction=0.5)
    seen: dict[int, object] = {}
    for index in range(40):
        point = truth.state.catalog.point(index)
        for item, bad in zip(
            truth.recorded(point, DAY, DAY + timedelta(minutes=10), at=AFTER),
            truth.events(point, DAY, DAY + timedelta(minutes=10), at=AFTER)[1].bad,
            strict=True,
        ):
            seen.setdefault((int(bad), point.point_type), item)
    nan = seen[(ser.BAD_NAN, "Float32")]
    assert isinstance(nan, dict)
    assert nan["Value"] == "NaN"
    assert seen[(ser.BAD_INF, "Float64")]["Value"] == "Infinity"  # type: ignore[index]
    assert seen[(ser.BAD_NEG_INF, "Int32")]["Value"] == "-Infinity"  # type: ignore[index]
    assert isinstance(seen[(ser.BAD_LIST, "String")]["Value"], list)  # type: ignore[index]
    assert "Name" not in seen[(ser.BAD_OBJECT, "Float32")]["Value"]  # type: ignore[index]
    state = seen[(ser.BAD_OBJECT, "Digital")]["Value"]  # type: ignore[index]
    assert isinstance(state["Name"], int)
    assert isinstance(state["Value"], str)
    assert isinstance(seen[(ser.BAD_NUMBER, "Digital")]["Value"], int)  # type: ignore[index]
    assert "Timestamp" not in seen[(ser.BAD_MISSING_TIMESTAMP, "Float64")]  # type: ignore[operator]
    assert "Value" not in seen[(ser.BAD_MISSING_VALUE, "String")]  # type: ignore[operator]
    assert seen[(ser.BAD_TIMESTAMP, "Float32")]["Timestamp"][4:8] == "-13-"  # type: ignore[index]
    assert isinstance(seen[(ser.BAD_NOT_OBJECT, "Float32")], float)
    assert isinstance(seen[(ser.BAD_NOT_OBJECT, "Digital")], int)  # a state's bare code


def test_truth_tables_split_good_from_quarantined() -> None:
    bad, clean = fixed(bad_fraction=0.1), fixed()
    points = [bad.state.catalog.point(i) for i in range(100)]
    rng = (DAY, DAY + timedelta(hours=1))
    stored = bad.recorded_table(points, *rng, at=AFTER)
    quarantine = bad.quarantine_table(points, *rng, at=AFTER)
    everything = clean.recorded_table(points, *rng, at=AFTER)
    assert stored.num_rows + quarantine.num_rows == everything.num_rows
    assert Counter(quarantine["reason"].to_pylist()) == {
        "wrong_value_type": 1_966,
        "bad_digital_state": 750,
        "missing_timestamp": 690,
        "bad_timestamp": 679,
        "not_an_object": 658,
    }
    assert set(QUARANTINE_REASON.values()) == set(quarantine["reason"].to_pylist())
    values = stored["value"].to_numpy(zero_copy_only=False)
    assert int(np.isnan(values).sum()) - stored["value"].null_count == 639
    assert int(np.isposinf(values).sum()) == 663
    assert int(np.isneginf(values).sum()) == 622


@pytest.fixture(scope="module")
def bad_mock() -> Iterator[MockServer]:
    server = start_mock(
        tag_count=1000, seed=42, rate_limit=0, bad_fraction=0.2, scan_scale=2, clock_start=FIXED_NOW
    )
    yield server
    server.stop()


def test_server_serves_what_the_truth_says(bad_mock: MockServer) -> None:
    truth = GroundTruth(
        MockSettings(
            tag_count=1000,
            seed=42,
            bad_fraction=0.2,
            scan_scale=2,
            clock_start=FIXED_NOW.isoformat(),
        )
    )
    points = [truth.state.catalog.point(i) for i in range(0, 1000, 37)]
    start, end = RECENT, RECENT + timedelta(minutes=30)
    status, body = raw_get(
        bad_mock,
        "streamsets/recorded",
        webId=[p.webid for p in points],
        startTime=iso(start),
        endTime=iso(end),
        maxCount=5000,
    )
    assert status == 200
    streams = orjson.loads(body)["Items"]
    served = 0
    for point, stream in zip(points, streams, strict=True):
        assert stream["Items"] == truth.recorded(point, iso(start), iso(end))
        served += len(stream["Items"])
    assert served > 1000
    # selectedFields prunes malformed objects the same way.
    point = points[0]
    status, body = raw_get(
        bad_mock,
        f"streams/{point.webid}/recorded",
        startTime=iso(start),
        endTime=iso(end),
        selectedFields="Items.Timestamp;Items.Value",
    )
    want = [
        {k: v for k, v in item.items() if k in ("Timestamp", "Value")}
        if isinstance(item, dict)
        else item
        for item in truth.recorded(point, iso(start), iso(end))
    ]
    assert orjson.loads(body)["Items"] == want


def test_badjson_fault_is_a_complete_200_that_is_not_json(
    mock_pi_factory: Callable[..., MockServer],
) -> None:
    mock = mock_pi_factory(tag_count=10, faults="badjson=1", rate_limit=0)
    status, body = raw_get(mock, "dataservers")
    assert (status, body) == (200, BROKEN_JSON)
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(body)
    _, report = get_json(f"{mock.url}/mock/faults")
    assert report["Injected"]["badjson"] == 1  # type: ignore[index]
    plain = mock_pi_factory(tag_count=10, faults="503=0", rate_limit=0)
    _, report = get_json(f"{plain.url}/mock/faults")
    assert "badjson" not in report["Injected"]  # type: ignore[operator]
