"""Helpers for the mock-pi tests: URLs, raw GETs, ground truth matching a server's settings."""

from __future__ import annotations

import gzip
import json
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from typing import Any

from mock_pi.settings import MockSettings
from mock_pi.truth import GroundTruth
from tests.conftest import SimClock


def url(base: str, route: str, /, **params: Any) -> str:
    """`base + route` with query parameters; list values repeat the parameter (webId)."""
    query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None}, doseq=True)
    return f"{base}{route}?{query}" if query else f"{base}{route}"


def get_raw(target: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, Any]:
    """Status, body bytes (gunzipped) and headers of a GET."""
    req = urllib.request.Request(target, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            body = resp.read()
            if resp.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            return resp.status, body, resp.headers
    except urllib.error.HTTPError as err:
        return err.code, err.read(), err.headers


def get(target: str) -> tuple[int, Any]:
    status, body, _ = get_raw(target)
    return status, json.loads(body) if body else None


def iso(seconds: float) -> str:
    """ISO 8601 UTC with microseconds, as a client would send a time."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def truth_for(clock: SimClock | None = None, **settings: Any) -> GroundTruth:
    """The ground truth of a server started with these MOCK_PI_ settings (on `clock`)."""
    return GroundTruth(MockSettings(**settings), clock=clock.time if clock else None)
