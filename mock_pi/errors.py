"""PI Web API error bodies: every failure answers `{"Errors": [...]}` with its HTTP status."""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from aiohttp import web


def error_body(*messages: str) -> dict[str, list[str]]:
    """The JSON object a PI Web API server sends with a non-2xx status."""
    return {"Errors": list(messages)}


def error_response(
    status: int, *messages: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    """A JSON error response, shaped as PI Web API shapes them, for any route module."""
    return web.Response(
        status=status,
        body=orjson.dumps(error_body(*messages)),
        content_type="application/json",
        charset="utf-8",
        headers=dict(headers or {}),
    )
