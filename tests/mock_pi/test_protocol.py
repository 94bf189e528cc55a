"""mock-pi answers limits, auth and CSRF as a PI Web API server does, over real HTTP."""

from __future__ import annotations

import base64
import http.client
import json
import time
import urllib.parse
from typing import Any

CSRF_TEXT = (
    "The request is missing the X-Requested-With header, which is required for POST, PUT, "
    "PATCH and DELETE requests while CSRF defense is enabled."
)
UNAUTHORIZED = {"Errors": ["Authorization has been denied for this request."]}
XRW = {"X-Requested-With": "XMLHttpRequest"}


def call(
    method: str,
    url: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    chunked: bool = False,
) -> tuple[int, dict[str, str], Any]:
    """One request on a fresh connection: status, headers, JSON body (or raw bytes)."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    try:
        if chunked:
            conn.request(
                method,
                target,
                body=iter([body or b""]),
                headers=headers or {},
                encode_chunked=True,
            )
        else:
            conn.request(method, target, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        found = dict(resp.headers.items())
    finally:
        conn.close()
    if data and resp.headers.get_content_type() == "application/json":
        return resp.status, found, json.loads(data)
    return resp.status, found, data


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def test_csrf_refuses_unsafe_methods_without_the_header(mock_pi_factory) -> None:
    server = mock_pi_factory(tag_count=10, rate_limit=0)
    batch = json.dumps({"1": {"Method": "GET", "Resource": "dataservers"}}).encode()
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        status, _, body = call(method, server.url + "/batch", batch)
        assert (status, body) == (403, {"Errors": [CSRF_TEXT]}), method
    status, _, body = call("POST", server.url + "/batch", batch, XRW)
    assert status == 207
    assert body["1"]["Status"] == 200
    assert call("GET", server.url + "/dataservers")[0] == 200


def test_limits_on_url_and_body_and_pi_shaped_router_errors(mock_pi_factory) -> None:
    server = mock_pi_factory(tag_count=10, rate_limit=0, max_body_bytes=2048)
    path = "/piwebapi/dataservers?selectedFields=Items.Name&pad="
    at_limit = path + "x" * (16_384 - len(path))
    status, _, body = call("GET", f"http://127.0.0.1:{server.port}{at_limit}")
    assert status == 200
    assert body == {"Items": [{"Name": "MOCKPI01"}]}
    status, _, body = call("GET", f"http://127.0.0.1:{server.port}{at_limit}y")
    assert status == 414
    assert body == {
        "Errors": ["The request URL exceeds the maximum allowed length of 16384 bytes."]
    }

    too_big = {"Errors": ["The request body exceeds the maximum allowed size of 2048 bytes."]}
    request = json.dumps({"1": {"Method": "GET", "Resource": "dataservers"}}).encode()
    fits = request + b" " * (2048 - len(request))
    assert call("POST", server.url + "/batch", fits, XRW)[0] == 207
    assert call("POST", server.url + "/batch", fits + b" ", XRW)[::2] == (413, too_big)
    chunked = call("POST", server.url + "/batch", fits + b" " * 500, XRW, chunked=True)
    assert chunked[::2] == (413, too_big)

    status, _, body = call("GET", server.url + "/nothing/here")
    assert status == 404
    uri = f"http://127.0.0.1:{server.port}/piwebapi/nothing/here"
    assert body == {"Errors": [f"No HTTP resource was found that matches the request URI '{uri}'."]}
    status, headers, body = call("POST", server.url + "/dataservers", b"", XRW)
    assert status == 405
    assert body == {"Errors": ["The requested resource does not support http method 'POST'."]}
    assert "GET" in headers["Allow"]


def test_rate_limit_counts_requests_per_second_per_client(mock_pi_factory) -> None:
    server = mock_pi_factory(tag_count=10, rate_limit=5)
    statuses = [call("GET", server.url + "/dataservers")[0] for _ in range(5)]
    assert statuses == [200] * 5
    status, headers, body = call("GET", server.url + "/dataservers")
    assert (status, headers["Retry-After"], body) == (
        429,
        "1",
        {"Errors": ["Rate limit was reached"]},
    )
    assert call("GET", server.url + "/mock/faults")[0] == 200  # test endpoints are exempt
    time.sleep(1.05)
    assert call("GET", server.url + "/dataservers")[0] == 200


def test_basic_auth(mock_pi_factory) -> None:
    server = mock_pi_factory(
        tag_count=10, rate_limit=0, auth="basic", username="alice", password="s3cret-pw"
    )
    url = server.url + "/dataservers"
    for headers in (
        {},
        basic("alice", "wrong"),
        basic("bob", "s3cret-pw"),
        {"Authorization": "Basic !!!not-base64"},
        {"Authorization": "Bearer s3cret-pw"},
    ):
        status, found, body = call("GET", url, headers=headers)
        assert (status, found["WWW-Authenticate"], body) == (
            401,
            'Basic realm="PI Web API"',
            UNAUTHORIZED,
        ), headers
    assert call("GET", url, headers=basic("alice", "s3cret-pw"))[0] == 200
    # Authentication comes before the CSRF check, as in PI.
    assert call("POST", server.url + "/batch", b"{}")[0] == 401
    assert call("GET", server.url + "/mock/faults")[0] == 200
    server.stop()
    log = server.process.stderr.read().decode() if server.process.stderr else ""
    assert "s3cret-pw" not in log


def test_bearer_auth_and_csrf_off(mock_pi_factory) -> None:
    server = mock_pi_factory(tag_count=10, rate_limit=0, auth="bearer", token="tok-123", csrf=False)
    url = server.url + "/dataservers"
    for headers in ({}, {"Authorization": "Bearer nope"}, basic("pi", "tok-123")):
        status, found, body = call("GET", url, headers=headers)
        assert (status, found["WWW-Authenticate"], body) == (401, "Bearer", UNAUTHORIZED)
    good = {"Authorization": "Bearer tok-123"}
    assert call("GET", url, headers=good)[0] == 200
    batch = json.dumps({"1": {"Method": "GET", "Resource": "dataservers"}}).encode()
    assert call("POST", server.url + "/batch", batch, good)[0] == 207
