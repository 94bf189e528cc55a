"""PI Data Archive routes: landing page, data servers, points, stream and streamset values."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from mock_pi import catalog as cat
from mock_pi.errors import error_response
from mock_pi.render import Fields, base_url, json_response
from mock_pi.state import MockState

SERVER_VERSION = "3.4.440.477"
MAX_COLLECTION = 1000


class BadRequest(Exception):
    """A request the PI Web API refuses: HTTP status and the `Errors` texts."""

    def __init__(self, status: int, *messages: str) -> None:
        super().__init__(*messages)
        self.status = status
        self.messages = messages


class Query:
    """Query parameters, case-insensitive by name as PI Web API reads them."""

    def __init__(self, request: web.Request) -> None:
        self.values: dict[str, list[str]] = {}
        for key, value in request.query.items():
            self.values.setdefault(key.lower(), []).append(value)

    def get(self, name: str, default: str | None = None) -> str | None:
        found = self.values.get(name.lower())
        return found[0] if found else default

    def all(self, name: str) -> list[str]:
        return self.values.get(name.lower(), [])

    def integer(self, name: str, default: int, minimum: int = 0) -> int:
        text = self.get(name)
        if text is None:
            return default
        try:
            value = int(text)
        except ValueError:
            raise BadRequest(400, f"The value '{text}' is not valid for {name}.") from None
        if value < minimum:
            raise BadRequest(400, f"The value '{text}' is not valid for {name}.")
        return value

    def fields(self) -> Fields:
        return Fields.parse(self.get("selectedFields"))


def unknown_webid(web_id: str) -> BadRequest:
    return BadRequest(404, f"Unknown or invalid WebID format: '{web_id}'.")


POINT_NOT_FOUND = "The specified point was not found."


def landing(request: web.Request) -> dict[str, Any]:
    base = base_url(request)
    return {
        "Links": {
            "Self": base,
            "AssetServers": base + "assetservers",
            "DataServers": base + "dataservers",
            "Search": base + "search",
            "System": base + "system",
        }
    }


def data_server(state: MockState, base: str) -> dict[str, Any]:
    webid = state.catalog.server_webid
    return {
        "WebId": webid,
        "Id": str(state.catalog.server_id),
        "Name": cat.SERVER_NAME,
        "Path": f"\\\\{cat.SERVER_NAME}",
        "IsConnected": True,
        "ServerVersion": SERVER_VERSION,
        "Links": {
            "Self": f"{base}dataservers/{webid}",
            "Points": f"{base}dataservers/{webid}/points",
            "EnumerationSets": f"{base}dataservers/{webid}/enumerationsets",
        },
    }


def point_json(state: MockState, point: cat.Point, base: str) -> dict[str, Any]:
    kind = point.kind
    w = point.webid
    return {
        "WebId": w,
        "Id": point.point_id,
        "Name": point.name,
        "Path": point.path,
        "Descriptor": point.descriptor,
        "PointClass": "classic",
        "PointType": kind.point_type,
        "DigitalSetName": kind.digital_set or "",
        "EngineeringUnits": kind.units,
        "Span": kind.span
        if kind.digital_set is None
        else float(len(cat.DIGITAL_SETS[kind.digital_set])),
        "Zero": kind.zero,
        "Step": kind.point_type in ("Digital", "String"),
        "Future": False,
        "DisplayDigits": -5,
        "Links": {
            "Self": f"{base}points/{w}",
            "DataServer": f"{base}dataservers/{state.catalog.server_webid}",
            "Attributes": f"{base}points/{w}/attributes",
            "InterpolatedData": f"{base}streams/{w}/interpolated",
            "RecordedData": f"{base}streams/{w}/recorded",
            "PlotData": f"{base}streams/{w}/plot",
            "SummaryData": f"{base}streams/{w}/summary",
            "Value": f"{base}streams/{w}/value",
            "EndValue": f"{base}streams/{w}/end",
        },
    }


def find_point(state: MockState, web_id: str) -> cat.Point:
    point = state.catalog.by_webid(web_id)
    if point is not None:
        return point
    if web_id.startswith("F1DP") and web_id[4:26] == state.catalog.server_webid[4:26]:
        raise BadRequest(404, POINT_NOT_FOUND)
    raise unknown_webid(web_id)


def check_server(state: MockState, web_id: str) -> None:
    if web_id != state.catalog.server_webid:
        raise unknown_webid(web_id)


def handler(state: MockState, fn: Any) -> Any:
    """Wrap a route function `fn(state, request, query)` so BadRequest becomes PI's error body."""

    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            return await fn(state, request, Query(request))
        except BadRequest as exc:
            return error_response(exc.status, *exc.messages)

    return handle


async def get_landing(state: MockState, request: web.Request, q: Query) -> web.Response:
    return json_response(landing(request), q.fields())


async def get_dataservers(state: MockState, request: web.Request, q: Query) -> web.Response:
    body = {"Links": {}, "Items": [data_server(state, base_url(request))]}
    return json_response(body, q.fields())


async def get_dataserver(state: MockState, request: web.Request, q: Query) -> web.Response:
    check_server(state, request.match_info["webId"])
    return json_response(data_server(state, base_url(request)), q.fields())


async def get_points(state: MockState, request: web.Request, q: Query) -> web.Response:
    check_server(state, request.match_info["webId"])
    start = q.integer("startIndex", 0)
    count = q.integer("maxCount", MAX_COLLECTION, minimum=1)
    name_filter = q.get("nameFilter", "*") or "*"
    base = base_url(request)
    items = []
    for i, point in enumerate(state.catalog.matching(name_filter)):
        if i >= start + count:
            break
        if i >= start:
            items.append(point_json(state, point, base))
    return json_response({"Links": {}, "Items": items}, q.fields())


async def get_point(state: MockState, request: web.Request, q: Query) -> web.Response:
    point = find_point(state, request.match_info["webId"])
    return json_response(point_json(state, point, base_url(request)), q.fields())


async def get_point_by_path(state: MockState, request: web.Request, q: Query) -> web.Response:
    path = q.get("path")
    if not path:
        raise BadRequest(400, "The 'path' parameter is required.")
    server, sep, name = path.lstrip("\\").partition("\\")
    point = state.catalog.by_name(name) if sep and server.upper() == cat.SERVER_NAME else None
    if point is None:
        raise BadRequest(404, f"PI Point not found '{path}'.")
    return json_response(point_json(state, point, base_url(request)), q.fields())


def register(app: web.Application, state: MockState) -> None:
    """Add the data routes to the application."""
    routes = [
        ("/piwebapi", get_landing),
        ("/piwebapi/", get_landing),
        ("/piwebapi/dataservers", get_dataservers),
        ("/piwebapi/dataservers/{webId}", get_dataserver),
        ("/piwebapi/dataservers/{webId}/points", get_points),
        ("/piwebapi/points", get_point_by_path),
        ("/piwebapi/points/{webId}", get_point),
    ]
    for path, fn in routes:
        app.router.add_get(path, handler(state, fn))
