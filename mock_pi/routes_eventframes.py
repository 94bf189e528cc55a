"""Event frame routes: searches by time window and mode, a frame, its attributes and the
elements it references, rendered from `eventframes.EventFrameModel`.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from mock_pi.af_runtime import (
    AfRuntime,
    attribute_filter,
    attribute_links,
    check_database,
    descending,
    element_json,
    find_frame,
    flag,
    listing,
    page_bounds,
    page_of,
    runtime,
    search_ms,
)
from mock_pi.eventframes import (
    DIRECTIONAL_MODES,
    SEARCH_MODES,
    SORT_FIELDS,
    Frame,
    FrameAttribute,
    FrameFilter,
)
from mock_pi.pitime import ticks_of_seconds
from mock_pi.query import BadRequest, Query
from mock_pi.render import base_url, data_links, json_response
from mock_pi.state import MockState

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


def frame_attribute_json(frame: Frame, a: FrameAttribute, base: str) -> dict[str, Any]:
    links = attribute_links(a.webid, base)
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
            **data_links(base, "streamsets", w),
            "Security": f"{base}eventframes/{w}/security",
            "SecurityEntries": f"{base}eventframes/{w}/securityentries",
        },
    }


def search_mode(q: Query) -> str:
    text = q.get("searchMode", "Overlapped") or "Overlapped"
    for mode in SEARCH_MODES:
        if mode.lower() == text.lower():
            return mode
    raise BadRequest(400, f"The value '{text}' is not valid for searchMode.")


async def get_eventframes(state: MockState, request: web.Request, q: Query) -> web.Response:
    rt = runtime(request)
    check_database(rt, request.match_info["webId"])
    mode = search_mode(q)
    now = rt.state.clock()
    now_ms, now_ticks = int(now * 1000), ticks_of_seconds(now)
    start_index, count = page_bounds(q, state)
    flag(q, "searchFullHierarchy", False)
    criteria = FrameFilter(
        name_filter=q.get("nameFilter"),
        template_name=q.get("templateName"),
        referenced_element_name_filter=q.get("referencedElementNameFilter"),
        severities=tuple(q.all("severity")),
        category_name=q.get("categoryName"),
        can_be_acknowledged=flag(q, "canBeAcknowledged", None),
        is_acknowledged=flag(q, "isAcknowledged", None),
    )
    start_ms = search_ms(q, "startTime", "*-8h", now_ticks)
    if mode in DIRECTIONAL_MODES:
        if any(q.get(p) is not None for p in ("endTime", "sortField", "sortOrder")):
            raise BadRequest(
                400,
                f"The endTime, sortField and sortOrder parameters cannot be specified when "
                f"searchMode is '{mode}'.",
            )
        frames = rt.ef.search_directional(mode, start_ms, now_ms, start_index + count, criteria)
    else:
        end_ms = search_ms(q, "endTime", "*", now_ticks)
        if start_ms > end_ms:
            raise BadRequest(400, "The startTime must be less than or equal to the endTime.")
        sort_field = q.get("sortField", "Name") or "Name"
        canonical = next((f for f in SORT_FIELDS if f.lower() == sort_field.lower()), None)
        if canonical is None:
            raise BadRequest(400, f"The value '{sort_field}' is not valid for sortField.")
        frames = rt.ef.search_range(
            mode, start_ms, end_ms, now_ms, criteria, canonical, descending(q)
        )
    base = base_url(request)
    page = frames[start_index : start_index + count]
    return json_response(listing([frame_json(rt, f, base, now_ms) for f in page]), q.fields())


async def get_eventframe(state: MockState, request: web.Request, q: Query) -> web.Response:
    rt = runtime(request)
    frame = find_frame(rt, request.match_info["webId"])
    return json_response(frame_json(rt, frame, base_url(request), rt.now_ms()), q.fields())


async def get_eventframe_attributes(
    state: MockState, request: web.Request, q: Query
) -> web.Response:
    rt = runtime(request)
    frame = find_frame(rt, request.match_info["webId"])
    keep = attribute_filter(q)
    found = [a for a in rt.ef.attributes(frame, rt.now_ms()) if keep(a.name, a.type, ())]
    if descending(q):
        found.reverse()
    base = base_url(request)
    items = [frame_attribute_json(frame, a, base) for a in page_of(found, q, state)]
    return json_response(listing(items), q.fields())


async def get_referenced_elements(state: MockState, request: web.Request, q: Query) -> web.Response:
    rt = runtime(request)
    frame = find_frame(rt, request.match_info["webId"])
    base = base_url(request)
    paths = "paths" in (q.get("associations", "") or "").lower().split(";")
    items = [element_json(rt, e, base, paths) for e in rt.ef.referenced(frame)]
    return json_response(listing(items), q.fields())
