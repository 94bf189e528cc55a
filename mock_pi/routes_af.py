"""Asset Framework routes: the server, the database, elements, attributes, templates and
attribute values, rendered from `af.AfModel`; `register` adds these and the event frame
routes of `routes_eventframes`.

The test-only `POST /piwebapi/mock/af/version` (body `{"Version": n}`, or none for +1) swaps
the served hierarchy version; `GET` on the same path tells the current one.
"""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
import orjson
from aiohttp import web

from mock_pi import af as afm
from mock_pi import af_attributes as afa
from mock_pi import pitime
from mock_pi.af_runtime import (
    RUNTIME,
    AfRuntime,
    attribute_filter,
    attribute_links,
    check_database,
    descending,
    element_json,
    find_element,
    find_frame,
    flag,
    guid_of,
    listing,
    page_of,
    runtime,
    webid_guid,
)
from mock_pi.catalog import Point
from mock_pi.query import BadRequest, Query, handler, unknown_webid
from mock_pi.render import base_url, json_response
from mock_pi.routes_eventframes import (
    frame_attribute_json,
    get_eventframe,
    get_eventframe_attributes,
    get_eventframes,
    get_referenced_elements,
)
from mock_pi.state import MockState
from mock_pi.truth import timed_values

AF_SERVER_VERSION = "2.10.5.9050"


def server_json(rt: AfRuntime, base: str) -> dict[str, Any]:
    w = rt.af.server_webid
    return {
        "WebId": w,
        "Id": str(rt.af.server_id),
        "Name": afm.AF_SERVER,
        "Description": "",
        "Path": afm.SERVER_PATH,
        "IsConnected": True,
        "ServerVersion": AF_SERVER_VERSION,
        "ServerTime": pitime.format_time(rt.now_ms() * 10_000),
        "ExtendedProperties": {},
        "Links": {
            "Self": f"{base}assetservers/{w}",
            "Databases": f"{base}assetservers/{w}/assetdatabases",
            "Security": f"{base}assetservers/{w}/security",
            "SecurityEntries": f"{base}assetservers/{w}/securityentries",
            "UnitClasses": f"{base}assetservers/{w}/unitclasses",
        },
    }


def database_json(rt: AfRuntime, base: str) -> dict[str, Any]:
    w = rt.af.database_webid
    links = {
        name: f"{base}assetdatabases/{w}/{name.lower()}"
        for name in (
            "Elements",
            "ElementTemplates",
            "EventFrames",
            "ElementCategories",
            "AttributeCategories",
            "EnumerationSets",
            "Tables",
            "TableCategories",
            "AnalysisTemplates",
            "AnalysisCategories",
            "Security",
            "SecurityEntries",
        )
    }
    return {
        "WebId": w,
        "Id": str(rt.af.database_id),
        "Name": afm.DATABASE,
        "Description": "Simulated plant asset model",
        "Path": afm.DATABASE_PATH,
        "ExtendedProperties": {},
        "Links": {
            "Self": f"{base}assetdatabases/{w}",
            "AssetServer": f"{base}assetservers/{rt.af.server_webid}",
            **links,
        },
    }


def attribute_json(a: afa.Attribute, base: str) -> dict[str, Any]:
    links = attribute_links(a.webid, base)
    links["Element"] = f"{base}elements/{a.owner_webid}"
    if a.point is not None:
        links["Point"] = f"{base}points/{a.point.webid}"
    out: dict[str, Any] = {
        "WebId": a.webid,
        "Id": str(a.id),
        "Name": a.name,
        "Description": a.description,
        "Path": a.path,
        "Type": a.type,
        "TypeQualifier": a.type_qualifier,
        "DefaultUnitsName": a.units_name,
        "DefaultUnitsNameAbbreviation": a.units_abbreviation,
        "DisplayDigits": -5,
        "DataReferencePlugIn": a.data_reference,
        "ConfigString": a.config_string,
        "IsConfigurationItem": a.is_configuration_item,
        "IsExcluded": False,
        "IsHidden": False,
        "IsManualDataEntry": False,
        "HasChildren": False,
        "CategoryNames": list(a.category_names),
        "Step": a.step,
        "TraitName": "",
        "Links": links,
    }
    if a.zero is not None and a.span is not None:
        out["Zero"], out["Span"] = a.zero, a.span
    return out


def template_json(
    rt: AfRuntime, guid: uuid.UUID, t: tuple[str, str, tuple[str, ...]], base: str
) -> dict[str, Any]:
    name, instance, categories = t
    w = rt.af.template_webid(name)[1]
    return {
        "WebId": w,
        "Id": str(guid),
        "Name": name,
        "Description": f"{name} template",
        "Path": f"{afm.DATABASE_PATH}\\ElementTemplates[{name}]",
        "AllowElementToExtend": True,
        "BaseTemplate": "",
        "InstanceType": instance,
        "NamingPattern": "",
        "CategoryNames": list(categories),
        "ExtendedProperties": {},
        "Severity": "None",
        "CanBeAcknowledged": name == "Alarm",
        "Links": {
            "Self": f"{base}elementtemplates/{w}",
            "AttributeTemplates": f"{base}elementtemplates/{w}/attributetemplates",
            "Categories": f"{base}elementtemplates/{w}/categories",
            "Database": f"{base}assetdatabases/{rt.af.database_webid}",
            "Security": f"{base}elementtemplates/{w}/security",
            "SecurityEntries": f"{base}elementtemplates/{w}/securityentries",
        },
    }


def _stream_value(
    w: str, name: str, path: str, timestamp: str, value: Any, units: str, base: str
) -> dict[str, Any]:
    return {
        "WebId": w,
        "Name": name,
        "Path": path,
        "Value": {
            "Timestamp": timestamp,
            "Value": value,
            "UnitsAbbreviation": units,
            "Good": True,
            "Questionable": False,
            "Substituted": False,
            "Annotated": False,
        },
        "Links": {"Source": f"{base}attributes/{w}"},
    }


def _point_value(state: MockState, point: Point, now: int, at: int | None) -> dict[str, Any]:
    """A PI point attribute's value: the snapshot, or interpolated at `time` when given."""
    s = state.series(point)
    hs = state.history_start_ticks
    if at is None:
        ev = s.scan(hs, now, now, hs, limit=1, descending=True)
        if len(ev):
            return timed_values(s, ev)[0]
        at = now
    return timed_values(s, s.interpolate(np.array([at], np.int64), now, hs))[0]


# ----- handlers ---------------------------------------------------------------------------
async def get_servers(state: MockState, request: web.Request, q: Query) -> web.Response:
    body = listing([server_json(runtime(request), base_url(request))])
    return json_response(body, q.fields())


async def get_server(state: MockState, request: web.Request, q: Query) -> web.Response:
    rt = runtime(request)
    if request.match_info["webId"] != rt.af.server_webid:
        raise unknown_webid(request.match_info["webId"])
    return json_response(server_json(rt, base_url(request)), q.fields())


async def get_databases(state: MockState, request: web.Request, q: Query) -> web.Response:
    rt = runtime(request)
    if request.match_info["webId"] != rt.af.server_webid:
        raise unknown_webid(request.match_info["webId"])
    return json_response(listing([database_json(rt, base_url(request))]), q.fields())


async def get_database(state: MockState, request: web.Request, q: Query) -> web.Response:
    rt = runtime(request)
    check_database(rt, request.match_info["webId"])
    return json_response(database_json(rt, base_url(request)), q.fields())


def _element_search(
    state: MockState, request: web.Request, q: Query, root: afm.Key | None
) -> web.Response:
    rt = runtime(request)
    sort_field = q.get("sortField", "Name") or "Name"
    if sort_field.lower() != "name":
        raise BadRequest(400, f"The value '{sort_field}' is not valid for sortField.")
    found = rt.search_elements(
        root,
        bool(flag(q, "searchFullHierarchy", False)),
        q.get("nameFilter", "") or "",
        q.get("templateName", "") or "",
        q.get("categoryName", "") or "",
        q.get("descriptionFilter", "") or "",
        descending(q),
    )
    base = base_url(request)
    paths = "paths" in (q.get("associations", "") or "").lower().split(";")
    items = [element_json(rt, e, base, paths) for e in page_of(found, q, state)]
    return json_response(listing(items), q.fields())


async def get_database_elements(state: MockState, request: web.Request, q: Query) -> web.Response:
    check_database(runtime(request), request.match_info["webId"])
    return _element_search(state, request, q, None)


async def get_element(state: MockState, request: web.Request, q: Query) -> web.Response:
    rt = runtime(request)
    element = find_element(rt, request.match_info["webId"])
    paths = "paths" in (q.get("associations", "") or "").lower().split(";")
    return json_response(element_json(rt, element, base_url(request), paths), q.fields())


async def get_element_elements(state: MockState, request: web.Request, q: Query) -> web.Response:
    element = find_element(runtime(request), request.match_info["webId"])
    return _element_search(state, request, q, element.key)


async def get_element_attributes(state: MockState, request: web.Request, q: Query) -> web.Response:
    rt = runtime(request)
    element = find_element(rt, request.match_info["webId"])
    keep = attribute_filter(q)
    found = [a for a in rt.attributes.of(element.key) if keep(a.name, a.type, a.category_names)]
    if descending(q):
        found.reverse()
    base = base_url(request)
    items = [attribute_json(a, base) for a in page_of(found, q, state)]
    return json_response(listing(items), q.fields())


def find_attribute(rt: AfRuntime, web_id: str, base: str) -> dict[str, Any]:
    """An element or event frame attribute's JSON, by the owner and attribute GUIDs."""
    owner = guid_of(web_id[5:27]) if web_id[:4] in ("F1Ab", "I1Ab") else None
    guid = guid_of(web_id[27:49]) if owner is not None else None
    if guid is not None and web_id[4] == "E":
        attribute = rt.attributes.by_guid(owner, guid)
        if attribute is not None:
            return attribute_json(attribute, base)
    elif guid is not None and web_id[4] == "F":
        frame = rt.ef.by_guid(owner, rt.now_ms())
        for a in rt.ef.attributes(frame, rt.now_ms()) if frame is not None else ():
            if a.id == guid:
                return frame_attribute_json(frame, a, base)
    raise unknown_webid(web_id)


async def get_attribute(state: MockState, request: web.Request, q: Query) -> web.Response:
    rt = runtime(request)
    body = find_attribute(rt, request.match_info["webId"], base_url(request))
    return json_response(body, q.fields())


async def get_templates(state: MockState, request: web.Request, q: Query) -> web.Response:
    rt = runtime(request)
    check_database(rt, request.match_info["webId"])
    query = afm.name_pattern(q.get("query"))
    base = base_url(request)
    found = [
        template_json(rt, guid, t, base)
        for guid, t in rt.templates.items()
        if query is None or query.match(t[0])
    ]
    found.sort(key=lambda t: t["Name"].lower(), reverse=descending(q))
    return json_response(listing(list(page_of(found, q, state))), q.fields())


async def get_template(state: MockState, request: web.Request, q: Query) -> web.Response:
    rt = runtime(request)
    web_id = request.match_info["webId"]
    guid = webid_guid(web_id, "ET")
    if guid is None or guid not in rt.templates:
        raise unknown_webid(web_id)
    return json_response(template_json(rt, guid, rt.templates[guid], base_url(request)), q.fields())


async def get_streamset_value(state: MockState, request: web.Request, q: Query) -> web.Response:
    """Values of an element's or event frame's attributes (an attribute's children: none here).
    PI point attributes give the
    snapshot (or the interpolated value at `time`), static ones their value at 1970-01-01,
    frame attributes the value captured for the frame, stamped at its start."""
    rt = runtime(request)
    web_id = request.match_info["webId"]
    keep = attribute_filter(q)
    base = base_url(request)
    items: list[dict[str, Any]] = []
    if web_id[2:4] == "Ab":
        find_attribute(rt, web_id, base)  # our attributes have no child attributes
    elif web_id[2:4] == "Fm":
        frame = find_frame(rt, web_id)
        now_ms = rt.now_ms()
        for a in rt.ef.attributes(frame, now_ms):
            if keep(a.name, a.type, ()):
                items.append(
                    _stream_value(
                        a.webid,
                        a.name,
                        a.path,
                        frame.start_time,
                        a.value,
                        a.units_abbreviation,
                        base,
                    )
                )
    else:
        element = find_element(rt, web_id)
        at = q.get("time")
        now = state.now_ticks()
        at_ticks = q.time("time", "*", now) if at else None
        for a in rt.attributes.of(element.key):
            if not keep(a.name, a.type, a.category_names):
                continue
            if a.point is None:
                items.append(
                    _stream_value(
                        a.webid,
                        a.name,
                        a.path,
                        afa.STATIC_TIMESTAMP,
                        a.value,
                        a.units_abbreviation,
                        base,
                    )
                )
            else:
                item = _stream_value(a.webid, a.name, a.path, "", None, "", base)
                item["Value"] = _point_value(state, a.point, now, at_ticks)
                items.append(item)
    if descending(q):
        items.reverse()
    return json_response(listing(items), q.fields())


async def get_version(state: MockState, request: web.Request, q: Query) -> web.Response:
    return json_response({"Version": runtime(request).af.version})


async def post_version(state: MockState, request: web.Request, q: Query) -> web.Response:
    rt = runtime(request)
    raw = await request.read()
    if raw.strip():
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise BadRequest(400, "The request body is not valid JSON.") from None
        version = body.get("Version") if isinstance(body, dict) else None
        if not isinstance(version, int) or isinstance(version, bool) or version < 0:
            raise BadRequest(400, "Version must be an integer >= 0.")
    else:
        version = rt.af.version + 1
    rt.set_version(version)
    return json_response({"Version": version})


def register(app: web.Application, state: MockState) -> None:
    """Add the AF and event frame routes (and the test-only version switch)."""
    app[RUNTIME] = AfRuntime(state)
    routes = [
        ("/piwebapi/assetservers", get_servers),
        ("/piwebapi/assetservers/{webId}", get_server),
        ("/piwebapi/assetservers/{webId}/assetdatabases", get_databases),
        ("/piwebapi/assetdatabases/{webId}", get_database),
        ("/piwebapi/assetdatabases/{webId}/elements", get_database_elements),
        ("/piwebapi/assetdatabases/{webId}/elementtemplates", get_templates),
        ("/piwebapi/assetdatabases/{webId}/eventframes", get_eventframes),
        ("/piwebapi/elements/{webId}", get_element),
        ("/piwebapi/elements/{webId}/elements", get_element_elements),
        ("/piwebapi/elements/{webId}/attributes", get_element_attributes),
        ("/piwebapi/attributes/{webId}", get_attribute),
        ("/piwebapi/elementtemplates/{webId}", get_template),
        ("/piwebapi/eventframes/{webId}", get_eventframe),
        ("/piwebapi/eventframes/{webId}/attributes", get_eventframe_attributes),
        ("/piwebapi/eventframes/{webId}/referencedelements", get_referenced_elements),
        ("/piwebapi/streamsets/{webId}/value", get_streamset_value),
        ("/piwebapi/mock/af/version", get_version),
    ]
    for path, fn in routes:
        app.router.add_get(path, handler(state, fn))
    app.router.add_post("/piwebapi/mock/af/version", handler(state, post_version))
