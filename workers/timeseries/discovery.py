"""Discovery: every PI point in scope, as `TagInfo` records in a deterministic order.

`GET dataservers/{webId}/points` pages with `startIndex`/`maxCount`, and PI does not say
how many points there are nor whether a full page is the last one. So the first page is
read alone (most servers fit in it), then pages are read in waves of
`pi_max_concurrency` until a short page ends the list: a million points is 100 pages of
10,000, read about 16 at a time. A server that never sends a short page is stopped by the
bounds on points (`discovery_max_points`) and time (`discovery_timeout`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from workers.errors import ConfigError, DiscoveryLimitError
from workers.pi.client import PIClient
from workers.settings import Settings

log = logging.getLogger(__name__)

POINT_FIELDS = ";".join(
    f"Items.{name}"
    for name in (
        "WebId",
        "Name",
        "PointType",
        "EngineeringUnits",
        "DigitalSetName",
        "Descriptor",
        "Id",
    )
)
ENDPOINT = "dataservers/points"


@dataclass(frozen=True, slots=True)
class TagInfo:
    webid: str
    name: str
    point_type: str
    units: str
    digital_set: str | None
    descriptor: str
    data_server: str
    # PI's point ID: stable across renames (the WebID holds the path), so `pi_points` keys
    # a point's versions by it. Not compared: tags are equal by what the time series use.
    point_id: int | None = field(default=None, compare=False)


async def discover_tags(client: PIClient, settings: Settings) -> list[TagInfo]:
    """Every point of the data server(s) matching `tag_filter`, sorted by name then WebID.

    Raises DiscoveryLimitError past `discovery_max_points` points or `discovery_timeout`.
    """
    found: dict[str, TagInfo] = {}
    try:
        async with asyncio.timeout(settings.discovery_timeout):
            for server_webid, server_name in await data_servers(client, settings):
                budget = settings.discovery_max_points - len(found)
                for tag in await _server_points(
                    client, settings, server_webid, server_name, budget
                ):
                    found.setdefault(tag.webid, tag)
    except TimeoutError:
        raise DiscoveryLimitError(
            f"discovery took more than {settings.discovery_timeout:g} s "
            f"(PIDELTA_DISCOVERY_TIMEOUT) after {len(found)} points"
        ) from None
    tags = sorted(found.values(), key=lambda t: (t.name, t.data_server, t.webid))
    log.info("discovered %d PI points matching %r", len(tags), settings.tag_filter)
    return tags


async def data_servers(client: PIClient, settings: Settings) -> list[tuple[str, str]]:
    """(WebID, name) of the data servers to read: `pi_data_server` only, when it is set."""
    doc = await client.get_json(
        "dataservers", [("selectedFields", "Items.WebId;Items.Name")], endpoint="dataservers"
    )
    servers = [
        (str(item["WebId"]), str(item.get("Name") or ""))
        for item in _items(doc)
        if item.get("WebId")
    ]
    wanted = settings.pi_data_server
    if wanted is None:
        return servers
    chosen = [s for s in servers if s[1].upper() == wanted.upper()]
    if not chosen:
        names = ", ".join(sorted(name for _, name in servers)) or "none"
        raise ConfigError(
            f"PIDELTA_PI_DATA_SERVER={wanted}: no such data server (the PI Web API lists: {names})"
        )
    return chosen


async def _server_points(
    client: PIClient, settings: Settings, server_webid: str, server_name: str, budget: int
) -> list[TagInfo]:
    size = min(settings.discovery_page_size, settings.pi_max_items_per_call)
    path = f"dataservers/{server_webid}/points"

    async def page(number: int) -> list[Mapping[str, Any]]:
        params = [
            ("nameFilter", settings.tag_filter),
            ("startIndex", str(number * size)),
            ("maxCount", str(size)),
            ("selectedFields", POINT_FIELDS),
        ]
        return _items(await client.get_json(path, params, endpoint=ENDPOINT))

    pages = [await page(0)]
    seen = {str(item.get("WebId")) for item in pages[0]}
    wave = settings.pi_max_concurrency
    next_page = 1
    ended = len(pages[0]) < size
    while not ended:
        results = await asyncio.gather(*(page(n) for n in range(next_page, next_page + wave)))
        next_page += wave
        before = len(seen)
        for items in results:
            pages.append(items)
            seen.update(str(item.get("WebId")) for item in items)
            if len(items) < size:
                ended = True
                break
        if len(seen) > budget:
            raise DiscoveryLimitError(
                f"data server {server_name}: more than {settings.discovery_max_points} points "
                f"(PIDELTA_DISCOVERY_MAX_POINTS) after {len(pages)} pages of {size}"
            )
        if not ended and len(seen) == before:
            log.warning(
                "data server %s: a wave of %d full pages brought no new points; the server "
                "seems to ignore startIndex, stopping at %d points",
                server_name,
                wave,
                len(seen),
            )
            break
    tags = [_tag(item, server_name) for items in pages for item in items]
    bad = sum(tag is None for tag in tags)
    if bad:
        log.warning("data server %s: %d points without a WebId or name skipped", server_name, bad)
    return [tag for tag in tags if tag is not None]


def _items(doc: Any) -> list[Mapping[str, Any]]:
    items = doc.get("Items") if isinstance(doc, Mapping) else None
    return [item for item in items or () if isinstance(item, Mapping)]


def _tag(item: Mapping[str, Any], server_name: str) -> TagInfo | None:
    webid = item.get("WebId")
    name = item.get("Name")
    if not webid or not name:
        return None
    return TagInfo(
        webid=str(webid),
        name=str(name),
        point_type=str(item.get("PointType") or ""),
        units=str(item.get("EngineeringUnits") or ""),
        digital_set=str(item["DigitalSetName"]) if item.get("DigitalSetName") else None,
        descriptor=str(item.get("Descriptor") or ""),
        data_server=server_name,
        point_id=item["Id"] if type(item.get("Id")) is int else None,
    )
