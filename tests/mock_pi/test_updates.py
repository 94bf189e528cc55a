"""Stream updates over HTTP: register, retrieve exactly the arrivals, chain, expire, re-register."""

from __future__ import annotations

import struct
import time
from typing import Any

from mock_pi.settings import MockSettings
from mock_pi.truth import GroundTruth
from tests.conftest import SimClock, get_json
from tests.mock_pi.test_protocol import XRW, call
from tests.spec import validate_response

SETTINGS = {
    "tag_count": 50,
    "seed": 42,
    "late_fraction": 1.0,
    "late_seconds": 1.0,
    "marker_retention": 3.0,
}


def issued_ticks(marker: str) -> int:
    """The issue instant inside a marker (documented in mock_pi/routes_updates.py)."""
    return struct.unpack("<Iq", bytes.fromhex(marker.split("_")[0])[:12])[1]


def retrieve(server: Any, markers: list[str]) -> dict[str, Any]:
    query = "&".join(f"marker={m}" for m in markers)
    status, _, body = call("GET", f"{server.url}/streamsets/updates?{query}")
    assert status == 200
    validate_response(body, "/streamsets/updates")
    return body


def register(server: Any, web_ids: list[str]) -> tuple[dict[str, str], dict[str, Any]]:
    query = "&".join(f"webId={w}" for w in web_ids)
    status, headers, body = call("POST", f"{server.url}/streamsets/updates?{query}", b"", XRW)
    assert status == 200
    validate_response(body, "/streamsets/updates", "post")
    return headers, body


def expected_events(truth: GroundTruth, web_id: str, after: int, upto: int) -> list[dict]:
    return truth.updates(web_id, after, upto)


def check_window(truth: GroundTruth, sent: list[str], body: dict[str, Any], n: int) -> int:
    """Each item holds exactly the values that arrived between its two markers."""
    events = 0
    for marker, item in zip(sent, body["Items"], strict=True):
        assert item["RequestedMarker"] == marker
        assert item["Status"] == "Updated"
        assert item["LatestMarker"].endswith(f"_{n}")
        after, upto = issued_ticks(marker), issued_ticks(item["LatestMarker"])
        assert upto > after
        assert item["Events"] == expected_events(truth, item["Source"], after, upto)
        events += len(item["Events"])
    return events


def test_register_retrieve_chain_expire_and_register_again(mock_pi_factory) -> None:
    clock = SimClock.start()
    server = mock_pi_factory(clock=clock, rate_limit=0, **SETTINGS)
    truth = GroundTruth(MockSettings(**SETTINGS), clock=clock.time)
    server_id = get_json(server.url + "/dataservers")[1]["Items"][0]["WebId"]
    points = get_json(f"{server.url}/dataservers/{server_id}/points?maxCount=50")[1]["Items"]
    web_ids = [p["WebId"] for p in points]

    headers, reg = register(server, [*web_ids, "F1DPunknown"])
    *ok, unknown = reg["Items"]
    assert unknown == {
        "Source": "F1DPunknown",
        "Status": "Failed",
        "Exception": {
            "Errors": ["The WebID 'F1DPunknown' does not identify a PI point on this server."]
        },
    }
    for point, item in zip(points, ok, strict=True):
        assert item["Source"] == point["WebId"]
        assert (item["SourceName"], item["SourcePath"]) == (point["Name"], point["Path"])
        assert item["Status"] == "Succeeded"
        assert item["LatestMarker"].endswith("_0")
    first = [item["LatestMarker"] for item in ok]
    query = "&".join(f"marker={m}" for m in first)
    assert headers["Location"] == f"{server.url}/streamsets/updates?{query}"

    time.sleep(1.2)
    got = retrieve(server, first)
    total = check_window(truth, first, got, 1)
    # A marker is a position: read again later, it returns what it returned, what happened
    # since, and a marker of the new now.
    time.sleep(0.3)
    again = retrieve(server, first)
    assert check_window(truth, first, again, 1) >= total
    for before, after in zip(got["Items"], again["Items"], strict=True):
        assert after["Events"][: len(before["Events"])] == before["Events"]
        assert issued_ticks(after["LatestMarker"]) > issued_ticks(before["LatestMarker"])

    second = [item["LatestMarker"] for item in got["Items"]]
    time.sleep(1.2)
    total += check_window(truth, second, retrieve(server, second), 2)
    assert total > 0

    time.sleep(max(0.0, 3.3 - (clock.time() - issued_ticks(first[0]) / 1e7)))
    expired = retrieve(server, [first[0], "abc_1"])["Items"]
    assert expired == [
        {
            "Source": points[0]["WebId"],
            "SourceName": points[0]["Name"],
            "SourcePath": points[0]["Path"],
            "RequestedMarker": first[0],
            "Status": "Failed",
            "Exception": {
                "Errors": [f"The marker '{first[0]}' has expired. Register for updates again."]
            },
        },
        {
            "RequestedMarker": "abc_1",
            "Status": "Failed",
            "Exception": {
                "Errors": ["The marker 'abc_1' is not valid. Register for updates again."]
            },
        },
    ]

    _, again = register(server, web_ids[:3])
    fresh = [item["LatestMarker"] for item in again["Items"]]
    time.sleep(0.3)
    check_window(truth, fresh, retrieve(server, fresh), 1)


def test_parameters_are_required(mock_pi) -> None:
    status, _, body = call("POST", mock_pi.url + "/streamsets/updates", b"", XRW)
    assert (status, body) == (400, {"Errors": ["The 'webId' parameter is required."]})
    status, _, body = call("GET", mock_pi.url + "/streamsets/updates")
    assert (status, body) == (400, {"Errors": ["The 'marker' parameter is required."]})
