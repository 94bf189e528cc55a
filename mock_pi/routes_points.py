"""Point attributes and enumeration set routes, shaped as the PI Web API specification."""

from __future__ import annotations

import fnmatch
from typing import Any

from aiohttp import web

from mock_pi import catalog as cat
from mock_pi import point_attributes as pa
from mock_pi.query import BadRequest, Query, handler, unknown_webid
from mock_pi.render import base_url, json_response
from mock_pi.routes_data import check_server, find_point
from mock_pi.state import MockState

NAMES_NOT_FOUND = "Some or all of the point attribute names could not be found."


def attribute_json(base: str, point_webid: str, name: str, value: Any) -> dict[str, Any]:
    return {
        "Name": name,
        "Value": value,
        "Links": {
            "Self": f"{base}points/{point_webid}/attributes/{name}",
            "Point": f"{base}points/{point_webid}",
        },
    }


def point_attributes(state: MockState, web_id: str) -> dict[str, Any]:
    point = find_point(state, web_id)
    return pa.attributes(state.changes.version(point.index, state.clock()))


async def get_attributes(state: MockState, request: web.Request, q: Query) -> web.Response:
    web_id = request.match_info["webId"]
    found = point_attributes(state, web_id)
    names = [n.strip().lower() for n in q.all("name") if n.strip()]
    if any(n not in found for n in names):
        raise BadRequest(400, NAMES_NOT_FOUND)
    chosen = names or list(found)
    name_filter = (q.get("nameFilter") or "*").lower()
    base = base_url(request)
    items = [
        attribute_json(base, web_id, n, found[n])
        for n in chosen
        if fnmatch.fnmatchcase(n, name_filter)
    ]
    return json_response({"Links": {}, "Items": items}, q.fields())


async def get_attribute(state: MockState, request: web.Request, q: Query) -> web.Response:
    web_id = request.match_info["webId"]
    found = point_attributes(state, web_id)
    name = request.match_info["name"].strip().lower()
    if name not in found:
        raise BadRequest(404, f"Point attribute '{request.match_info['name']}' not found.")
    body = attribute_json(base_url(request), web_id, name, found[name])
    return json_response(body, q.fields())


class EnumerationRoutes:
    """The data server's state sets, looked up by WebID."""

    def __init__(self, state: MockState) -> None:
        self.state = state
        self.sets = pa.enumeration_sets(state.catalog)
        self.by_webid = {s.webid: s for s in self.sets}
        self.values = {
            pa.value_webid(state.catalog, s, name): (s, name, code)
            for s in self.sets
            for name, code in s.states
        }

    def set_json(self, es: pa.EnumerationSet, base: str) -> dict[str, Any]:
        return {
            "WebId": es.webid,
            "Id": str(es.id),
            "Name": es.name,
            "Description": es.description,
            "Path": f"\\\\{cat.SERVER_NAME}\\{es.name}",
            "Links": {
                "Self": f"{base}enumerationsets/{es.webid}",
                "DataServer": f"{base}dataservers/{self.state.catalog.server_webid}",
                "Values": f"{base}enumerationsets/{es.webid}/enumerationvalues",
                "Security": f"{base}enumerationsets/{es.webid}/security",
                "SecurityEntries": f"{base}enumerationsets/{es.webid}/securityentries",
            },
        }

    def value_json(self, es: pa.EnumerationSet, name: str, code: int, base: str) -> dict[str, Any]:
        w = pa.value_webid(self.state.catalog, es, name)
        return {
            "WebId": w,
            "Id": str(pa.value_id(self.state.catalog, es, name)),
            "Name": name,
            "Description": "",
            "Value": code,
            "Path": f"\\\\{cat.SERVER_NAME}\\{es.name}\\{name}",
            "Links": {
                "Self": f"{base}enumerationvalues/{w}",
                "EnumerationSet": f"{base}enumerationsets/{es.webid}",
            },
        }

    def find(self, web_id: str) -> pa.EnumerationSet:
        found = self.by_webid.get(web_id)
        if found is None:
            raise unknown_webid(web_id)
        return found

    async def list_sets(self, state: MockState, request: web.Request, q: Query) -> web.Response:
        check_server(state, request.match_info["webId"])
        base = base_url(request)
        body = {"Links": {}, "Items": [self.set_json(s, base) for s in self.sets]}
        return json_response(body, q.fields())

    async def get_set(self, state: MockState, request: web.Request, q: Query) -> web.Response:
        es = self.find(request.match_info["webId"])
        return json_response(self.set_json(es, base_url(request)), q.fields())

    async def list_values(self, state: MockState, request: web.Request, q: Query) -> web.Response:
        es = self.find(request.match_info["webId"])
        base = base_url(request)
        items = [self.value_json(es, name, code, base) for name, code in es.states]
        return json_response({"Links": {}, "Items": items}, q.fields())

    async def get_value(self, state: MockState, request: web.Request, q: Query) -> web.Response:
        web_id = request.match_info["webId"]
        found = self.values.get(web_id)
        if found is None:
            raise unknown_webid(web_id)
        es, name, code = found
        return json_response(self.value_json(es, name, code, base_url(request)), q.fields())


def register(app: web.Application, state: MockState) -> None:
    """Add the point attribute and enumeration set routes to the application."""
    enums = EnumerationRoutes(state)
    routes = [
        ("/piwebapi/points/{webId}/attributes", get_attributes),
        ("/piwebapi/points/{webId}/attributes/{name}", get_attribute),
        ("/piwebapi/dataservers/{webId}/enumerationsets", enums.list_sets),
        ("/piwebapi/enumerationsets/{webId}", enums.get_set),
        ("/piwebapi/enumerationsets/{webId}/enumerationvalues", enums.list_values),
        ("/piwebapi/enumerationvalues/{webId}", enums.get_value),
    ]
    for path, fn in routes:
        app.router.add_get(path, handler(state, fn))
