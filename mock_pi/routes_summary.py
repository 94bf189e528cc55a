"""`/streams/{webId}/summary` and `/streamsets/summary`: `Items[SummaryValue]` per stream.

Parameters as the PI Web API reads them (names case-insensitive): `summaryType` (repeated,
or `All`), `calculationBasis`, `startTime`, `endTime`, `summaryDuration`, `sampleType`,
`sampleInterval`, `timeType`. Summary values come out grouped by type, then by interval in
the requested direction. `/batch` reaches these handlers through the router like any route.

The test-only `POST /piwebapi/mock/refuse` (body `{"WebIds": [...]}`) makes
`/streamsets/summary` and `/streamsets/interpolated` answer an item error (502) for those
WebIDs until it is posted again (`[]` ends it); `GET` on the same path tells the list.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
from aiohttp import web

from mock_pi import pitime, summaries
from mock_pi.query import BadRequest, Query, handler
from mock_pi.render import base_url, json_response
from mock_pi.routes_data import find_point, lookup, too_many
from mock_pi.series import SYSTEM_TABLE, Series
from mock_pi.state import MockState

BASES = {"timeweighted": "TimeWeighted", "eventweighted": "EventWeighted"}
SAMPLE_TYPES = {"expressionrecordedvalues": "ExpressionRecordedValues", "interval": "Interval"}
TIME_TYPES = {
    "auto": "Auto",
    "earliesttime": "EarliestTime",
    "mostrecenttime": "MostRecentTime",
}
TYPE_NAMES = {t.lower(): t for t in summaries.TYPES}
NO_DATA = {"Name": SYSTEM_TABLE[-1][0], "Value": SYSTEM_TABLE[-1][1], "IsSystem": True}
EXTREMES = {"Minimum": "min_ticks", "Maximum": "max_ticks"}


class SummaryQuery:
    """The validated parameters of one summary request."""

    def __init__(self, state: MockState, q: Query, streams: int) -> None:
        self.now = state.now_ticks()
        self.start = q.time("startTime", "*-1d", self.now)
        self.end = q.time("endTime", "*", self.now)
        self.types = self._types(q)
        self.basis = self._choice(q, "calculationBasis", "TimeWeighted", BASES)
        self.time_type = self._choice(q, "timeType", "Auto", TIME_TYPES)
        sample = self._choice(q, "sampleType", "ExpressionRecordedValues", SAMPLE_TYPES)
        if sample == "Interval":
            self._span(q, "sampleInterval", required=True)
        if q.get("filterExpression"):
            raise BadRequest(400, "The parameter 'filterExpression' is not supported.")
        self.duration = self._span(q, "summaryDuration", required=False)
        length = abs(self.end - self.start)
        intervals = 1 if self.duration is None else max(1, -(-length // self.duration))
        limit = state.settings.max_returned_items_per_call
        if intervals * len(self.types) * streams > limit:
            raise too_many("summaryDuration", limit)
        self.history_start = state.history_start_ticks

    @staticmethod
    def _types(q: Query) -> tuple[str, ...]:
        asked = q.all("summaryType") or ["Total"]
        chosen: set[str] = set()
        for text in asked:
            for part in text.split(","):
                key = part.strip().lower()
                if key == "all":
                    chosen.update(summaries.TYPES)
                elif key in TYPE_NAMES:
                    chosen.add(TYPE_NAMES[key])
                else:
                    raise BadRequest(400, f"The value '{part}' is not valid for summaryType.")
        return tuple(t for t in summaries.TYPES if t in chosen)

    @staticmethod
    def _choice(q: Query, name: str, default: str, allowed: dict[str, str]) -> str:
        text = q.get(name, default) or default
        found = allowed.get(text.strip().lower())
        if found is None:
            raise BadRequest(400, f"The value '{text}' is not valid for {name}.")
        return found

    @staticmethod
    def _span(q: Query, name: str, required: bool) -> int | None:
        text = q.get(name)
        if not text:
            if required:
                raise BadRequest(400, f"The '{name}' parameter is required.")
            return None
        try:
            ticks = pitime.parse_span(text.strip())
        except pitime.PiTimeError:
            ticks = 0
        if ticks <= 0:
            raise BadRequest(400, f"The value '{text}' is not valid for {name}.")
        return ticks

    def items(self, s: Series) -> list[dict[str, Any]]:
        """The `SummaryValue` items of one stream."""
        fig = summaries.figures(
            s, self.start, self.end, self.duration, self.basis, self.now, self.history_start
        )
        n = len(fig.edges) - 1
        order = range(n) if self.start <= self.end else range(n - 1, -1, -1)
        early, late = fig.edges[:-1].tolist(), fig.edges[1:].tolist()
        first = early if self.start <= self.end else late
        stamp = {"EarliestTime": early, "MostRecentTime": late}.get(self.time_type, first)
        stamps = {t: pitime.format_time(t) for t in set(stamp)}
        questionable = fig.questionable.tolist()
        out: list[dict[str, Any]] = []
        for kind in self.types:
            values = fig.value(kind).tolist()
            times = getattr(fig, EXTREMES[kind]).tolist() if kind in EXTREMES else None
            units = self._units(s, kind)
            for i in order:
                x = values[i]
                good = not np.isnan(x)
                when = stamp[i]
                if times is not None and self.time_type == "Auto" and times[i] >= 0:
                    when = times[i]
                value: Any = x if good else NO_DATA
                if good and kind == "Count" and self.basis == "EventWeighted":
                    value = int(x)
                out.append(
                    {
                        "Type": kind,
                        "Value": {
                            "Timestamp": stamps.get(when) or pitime.format_time(when),
                            "Value": value,
                            "UnitsAbbreviation": units,
                            "Good": good,
                            "Questionable": bool(questionable[i]) and good,
                            "Substituted": False,
                            "Annotated": False,
                        },
                    }
                )
        return out

    def _units(self, s: Series, kind: str) -> str:
        if kind == "PercentGood":
            return "%"
        if kind == "Count":
            return "s" if self.basis == "TimeWeighted" else ""
        return s.point.units


async def get_summary(state: MockState, request: web.Request, q: Query) -> web.Response:
    s = state.series(find_point(state, request.match_info["webId"]))
    sq = SummaryQuery(state, q, 1)
    return json_response({"Links": {}, "Items": sq.items(s)}, q.fields())


async def get_set_summary(state: MockState, request: web.Request, q: Query) -> web.Response:
    web_ids = q.webids()
    sq = SummaryQuery(state, q, len(web_ids))
    base = base_url(request)
    items: list[dict[str, Any]] = []
    for web_id, s, err in lookup(state, web_ids, aggregate=True):
        if s is None or err is not None:
            status, messages = (err.status, list(err.messages)) if err else (404, [])
            items.append(
                {"WebId": web_id, "WebException": {"StatusCode": status, "Errors": messages}}
            )
            continue
        point = s.point
        items.append(
            {
                "WebId": point.webid,
                "Name": point.name,
                "Path": point.path,
                "Links": {"Source": f"{base}points/{point.webid}"},
                "Items": sq.items(s),
            }
        )
    return json_response({"Links": {}, "Items": items}, q.fields())


async def get_refused(state: MockState, request: web.Request, q: Query) -> web.Response:
    return json_response({"WebIds": sorted(state.refused)})


async def post_refused(state: MockState, request: web.Request, q: Query) -> web.Response:
    """Test-only: from now on `/streamsets/summary` and `/streamsets/interpolated` answer
    an item error (502) for these WebIDs; `{"WebIds": []}` ends it."""
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise BadRequest(400, "The request body is not valid JSON.") from None
    ids = body.get("WebIds") if isinstance(body, dict) else None
    if not isinstance(ids, list) or not all(isinstance(w, str) for w in ids):
        raise BadRequest(400, "WebIds must be a list of strings.")
    state.refused = set(ids)
    return json_response({"WebIds": sorted(state.refused)})


def register(app: web.Application, state: MockState) -> None:
    """Add the summary routes (and the test-only refusal switch) to the application."""
    app.router.add_get("/piwebapi/streams/{webId}/summary", handler(state, get_summary))
    app.router.add_get("/piwebapi/streamsets/summary", handler(state, get_set_summary))
    app.router.add_get("/piwebapi/mock/refuse", handler(state, get_refused))
    app.router.add_post("/piwebapi/mock/refuse", handler(state, post_refused))
