"""`POST /piwebapi/batch` over HTTP: sub-requests answer exactly what direct calls answer."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from tests.conftest import FIXED_NOW, get_json
from tests.mock_pi.test_protocol import XRW, call
from tests.spec import validate_response

BODY_INVALID = "The batch request must be a JSON object of requests keyed by request ID."


def batch(server: Any, requests: Any) -> tuple[int, Any]:
    body = requests if isinstance(requests, bytes) else json.dumps(requests).encode()
    status, _, answer = call("POST", server.url + "/batch", body, XRW)
    return status, answer


def window() -> tuple[str, str]:
    """A closed two-minute window the day before FIXED_NOW: its values no longer change."""
    start = FIXED_NOW.replace(hour=0)
    start -= timedelta(hours=10)
    end = start + timedelta(minutes=2)
    return start.strftime("%Y-%m-%dT%H:%M:%SZ"), end.strftime("%Y-%m-%dT%H:%M:%SZ")


def direct(server: Any, resource: str) -> tuple[int, Any]:
    return get_json(f"{server.url}/{resource}")


def test_template_and_parameters_over_a_parent_listing(mock_pi) -> None:
    start, end = window()
    recorded = f"streams/{{0}}/recorded?startTime={start}&endTime={end}&maxCount=50"
    status, answer = batch(
        mock_pi,
        {
            "servers": {"Method": "GET", "Resource": f"{mock_pi.url}/dataservers"},
            "points": {
                "Method": "GET",
                "Resource": "{0}?maxCount=4",
                "Parameters": ["$.servers.Content.Items[0].Links.Points"],
                "ParentIds": ["servers"],
            },
            "recorded": {
                "Method": "GET",
                "RequestTemplate": {"Resource": recorded},
                "Parameters": ["$.points.Content.Items[*].WebId"],
                "ParentIds": ["points"],
            },
            "values": {
                "Method": "GET",
                "Resource": f"streamsets/value?webId={{0}}&time={end}",
                "Parameters": ["$.points.Content.Items[*].WebId"],
                "ParentIds": ["points"],
            },
            "first": {
                "Method": "GET",
                "Resource": "$.points.Content.Items[0].Links.Self",
                "ParentIds": ["points"],
            },
        },
    )
    assert status == 207
    validate_response(answer, "/batch", "post", 207)
    assert list(answer) == ["servers", "points", "recorded", "values", "first"]

    server_id = answer["servers"]["Content"]["Items"][0]["WebId"]
    points = direct(mock_pi, f"dataservers/{server_id}/points?maxCount=4")
    assert answer["points"]["Status"] == 200
    assert answer["points"]["Content"] == points[1]
    assert answer["points"]["Headers"] == {"Content-Type": "application/json; charset=utf-8"}
    web_ids = [p["WebId"] for p in points[1]["Items"]]

    outer = answer["recorded"]
    assert (outer["Status"], outer["Headers"]) == (207, {})
    assert len(outer["Content"]["Items"]) == 4
    for web_id, item in zip(web_ids, outer["Content"]["Items"], strict=True):
        expected = direct(mock_pi, recorded.replace("{0}", web_id))
        assert (item["Status"], item["Content"]) == expected
        validate_response(item["Content"], "/streams/{webId}/recorded")
    assert any(item["Content"]["Items"] for item in outer["Content"]["Items"])

    query = "&".join(f"webId={w}" for w in web_ids)
    assert answer["values"]["Content"] == direct(mock_pi, f"streamsets/value?{query}&time={end}")[1]
    assert answer["first"]["Content"] == direct(mock_pi, f"points/{web_ids[0]}")[1]


def test_partial_failure_and_failed_parents(mock_pi) -> None:
    good_id = get_json(mock_pi.url + "/points?path=\\\\MOCKPI01\\TI-0000000.PV")[1]["WebId"]
    status, answer = batch(
        mock_pi,
        {
            "good": {"Method": "GET", "Resource": f"points/{good_id}"},
            "bad": {"Method": "GET", "Resource": "points/F1DPnotaPoint"},
            "child": {
                "Method": "GET",
                "Resource": "streams/{0}/value",
                "Parameters": ["$.bad.Content.WebId"],
                "ParentIds": ["bad"],
            },
            "grandchild": {"Method": "GET", "Resource": "dataservers", "ParentIds": ["child"]},
            "empty": {
                "Method": "GET",
                "Resource": "points/{0}",
                "Parameters": ["$.good.Content.NoSuchField"],
                "ParentIds": ["good"],
            },
        },
    )
    assert status == 207
    validate_response(answer, "/batch", "post", 207)
    assert (answer["good"]["Status"], answer["good"]["Content"]) == direct(
        mock_pi, f"points/{good_id}"
    )
    assert (answer["bad"]["Status"], answer["bad"]["Content"]) == direct(
        mock_pi, "points/F1DPnotaPoint"
    )
    assert answer["bad"]["Status"] == 404
    failed = "The following ParentIds did not complete successfully: {}."
    assert answer["child"]["Status"] == 409
    assert answer["child"]["Content"] == {"Errors": [failed.format("bad")]}
    assert answer["grandchild"]["Status"] == 409
    assert answer["grandchild"]["Content"] == {"Errors": [failed.format("child")]}
    assert answer["empty"]["Status"] == 400
    assert answer["empty"]["Content"] == {
        "Errors": ["The JsonPath '$.good.Content.NoSuchField' selects no token."]
    }


def test_content_is_delivered_to_a_post_sub_request(mock_pi) -> None:
    inner = json.dumps({"in": {"Method": "GET", "Resource": "dataservers"}})
    status, answer = batch(
        mock_pi, {"outer": {"Method": "POST", "Resource": "batch", "Content": inner}}
    )
    assert status == 207
    assert answer["outer"]["Status"] == 207
    assert answer["outer"]["Content"]["in"]["Content"] == direct(mock_pi, "dataservers")[1]


GET = {"Method": "GET", "Resource": "dataservers"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", BODY_INVALID),
        (b"[]", BODY_INVALID),
        (b"{}", BODY_INVALID),
        (b"", BODY_INVALID),
        ({"a": 5}, "Request 'a' must be a JSON object."),
        ({"a": {"Resource": "x"}}, "Request 'a' needs a Method: GET, POST, PUT, PATCH or DELETE."),
        ({"a": {"Method": "GET"}}, "Request 'a' needs either a Resource or a RequestTemplate."),
        (
            {"a": {**GET, "Content": {"Name": "x"}}},
            "Request 'a': Content must be a string.",
        ),
        ({"a": {**GET, "Headers": ["x"]}}, "Request 'a': Headers must be an object of strings."),
        ({"a": {**GET, "ParentIds": "b"}}, "Request 'a': ParentIds must be a list of strings."),
        ({"a": {**GET, "ParentIds": ["zz"]}}, "Request 'a' names an unknown parent 'zz'."),
        (
            {"a": {**GET, "ParentIds": ["b"]}, "b": {**GET, "ParentIds": ["a"]}},
            "The ParentIds of requests a, b form a cycle.",
        ),
        (
            {"a": GET, "b": {**GET, "Resource": "points/{0}", "Parameters": ["$.a.Content.WebId"]}},
            "Request 'b': '$.a.Content.WebId' refers to 'a', which is not in its ParentIds.",
        ),
        (
            {"a": GET, "b": {**GET, "Parameters": ["a.Content"], "ParentIds": ["a"]}},
            "Request 'b': 'a.Content' is not a supported JsonPath.",
        ),
        (
            {"a": {"Method": "GET", "RequestTemplate": {"Resource": "points/{0}"}}},
            "Request 'a': a RequestTemplate needs Parameters.",
        ),
    ],
)
def test_malformed_batches_are_refused_whole(mock_pi, body: Any, message: str) -> None:
    assert batch(mock_pi, body) == (400, {"Errors": [message]})
