"""Stream updates: `POST /piwebapi/streamsets/updates` registers, `GET` retrieves.

A marker is `<32 hex>_<n>`, like PI's: the hex is the PI point ID (4 bytes), the instant
the marker was issued in 100 ns ticks (8 bytes) and a 4-byte keyed BLAKE2b tag over those
and `n`, the number of retrievals since registration. The key is drawn when the process
starts, so a restarted server refuses old markers as a restarted PI Web API does: the
client registers again. A marker expires `MOCK_PI_MARKER_RETENTION` seconds after it was
issued.

Retrieving marker M issued at t0 returns every change to the stream in (t0, now], however
old the value's timestamp (`mock_pi.changes.ChangeModel.window`): `Add` for a value that
arrived (became visible, late values included; as it was then), `Update` for one edited
(the new value), `Delete` for one removed (the old value), the AF SDK's AFDataPipeAction
names; and a new marker issued at now. A marker is a position in the stream, as PI's are
(PI's `<guid>_<n>` names the n-th update of the registration), so reading M again before it
expires returns every change since t0 once more, up to the new now (what the first read
returned and what happened since), with a marker of that new now: a client that lost a
response, or another process resuming from a stored marker, goes on from M without losing
a change, and applying a change twice leaves the archive as it is.

With `MOCK_PI_UPDATES=false` both routes answer 404, as a PI Web API without the feature.
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from mock_pi.catalog import Point
from mock_pi.errors import error_response
from mock_pi.render import Fields, base_url, json_response
from mock_pi.series import TICKS
from mock_pi.state import MockState
from mock_pi.truth import GroundTruth

UPDATES_PATH = "/piwebapi/streamsets/updates"
_MARKER = re.compile(r"^([0-9a-f]{32})_(\d{1,9})$")
_PACK = struct.Struct("<Iq")
FAILED = "Failed"


def unknown_stream(web_id: str) -> str:
    return f"The WebID '{web_id}' does not identify a PI point on this server."


def marker_invalid(marker: str) -> str:
    return f"The marker '{marker}' is not valid. Register for updates again."


def marker_expired(marker: str) -> str:
    return f"The marker '{marker}' has expired. Register for updates again."


@dataclass(frozen=True, slots=True)
class Marker:
    text: str
    point_id: int
    issued: int  # ticks
    number: int


class MarkerBook:
    """Issues and checks markers (keyed by this process, so a restart refuses old ones)."""

    def __init__(self, state: MockState) -> None:
        self.state = state
        self.key = os.urandom(16)

    @property
    def retention_ticks(self) -> int:
        return round(self.state.settings.marker_retention * TICKS)

    def _tag(self, payload: bytes, number: int) -> bytes:
        digest = hashlib.blake2b(payload + number.to_bytes(4, "little"), key=self.key)
        return digest.digest()[:4]

    def issue(self, point: Point, issued: int, number: int) -> str:
        payload = _PACK.pack(point.point_id, issued)
        return f"{(payload + self._tag(payload, number)).hex()}_{number}"

    def check(self, text: str, now: int) -> tuple[Marker | None, str | None]:
        """The marker when it is authentic, and the error a client gets for it, if any."""
        m = _MARKER.match(text)
        if m is None:
            return None, marker_invalid(text)
        raw, number = bytes.fromhex(m.group(1)), int(m.group(2))
        payload, tag = raw[: _PACK.size], raw[_PACK.size :]
        point_id, issued = _PACK.unpack(payload)
        if tag != self._tag(payload, number) or not 1 <= point_id <= self.state.catalog.tag_count:
            return None, marker_invalid(text)
        marker = Marker(text, point_id, issued, number)
        if now - issued > self.retention_ticks:
            return marker, marker_expired(text)
        return marker, None

    def point(self, marker: Marker) -> Point:
        return self.state.catalog.point(marker.point_id - 1)

    def advance(self, marker: Marker, now: int) -> str:
        """The marker after a read of `marker` at `now`: the position now."""
        return self.issue(self.point(marker), now, marker.number + 1)


MARKERS = web.AppKey("stream_update_markers", MarkerBook)


def _query_all(request: web.Request, name: str) -> list[str]:
    """Values of a query parameter, its name matched case-insensitively as PI does."""
    return [v for k, v in request.query.items() if k.lower() == name.lower()]


def _fields(request: web.Request) -> Fields:
    found = _query_all(request, "selectedFields")
    return Fields.parse(found[0] if found else None)


def _source(point: Point) -> dict[str, str]:
    return {"Source": point.webid, "SourceName": point.name, "SourcePath": point.path}


def _location(request: web.Request, markers: list[str]) -> dict[str, str]:
    if not markers:
        return {}
    query = "&".join(f"marker={m}" for m in markers)
    return {"Location": f"{base_url(request)}streamsets/updates?{query}"}


UPDATES_OFF = "Stream updates are not enabled on this server."


def handlers(state: MockState, book: MarkerBook) -> tuple[Any, Any]:
    truth = GroundTruth.from_state(state)

    async def register(request: web.Request) -> web.Response:
        web_ids = _query_all(request, "webId")
        if not web_ids:
            return error_response(400, "The 'webId' parameter is required.")
        now = state.now_ticks()
        items: list[dict[str, Any]] = []
        issued: list[str] = []
        for web_id in web_ids:
            point = state.catalog.by_webid(web_id)
            if point is None:
                items.append(
                    {
                        "Source": web_id,
                        "Status": FAILED,
                        "Exception": {"Errors": [unknown_stream(web_id)]},
                    }
                )
                continue
            marker = book.issue(point, now, 0)
            issued.append(marker)
            items.append({**_source(point), "Status": "Succeeded", "LatestMarker": marker})
        response = json_response({"Links": {}, "Items": items}, _fields(request))
        response.headers.update(_location(request, issued))
        return response

    async def retrieve(request: web.Request) -> web.Response:
        texts = _query_all(request, "marker")
        if not texts:
            return error_response(400, "The 'marker' parameter is required.")
        now = state.now_ticks()
        items: list[dict[str, Any]] = []
        latest: list[str] = []
        for text in texts:
            marker, error = book.check(text, now)
            source = {} if marker is None else _source(book.point(marker))
            if marker is None or error is not None:
                failure = {"Status": FAILED, "Exception": {"Errors": [error]}}
                items.append({**source, "RequestedMarker": text, **failure})
                continue
            following = book.advance(marker, now)
            events = truth.updates(book.point(marker), marker.issued, now)
            latest.append(following)
            items.append(
                {
                    **source,
                    "RequestedMarker": text,
                    "LatestMarker": following,
                    "Status": "Updated",
                    "Events": events,
                }
            )
        response = json_response({"Links": {}, "Items": items}, _fields(request))
        response.headers.update(_location(request, latest))
        return response

    return register, retrieve


def register(app: web.Application, state: MockState) -> None:
    """Add `POST` and `GET /piwebapi/streamsets/updates`."""
    book = MarkerBook(state)
    app[MARKERS] = book
    post, get = handlers(state, book)
    if not state.settings.updates:

        async def off(request: web.Request) -> web.Response:
            return error_response(404, UPDATES_OFF)

        post = get = off
    app.router.add_post(UPDATES_PATH, post)
    app.router.add_get(UPDATES_PATH, get)
