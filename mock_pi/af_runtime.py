"""The served AF model and what the AF and event frame routes share: parameters, lookups,
the element and attribute links.

WebIDs are resolved by the GUID they carry (as a PI Web API server does for Full WebIDs),
so a WebID issued before an element moved or was renamed still finds it.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

from aiohttp import web

from mock_pi import af as afm
from mock_pi import af_attributes as afa
from mock_pi import eventframes as efm
from mock_pi.query import BadRequest, Query, unknown_webid
from mock_pi.render import data_links
from mock_pi.state import MockState

ElementSearch = tuple[afm.Element, ...]


class AfRuntime:
    """The served AF version with its attributes and event frames; a version change swaps
    all three models."""

    def __init__(self, state: MockState) -> None:
        self.state = state
        self.set_version(state.settings.af_version)

    def set_version(self, version: int) -> None:
        s = self.state.settings
        self.af = afm.AfModel(s.seed, s.tag_count, version, self.state.catalog)
        self.attributes = afa.AfAttributes(self.af)
        self.ef = efm.EventFrameModel(
            self.af, self.state.history_start, s.ef_slot_seconds, s.ef_per_slot
        )
        self.search_elements = lru_cache(maxsize=16)(self._search_elements)
        self.templates = {self.af.template_webid(t[0])[0]: t for t in efm.templates(self.af)}

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
def flag(q: Query, name: str, default: bool | None) -> bool | None:
    text = q.get(name)
    if text is None:
        return default
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    raise BadRequest(400, f"The value '{text}' is not valid for {name}.")


def descending(q: Query) -> bool:
    text = q.get("sortOrder", "Ascending") or "Ascending"
    if text.lower() not in ("ascending", "descending"):
        raise BadRequest(400, f"The value '{text}' is not valid for sortOrder.")
    return text.lower() == "descending"


def page_bounds(q: Query, state: MockState) -> tuple[int, int]:
    start = q.integer("startIndex", 0)
    count = q.integer("maxCount", 1000)
    limit = state.settings.max_returned_items_per_call
    if count > limit:
        raise BadRequest(
            400, f"The maximum number of items per call ({limit}) was exceeded by maxCount."
        )
    return start, count


def search_ms(q: Query, name: str, default: str, now: int) -> int:
    """A search time in whole milliseconds (the event frame model's unit), `now` in ticks."""
    return (q.time(name, default, now) + 5_000) // 10_000


def guid_of(text: str) -> uuid.UUID | None:
    try:
        raw = base64.urlsafe_b64decode(text + "==")
    except (binascii.Error, ValueError):
        return None
    return uuid.UUID(bytes_le=raw) if len(raw) == 16 else None


def webid_guid(web_id: str, marker: str) -> uuid.UUID | None:
    """The GUID of a Full or ID-only WebID of the given type marker."""
    if web_id[:1] not in ("F", "I") or web_id[1:4] != "1" + marker or len(web_id) < 26:
        return None
    return guid_of(web_id[4:26])


# ----- rendering --------------------------------------------------------------------------
def listing(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"Items": items, "Links": {}}


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
        **data_links(base, "streamsets", w),
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


def attribute_links(w: str, base: str) -> dict[str, str]:
    return {
        "Self": f"{base}attributes/{w}",
        "Attributes": f"{base}attributes/{w}/attributes",
        "Categories": f"{base}attributes/{w}/categories",
        **data_links(base, "streams", w),
    }


# ----- lookups ----------------------------------------------------------------------------
def runtime(request: web.Request) -> AfRuntime:
    return request.app[RUNTIME]


def find_element(rt: AfRuntime, web_id: str) -> afm.Element:
    guid = webid_guid(web_id, "Em")
    element = rt.af.element_by_guid(guid) if guid is not None else None
    if element is None:
        raise unknown_webid(web_id)
    return element


def find_frame(rt: AfRuntime, web_id: str) -> efm.Frame:
    guid = webid_guid(web_id, "Fm")
    frame = rt.ef.by_guid(guid, rt.now_ms()) if guid is not None else None
    if frame is None:
        raise unknown_webid(web_id)
    return frame


def check_database(rt: AfRuntime, web_id: str) -> None:
    if webid_guid(web_id, "RD") != rt.af.server_id or guid_of(web_id[26:48]) != rt.af.database_id:
        raise unknown_webid(web_id)


def page_of(items: Sequence[Any], q: Query, state: MockState) -> Sequence[Any]:
    start, count = page_bounds(q, state)
    return items[start : start + count]


def attribute_filter(q: Query) -> Callable[[str, str, Sequence[str]], bool]:
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
