"""Asset Framework and event frame routes, rendered from `af.AfModel` and `EventFrameModel`.

WebIDs are resolved by the GUID they carry (as a PI Web API server does for Full WebIDs),
so a WebID issued before an element moved or was renamed still finds it. The test-only
`POST /piwebapi/mock/af/version` (body `{"Version": n}`, or none for +1) swaps the served
hierarchy version; `GET` on the same path tells the current one.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import orjson
from aiohttp import web

from mock_pi import af as afm
from mock_pi.catalog import Point
from mock_pi.eventframes import (
    DIRECTIONAL_MODES,
    SEARCH_MODES,
    SORT_FIELDS,
    Frame,
    FrameAttribute,
    FrameFilter,
)
from mock_pi.render import base_url, json_response
from mock_pi.routes_data import BadRequest, Query, handler, unknown_webid
from mock_pi.series import TICKS
from mock_pi.state import MockState
from mock_pi.truth import timed_values
from workers.pi.times import TimeParseError, format_ticks, parse_pi_time

AF_SERVER_VERSION = "2.10.5.9050"
SECURITY = {
    "CanAnnotate": True,
    "CanDelete": False,
    "CanExecute": False,
    "CanRead": True,
    "CanReadData": True,
    "CanSubscribe": True,
    "CanSubscribeOthers": False,
    "CanWrite": False,
    "CanWriteData": False,
    "HasAdmin": False,
    "Rights": ["Read", "ReadData", "Subscribe", "Annotate"],
}
ElementSearch = tuple[afm.Element, ...]


class AfRuntime:
    """The served AF version with its event frames; a version change swaps both models."""

    def __init__(self, state: MockState) -> None:
        self.state = state
        self.set_version(state.settings.af_version)

    def set_version(self, version: int) -> None:
        s = self.state.settings
        self.af = afm.AfModel(s.seed, s.tag_count, version, self.state.catalog)
        self.ef = self.af.event_frames(self.state.history_start, s.ef_slot_seconds, s.ef_per_slot)
        self.search_elements = lru_cache(maxsize=16)(self._search_elements)
        self.templates = {self.af.template_webid(t[0])[0]: t for t in self.af.templates()}

    def now_ms(self) -> int:
        return int(self.state.clock() * 1000)

    def _search_elements(
        self,
        root: afm.Key | None,
        full: bool,
        name: str,
        template: str,
        category: str,
        description: str,
        descending: bool,
    ) -> ElementSearch:
        """Matching elements below `root`, sorted by name; cached so paging stays cheap."""
        model = self.af
        found = model.walk(root) if full else (model.element(k) for k in model.children(root))
        name_rx, description_rx = afm.name_pattern(name), afm.name_pattern(description)
        out = [
            e
            for e in found
            if (name_rx is None or name_rx.match(e.name))
            and (description_rx is None or description_rx.match(e.description))
            and (not template or e.template_name.lower() == template.lower())
            and (not category or category.lower() in {c.lower() for c in e.category_names})
        ]
        out.sort(key=lambda e: (e.name.lower(), e.path.lower()), reverse=descending)
        return tuple(out)


RUNTIME = web.AppKey("af_runtime", AfRuntime)


# ----- parameters -----------------------------------------------------------------------
def _bool(q: Query, name: str, default: bool | None) -> bool | None:
    text = q.get(name)
    if text is None:
        return default
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    raise BadRequest(400, f"The value '{text}' is not valid for {name}.")


def _descending(q: Query) -> bool:
    text = q.get("sortOrder", "Ascending") or "Ascending"
    if text.lower() not in ("ascending", "descending"):
        raise BadRequest(400, f"The value '{text}' is not valid for sortOrder.")
    return text.lower() == "descending"


def _page(q: Query, state: MockState) -> tuple[int, int]:
    start = q.integer("startIndex", 0)
    count = q.integer("maxCount", 1000)
    limit = state.settings.max_returned_items_per_call
    if count > limit:
        raise BadRequest(
            400, f"The maximum number of items per call ({limit}) was exceeded by maxCount."
        )
    return start, count


def _time(q: Query, name: str, default: str, now: float) -> int:
    text = q.get(name, default) or default
    try:
        return round(parse_pi_time(text, now) * 1000)
    except TimeParseError as exc:
        raise BadRequest(400, str(exc)) from None


def _guid(text: str) -> uuid.UUID | None:
    try:
        raw = base64.urlsafe_b64decode(text + "==")
    except (binascii.Error, ValueError):
        return None
    return uuid.UUID(bytes_le=raw) if len(raw) == 16 else None


def _webid_guid(web_id: str, marker: str) -> uuid.UUID | None:
    """The GUID of a Full or ID-only WebID of the given type marker."""
    if web_id[:1] not in ("F", "I") or web_id[1:4] != "1" + marker or len(web_id) < 26:
        return None
    return _guid(web_id[4:26])


# ----- rendering --------------------------------------------------------------------------
def _items(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"Items": items, "Links": {}}


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
        "ServerTime": format_ticks(rt.now_ms() * 10_000),
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


def element_json(rt: AfRuntime, e: afm.Element, base: str, paths: bool = False) -> dict[str, Any]:
    w = e.webid
    links = {
        "Self": f"{base}elements/{w}",
        "Analyses": f"{base}elements/{w}/analyses",
        "Attributes": f"{base}elements/{w}/attributes",
        "Elements": f"{base}elements/{w}/elements",
        "Database": f"{base}assetdatabases/{rt.af.database_webid}",
        "Template": f"{base}elementtemplates/{rt.af.template_webid(e.template_name)[1]}",
        "Categories": f"{base}elements/{w}/categories",
        "EventFrames": f"{base}elements/{w}/eventframes",
        "InterpolatedData": f"{base}streamsets/{w}/interpolated",
        "RecordedData": f"{base}streamsets/{w}/recorded",
        "PlotData": f"{base}streamsets/{w}/plot",
        "SummaryData": f"{base}streamsets/{w}/summary",
        "Value": f"{base}streamsets/{w}/value",
        "EndValue": f"{base}streamsets/{w}/end",
        "Security": f"{base}elements/{w}/security",
        "SecurityEntries": f"{base}elements/{w}/securityentries",
        "NotificationRules": f"{base}elements/{w}/notificationrules",
    }
    if e.parent_webid is not None:
        links["Parent"] = f"{base}elements/{e.parent_webid}"
    out: dict[str, Any] = {
        "WebId": w,
        "Id": str(e.id),
        "Name": e.name,
        "Description": e.description,
        "Path": e.path,
        "TemplateName": e.template_name,
        "HasChildren": e.has_children,
        "CategoryNames": list(e.category_names),
        "ExtendedProperties": {},
        "Links": links,
    }
    if paths:
        out["Paths"] = [e.path]
    return out


def _attribute_links(w: str, base: str) -> dict[str, str]:
    return {
        "Self": f"{base}attributes/{w}",
        "Attributes": f"{base}attributes/{w}/attributes",
        "Categories": f"{base}attributes/{w}/categories",
        "InterpolatedData": f"{base}streams/{w}/interpolated",
        "RecordedData": f"{base}streams/{w}/recorded",
        "PlotData": f"{base}streams/{w}/plot",
        "SummaryData": f"{base}streams/{w}/summary",
        "Value": f"{base}streams/{w}/value",
        "EndValue": f"{base}streams/{w}/end",
    }


def attribute_json(a: afm.Attribute, base: str) -> dict[str, Any]:
    links = _attribute_links(a.webid, base)
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


def frame_attribute_json(frame: Frame, a: FrameAttribute, base: str) -> dict[str, Any]:
    links = _attribute_links(a.webid, base)
    links["EventFrame"] = f"{base}eventframes/{frame.webid}"
    return {
        "WebId": a.webid,
        "Id": str(a.id),
        "Name": a.name,
        "Description": "",
        "Path": a.path,
        "Type": a.type,
        "TypeQualifier": "",
        "DefaultUnitsName": a.units_name,
        "DefaultUnitsNameAbbreviation": a.units_abbreviation,
        "DisplayDigits": -5,
        "DataReferencePlugIn": "",
        "ConfigString": "",
        "IsConfigurationItem": False,
        "IsExcluded": False,
        "IsHidden": False,
        "IsManualDataEntry": False,
        "HasChildren": False,
        "CategoryNames": [],
        "Step": a.type == "String",
        "TraitName": "",
        "Links": links,
    }


def frame_json(rt: AfRuntime, frame: Frame, base: str, now_ms: int) -> dict[str, Any]:
    w = frame.webid
    refs = rt.ef.referenced(frame)
    by, date = frame.acknowledged(now_ms)
    template = rt.af.template_webid(frame.template_name)[1]
    return {
        "WebId": w,
        "Id": str(frame.id),
        "Name": frame.name,
        "Description": f"{frame.template_name} on {refs[0].name}",
        "Path": frame.path,
        "TemplateName": frame.template_name,
        "HasChildren": False,
        "CategoryNames": list(frame.category_names),
        "ExtendedProperties": {},
        "StartTime": frame.start_time,
        "EndTime": frame.end_time(now_ms),
        "Severity": frame.severity,
        "AcknowledgedBy": by,
        "AcknowledgedDate": date,
        "CanBeAcknowledged": frame.can_be_acknowledged,
        "IsAcknowledged": frame.is_acknowledged(now_ms),
        "IsAnnotated": frame.annotated,
        "IsLocked": False,
        "AreValuesCaptured": not frame.is_open(now_ms),
        "RefElementWebIds": [e.webid for e in refs],
        "Security": dict(SECURITY),
        "Links": {
            "Self": f"{base}eventframes/{w}",
            "Attributes": f"{base}eventframes/{w}/attributes",
            "EventFrames": f"{base}eventframes/{w}/eventframes",
            "Database": f"{base}assetdatabases/{rt.af.database_webid}",
            "ReferencedElements": f"{base}eventframes/{w}/referencedelements",
            "PrimaryReferencedElement": f"{base}elements/{refs[0].webid}",
            "Template": f"{base}elementtemplates/{template}",
            "Categories": f"{base}eventframes/{w}/categories",
            "Annotations": f"{base}eventframes/{w}/annotations",
            "InterpolatedData": f"{base}streamsets/{w}/interpolated",
            "RecordedData": f"{base}streamsets/{w}/recorded",
            "PlotData": f"{base}streamsets/{w}/plot",
            "SummaryData": f"{base}streamsets/{w}/summary",
            "Value": f"{base}streamsets/{w}/value",
            "EndValue": f"{base}streamsets/{w}/end",
            "Security": f"{base}eventframes/{w}/security",
            "SecurityEntries": f"{base}eventframes/{w}/securityentries",
        },
    }


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


# ----- lookups ----------------------------------------------------------------------------
def _runtime(request: web.Request) -> AfRuntime:
    return request.app[RUNTIME]


def find_element(rt: AfRuntime, web_id: str) -> afm.Element:
    guid = _webid_guid(web_id, "Em")
    element = rt.af.element_by_guid(guid) if guid is not None else None
    if element is None:
        raise unknown_webid(web_id)
    return element


def find_frame(rt: AfRuntime, web_id: str) -> Frame:
    guid = _webid_guid(web_id, "Fm")
    frame = rt.ef.by_guid(guid, rt.now_ms()) if guid is not None else None
    if frame is None:
        raise unknown_webid(web_id)
    return frame


def check_database(rt: AfRuntime, web_id: str) -> None:
    if _webid_guid(web_id, "RD") != rt.af.server_id or _guid(web_id[26:48]) != rt.af.database_id:
        raise unknown_webid(web_id)


def _page_of(items: Sequence[Any], q: Query, state: MockState) -> Sequence[Any]:
    start, count = _page(q, state)
    return items[start : start + count]


# ----- handlers ---------------------------------------------------------------------------
async def get_servers(state: MockState, request: web.Request, q: Query) -> web.Response:
    body = _items([server_json(_runtime(request), base_url(request))])
    return json_response(body, q.fields())


async def get_server(state: MockState, request: web.Request, q: Query) -> web.Response:
    rt = _runtime(request)
    if request.match_info["webId"] != rt.af.server_webid:
        raise unknown_webid(request.match_info["webId"])
    return json_response(server_json(rt, base_url(request)), q.fields())


async def get_databases(state: MockState, request: web.Request, q: Query) -> web.Response:
    rt = _runtime(request)
    if request.match_info["webId"] != rt.af.server_webid:
        raise unknown_webid(request.match_info["webId"])
    return json_response(_items([database_json(rt, base_url(request))]), q.fields())


async def get_database(state: MockState, request: web.Request, q: Query) -> web.Response:
    rt = _runtime(request)
    check_database(rt, request.match_info["webId"])
    return json_response(database_json(rt, base_url(request)), q.fields())


def _element_search(
    state: MockState, request: web.Request, q: Query, root: afm.Key | None
) -> web.Response:
    rt = _runtime(request)
    sort_field = q.get("sortField", "Name") or "Name"
    if sort_field.lower() != "name":
        raise BadRequest(400, f"The value '{sort_field}' is not valid for sortField.")
    found = rt.search_elements(
        root,
        bool(_bool(q, "searchFullHierarchy", False)),
        q.get("nameFilter", "") or "",
        q.get("templateName", "") or "",
        q.get("categoryName", "") or "",
        q.get("descriptionFilter", "") or "",
        _descending(q),
    )
    base = base_url(request)
    paths = "paths" in (q.get("associations", "") or "").lower().split(";")
    items = [element_json(rt, e, base, paths) for e in _page_of(found, q, state)]
    return json_response(_items(items), q.fields())


async def get_database_elements(state: MockState, request: web.Request, q: Query) -> web.Response:
    check_database(_runtime(request), request.match_info["webId"])
    return _element_search(state, request, q, None)


async def get_element(state: MockState, request: web.Request, q: Query) -> web.Response:
    rt = _runtime(request)
    element = find_element(rt, request.match_info["webId"])
    paths = "paths" in (q.get("associations", "") or "").lower().split(";")
    return json_response(element_json(rt, element, base_url(request), paths), q.fields())


async def get_element_elements(state: MockState, request: web.Request, q: Query) -> web.Response:
    element = find_element(_runtime(request), request.match_info["webId"])
    return _element_search(state, request, q, element.key)


def _attribute_filter(q: Query) -> Callable[[str, str, Sequence[str]], bool]:
    name_rx = afm.name_pattern(q.get("nameFilter"))
    category = (q.get("categoryName") or "").lower()
    value_type = (q.get("valueType") or "").lower()

    def keep(name: str, type_: str, categories: Sequence[str]) -> bool:
        return (
            (name_rx is None or name_rx.match(name) is not None)
            and (not category or category in {c.lower() for c in categories})
            and (not value_type or value_type == type_.lower())
        )

    return keep


async def get_element_attributes(state: MockState, request: web.Request, q: Query) -> web.Response:
    rt = _runtime(request)
    element = find_element(rt, request.match_info["webId"])
    keep = _attribute_filter(q)
    found = [a for a in rt.af.attributes(element.key) if keep(a.name, a.type, a.category_names)]
    if _descending(q):
        found.reverse()
    base = base_url(request)
    items = [attribute_json(a, base) for a in _page_of(found, q, state)]
    return json_response(_items(items), q.fields())


def find_attribute(rt: AfRuntime, web_id: str, base: str) -> dict[str, Any]:
    """An element or event frame attribute's JSON, by the owner and attribute GUIDs."""
    owner = _guid(web_id[5:27]) if web_id[:4] in ("F1Ab", "I1Ab") else None
    guid = _guid(web_id[27:49]) if owner is not None else None
    if guid is not None and web_id[4] == "E":
        attribute = rt.af.attribute_by_guid(owner, guid)
        if attribute is not None:
            return attribute_json(attribute, base)
    elif guid is not None and web_id[4] == "F":
        frame = rt.ef.by_guid(owner, rt.now_ms())
        for a in rt.ef.attributes(frame, rt.now_ms()) if frame is not None else ():
            if a.id == guid:
                return frame_attribute_json(frame, a, base)
    raise unknown_webid(web_id)


async def get_attribute(state: MockState, request: web.Request, q: Query) -> web.Response:
    rt = _runtime(request)
    body = find_attribute(rt, request.match_info["webId"], base_url(request))
    return json_response(body, q.fields())


async def get_templates(state: MockState, request: web.Request, q: Query) -> web.Response:
    rt = _runtime(request)
    check_database(rt, request.match_info["webId"])
    query = afm.name_pattern(q.get("query"))
    base = base_url(request)
    found = [
        template_json(rt, guid, t, base)
        for guid, t in rt.templates.items()
        if query is None or query.match(t[0])
    ]
    found.sort(key=lambda t: t["Name"].lower(), reverse=_descending(q))
    return json_response(_items(list(_page_of(found, q, state))), q.fields())


async def get_template(state: MockState, request: web.Request, q: Query) -> web.Response:
    rt = _runtime(request)
    web_id = request.match_info["webId"]
    guid = _webid_guid(web_id, "ET")
    if guid is None or guid not in rt.templates:
        raise unknown_webid(web_id)
    return json_response(template_json(rt, guid, rt.templates[guid], base_url(request)), q.fields())


def _mode(q: Query) -> str:
    text = q.get("searchMode", "Overlapped") or "Overlapped"
    for mode in SEARCH_MODES:
        if mode.lower() == text.lower():
            return mode
    raise BadRequest(400, f"The value '{text}' is not valid for searchMode.")


async def get_eventframes(state: MockState, request: web.Request, q: Query) -> web.Response:
    rt = _runtime(request)
    check_database(rt, request.match_info["webId"])
    mode = _mode(q)
    now = rt.state.clock()
    now_ms = int(now * 1000)
    start_index, count = _page(q, state)
    _bool(q, "searchFullHierarchy", False)
    criteria = FrameFilter(
        name_filter=q.get("nameFilter"),
        template_name=q.get("templateName"),
        referenced_element_name_filter=q.get("referencedElementNameFilter"),
        severities=tuple(q.all("severity")),
        category_name=q.get("categoryName"),
        can_be_acknowledged=_bool(q, "canBeAcknowledged", None),
        is_acknowledged=_bool(q, "isAcknowledged", None),
    )
    start_ms = _time(q, "startTime", "*-8h", now)
    if mode in DIRECTIONAL_MODES:
        if any(q.get(p) is not None for p in ("endTime", "sortField", "sortOrder")):
            raise BadRequest(
                400,
                f"The endTime, sortField and sortOrder parameters cannot be specified when "
                f"searchMode is '{mode}'.",
            )
        frames = rt.ef.search_directional(mode, start_ms, now_ms, start_index + count, criteria)
    else:
        end_ms = _time(q, "endTime", "*", now)
        if start_ms > end_ms:
            raise BadRequest(400, "The startTime must be less than or equal to the endTime.")
        sort_field = q.get("sortField", "Name") or "Name"
        canonical = next((f for f in SORT_FIELDS if f.lower() == sort_field.lower()), None)
        if canonical is None:
            raise BadRequest(400, f"The value '{sort_field}' is not valid for sortField.")
        frames = rt.ef.search_range(
            mode, start_ms, end_ms, now_ms, criteria, canonical, _descending(q)
        )
    base = base_url(request)
    page = frames[start_index : start_index + count]
    return json_response(_items([frame_json(rt, f, base, now_ms) for f in page]), q.fields())


async def get_eventframe(state: MockState, request: web.Request, q: Query) -> web.Response:
    rt = _runtime(request)
    frame = find_frame(rt, request.match_info["webId"])
    return json_response(frame_json(rt, frame, base_url(request), rt.now_ms()), q.fields())


async def get_eventframe_attributes(
    state: MockState, request: web.Request, q: Query
) -> web.Response:
    rt = _runtime(request)
    frame = find_frame(rt, request.match_info["webId"])
    keep = _attribute_filter(q)
    found = [a for a in rt.ef.attributes(frame, rt.now_ms()) if keep(a.name, a.type, ())]
    if _descending(q):
        found.reverse()
    base = base_url(request)
    items = [frame_attribute_json(frame, a, base) for a in _page_of(found, q, state)]
    return json_response(_items(items), q.fields())


async def get_referenced_elements(state: MockState, request: web.Request, q: Query) -> web.Response:
    rt = _runtime(request)
    frame = find_frame(rt, request.match_info["webId"])
    base = base_url(request)
    paths = "paths" in (q.get("associations", "") or "").lower().split(";")
    items = [element_json(rt, e, base, paths) for e in rt.ef.referenced(frame)]
    return json_response(_items(items), q.fields())


async def get_streamset_value(state: MockState, request: web.Request, q: Query) -> web.Response:
    """Values of an element's or event frame's attributes (an attribute's children: none here).
    PI point attributes give the
    snapshot (or the interpolated value at `time`), static ones their value at 1970-01-01,
    frame attributes the value captured for the frame, stamped at its start."""
    rt = _runtime(request)
    web_id = request.match_info["webId"]
    keep = _attribute_filter(q)
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
        at_ticks = round(_time(q, "time", "*", now / TICKS) * 10_000) if at else None
        for a in rt.af.attributes(element.key):
            if not keep(a.name, a.type, a.category_names):
                continue
            if a.point is None:
                items.append(
                    _stream_value(
                        a.webid,
                        a.name,
                        a.path,
                        afm.STATIC_TIMESTAMP,
                        a.value,
                        a.units_abbreviation,
                        base,
                    )
                )
            else:
                item = _stream_value(a.webid, a.name, a.path, "", None, "", base)
                item["Value"] = _point_value(state, a.point, now, at_ticks)
                items.append(item)
    if _descending(q):
        items.reverse()
    return json_response(_items(items), q.fields())


async def get_version(state: MockState, request: web.Request, q: Query) -> web.Response:
    return json_response({"Version": _runtime(request).af.version})


async def post_version(state: MockState, request: web.Request, q: Query) -> web.Response:
    rt = _runtime(request)
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
