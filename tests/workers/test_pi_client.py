"""The PI client against the real mock-pi over HTTP: retries, limits, errors, TLS, batch."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import random
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from mock_pi.faults import FaultInjector
from tests.conftest import MockServer, free_port, get_json
from workers.errors import AuthError, PIConnectionError, PIWebAPIError, redact_url
from workers.pi.client import BACKOFF_BASE, BACKOFF_CAP, PIClient, backoff_delay
from workers.pi.replies import batch_content, parse_retry_after, retry_closure
from workers.settings import Settings

POINT_FIELDS = "Items.WebId;Items.Name;Items.PointType;Items.Descriptor"


class Recorder:
    """A RequestObserver that keeps what it saw."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, float, float]] = []
        self.retries: Counter[str] = Counter()

    def on_request(self, endpoint: str, status: str, seconds: float) -> None:
        self.requests.append((endpoint, status, seconds, time.monotonic()))

    def on_retry(self, reason: str) -> None:
        self.retries[reason] += 1


def settings_for(url: str, **overrides: Any) -> Settings:
    return Settings(pi_url=url, **overrides)


def injected(server: MockServer) -> dict[str, Any]:
    status, body = get_json(f"{server.url}/mock/faults")
    assert status == 200
    assert isinstance(body, dict)
    return body


async def server_webid(client: PIClient) -> str:
    doc = await client.get_json("dataservers", endpoint="dataservers")
    return str(doc["Items"][0]["WebId"])


def page_params(page: int, size: int = 5) -> list[tuple[str, str]]:
    return [
        ("startIndex", str(page * size)),
        ("maxCount", str(size)),
        ("selectedFields", POINT_FIELDS),
    ]


# --------------------------------------------------------------------------- pure pieces


def test_backoff_is_full_jitter_under_an_exponential_ceiling() -> None:
    rng = random.Random(5)
    for attempt in range(1, 15):
        ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1))
        delays = [backoff_delay(attempt, rng) for _ in range(400)]
        assert all(0.0 <= d <= ceiling for d in delays)
        assert max(delays) > 0.8 * ceiling
        assert min(delays) < 0.2 * ceiling


def test_retry_after_in_seconds_or_http_date() -> None:
    now = time.time()
    future = format_datetime(datetime.fromtimestamp(now, UTC) + timedelta(seconds=10), True)
    past = format_datetime(datetime.fromtimestamp(now, UTC) - timedelta(seconds=10), True)
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 0 ") == 0.0
    assert parse_retry_after("-4") == 0.0
    assert parse_retry_after(future, now) == pytest.approx(10.0, abs=1.0)
    assert parse_retry_after(past, now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_redacted_url_has_no_userinfo_and_a_bounded_query() -> None:
    url = "https://svc:Hunter2!@pi.example.com:8443/piwebapi/streamsets?" + "webId=F1DPabc&" * 500
    text = redact_url(url)
    assert "svc" not in text
    assert "Hunter2" not in text
    assert text.startswith("https://pi.example.com:8443/piwebapi/streamsets?webId=F1DPabc&")
    assert len(text) < 400
    assert "chars)" in text


def test_error_text_is_one_line() -> None:
    err = PIWebAPIError("get", "http://u:p@h/piwebapi/x", 400, ["first\nline", "second"])
    assert str(err) == "GET http://h/piwebapi/x -> HTTP 400: first line; second"
    assert "\n" not in repr(err)
    assert err.retryable is False
    assert PIWebAPIError("GET", "http://h/", 503).retryable is True


def test_batch_closure_takes_dependents_and_their_parents() -> None:
    requests: dict[str, dict[str, Any]] = {
        "root": {"Method": "GET", "Resource": "dataservers"},
        "mid": {"Method": "GET", "Resource": "x", "ParentIds": ["root"]},
        "leaf": {"Method": "GET", "Resource": "y", "ParentIds": ["mid"]},
        "other": {"Method": "GET", "Resource": "z"},
        "side": {"Method": "GET", "Resource": "w", "ParentIds": ["other", "mid"]},
    }
    assert retry_closure(requests, {"mid"}) == {"root", "mid", "leaf", "side", "other"}
    assert retry_closure(requests, {"leaf"}) == {"leaf", "mid", "root"}
    assert retry_closure(requests, {"other"}) == {"other", "side", "mid", "root"}


# --------------------------------------------------------------------------- happy path


async def test_get_json_get_bytes_and_absolute_urls(mock_pi: MockServer) -> None:
    recorder = Recorder()
    async with PIClient(settings_for(mock_pi.url), recorder) as client:
        doc = await client.get_json("dataservers", endpoint="dataservers")
        raw = await client.get_bytes("dataservers", endpoint="dataservers")
        points_link = doc["Items"][0]["Links"]["Points"]
        page = await client.get_json(points_link, [("maxCount", "3")], endpoint="points")
        with pytest.raises(ValueError, match="not under PIDELTA_PI_URL"):
            await client.get_json("http://example.com/piwebapi/x", endpoint="x")
    assert orjson.loads(raw) == doc
    assert len(page["Items"]) == 3
    assert [r[:2] for r in recorder.requests] == [
        ("dataservers", "200"),
        ("dataservers", "200"),
        ("points", "200"),
    ]
    assert not recorder.retries


# --------------------------------------------------------------------------- faults


async def test_every_fault_kind_is_retried_and_counted_exactly(
    mock_pi_factory: Callable[..., MockServer],
) -> None:
    server = mock_pi_factory(
        seed=7, tag_count=300, rate_limit=0, faults="503=0.1,429=0.1,500=0.1,reset=0.1,truncate=0.1"
    )
    recorder = Recorder()
    async with PIClient(settings_for(server.url, pi_max_attempts=20), recorder) as client:
        webid = await server_webid(client)
        path = f"dataservers/{webid}/points"
        pages = await asyncio.gather(
            *(client.get_json(path, page_params(i), endpoint="points") for i in range(40))
        )
    assert [len(p["Items"]) for p in pages] == [5] * 40
    faults = injected(server)["Injected"]
    assert faults["503"] + faults["500"] > 0
    assert faults["429"] > 0
    assert faults["reset"] > 0
    assert faults["truncate"] > 0
    assert recorder.retries == Counter(
        {
            "5xx": faults["503"] + faults["500"],
            "429": faults["429"],
            "reset": faults["reset"],
            "truncated": faults["truncate"],
        }
    )
    # Every attempt reached the server once: no hidden retries below the client.
    assert len(recorder.requests) == injected(server)["Requests"]


async def test_slow_answers_past_the_timeout_are_retried(
    mock_pi_factory: Callable[..., MockServer],
) -> None:
    server = mock_pi_factory(seed=3, tag_count=100, rate_limit=0, faults="slow=0.3")
    recorder = Recorder()
    settings = settings_for(server.url, pi_request_timeout=0.5, pi_max_attempts=10)
    async with PIClient(settings, recorder) as client:
        webid = await server_webid(client)
        path = f"dataservers/{webid}/points"
        await asyncio.gather(
            *(client.get_json(path, page_params(i), endpoint="points") for i in range(12))
        )
    slow = injected(server)["Injected"]["slow"]
    assert slow > 0
    assert recorder.retries == Counter({"timeout": slow})
    assert Counter(r[1] for r in recorder.requests)["error:timeout"] == slow


async def test_faulty_server_gives_the_same_bodies_as_a_clean_one(
    mock_pi_factory: Callable[..., MockServer],
) -> None:
    faults = "503=0.05,429=0.05,reset=0.01,slow=0.02,truncate=0.01"
    faulty = mock_pi_factory(seed=11, tag_count=500, rate_limit=0, faults=faults)
    clean = mock_pi_factory(seed=11, tag_count=500, rate_limit=0)
    bodies: dict[str, list[bytes]] = {}
    recorder = Recorder()
    for name, server in (("faulty", faulty), ("clean", clean)):
        async with PIClient(settings_for(server.url), recorder) as client:
            webid = await server_webid(client)
            path = f"dataservers/{webid}/points"
            bodies[name] = await asyncio.gather(
                *(client.get_bytes(path, page_params(i, 10), endpoint="points") for i in range(50))
            )
    assert bodies["faulty"] == bodies["clean"]
    assert sum(injected(faulty)["Injected"].values()) > 0
    assert sum(recorder.retries.values()) > 0


# --------------------------------------------------------------------------- errors


async def test_404_raises_at_once_with_the_pi_text(mock_pi: MockServer) -> None:
    recorder = Recorder()
    async with PIClient(settings_for(mock_pi.url), recorder) as client:
        with pytest.raises(PIWebAPIError) as info:
            await client.get_json("points/F1DPnope", endpoint="points")
        with pytest.raises(PIWebAPIError) as bad:
            await client.get_json(
                f"dataservers/{await server_webid(client)}/points",
                [("maxCount", "many")],
                endpoint="points",
            )
    err = info.value
    assert err.status == 404
    assert err.errors == ["Unknown or invalid WebID format: 'F1DPnope'."]
    assert err.attempts == 1
    assert not err.retryable
    assert str(err) == (
        f"GET {mock_pi.url}/points/F1DPnope -> HTTP 404: "
        "Unknown or invalid WebID format: 'F1DPnope'."
    )
    assert bad.value.status == 400
    assert bad.value.errors == ["The value 'many' is not valid for maxCount."]
    assert not recorder.retries


async def test_exhausted_retries_raise_a_typed_error_with_the_attempts(
    mock_pi_factory: Callable[..., MockServer],
) -> None:
    server = mock_pi_factory(tag_count=10, rate_limit=0, faults="503=1.0")
    recorder = Recorder()
    started = time.monotonic()
    async with PIClient(settings_for(server.url, pi_max_attempts=3), recorder) as client:
        with pytest.raises(PIWebAPIError) as info:
            await client.get_json("dataservers", endpoint="dataservers")
    assert time.monotonic() - started >= 2.0  # two waits of Retry-After: 1
    err = info.value
    assert (err.status, err.attempts, err.retryable) == (503, 3, True)
    assert err.errors == ["The service is unavailable."]
    assert "after 3 attempts" in str(err)
    assert injected(server)["Injected"]["503"] == 3
    assert recorder.retries == Counter({"5xx": 2})


async def test_retries_stop_at_the_time_budget(
    mock_pi_factory: Callable[..., MockServer],
) -> None:
    server = mock_pi_factory(tag_count=10, rate_limit=0, faults="429=1.0")
    settings = settings_for(server.url, pi_max_attempts=50, pi_max_retry_seconds=1.5)
    async with PIClient(settings) as client:
        with pytest.raises(PIWebAPIError) as info:
            await client.get_json("dataservers", endpoint="dataservers")
    assert (info.value.status, info.value.attempts) == (429, 2)


async def test_connection_resets_end_in_a_connection_error(
    mock_pi_factory: Callable[..., MockServer],
) -> None:
    server = mock_pi_factory(tag_count=10, rate_limit=0, faults="reset=1.0")
    recorder = Recorder()
    async with PIClient(settings_for(server.url, pi_max_attempts=4), recorder) as client:
        with pytest.raises(PIConnectionError) as info:
            await client.get_json("dataservers", endpoint="dataservers")
    assert (info.value.reason, info.value.attempts) == ("reset", 4)
    assert recorder.retries == Counter({"reset": 3})
    assert injected(server)["Injected"]["reset"] == 4


async def test_a_server_that_is_down_is_named_in_the_error() -> None:
    url = f"http://127.0.0.1:{free_port()}/piwebapi"
    async with PIClient(settings_for(url, pi_max_attempts=2)) as client:
        with pytest.raises(PIConnectionError) as info:
            await client.get_json("dataservers", endpoint="dataservers")
    assert (info.value.reason, info.value.attempts) == ("reset", 2)
    assert "Cannot connect to host 127.0.0.1" in str(info.value)


def _seed_with_429_first() -> int:
    """A seed whose first request meets a 429 and whose second meets nothing."""
    for seed in range(1000):
        injector = FaultInjector.from_spec(seed, "429=0.5")
        if injector.draw().terminal == "429" and injector.draw().terminal is None:
            return seed
    raise AssertionError("no seed found")


async def test_retry_after_is_honoured(mock_pi_factory: Callable[..., MockServer]) -> None:
    server = mock_pi_factory(seed=_seed_with_429_first(), tag_count=10, faults="429=0.5")
    recorder = Recorder()
    async with PIClient(settings_for(server.url), recorder) as client:
        await client.get_json("dataservers", endpoint="dataservers")
    (_, first, _, first_end), (_, second, second_seconds, second_end) = recorder.requests
    assert (first, second) == ("429", "200")
    assert (second_end - second_seconds) - first_end >= 1.0  # Retry-After: 1


async def test_throttle_keeps_under_the_server_rate_limit(
    mock_pi_factory: Callable[..., MockServer],
) -> None:
    server = mock_pi_factory(tag_count=10, rate_limit=5)
    recorder = Recorder()
    started = time.monotonic()
    settings = settings_for(server.url, pi_max_requests_per_second=2)
    async with PIClient(settings, recorder) as client:
        await asyncio.gather(
            *(client.get_json("dataservers", endpoint="dataservers") for _ in range(6))
        )
    assert time.monotonic() - started >= 2.0  # 2, 2, 2 requests in three windows
    assert [r[1] for r in recorder.requests] == ["200"] * 6  # no 429 from the server


async def test_url_length_matches_the_url_sent_and_414_is_not_retried(
    mock_pi: MockServer,
) -> None:
    recorder = Recorder()
    async with PIClient(settings_for(mock_pi.url), recorder) as client:
        params = [
            ("webId", "F1DPab_c-9"),
            ("startTime", "*-1h"),
            ("time", "2024-01-01T00:00:00+01:00"),
        ]
        expected = (
            f"{mock_pi.url}/streamsets/recorded?webId=F1DPab_c-9&startTime=*-1h"
            "&time=2024-01-01T00:00:00%2B01:00"
        )
        assert client.url_length("streamsets/recorded", params) == len(expected)
        long_params = [("webId", f"F1DP{i:020d}") for i in range(1000)]
        assert client.url_length("streamsets/recorded", long_params) > 16_384
        with pytest.raises(PIWebAPIError) as info:
            await client.get_bytes("streamsets/recorded", long_params, endpoint="streamsets")
    assert (info.value.status, info.value.attempts) == (414, 1)
    assert info.value.errors == [
        "The request URL exceeds the maximum allowed length of 16384 bytes."
    ]
    assert len(str(info.value)) < 600
    assert not recorder.retries


# --------------------------------------------------------------------------- POST, batch


async def test_post_carries_the_csrf_header_so_batch_works(mock_pi: MockServer) -> None:
    request = urllib.request.Request(
        f"{mock_pi.url}/batch",
        data=b"{}",
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        await asyncio.to_thread(urllib.request.urlopen, request, timeout=10)
    assert refused.value.code == 403  # CSRF defence is on

    requests = {
        "servers": {"Method": "GET", "Resource": "dataservers"},
        "points": {
            "Method": "GET",
            "Resource": "dataservers/{0}/points?maxCount=3",
            "Parameters": ["$.servers.Content.Items[0].WebId"],
            "ParentIds": ["servers"],
        },
        "missing": {"Method": "GET", "Resource": "points/F1DPnope"},
    }
    async with PIClient(settings_for(mock_pi.url)) as client:
        answer = await client.batch(requests)
    assert list(answer) == ["servers", "points", "missing"]
    assert len(batch_content(answer, "points")["Items"]) == 3
    with pytest.raises(PIWebAPIError) as info:
        batch_content(answer, "missing")
    assert info.value.status == 404
    assert info.value.errors == ["Unknown or invalid WebID format: 'F1DPnope'."]


@asynccontextmanager
async def serve(
    app: web.Application, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[str]:
    """Run an aiohttp app on loopback for one test; yields its /piwebapi base URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port, ssl_context=ssl_context)
    await site.start()
    scheme = "https" if ssl_context else "http"
    try:
        yield f"{scheme}://127.0.0.1:{port}/piwebapi"
    finally:
        await runner.cleanup()


async def test_batch_resends_failed_requests_with_their_family() -> None:
    """A sub-response 503 is resent with its parents; a 404 is returned as it came."""
    received: list[dict[str, Any]] = []

    async def handle(request: web.Request) -> web.Response:
        assert request.headers.get("X-Requested-With") == "XMLHttpRequest"
        body = await request.json()
        received.append(body)
        first = len(received) == 1
        answer = {}
        for rid in body:
            if rid == "child" and first:
                answer[rid] = {"Status": 503, "Headers": {"Retry-After": "1"}, "Content": {}}
            elif rid == "gone":
                answer[rid] = {"Status": 404, "Headers": {}, "Content": {"Errors": ["no such"]}}
            else:
                answer[rid] = {"Status": 200, "Headers": {}, "Content": {"n": len(received)}}
        return web.json_response(answer, status=207)

    app = web.Application()
    app.router.add_post("/piwebapi/batch", handle)
    requests = {
        "parent": {"Method": "GET", "Resource": "a"},
        "child": {
            "Method": "GET",
            "Resource": "{0}",
            "Parameters": ["$.parent.Content.n"],
            "ParentIds": ["parent"],
        },
        "alone": {"Method": "GET", "Resource": "c"},
        "gone": {"Method": "GET", "Resource": "d"},
    }
    recorder = Recorder()
    async with serve(app) as url, PIClient(settings_for(url), recorder) as client:
        started = time.monotonic()
        answer = await client.batch(requests)
        waited = time.monotonic() - started
    assert [set(b) for b in received] == [set(requests), {"parent", "child"}]
    assert waited >= 1.0
    assert batch_content(answer, "child") == {"n": 2}
    assert batch_content(answer, "parent") == {"n": 2}
    assert batch_content(answer, "alone") == {"n": 1}
    assert answer["gone"]["Status"] == 404
    assert recorder.retries == Counter({"5xx": 1})


async def test_cut_bodies_gzip_and_redirects() -> None:
    """A close-delimited body cut short is retried; gzip is decoded; a redirect is an error."""
    full = orjson.dumps({"Items": [{"WebId": f"F1DP{i}", "Value": i} for i in range(200)]})
    seen: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        seen.append(head)
        body = full[: len(full) // 2] if len(seen) == 1 else full
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n" + body
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    recorder = Recorder()
    try:
        async with PIClient(settings_for(f"http://127.0.0.1:{port}/piwebapi"), recorder) as c:
            body = await c.get_bytes("streams/x/recorded", endpoint="streams")
    finally:
        server.close()
        await server.wait_closed()
    assert body == full
    assert recorder.retries == Counter({"truncated": 1})
    assert b"accept-encoding: gzip" in seen[0].lower()

    async def gzipped(request: web.Request) -> web.Response:
        response = web.Response(body=full, content_type="application/json")
        response.enable_compression(web.ContentCoding.gzip)
        return response

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPMovedPermanently("https://pi:secret@pi.example.com/piwebapi/dataservers")

    app = web.Application()
    app.router.add_get("/piwebapi/streams/x/recorded", gzipped)
    app.router.add_get("/piwebapi/dataservers", moved)
    async with serve(app) as url, PIClient(settings_for(url)) as client:
        assert await client.get_bytes("streams/x/recorded", endpoint="streams") == full
        with pytest.raises(PIWebAPIError) as info:
            await client.get_json("dataservers", endpoint="dataservers")
    assert info.value.status == 301
    assert "redirected to https://pi.example.com/piwebapi/dataservers" in str(info.value)
    assert "secret" not in str(info.value)


async def test_answers_past_the_size_limit_are_refused_however_they_come() -> None:
    """A gzip bomb, a body that never ends and a huge declared length: each is read no
    further than the limit, refused three times, then a typed error."""
    limit = 1 << 20
    bomb = gzip.compress(b" " * (64 << 20), compresslevel=9)  # 64 KiB on the wire
    hits: Counter[str] = Counter()

    async def gzip_bomb(request: web.Request) -> web.Response:
        hits["bomb"] += 1
        headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
        return web.Response(body=bomb, headers=headers)

    async def endless(request: web.Request) -> web.StreamResponse:
        hits["endless"] += 1
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            for _ in range(10_000):  # 640 MiB at most, far past the limit
                await response.write(b"[" * 65536)
        return response

    async def declared(request: web.Request) -> web.StreamResponse:
        hits["declared"] += 1
        response = web.StreamResponse(headers={"Content-Length": str(1 << 40)})
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            await response.write(b"{}")
        return response

    app = web.Application()
    for name, handler in (("bomb", gzip_bomb), ("endless", endless), ("declared", declared)):
        app.router.add_get(f"/piwebapi/{name}", handler)
    errors: dict[str, PIConnectionError] = {}
    async with serve(app) as url:
        settings = settings_for(url, pi_max_response_bytes=limit)
        async with PIClient(settings) as client:
            for name in ("bomb", "endless", "declared"):
                with pytest.raises(PIConnectionError) as info:
                    await client.get_bytes(name, endpoint="streams")
                errors[name] = info.value
    assert hits == Counter({"bomb": 3, "endless": 3, "declared": 3})
    assert {name: str(exc) for name, exc in errors.items()} == {
        name: f"GET {url}/{name} failed: oversized ({what} larger than "
        f"PIDELTA_PI_MAX_RESPONSE_BYTES={limit}) after 3 attempts"
        for name, what in (
            ("bomb", "body"),
            ("endless", "body"),
            ("declared", f"Content-Length {1 << 40}"),
        )
    }


def test_the_response_limit_follows_the_servers_item_limit() -> None:
    assert Settings().response_limit == 150_000 * 1024
    assert Settings(pi_max_items_per_call=2000).response_limit == 2000 * 1024
    assert Settings(pi_max_response_bytes=5000).response_limit == 5000


# --------------------------------------------------------------------------- auth


def _secret_free(
    caplog: pytest.LogCaptureFixture, secret: str, exc: BaseException | None = None
) -> None:
    texts = [record.getMessage() for record in caplog.records]
    if exc is not None:
        texts += [str(exc), repr(exc)]
    assert all(secret not in text for text in texts)


async def test_basic_auth_good_and_bad(
    mock_pi_factory: Callable[..., MockServer], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "pW-9f3!secret-Basic"
    server = mock_pi_factory(auth="basic", username="svc_pi", password=secret, tag_count=10)
    good = settings_for(server.url, pi_auth="basic", pi_username="svc_pi", pi_password=secret)
    async with PIClient(good) as client:
        assert (await client.get_json("dataservers", endpoint="dataservers"))["Items"]
        assert secret not in repr(client)
    bad = settings_for(server.url, pi_auth="basic", pi_username="svc_pi", pi_password="wrong-pw")
    async with PIClient(bad) as client:
        with pytest.raises(AuthError) as info:
            await client.get_json("dataservers", endpoint="dataservers")
    err = info.value
    assert err.status == 401
    assert err.attempts == 1
    assert "credentials refused (PIDELTA_PI_AUTH=basic)" in str(err)
    assert "server offers Basic" in str(err)
    assert "Authorization has been denied for this request." in str(err)
    for text in (secret, "wrong-pw", "c3ZjX3Bp"):  # "c3ZjX3Bp": base64 of the user
        _secret_free(caplog, text, err)


async def test_bearer_auth_good_and_bad(
    mock_pi_factory: Callable[..., MockServer], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = "eyJ-bearer-token-very-secret"
    server = mock_pi_factory(auth="bearer", token=token, tag_count=10)
    async with PIClient(settings_for(server.url, pi_auth="bearer", pi_token=token)) as client:
        assert (await client.get_json("dataservers", endpoint="dataservers"))["Items"]
    wrong = "eyJ-wrong-token-also-secret"
    async with PIClient(settings_for(server.url, pi_auth="bearer", pi_token=wrong)) as client:
        with pytest.raises(AuthError) as info:
            await client.batch({"a": {"Method": "GET", "Resource": "dataservers"}})
    assert info.value.status == 401
    assert "server offers Bearer" in str(info.value)
    _secret_free(caplog, token, info.value)
    _secret_free(caplog, wrong, info.value)


# --------------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made with the openssl command."""
    openssl = shutil.which("openssl")
    assert openssl, "the openssl command is needed to make a test certificate"
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,digitalSignature,keyCertSign",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def tls_app() -> web.Application:
    async def dataservers(request: web.Request) -> web.Response:
        return web.json_response({"Items": [{"WebId": "F1DSx", "Name": "TLS01"}]})

    app = web.Application()
    app.router.add_get("/piwebapi/dataservers", dataservers)
    return app


async def test_tls_is_verified_by_default_and_a_ca_bundle_is_honoured(
    self_signed: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    cert, key = self_signed
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    async with serve(tls_app(), server_ctx) as url:
        async with PIClient(settings_for(url, pi_max_attempts=5)) as client:
            with pytest.raises(PIConnectionError) as info:
                await client.get_json("dataservers", endpoint="dataservers")
        assert (info.value.reason, info.value.attempts) == ("tls", 1)
        assert "PIDELTA_PI_CA_BUNDLE" in str(info.value)

        async with PIClient(settings_for(url, pi_ca_bundle=cert)) as client:
            doc = await client.get_json("dataservers", endpoint="dataservers")
        assert doc["Items"][0]["Name"] == "TLS01"

        caplog.set_level(logging.WARNING)
        async with PIClient(settings_for(url, pi_verify_tls=False)) as client:
            assert await client.get_json("dataservers", endpoint="dataservers") == doc
        assert any("NOT verified" in r.getMessage() for r in caplog.records)
