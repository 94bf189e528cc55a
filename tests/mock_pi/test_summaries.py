"""mock-pi summaries over HTTP: shapes per the specification, figures against `recorded`."""

from __future__ import annotations

import json
import math
import urllib.request
from collections.abc import Iterator
from itertools import pairwise
from typing import Any

import pytest

from mock_pi.catalog import Catalog, Point
from tests.conftest import MockServer, start_mock
from tests.mock_pi import get, url
from tests.spec import validate_response
from workers.pi.times import format_ticks, parse_pi_ticks

CATALOG = Catalog(42, 200)
KINDS: dict[str, Point] = {}
for _i in range(200):
    KINDS.setdefault(CATALOG.point(_i).kind.prefix, CATALOG.point(_i))
POINTS = list(KINDS.values())
NUMERIC = [p for p in POINTS if p.kind.point_type in ("Float32", "Float64", "Int32")]
START = "2026-06-01T00:00:00Z"
END = "2026-06-01T06:00:00Z"
HOUR = 36_000_000_000


@pytest.fixture(scope="module")
def server() -> Iterator[MockServer]:
    """Fixed times far in the past: a ten-year archive; a share of values served malformed."""
    s = start_mock(tag_count=200, seed=42, rate_limit=0, history_days=3650, bad_fraction=0.02)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def clean() -> Iterator[MockServer]:
    s = start_mock(tag_count=200, seed=42, rate_limit=0, history_days=3650)
    yield s
    s.stop()


def buckets() -> list[tuple[str, str]]:
    start = parse_pi_ticks(START, 0)
    return [
        (format_ticks(start + k * HOUR), format_ticks(start + (k + 1) * HOUR - 10))
        for k in range(6)
    ]


def recorded(base: str, point: Point, start: str, end: str) -> list[Any]:
    status, body = get(
        url(
            base, f"/streams/{point.webid}/recorded", startTime=start, endTime=end, maxCount=150_000
        )
    )
    assert status == 200
    return list(body["Items"])


def summary(base: str, point: Point, **params: Any) -> list[Any]:
    status, body = get(url(base, f"/streams/{point.webid}/summary", **params))
    assert status == 200, body
    validate_response(body, "/streams/{webId}/summary")
    return list(body["Items"])


def is_system(item: Any) -> bool:
    value = item.get("Value") if isinstance(item, dict) else None
    return isinstance(value, dict) and bool(value.get("IsSystem"))


def test_event_counts_equal_recorded_for_every_kind(server: MockServer) -> None:
    """Hourly Count and PercentGood give each hour's recorded events, whatever their kind:
    system states, values sharing a timestamp, values served malformed."""
    kinds_seen = {"system": 0, "shared": 0, "malformed": 0}
    for point in POINTS:
        items = summary(
            server.url,
            point,
            startTime=START,
            endTime=END,
            summaryDuration="1h",
            summaryType=["Count", "PercentGood"],
            calculationBasis="EventWeighted",
        )
        counts = [i["Value"]["Value"] for i in items if i["Type"] == "Count"]
        percents = [i["Value"]["Value"] for i in items if i["Type"] == "PercentGood"]
        assert len(counts) == len(percents) == 6
        for k, (lo, hi) in enumerate(buckets()):
            rows = recorded(server.url, point, lo, hi)
            good = sum(not is_system(r) for r in rows)
            assert counts[k] == good, (point.name, k)
            assert round(counts[k] * 100 / percents[k]) == len(rows), (point.name, k)
            kinds_seen["system"] += len(rows) - good
            stamps = [r.get("Timestamp") for r in rows if isinstance(r, dict)]
            kinds_seen["shared"] += len(stamps) - len(set(stamps))
            kinds_seen["malformed"] += sum(
                not isinstance(r, dict)
                or "Timestamp" not in r
                or "Value" not in r
                or isinstance(r.get("Value"), list)
                for r in rows
            )
    assert all(kinds_seen.values()), kinds_seen


def test_event_weighted_figures_equal_recorded(clean: MockServer) -> None:
    for point in NUMERIC:
        items = summary(
            clean.url,
            point,
            startTime=START,
            endTime=END,
            summaryDuration="1h",
            summaryType=["Total", "Minimum", "Maximum", "Average", "Range", "StdDev"],
            calculationBasis="EventWeighted",
        )
        by_type: dict[str, list[Any]] = {}
        for item in items:
            by_type.setdefault(item["Type"], []).append(item["Value"])
        for k, (lo, hi) in enumerate(buckets()):
            values = [r["Value"] for r in recorded(clean.url, point, lo, hi) if not is_system(r)]
            assert math.isclose(by_type["Total"][k]["Value"], sum(values), rel_tol=1e-12)
            assert by_type["Minimum"][k]["Value"] == min(values)
            assert by_type["Maximum"][k]["Value"] == max(values)
            assert by_type["Range"][k]["Value"] == max(values) - min(values)
            mean = sum(values) / len(values)
            assert math.isclose(by_type["Average"][k]["Value"], mean, rel_tol=1e-12)
            var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
            assert math.isclose(by_type["StdDev"][k]["Value"], math.sqrt(var), rel_tol=1e-9)
            assert by_type["Total"][k]["Timestamp"] == lo
            minimum_at = by_type["Minimum"][k]["Timestamp"]
            tick = parse_pi_ticks(minimum_at, 0)  # Auto: the time of the minimum event
            assert parse_pi_ticks(lo, 0) <= tick <= parse_pi_ticks(hi, 0)


def test_boundaries_one_interval_takes_both_ends(clean: MockServer) -> None:
    """A lone interval counts events at both ends; hourly intervals leave out the range's
    end and count an event at an hour in the hour it starts."""
    point = next(p for p in NUMERIC if p.scan_seconds == 1)
    stamps = [r["Timestamp"] for r in recorded(clean.url, point, START, END)]
    first, last = stamps[0], stamps[-1]
    lone = summary(
        clean.url,
        point,
        startTime=first,
        endTime=last,
        summaryType="Count",
        calculationBasis="EventWeighted",
    )
    assert lone[0]["Value"]["Value"] == sum(
        not is_system(r) for r in recorded(clean.url, point, first, last)
    )
    split = summary(
        clean.url,
        point,
        startTime=first,
        endTime=last,
        summaryDuration="10m",
        summaryType="Count",
        calculationBasis="EventWeighted",
    )
    rows = recorded(clean.url, point, first, last)
    at_end = sum(r["Timestamp"] == last and not is_system(r) for r in rows)
    assert sum(i["Value"]["Value"] for i in split) == lone[0]["Value"]["Value"] - at_end


def test_descending_intervals_mirror_ascending(clean: MockServer) -> None:
    point = NUMERIC[0]
    params = {"summaryDuration": "1h", "summaryType": "Count", "calculationBasis": "EventWeighted"}
    up = summary(clean.url, point, startTime=START, endTime=END, **params)
    down = summary(clean.url, point, startTime=END, endTime=START, **params)
    assert [i["Value"]["Timestamp"] for i in down] == [
        format_ticks(parse_pi_ticks(END, 0) - k * HOUR) for k in range(6)
    ]
    assert sum(i["Value"]["Value"] for i in up) - sum(i["Value"]["Value"] for i in down) in (
        -3,
        -2,
        -1,
        0,
        1,
        2,
        3,
    )


def test_time_weighted_figures(clean: MockServer) -> None:
    for point in POINTS:
        items = summary(
            clean.url,
            point,
            startTime=START,
            endTime=END,
            summaryDuration="1h",
            summaryType="All",
            timeType="MostRecentTime",
        )
        by_type: dict[str, list[Any]] = {}
        for item in items:
            by_type.setdefault(item["Type"], []).append(item["Value"])
        assert set(by_type) == {
            "Total",
            "Average",
            "Minimum",
            "Maximum",
            "Range",
            "StdDev",
            "PopulationStdDev",
            "Count",
            "PercentGood",
        }
        for k in range(6):
            seconds = by_type["Count"][k]["Value"]
            assert 0 <= seconds <= 3600
            assert math.isclose(by_type["PercentGood"][k]["Value"], seconds / 36, rel_tol=1e-9)
            assert by_type["Count"][k]["Timestamp"] == format_ticks(
                parse_pi_ticks(START, 0) + (k + 1) * HOUR
            )
            average = by_type["Average"][k]
            if point in NUMERIC and average["Good"]:
                assert by_type["Minimum"][k]["Value"] <= average["Value"]
                assert average["Value"] <= by_type["Maximum"][k]["Value"]
                total_days = by_type["Total"][k]["Value"]
                assert math.isclose(total_days, average["Value"] * seconds / 86_400, rel_tol=1e-9)
            if point not in NUMERIC:
                assert average["Good"] is False
                assert average["Value"] == {"Name": "No Data", "Value": 248, "IsSystem": True}


def test_time_weighted_average_is_the_integral_of_the_interpolated_line(
    clean: MockServer,
) -> None:
    """Trapezoids between the interpolated values at a window's ends and the events inside
    (the first five minutes of a Float64 point without system states)."""
    point = next(p for p in NUMERIC if p.kind.point_type == "Float64")
    start = parse_pi_ticks(START, 0)
    for k in range(72):
        lo, hi = (format_ticks(start + (k + n) * HOUR // 12) for n in (0, 1))
        rows = recorded(clean.url, point, lo, hi)
        ends = get(
            url(
                clean.url,
                f"/streams/{point.webid}/interpolated",
                startTime=lo,
                endTime=hi,
                interval="5m",
            )
        )[1]["Items"]
        if any(is_system(r) for r in [*rows, *ends]):
            continue
        points = [(parse_pi_ticks(lo, 0), ends[0]["Value"])]
        points += [
            (parse_pi_ticks(r["Timestamp"], 0), r["Value"])
            for r in rows
            if r["Timestamp"] not in (lo, hi)
        ]
        points.append((parse_pi_ticks(hi, 0), ends[-1]["Value"]))
        area = sum((t1 - t0) * (v0 + v1) / 2 for (t0, v0), (t1, v1) in pairwise(points))
        average = summary(clean.url, point, startTime=lo, endTime=hi, summaryType="Average")
        want = area / (points[-1][0] - points[0][0])
        assert math.isclose(average[0]["Value"]["Value"], want, rel_tol=1e-9), (lo, want)
        return
    pytest.fail("no five minutes without system states")


def test_streamset_summary_and_unknown_stream(clean: MockServer) -> None:
    ids = [p.webid for p in POINTS] + ["F1DPnotapoint"]
    status, body = get(
        url(
            clean.url,
            "/streamsets/summary",
            webId=ids,
            startTime=START,
            endTime=END,
            summaryDuration="2h",
            summaryType="Count",
            calculationBasis="EventWeighted",
        )
    )
    assert status == 200
    validate_response(body, "/streamsets/summary")
    assert [i["WebId"] for i in body["Items"]] == ids
    assert all(len(i["Items"]) == 3 for i in body["Items"][:-1])
    assert body["Items"][-1]["WebException"]["StatusCode"] == 404
    for item, point in zip(body["Items"], POINTS, strict=False):
        single = summary(
            clean.url,
            point,
            startTime=START,
            endTime=END,
            summaryDuration="2h",
            summaryType="Count",
            calculationBasis="EventWeighted",
        )
        assert item["Items"] == single


def test_summary_as_batch_sub_request(clean: MockServer) -> None:
    point = NUMERIC[0]
    resource = url(
        clean.url,
        "/streamsets/summary",
        webId=[point.webid],
        startTime=START,
        endTime=END,
        summaryType="Count",
        calculationBasis="EventWeighted",
    )
    payload = json.dumps({"1": {"Method": "GET", "Resource": resource}}).encode()
    req = urllib.request.Request(
        clean.url + "/batch",
        data=payload,
        headers={"Content-Type": "application/json", "X-Requested-With": "pidelta"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        body = json.loads(resp.read())
    assert body["1"]["Status"] == 200
    validate_response(body["1"]["Content"], "/streamsets/summary")
    direct = get(resource)[1]
    assert body["1"]["Content"] == direct


@pytest.mark.parametrize(
    ("params", "status", "message"),
    [
        ({"summaryType": "Median"}, 400, "The value 'Median' is not valid for summaryType."),
        (
            {"calculationBasis": "Weighted"},
            400,
            "The value 'Weighted' is not valid for calculationBasis.",
        ),
        ({"timeType": "Never"}, 400, "The value 'Never' is not valid for timeType."),
        ({"sampleType": "Interval"}, 400, "The 'sampleInterval' parameter is required."),
        ({"summaryDuration": "0s"}, 400, "The value '0s' is not valid for summaryDuration."),
        (
            {"summaryDuration": "1s", "startTime": "2026-01-01T00:00:00Z"},
            400,
            "Parameter 'summaryDuration' is greater than the maximum allowed (150000).",
        ),
    ],
)
def test_errors(clean: MockServer, params: dict[str, str], status: int, message: str) -> None:
    base = {"startTime": START, "endTime": END, **params}
    code, body = get(url(clean.url, f"/streams/{NUMERIC[0].webid}/summary", **base))
    assert code == status
    assert body == {"Errors": [message]}
    validate_response(body, "/streams/{webId}/summary", status=409)
