"""mock-pi values over HTTP against the ground truth: recorded, interpolated, value, end."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from typing import Any

import pytest

from mock_pi.catalog import Catalog, Point
from tests.conftest import FIXED_NOW, MockServer
from tests.mock_pi import get, get_raw, iso, truth_for, url
from tests.spec import validate_response
from workers.pi.times import format_ticks, parse_pi_ticks

CATALOG = Catalog(42, 1000)
# One point of each instrument kind: analog Float32/Float64/Int32, digital, string.
KINDS: dict[str, Point] = {}
for _i in range(1000):
    KINDS.setdefault(CATALOG.point(_i).kind.prefix, CATALOG.point(_i))
POINTS = list(KINDS.values())
NOW = FIXED_NOW.timestamp()
END = NOW - 3600
START = END - 1800


@pytest.fixture(scope="module")
def truth(mock_pi: MockServer) -> Any:
    return truth_for(mock_pi.clock, tag_count=1000, seed=42)


def ticks(text: str) -> int:
    return parse_pi_ticks(text, 0)


def test_recorded_equals_truth_for_every_kind(mock_pi: MockServer, truth: Any) -> None:
    for point in POINTS:
        status, body = get(
            url(
                mock_pi.url,
                f"/streams/{point.webid}/recorded",
                startTime=iso(START),
                endTime=iso(END),
                maxCount=10_000,
            )
        )
        assert status == 200
        validate_response(body, "/streams/{webId}/recorded")
        assert body["Items"] == truth.recorded(point, iso(START), iso(END)), point.name
        assert body["UnitsAbbreviation"] == point.units
        assert body["Items"], point.name


def test_streamset_recorded_equals_truth(mock_pi: MockServer, truth: Any) -> None:
    status, body = get(
        url(
            mock_pi.url,
            "/streamsets/recorded",
            webId=[p.webid for p in POINTS],
            startTime=iso(START),
            endTime=iso(END),
            maxCount=5000,
        )
    )
    assert status == 200
    validate_response(body, "/streamsets/recorded")
    assert [s["WebId"] for s in body["Items"]] == [p.webid for p in POINTS]
    for stream, point in zip(body["Items"], POINTS, strict=True):
        assert stream["Name"] == point.name
        assert stream["Path"] == point.path
        assert stream["UnitsAbbreviation"] == point.units
        assert stream["Links"] == {"Source": f"{mock_pi.url}/points/{point.webid}"}
        assert stream["Items"] == truth.recorded(point, iso(START), iso(END))[:5000]


def test_values_show_what_real_archives_hold(truth: Any) -> None:
    """Shared timestamps, system states, flags and fractional stamps all occur."""
    values = [v for p in POINTS for v in truth.recorded(p, iso(NOW - 86400), iso(NOW))]
    stamps = [v["Timestamp"] for v in values]
    assert len(stamps) > len(set(stamps))
    system = [v for v in values if isinstance(v["Value"], dict) and v["Value"]["IsSystem"]]
    assert system
    assert not any(v["Good"] for v in system)
    assert any(v["Questionable"] for v in values)
    assert any(v["Substituted"] for v in values)
    assert any(v["Annotated"] for v in values)
    assert any(len(s) == 28 for s in stamps)  # seven fractional digits
    assert any(len(s) == 20 for s in stamps)  # whole seconds


def test_descending_when_end_precedes_start(mock_pi: MockServer, truth: Any) -> None:
    point = KINDS["FI"]
    _, body = get(
        url(
            mock_pi.url,
            f"/streams/{point.webid}/recorded",
            startTime=iso(END),
            endTime=iso(START),
            maxCount=10_000,
        )
    )
    expected = truth.recorded(point, iso(START), iso(END))
    assert body["Items"] == expected[::-1]
    _, page = get(
        url(
            mock_pi.url,
            f"/streams/{point.webid}/recorded",
            startTime=iso(END),
            endTime=iso(START),
            maxCount=7,
        )
    )
    assert page["Items"] == expected[::-1][:7]


def test_time_strings(mock_pi: MockServer, truth: Any) -> None:
    point = KINDS["XV"]
    _, body = get(
        url(
            mock_pi.url,
            f"/streams/{point.webid}/recorded",
            startTime="y",
            endTime="y+1h",
            maxCount=10_000,
        )
    )
    assert body["Items"] == truth.recorded(point, "y", "y+1h")
    values = truth.recorded(KINDS["AI"], iso(START), iso(END))
    fractional = next(v for v in values if len(v["Timestamp"]) == 28)
    stamp = fractional["Timestamp"]
    _, at = get(
        url(mock_pi.url, f"/streams/{KINDS['AI'].webid}/recorded", startTime=stamp, endTime=stamp)
    )
    assert at["Items"] == [v for v in values if v["Timestamp"] == stamp]
    later = format_ticks(ticks(stamp) + 1)
    assert later[-2] != stamp[-2]
    _, after = get(
        url(mock_pi.url, f"/streams/{KINDS['AI'].webid}/recorded", startTime=later, endTime=later)
    )
    assert after["Items"] == []
    _, recent = get(url(mock_pi.url, f"/streams/{point.webid}/recorded", startTime="*-30m"))
    first = ticks(recent["Items"][0]["Timestamp"])
    assert first >= (mock_pi.clock.time() - 1800 - 60) * 10_000_000
    assert get(url(mock_pi.url, f"/streams/{point.webid}/recorded", startTime="*-1x")) == (
        400,
        {"Errors": ["Cannot parse time string '*-1x'."]},
    )


def expected_interpolation(truth: Any, point: Point, at: float) -> Any:
    """Linear between two good neighbours of an analog point, the previous value otherwise
    (a system state on either side stops the line)."""
    prev = truth.recorded(point, iso(at - 3600), iso(at))[-1]
    nxt = truth.recorded(point, iso(at), iso(at + 3600))
    nxt = next(v for v in nxt if ticks(v["Timestamp"]) > ticks(iso(at)))
    system = isinstance(prev["Value"], dict) or isinstance(nxt["Value"], dict)
    if point.point_type == "Float32" and not system:
        pt, nt, t = ticks(prev["Timestamp"]), ticks(nxt["Timestamp"]), ticks(iso(at))
        return prev["Value"] + (nxt["Value"] - prev["Value"]) * (t - pt) / (nt - pt)
    return prev["Value"]


def assert_interpolated(item: dict[str, Any], truth: Any, point: Point) -> None:
    want = expected_interpolation(truth, point, ticks(item["Timestamp"]) / 10_000_000)
    if isinstance(want, float):
        assert item["Value"] == pytest.approx(want, abs=1e-3)
    else:
        assert item["Value"] == want


def test_boundary_types(mock_pi: MockServer, truth: Any) -> None:
    point = KINDS["TI"]
    inside = truth.recorded(point, iso(START), iso(END))

    def at_bound(moment: float) -> bool:
        return bool(truth.recorded(point, iso(moment), iso(moment)))

    # Outside adds the last value before the range and the first after it, unless a value
    # stands at that bound (as one may at these whole seconds).
    before = [] if at_bound(START) else truth.recorded(point, iso(START - 3600), iso(START))[-1:]
    after = [] if at_bound(END) else truth.recorded(point, iso(END), iso(END + 3600))[:1]
    base = url(
        mock_pi.url,
        f"/streams/{point.webid}/recorded",
        startTime=iso(START),
        endTime=iso(END),
        maxCount=10_000,
    )
    _, outside = get(base + "&boundaryType=Outside")
    assert outside["Items"] == [*before, *inside, *after]
    _, interp = get(base + "&boundaryType=interpolated")
    validate_response(interp, "/streams/{webId}/recorded")
    items = interp["Items"]
    assert ticks(items[0]["Timestamp"]) == ticks(iso(START))
    assert ticks(items[-1]["Timestamp"]) == ticks(iso(END))
    bounds = (ticks(iso(START)), ticks(iso(END)))  # interpolated there instead
    assert items[1:-1] == [v for v in inside if ticks(v["Timestamp"]) not in bounds]
    assert_interpolated(items[0], truth, point)
    assert_interpolated(items[-1], truth, point)
    assert get(base + "&boundaryType=Sideways") == (
        400,
        {"Errors": ["The value 'Sideways' is not valid for boundaryType."]},
    )


def test_interpolated_and_value_at_time(mock_pi: MockServer, truth: Any) -> None:
    for point in (KINDS["TI"], KINDS["XV"], KINDS["MSG"]):
        status, body = get(
            url(
                mock_pi.url,
                f"/streams/{point.webid}/interpolated",
                startTime=iso(START),
                endTime=iso(END),
                interval="10m",
            )
        )
        assert status == 200
        validate_response(body, "/streams/{webId}/interpolated")
        stamps = [ticks(v["Timestamp"]) for v in body["Items"]]
        assert stamps == [ticks(iso(START)) + k * 600 * 10_000_000 for k in range(4)]
        for item in body["Items"]:
            assert_interpolated(item, truth, point)
        _, one = get(url(mock_pi.url, f"/streams/{point.webid}/value", time=iso(START)))
        validate_response(one, "/streams/{webId}/value")
        assert one == body["Items"][0]
    _, streamset = get(
        url(
            mock_pi.url,
            "/streamsets/interpolated",
            webId=[p.webid for p in POINTS],
            startTime=iso(START),
            endTime=iso(END),
            interval="10m",
        )
    )
    validate_response(streamset, "/streamsets/interpolated")
    assert len(streamset["Items"]) == len(POINTS)
    assert all(len(s["Items"]) == 4 for s in streamset["Items"])


def test_end_and_current_value(mock_pi: MockServer, truth: Any) -> None:
    point = KINDS["SI"]
    began = mock_pi.clock.time()
    status, end = get(f"{mock_pi.url}/streams/{point.webid}/end")
    assert status == 200
    validate_response(end, "/streams/{webId}/end")
    stamp = ticks(end["Timestamp"]) / 10_000_000
    assert began - 600 < stamp <= mock_pi.clock.time()
    assert end == truth.recorded(point, end["Timestamp"], end["Timestamp"])[-1]
    _, value = get(f"{mock_pi.url}/streams/{point.webid}/value")
    validate_response(value, "/streams/{webId}/value")
    assert ticks(value["Timestamp"]) >= ticks(end["Timestamp"])
    for route in ("/streamsets/end", "/streamsets/value"):
        status, body = get(url(mock_pi.url, route, webId=[p.webid for p in POINTS]))
        assert status == 200
        validate_response(body, route)
        assert [s["WebId"] for s in body["Items"]] == [p.webid for p in POINTS]
        assert all(set(s["Value"]) >= {"Timestamp", "Value", "Good"} for s in body["Items"])


def test_selected_fields_prune_streamsets(mock_pi: MockServer) -> None:
    _, body = get(
        url(
            mock_pi.url,
            "/streamsets/recorded",
            webId=[p.webid for p in POINTS[:3]],
            startTime=iso(START),
            endTime=iso(END),
            maxCount=3,
            selectedFields="Items.WebId;Items.Items.Timestamp;Items.Items.Value",
        )
    )
    assert set(body) == {"Items"}
    for stream in body["Items"]:
        assert set(stream) == {"WebId", "Items"}
        assert [set(v) for v in stream["Items"]] == [{"Timestamp", "Value"}] * 3
    _, single = get(
        url(
            mock_pi.url,
            f"/streams/{KINDS['XV'].webid}/recorded",
            startTime=iso(START),
            endTime=iso(END),
            maxCount=2,
            selectedFields="Items.Good;Items.Value.Name",
        )
    )
    assert set(single) == {"Items"}
    assert [set(v) for v in single["Items"]] == [{"Value", "Good"}] * 2
    assert all(set(v["Value"]) == {"Name"} for v in single["Items"])
    _, value = get(
        url(
            mock_pi.url,
            "/streamsets/value",
            webId=[KINDS["TI"].webid],
            selectedFields="Items.Value.Timestamp",
        )
    )
    assert value == {"Items": [{"Value": {"Timestamp": value["Items"][0]["Value"]["Timestamp"]}}]}


def test_errors_and_unknown_streams(mock_pi: MockServer) -> None:
    good = KINDS["TI"].webid
    assert get(f"{mock_pi.url}/streams/nope/recorded") == (
        404,
        {"Errors": ["Unknown or invalid WebID format: 'nope'."]},
    )
    missing = Catalog(42, 5000).point(4999).webid
    assert get(f"{mock_pi.url}/streams/{missing}/value") == (
        404,
        {"Errors": ["The specified point was not found."]},
    )
    status, body = get(
        url(
            mock_pi.url,
            "/streamsets/recorded",
            webId=[good, "nope"],
            startTime=iso(START),
            endTime=iso(END),
            maxCount=2,
        )
    )
    assert status == 200
    validate_response(body, "/streamsets/recorded")
    assert len(body["Items"][0]["Items"]) == 2
    assert body["Items"][1] == {
        "WebId": "nope",
        "Items": [],
        "WebException": {"StatusCode": 404, "Errors": ["Unknown or invalid WebID format: 'nope'."]},
    }
    assert get(url(mock_pi.url, "/streamsets/recorded")) == (
        400,
        {"Errors": ["The 'webId' parameter is required."]},
    )
    assert get(url(mock_pi.url, f"/streams/{good}/interpolated", interval="soon")) == (
        400,
        {"Errors": ["The value 'soon' is not valid for interval."]},
    )


def test_max_returned_items_per_call(mock_pi: MockServer) -> None:
    good = KINDS["TI"].webid
    too_many = {"Errors": ["Parameter 'maxCount' is greater than the maximum allowed (150000)."]}
    assert get(url(mock_pi.url, f"/streams/{good}/recorded", maxCount=150_001)) == (400, too_many)
    pair = [good, KINDS["FI"].webid]
    assert get(url(mock_pi.url, "/streamsets/recorded", webId=pair, maxCount=75_001)) == (
        400,
        too_many,
    )
    status, _ = get(
        url(
            mock_pi.url,
            "/streamsets/recorded",
            webId=pair,
            maxCount=75_000,
            startTime=iso(START),
            endTime=iso(END),
        )
    )
    assert status == 200
    assert get(
        url(mock_pi.url, "/streamsets/interpolated", webId=pair, startTime="*-2d", interval="1s")
    ) == (400, {"Errors": ["Parameter 'interval' is greater than the maximum allowed (150000)."]})


def test_gzip_when_accepted(mock_pi: MockServer) -> None:
    target = url(
        mock_pi.url,
        "/streamsets/recorded",
        webId=[p.webid for p in POINTS],
        startTime=iso(START),
        endTime=iso(END),
    )
    _, plain, plain_headers = get_raw(target)
    status, packed, headers = get_raw(target, {"Accept-Encoding": "gzip"})
    assert status == 200
    assert headers["Content-Encoding"] == "gzip"
    assert "Content-Encoding" not in plain_headers
    assert packed == plain
    assert gzip.compress(plain) != plain


def test_same_seed_same_bodies_other_seed_differs(
    mock_pi: MockServer, mock_pi_factory: Callable[..., MockServer]
) -> None:
    twin = mock_pi_factory(tag_count=1000, seed=42, rate_limit=0, clock_start=FIXED_NOW)
    other = mock_pi_factory(tag_count=1000, seed=7, rate_limit=0, clock_start=FIXED_NOW)
    webids = [CATALOG.point(i).webid for i in range(20)]
    other_ids = [Catalog(7, 1000).point(i).webid for i in range(20)]
    query = {"startTime": iso(START), "endTime": iso(END), "selectedFields": "Items.Items"}
    a = get_raw(url(mock_pi.url, "/streamsets/recorded", webId=webids, **query))[1]
    b = get_raw(url(twin.url, "/streamsets/recorded", webId=webids, **query))[1]
    c = get_raw(url(other.url, "/streamsets/recorded", webId=other_ids, **query))[1]
    assert a == b
    assert len(a) > 10_000
    assert a != c
