"""Discovery against the real mock-pi: exactly the catalog's points, in a stable order."""

from __future__ import annotations

import asyncio
import fnmatch
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web

from mock_pi.catalog import SERVER_NAME, Catalog
from tests.conftest import MockServer
from tests.workers.test_pi_client import Recorder, injected, serve
from workers.errors import ConfigError, DiscoveryLimitError
from workers.pi.client import PIClient
from workers.settings import Settings
from workers.timeseries.discovery import TagInfo, discover_tags


def expected_tags(seed: int, tag_count: int, name_filter: str = "*") -> list[TagInfo]:
    catalog = Catalog(seed, tag_count)
    tags = [
        TagInfo(
            webid=p.webid,
            name=p.name,
            point_type=p.point_type,
            units=p.units,
            digital_set=p.digital_set,
            descriptor=p.descriptor,
            data_server=SERVER_NAME,
        )
        for p in (catalog.point(i) for i in range(tag_count))
        if fnmatch.fnmatch(p.name.upper(), name_filter.upper())
    ]
    return sorted(tags, key=lambda t: (t.name, t.data_server, t.webid))


async def discover(url: str, recorder: Recorder | None = None, **overrides: Any) -> list[TagInfo]:
    settings = Settings(pi_url=url, **overrides)
    async with PIClient(settings, recorder) as client:
        return await discover_tags(client, settings)


async def test_discovers_exactly_the_catalog_in_waves_of_pages(
    mock_pi_factory: Callable[..., MockServer],
) -> None:
    server = mock_pi_factory(seed=5, tag_count=2500, rate_limit=0)
    recorder = Recorder()
    tags = await discover(server.url, recorder, discovery_page_size=300, pi_max_concurrency=4)
    assert tags == expected_tags(5, 2500)
    pages = [r for r in recorder.requests if r[0] == "dataservers/points"]
    # Page 0 alone, then waves of 4 until the short page 8: pages 1-4 and 5-8.
    assert len(pages) == 9


async def test_a_name_filter_selects_exactly_the_matching_points(mock_pi: MockServer) -> None:
    tags = await discover(mock_pi.url, tag_filter="TI-*", discovery_page_size=50)
    expected = expected_tags(42, 1000, "TI-*")
    assert tags == expected
    assert 100 < len(tags) < 400
    assert all(t.point_type == "Float32" and t.units == "°C" for t in tags)


async def test_a_count_that_fills_the_last_page_exactly(mock_pi: MockServer) -> None:
    tags = await discover(mock_pi.url, discovery_page_size=250, pi_max_concurrency=2)
    assert tags == expected_tags(42, 1000)
    assert len({t.webid for t in tags}) == 1000


async def test_one_named_data_server_or_a_clear_error(mock_pi: MockServer) -> None:
    tags = await discover(mock_pi.url, pi_data_server=SERVER_NAME.lower(), tag_filter="XV-*")
    assert tags == expected_tags(42, 1000, "XV-*")
    assert {t.digital_set for t in tags} == {"Valve"}
    with pytest.raises(ConfigError, match=f"no such data server .*lists: {SERVER_NAME}"):
        await discover(mock_pi.url, pi_data_server="NOPE")


async def test_discovery_through_faults_gives_the_same_tags(
    mock_pi_factory: Callable[..., MockServer],
) -> None:
    server = mock_pi_factory(
        seed=9, tag_count=1200, rate_limit=0, faults="500=0.1,reset=0.05,truncate=0.05"
    )
    tags = await discover(server.url, discovery_page_size=100, pi_max_attempts=20)
    assert tags == expected_tags(9, 1200)
    assert sum(injected(server)["Injected"].values()) > 0


def endless_server(delay: float = 0.0) -> web.Application:
    """A broken or hostile server: every page of points is full and new, forever."""

    async def servers(request: web.Request) -> web.Response:
        return web.json_response({"Items": [{"WebId": "F1DSendless", "Name": "ENDLESS"}]})

    async def points(request: web.Request) -> web.Response:
        await asyncio.sleep(delay)
        first, count = int(request.query["startIndex"]), int(request.query["maxCount"])
        items = [
            {"WebId": f"F1DPendless{n}", "Name": f"P{n}", "PointType": "Float32"}
            for n in range(first, first + count)
        ]
        return web.json_response({"Items": items})

    app = web.Application()
    app.router.add_get("/piwebapi/dataservers", servers)
    app.router.add_get("/piwebapi/dataservers/{webid}/points", points)
    return app


async def test_a_server_that_never_ends_its_points_is_stopped_by_the_point_bound() -> None:
    recorder = Recorder()
    async with serve(endless_server()) as url:
        with pytest.raises(DiscoveryLimitError) as info:
            await discover(
                url,
                recorder,
                discovery_page_size=10,
                discovery_max_points=100,
                pi_max_concurrency=4,
            )
    # Page 0 alone, then waves of 4: 5, 9, 13 pages; 130 points pass the bound of 100.
    assert str(info.value) == (
        "data server ENDLESS: more than 100 points (PIDELTA_DISCOVERY_MAX_POINTS) after 13 "
        "pages of 10"
    )
    assert len([r for r in recorder.requests if r[0] == "dataservers/points"]) == 13


async def test_a_server_that_pages_too_slowly_is_stopped_by_the_time_bound() -> None:
    async with serve(endless_server(delay=0.2)) as url:
        with pytest.raises(DiscoveryLimitError) as info:
            await discover(url, discovery_page_size=10, discovery_timeout=0.5)
    assert str(info.value) == (
        "discovery took more than 0.5 s (PIDELTA_DISCOVERY_TIMEOUT) after 0 points"
    )
