"""mock-pi point attributes, enumeration sets and points that change over time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web

from mock_pi import point_attributes as pa
from mock_pi import point_changes as pc
from mock_pi.app import STATE, create_app
from mock_pi.catalog import Catalog
from mock_pi.settings import MockSettings
from tests.conftest import MockServer
from tests.mock_pi import get, url
from tests.spec import validate_response

DAY = 86_400.0
# The mock's clock in the change tests: a fixed moment, so the archive starts at a known time.
T0 = 1_780_000_000.0  # 2026-05-28T20:26:40Z
HISTORY_START = (T0 // DAY) * DAY - 30 * DAY
PERIOD = 3_600.0


def server_webid(mock_pi: MockServer) -> str:
    return get(mock_pi.url + "/dataservers")[1]["Items"][0]["WebId"]


def test_point_attributes_match_the_spec_and_the_point(mock_pi: MockServer) -> None:
    catalog = Catalog(42, 1000)
    for index in range(12):
        point = catalog.point(index)
        status, body = get(f"{mock_pi.url}/points/{point.webid}/attributes")
        assert status == 200
        validate_response(body, "/points/{webId}/attributes")
        found = {item["Name"]: item["Value"] for item in body["Items"]}
        _, served = get(f"{mock_pi.url}/points/{point.webid}")
        assert found["tag"] == served["Name"] == point.name
        assert found["descriptor"] == served["Descriptor"]
        assert found["engunits"] == served["EngineeringUnits"]
        assert found["pointtype"] == served["PointType"]
        assert found["ptclassname"] == served["PointClass"]
        assert found["digitalset"] == served["DigitalSetName"]
        assert found["zero"] == served["Zero"]
        assert found["span"] == served["Span"]
        assert bool(found["step"]) is served["Step"]
        assert found["future"] is served["Future"] is False
        assert found["pointid"] == served["Id"]
        assert found["compressing"] in (0, 1)
        assert found["pointsource"] in ("OPC", "L", "R")
        first = body["Items"][0]
        assert first["Links"] == {
            "Self": f"{mock_pi.url}/points/{point.webid}/attributes/tag",
            "Point": f"{mock_pi.url}/points/{point.webid}",
        }


def test_attributes_by_name_filter_and_one_by_one(mock_pi: MockServer) -> None:
    point = Catalog(42, 1000).point(3)
    base = f"{mock_pi.url}/points/{point.webid}/attributes"
    _, chosen = get(url(base, "", name=["Span", "zero", "pointsource"]))
    assert [i["Name"] for i in chosen["Items"]] == ["span", "zero", "pointsource"]
    _, filtered = get(url(base, "", nameFilter="comp*", selectedFields="Items.Name"))
    assert filtered["Items"] == [
        {"Name": n} for n in ("compressing", "compdev", "compdevpercent", "compmin", "compmax")
    ]
    status, one = get(f"{base}/EngUnits")
    assert status == 200
    validate_response(one, "/points/{webId}/attributes/{name}")
    assert (one["Name"], one["Value"]) == ("engunits", point.units)
    assert get(url(base, "", name=["span", "nosuch"])) == (
        400,
        {"Errors": ["Some or all of the point attribute names could not be found."]},
    )
    assert get(f"{base}/nosuch")[0] == 404
    assert get(f"{mock_pi.url}/points/F1DPnope/attributes")[0] == 404


def test_zero_and_span_bound_the_values_served(mock_pi: MockServer) -> None:
    catalog = Catalog(42, 1000)
    numeric = [p for p in (catalog.point(i) for i in range(60)) if p.kind.span > 0][:10]
    for point in numeric:
        _, attrs = get(url(f"{mock_pi.url}/points/{point.webid}/attributes", "",
                           name=["zero", "span"]))  # fmt: skip
        zero, span = (i["Value"] for i in attrs["Items"])
        _, values = get(url(f"{mock_pi.url}/streams/{point.webid}/recorded", "",
                            startTime="*-2h", endTime="*"))  # fmt: skip
        numbers = [v["Value"] for v in values["Items"] if isinstance(v["Value"], int | float)]
        assert numbers, point.name
        assert all(zero <= v <= zero + span for v in numbers), point.name


def test_enumeration_sets_and_values(mock_pi: MockServer) -> None:
    ds = server_webid(mock_pi)
    status, body = get(f"{mock_pi.url}/dataservers/{ds}/enumerationsets")
    assert status == 200
    validate_response(body, "/dataservers/{webId}/enumerationsets")
    names = [s["Name"] for s in body["Items"]]
    assert names == ["Valve", "Motor", "Modes", "SYSTEM"]
    served: dict[str, list[tuple[str, int]]] = {}
    for es in body["Items"]:
        status, one = get(es["Links"]["Self"])
        assert status == 200
        validate_response(one, "/enumerationsets/{webId}")
        assert one == es
        status, values = get(es["Links"]["Values"])
        assert status == 200
        validate_response(values, "/enumerationsets/{webId}/enumerationvalues")
        served[es["Name"]] = [(v["Name"], v["Value"]) for v in values["Items"]]
        status, value = get(values["Items"][0]["Links"]["Self"])
        assert status == 200
        validate_response(value, "/enumerationvalues/{webId}")
    assert served["Valve"] == [("Closed", 0), ("Open", 1), ("Transit", 2), ("Fault", 3)]
    assert served["Motor"] == [("Stopped", 0), ("Running", 1), ("Tripped", 2)]
    assert served["SYSTEM"] == sorted(pa.SYSTEM_STATES.items(), key=lambda s: s[1])
    assert ("I/O Timeout", 246) in served["SYSTEM"]
    assert get(f"{mock_pi.url}/enumerationsets/F1DEnope")[0] == 404
    assert get(f"{mock_pi.url}/dataservers/F1DSnope/enumerationsets")[0] == 404


# ----- points that change over time (an in-process mock-pi on loopback, its clock fixed) ----
class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
async def changing() -> AsyncIterator[tuple[str, Clock, web.Application]]:
    clock = Clock(T0)
    settings = MockSettings(tag_count=300, point_changes=1.0, point_change_seconds=PERIOD,
                            rate_limit=0)  # fmt: skip
    app = create_app(settings, clock)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/piwebapi", clock, app
    await runner.cleanup()


async def fetch(session: aiohttp.ClientSession, target: str, **params: Any) -> tuple[int, Any]:
    async with session.get(url(target, "", **params)) as resp:
        return resp.status, await resp.json()


def points_named(points: dict[int, dict[str, Any]], name: str) -> list[int]:
    return [pid for pid, p in points.items() if p["Name"] == name]


def first_of(changes: pc.PointChanges, kind: int) -> int:
    """The first point with this kind of change (and with units, which some changes switch)."""
    found = np.flatnonzero(changes.kinds(np.arange(300)) == kind)
    return next(int(i) for i in found if changes.catalog.point(int(i)).units)


async def test_points_change_at_deterministic_times(
    changing: tuple[str, Clock, web.Application],
) -> None:
    base, clock, app = changing
    changes = app[STATE].changes
    assert changes.anchor == HISTORY_START
    rename, units, recreate = (first_of(changes, k) for k in (pc.RENAME, pc.UNITS, pc.RECREATE))
    catalog = app[STATE].catalog
    async with aiohttp.ClientSession() as session:
        _, servers = await fetch(session, base + "/dataservers")
        ds = servers["Items"][0]["WebId"]

        async def listed() -> dict[int, dict[str, Any]]:
            _, body = await fetch(session, f"{base}/dataservers/{ds}/points", maxCount=1000)
            validate_response(body, "/dataservers/{webId}/points")
            return {item["Id"]: item for item in body["Items"]}

        async def attrs(webid: str) -> tuple[int, dict[str, Any]]:
            status, body = await fetch(session, f"{base}/points/{webid}/attributes")
            items = body.get("Items") or []
            return status, {i["Name"]: i["Value"] for i in items}

        # Before any change: the catalog's points, created and changed before the archive.
        clock.t = HISTORY_START
        points = await listed()
        assert len(points) == 300
        for index in (rename, units, recreate):
            point = catalog.point(index)
            _, found = await attrs(point.webid)
            assert found["tag"] == point.name
            assert pa.iso(changes.version(index, clock.t).changed_at) == found["changedate"]
            assert found["changedate"] < "2026"

        # After each point's first change.
        clock.t = HISTORY_START + 2 * PERIOD - 1
        t1 = {i: changes.change_time(i, 1) for i in (rename, units, recreate)}
        assert all(HISTORY_START < t < clock.t for t in t1.values())
        old = catalog.point(rename)
        _, found = await attrs(old.webid)
        assert found["tag"] == f"{old.kind.prefix}-{rename:07d}_R1.PV"
        assert found["changedate"] == pa.iso(t1[rename])
        status, by_path = await fetch(session, f"{base}/points",
                                      path=f"\\\\MOCKPI01\\{found['tag']}")  # fmt: skip
        assert status == 200
        assert by_path["WebId"] != old.webid  # the WebID holds the path
        assert by_path["WebId"][:32] == old.webid[:32]
        assert by_path["Id"] == old.point_id
        assert points_named(await listed(), found["tag"]) == [old.point_id]
        _, found = await attrs(catalog.point(units).webid)
        assert found["engunits"] == pc.ALT_UNITS[catalog.point(units).units]
        assert found["changedate"] == pa.iso(t1[units])
        gone = catalog.point(recreate)
        status, _ = await attrs(gone.webid)
        assert status == 404
        points = await listed()
        assert len(points) == 300 - int(np.sum(~changes.alive(np.arange(300), clock.t)))
        assert gone.point_id not in points
        assert points[units + 1]["EngineeringUnits"] == pc.ALT_UNITS[catalog.point(units).units]

        # After the second change: renamed again, units back, re-created as a new point.
        clock.t = HISTORY_START + 3 * PERIOD - 1
        _, found = await attrs(old.webid)
        assert found["tag"].endswith("_R2.PV")
        _, found = await attrs(catalog.point(units).webid)
        assert found["engunits"] == catalog.point(units).units
        assert (await attrs(gone.webid))[0] == 404
        again = changes.current(recreate, clock.t)
        assert again is not None
        assert again.point_id == gone.point_id + 300
        assert again.name == gone.name
        status, found = await attrs(again.webid)
        assert status == 200
        assert found["pointid"] == again.point_id
        assert (
            found["creationdate"] == found["changedate"] == pa.iso(changes.change_time(recreate, 2))
        )
        assert again.point_id in await listed()
        status, _ = await fetch(session, f"{base}/streams/{again.webid}/end")
        assert status == 200
