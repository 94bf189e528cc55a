"""mock-pi landing page, data servers and points: shapes, links, paging, filters, errors."""

from __future__ import annotations

import re

from mock_pi.catalog import Catalog
from tests.conftest import MockServer
from tests.mock_pi import get, url
from tests.spec import validate_response


def server_webid(mock_pi: MockServer) -> str:
    return get(mock_pi.url + "/dataservers")[1]["Items"][0]["WebId"]


def test_landing_links_are_absolute_on_the_request_host(mock_pi: MockServer) -> None:
    status, body = get(mock_pi.url + "/")
    assert status == 200
    validate_response(body, "/")
    assert body["Links"]["Self"] == mock_pi.url + "/"
    assert body["Links"]["DataServers"] == mock_pi.url + "/dataservers"
    assert set(body["Links"]) == {"Self", "AssetServers", "DataServers", "Search", "System"}


def test_dataservers_list_and_item(mock_pi: MockServer) -> None:
    status, body = get(mock_pi.url + "/dataservers")
    assert status == 200
    validate_response(body, "/dataservers")
    (server,) = body["Items"]
    assert server["Name"] == "MOCKPI01"
    assert server["Path"] == "\\\\MOCKPI01"
    assert server["IsConnected"] is True
    assert server["WebId"].startswith("F1DS")
    assert server["Links"]["Points"] == f"{mock_pi.url}/dataservers/{server['WebId']}/points"
    status, one = get(server["Links"]["Self"])
    assert status == 200
    validate_response(one, "/dataservers/{webId}")
    assert one == server


def test_points_page_shape_and_paging(mock_pi: MockServer) -> None:
    ds = server_webid(mock_pi)
    status, body = get(url(mock_pi.url, f"/dataservers/{ds}/points", maxCount=5, startIndex=3))
    assert status == 200
    validate_response(body, "/dataservers/{webId}/points")
    catalog = Catalog(42, 1000)
    assert [p["Name"] for p in body["Items"]] == [catalog.point(i).name for i in range(3, 8)]
    first = body["Items"][0]
    point = catalog.point(3)
    assert first["WebId"] == point.webid
    assert first["Id"] == point.point_id
    assert first["Path"] == f"\\\\MOCKPI01\\{point.name}"
    assert first["PointClass"] == "classic"
    assert first["PointType"] == point.point_type
    assert first["EngineeringUnits"] == point.units
    assert first["Future"] is False
    assert first["Links"]["RecordedData"] == f"{mock_pi.url}/streams/{point.webid}/recorded"
    status, default = get(url(mock_pi.url, f"/dataservers/{ds}/points"))
    assert len(default["Items"]) == 1000


def test_points_name_filter_is_case_insensitive_with_wildcards(mock_pi: MockServer) -> None:
    ds = server_webid(mock_pi)
    _, body = get(url(mock_pi.url, f"/dataservers/{ds}/points", nameFilter="ti-00000?0.pv"))
    names = [p["Name"] for p in body["Items"]]
    assert names
    assert all(re.fullmatch(r"TI-00000\d0\.PV", n) for n in names)
    expected = [p.name for p in Catalog(42, 1000).matching("TI-00000?0.PV")]
    assert names == expected
    _, none = get(url(mock_pi.url, f"/dataservers/{ds}/points", nameFilter="NOPE*"))
    assert none["Items"] == []


def test_points_selected_fields_prune_exactly(mock_pi: MockServer) -> None:
    ds = server_webid(mock_pi)
    _, body = get(
        url(
            mock_pi.url,
            f"/dataservers/{ds}/points",
            maxCount=3,
            selectedFields="Items.WebId;items.name;Items.Links.Self",
        )
    )
    assert set(body) == {"Items"}
    for item in body["Items"]:
        assert set(item) == {"WebId", "Name", "Links"}
        assert set(item["Links"]) == {"Self"}


def test_point_by_webid_and_by_path(mock_pi: MockServer) -> None:
    point = Catalog(42, 1000).point(17)
    status, by_id = get(f"{mock_pi.url}/points/{point.webid}")
    assert status == 200
    validate_response(by_id, "/points/{webId}")
    status, by_path = get(url(mock_pi.url, "/points", path=f"\\\\MOCKPI01\\{point.name.lower()}"))
    assert status == 200
    validate_response(by_path, "/points")
    assert by_path == by_id
    assert by_id["Name"] == point.name


def test_unknown_webids_and_paths_answer_like_pi(mock_pi: MockServer) -> None:
    assert get(f"{mock_pi.url}/points/garbage") == (
        404,
        {"Errors": ["Unknown or invalid WebID format: 'garbage'."]},
    )
    ds = server_webid(mock_pi)
    missing = Catalog(42, 5000).point(4000).webid  # same server, a point this one lacks
    assert get(f"{mock_pi.url}/points/{missing}") == (
        404,
        {"Errors": ["The specified point was not found."]},
    )
    assert get(f"{mock_pi.url}/dataservers/F1DSnope/points")[0] == 404
    status, body = get(url(mock_pi.url, "/points", path="\\\\MOCKPI01\\NOPE"))
    assert (status, body) == (404, {"Errors": ["PI Point not found '\\\\MOCKPI01\\NOPE'."]})
    status, body = get(url(mock_pi.url, f"/dataservers/{ds}/points", maxCount="x"))
    assert (status, body) == (400, {"Errors": ["The value 'x' is not valid for maxCount."]})
