"""PI Data Archive routes: landing page, data servers, points, stream and streamset values."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
from aiohttp import web
from isal import isal_zlib

from mock_pi import catalog as cat
from mock_pi.query import BadRequest, Query, handler, unknown_webid
from mock_pi.render import (
    PLACEHOLDER,
    PLACEHOLDER_JSON,
    Fields,
    base_url,
    data_links,
    json_response,
    render_values,
)
from mock_pi.series import EMPTY, Events, Series
from mock_pi.state import MockState

SERVER_VERSION = "3.4.440.477"
MAX_COLLECTION = 1000
GZIP_MIN_BYTES = 1024


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
            **data_links(base, "streams", w),
        },
    }


def find_point(state: MockState, web_id: str) -> cat.Point:
    point = state.point_by_webid(web_id)
    if point is not None:
        return point
    if web_id.startswith("F1DP") and web_id[4:26] == state.catalog.server_webid[4:26]:
        raise BadRequest(404, POINT_NOT_FOUND)
    raise unknown_webid(web_id)


def check_server(state: MockState, web_id: str) -> None:
    if web_id != state.catalog.server_webid:
        raise unknown_webid(web_id)


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
    if count > state.settings.max_returned_items_per_call:
        raise too_many("maxCount", state.settings.max_returned_items_per_call)
    name_filter = q.get("nameFilter", "*") or "*"
    base = base_url(request)
    items = [point_json(state, p, base) for p in state.points_page(name_filter, start, count)]
    return json_response({"Links": {}, "Items": items}, q.fields())


async def get_point(state: MockState, request: web.Request, q: Query) -> web.Response:
    point = find_point(state, request.match_info["webId"])
    return json_response(point_json(state, point, base_url(request)), q.fields())


async def get_point_by_path(state: MockState, request: web.Request, q: Query) -> web.Response:
    path = q.get("path")
    if not path:
        raise BadRequest(400, "The 'path' parameter is required.")
    server, sep, name = path.lstrip("\\").partition("\\")
    point = state.point_by_name(name) if sep and server.upper() == cat.SERVER_NAME else None
    if point is None:
        raise BadRequest(404, f"PI Point not found '{path}'.")
    return json_response(point_json(state, point, base_url(request)), q.fields())


def too_many(name: str, limit: int) -> BadRequest:
    """MaxReturnedItemsPerCall exceeded, worded as the PI Web API documentation words it."""
    return BadRequest(400, f"Parameter '{name}' is greater than the maximum allowed ({limit}).")


def recorded_events(
    state: MockState, s: Series, start: int, end: int, boundary: str, max_count: int, now: int
) -> Events:
    """Recorded values from start to end (descending when end < start), with boundaries."""
    hs = state.history_start_ticks
    desc = end < start
    lo, hi = (end, start) if desc else (start, end)
    if boundary == "Inside":
        return s.scan(lo, hi, now, hs, limit=max_count, descending=desc)
    if boundary == "Outside":
        inside = s.scan(lo, hi, now, hs, limit=max_count, descending=desc)
        before = EMPTY
        if not len(s.scan(lo, lo, now, hs, limit=1)):
            before = s.scan(hs, lo - 1, now, hs, limit=1, descending=True)
        after = EMPTY
        if not len(s.scan(hi, hi, now, hs, limit=1)):
            after = s.scan(hi + 1, now, now, hs, limit=1)
        parts = [after, inside, before] if desc else [before, inside, after]
    else:
        first = s.interpolate(np.array([start], np.int64), now, hs)
        if lo == hi:
            return first
        inside = s.scan(lo + 1, hi - 1, now, hs, limit=max_count, descending=desc)
        parts = [first, inside, s.interpolate(np.array([end], np.int64), now, hs)]
    out = Events.concat(parts)
    return out if len(out) <= max_count else out.take(slice(0, max_count))


def interpolation_times(start: int, end: int, interval: int) -> np.ndarray:
    count = abs(end - start) // interval + 1
    step = interval if end >= start else -interval
    return start + np.arange(count, dtype=np.int64) * step


def end_event(state: MockState, s: Series, now: int) -> Events:
    """The last recorded value (the last of a run sharing its timestamp)."""
    hs = state.history_start_ticks
    last = s.scan(hs, now, now, hs, limit=1, descending=True)
    return last if len(last) else s.interpolate(np.array([now], np.int64), now, hs)


def stream_head(point: cat.Point, base: str, key: str) -> dict[str, Any]:
    head: dict[str, Any] = {
        "WebId": point.webid,
        "Name": point.name,
        "Path": point.path,
        "Links": {"Source": f"{base}points/{point.webid}"},
        key: PLACEHOLDER,
    }
    if key == "Items":
        head["UnitsAbbreviation"] = point.units
    return head


def splice(obj: dict[str, Any], fields: Fields, inner: bytes) -> list[bytes]:
    """Prune `obj`, dump it, and return its pieces around the pre-rendered `inner` (the
    placeholder's place), so large bodies are copied once, by the final join."""
    pre, found, post = orjson.dumps(fields.prune(obj)).partition(PLACEHOLDER_JSON)
    return [pre, inner, post] if found else [pre]


def single(rendered: bytes) -> bytes:
    """The one TimedValue of a one-row array."""
    return rendered[1:-1] or b"null"


Result = tuple[str, Series | None, Events, BadRequest | None]


def streamset_body(request: web.Request, q: Query, results: list[Result], key: str) -> bytes:
    """`Items[StreamValues]` (key Items) or `Items[StreamValue]` (key Value) JSON."""
    top = q.fields()
    stream_fields = top.sub("Items")
    pieces: list[bytes] = [b"{"]
    if top.has("Links"):
        pieces.append(b'"Links":{}')
    if stream_fields is not None:
        if len(pieces) > 1:
            pieces.append(b",")
        pieces.append(b'"Items":[')
        inner_fields = stream_fields.sub(key)
        good = [(s, ev) for _, s, ev, err in results if s is not None and err is None]
        rendered = iter(render_values(good, inner_fields) if inner_fields else [b""] * len(good))
        base = base_url(request)
        for i, (web_id, s, _, err) in enumerate(results):
            if i:
                pieces.append(b",")
            if err is not None or s is None:
                failed: dict[str, Any] = {"WebId": web_id}
                if key == "Items":
                    failed["Items"] = []
                failed = stream_fields.prune(failed)
                failed["WebException"] = {
                    "StatusCode": err.status if err else 404,
                    "Errors": list(err.messages) if err else [],
                }
                pieces.append(orjson.dumps(failed))
                continue
            inner = next(rendered)
            head = stream_head(s.point, base, key)
            pieces.extend(splice(head, stream_fields, single(inner) if key == "Value" else inner))
        pieces.append(b"]")
    pieces.append(b"}")
    return b"".join(pieces)


def send(request: web.Request, body: bytes) -> web.Response:
    """A JSON 200, gzipped (fast level) when the client accepts it, as IIS would."""
    response = web.Response(body=body, content_type="application/json", charset="utf-8")
    if len(body) >= GZIP_MIN_BYTES and "gzip" in request.headers.get("Accept-Encoding", ""):
        # ISA-L at level 1: a fifth of zlib's CPU for a smaller body, so the simulator
        # is not what limits a benchmark on a shared machine.
        packer = isal_zlib.compressobj(1, isal_zlib.DEFLATED, 31)
        response.body = packer.compress(body) + packer.flush()
        response.headers["Content-Encoding"] = "gzip"
        response.headers["Vary"] = "Accept-Encoding"
    return response


REFUSED = BadRequest(
    502, "[-10722] PINET: Timeout on PI RPC or System Call. (refused by /piwebapi/mock/refuse)"
)


def lookup(
    state: MockState, web_ids: list[str], *, aggregate: bool = False
) -> list[tuple[str, Series | None, BadRequest | None]]:
    """Each WebID's series, or the error PI answers for it; with `aggregate` (summaries
    and interpolations) a WebID in `state.refused` gets a 502 item error."""
    out: list[tuple[str, Series | None, BadRequest | None]] = []
    for web_id in web_ids:
        if aggregate and web_id in state.refused:
            out.append((web_id, None, REFUSED))
            continue
        try:
            out.append((web_id, state.series(find_point(state, web_id)), None))
        except BadRequest as exc:
            out.append((web_id, None, exc))
    return out


def single_stream_body(q: Query, s: Series, ev: Events) -> bytes:
    top = q.fields()
    item_fields = top.sub("Items")
    inner = render_values([(s, ev)], item_fields)[0] if item_fields else b"[]"
    obj = {"Links": {}, "Items": PLACEHOLDER, "UnitsAbbreviation": s.point.units}
    return b"".join(splice(obj, top, inner))


def recorded_params(state: MockState, q: Query, streams: int) -> tuple[int, int, str, int, int]:
    now = state.now_ticks()
    start = q.time("startTime", "*-1d", now)
    end = q.time("endTime", "*", now)
    boundary = q.boundary()
    max_count = q.integer("maxCount", MAX_COLLECTION, minimum=1)
    limit = state.settings.max_returned_items_per_call
    if max_count * streams > limit:
        raise too_many("maxCount", limit)
    return start, end, boundary, max_count, now


def interpolated_params(state: MockState, q: Query, streams: int) -> tuple[np.ndarray, int]:
    now = state.now_ticks()
    start = q.time("startTime", "*-1d", now)
    end = q.time("endTime", "*", now)
    interval = q.interval("1h")
    limit = state.settings.max_returned_items_per_call
    if (abs(end - start) // interval + 1) * streams > limit:
        raise too_many("interval", limit)
    return interpolation_times(start, end, interval), now


async def get_recorded(state: MockState, request: web.Request, q: Query) -> web.Response:
    s = state.series(find_point(state, request.match_info["webId"]))
    start, end, boundary, max_count, now = recorded_params(state, q, 1)
    ev = recorded_events(state, s, start, end, boundary, max_count, now)
    return send(request, single_stream_body(q, s, ev))


async def get_interpolated(state: MockState, request: web.Request, q: Query) -> web.Response:
    s = state.series(find_point(state, request.match_info["webId"]))
    times, now = interpolated_params(state, q, 1)
    ev = s.interpolate(times, now, state.history_start_ticks)
    return send(request, single_stream_body(q, s, ev))


def value_event(state: MockState, q: Query, s: Series, now: int) -> Events:
    if q.get("time") is None:
        return end_event(state, s, now)
    t = q.time("time", "*", now)
    return s.interpolate(np.array([t], np.int64), now, state.history_start_ticks)


async def get_value(state: MockState, request: web.Request, q: Query) -> web.Response:
    s = state.series(find_point(state, request.match_info["webId"]))
    now = state.now_ticks()
    ev = value_event(state, q, s, now)
    return send(request, single(render_values([(s, ev)], q.fields())[0]))


async def get_end(state: MockState, request: web.Request, q: Query) -> web.Response:
    s = state.series(find_point(state, request.match_info["webId"]))
    ev = end_event(state, s, state.now_ticks())
    return send(request, single(render_values([(s, ev)], q.fields())[0]))


async def get_set_recorded(state: MockState, request: web.Request, q: Query) -> web.Response:
    web_ids = q.webids()
    start, end, boundary, max_count, now = recorded_params(state, q, len(web_ids))
    results: list[Result] = [
        (w, s, recorded_events(state, s, start, end, boundary, max_count, now) if s else EMPTY, err)
        for w, s, err in lookup(state, web_ids)
    ]
    return send(request, streamset_body(request, q, results, "Items"))


async def get_set_interpolated(state: MockState, request: web.Request, q: Query) -> web.Response:
    web_ids = q.webids()
    times, now = interpolated_params(state, q, len(web_ids))
    hs = state.history_start_ticks
    results: list[Result] = [
        (w, s, s.interpolate(times, now, hs) if s else EMPTY, err)
        for w, s, err in lookup(state, web_ids, aggregate=True)
    ]
    return send(request, streamset_body(request, q, results, "Items"))


async def get_set_value(state: MockState, request: web.Request, q: Query) -> web.Response:
    web_ids = q.webids()
    now = state.now_ticks()
    results: list[Result] = [
        (w, s, value_event(state, q, s, now) if s else EMPTY, err)
        for w, s, err in lookup(state, web_ids)
    ]
    return send(request, streamset_body(request, q, results, "Value"))


async def get_set_end(state: MockState, request: web.Request, q: Query) -> web.Response:
    web_ids = q.webids()
    now = state.now_ticks()
    results: list[Result] = [
        (w, s, end_event(state, s, now) if s else EMPTY, err)
        for w, s, err in lookup(state, web_ids)
    ]
    return send(request, streamset_body(request, q, results, "Value"))


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
        ("/piwebapi/streams/{webId}/recorded", get_recorded),
        ("/piwebapi/streams/{webId}/interpolated", get_interpolated),
        ("/piwebapi/streams/{webId}/value", get_value),
        ("/piwebapi/streams/{webId}/end", get_end),
        ("/piwebapi/streamsets/recorded", get_set_recorded),
        ("/piwebapi/streamsets/interpolated", get_set_interpolated),
        ("/piwebapi/streamsets/value", get_set_value),
        ("/piwebapi/streamsets/end", get_set_end),
    ]
    for path, fn in routes:
        app.router.add_get(path, handler(state, fn))
