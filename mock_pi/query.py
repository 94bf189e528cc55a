"""What every route reads a request with: its query parameters, case-insensitive as PI
Web API reads them, and the refusals (`BadRequest`) that `handler` turns into PI's error
body."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from mock_pi import pitime
from mock_pi.errors import error_response
from mock_pi.render import Fields
from mock_pi.state import MockState

BOUNDARY_TYPES = {"inside": "Inside", "outside": "Outside", "interpolated": "Interpolated"}


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

    def time(self, name: str, default: str, now: int) -> int:
        """A PI time string in ticks, read relative to `now` (ticks)."""
        text = self.get(name, default) or default
        try:
            return pitime.parse_time(text, now)
        except pitime.PiTimeError as exc:
            raise BadRequest(400, str(exc)) from None

    def interval(self, default: str) -> int:
        text = (self.get("interval", default) or default).strip()
        try:
            ticks = pitime.parse_span(text)
        except pitime.PiTimeError:
            ticks = 0
        if ticks <= 0:
            raise BadRequest(400, f"The value '{text}' is not valid for interval.")
        return ticks

    def boundary(self) -> str:
        text = self.get("boundaryType", "Inside") or "Inside"
        found = BOUNDARY_TYPES.get(text.strip().lower())
        if found is None:
            raise BadRequest(400, f"The value '{text}' is not valid for boundaryType.")
        return found

    def webids(self) -> list[str]:
        ids = [w for w in self.all("webId") if w]
        if not ids:
            raise BadRequest(400, "The 'webId' parameter is required.")
        return ids


def unknown_webid(web_id: str) -> BadRequest:
    return BadRequest(404, f"Unknown or invalid WebID format: '{web_id}'.")


def handler(state: MockState, fn: Any) -> Any:
    """Wrap a route function `fn(state, request, query)` so BadRequest becomes PI's error body."""

    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            return await fn(state, request, Query(request))
        except BadRequest as exc:
            return error_response(exc.status, *exc.messages)

    return handle
