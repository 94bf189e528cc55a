"""`UpdatesSource`: PI Web API stream updates (`/streamsets/updates`) of many tags.

Why: a recorded read only sees what has arrived by the time it runs, so following the
archive by re-reading ranges reads every value several times and still misses what comes
later than the re-read reaches back. Stream updates report each change once, whatever the
age of its timestamp: `Add` (a value arrived), `Update` (replaced) and `Delete` (removed),
the AF SDK's AFDataPipeAction names (docs: "Stream Updates", `RetrieveStreamSetUpdates`).

`register` posts the WebIDs (`POST streamsets/updates?webId=...`) and `retrieve` reads the
markers (`GET streamsets/updates?marker=...`), each in as many calls as the URL limit
needs. A marker PI no longer knows (expired, or a restarted server) comes back `Failed`:
its tag is `lost`, to be read again by the recorded fallback and registered anew. A server
without the feature answers 404: `UpdatesUnavailable`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from workers.errors import PIWebAPIError, UpdatesUnavailable
from workers.lake.schemas import PI_TIMESERIES_SCHEMA
from workers.pi.client import PIClient
from workers.timeseries.calls import VALUE_FIELDS, webid_cost
from workers.timeseries.decode import TagLike, decode_streamset

UPDATES_PATH = "/streamsets/updates"
ENDPOINT = "streamsets/updates"
ACTIONS = ("Add", "Update", "Delete")
# Columns an event adds to the pi_timeseries rows it decodes to.
EVENT_SCHEMA = PI_TIMESERIES_SCHEMA.append(pa.field("action", pa.string())).append(
    pa.field("order", pa.int64())
)
# PI answers with a Location header that repeats the markers of the call: a call's URL is
# kept under the header line an HTTP client reads (8190 bytes in aiohttp).
HEADER_LINE_BYTES = 8000


@dataclass
class Retrieval:
    """What one retrieval of every marker brought.

    `events` are pi_timeseries rows plus `action` and `order` (apply in ascending order);
    `markers` the next marker of each tag read; `lost` the tags whose marker PI refused
    (tag -> PI's error text); `quarantine` values that did not decode.
    """

    events: pa.Table
    markers: dict[str, str] = field(default_factory=dict)
    lost: dict[str, str] = field(default_factory=dict)
    quarantine: list[pa.Table] = field(default_factory=list)


class UpdatesSource:
    """Registers tags for stream updates and retrieves their changes."""

    def __init__(self, client: PIClient, tags: Mapping[str, TagLike], max_url_bytes: int) -> None:
        self.client = client
        self.tags = tags
        self.max_url_bytes = min(max_url_bytes, HEADER_LINE_BYTES)
        self._order = 0

    def chunks(self, name: str, values: Sequence[str]) -> list[list[str]]:
        """`values` split into calls whose URL stays under the limit."""
        room = self.max_url_bytes - self.client.url_length(UPDATES_PATH, [])
        out: list[list[str]] = []
        chunk: list[str] = []
        used = 0
        for v in values:
            cost = webid_cost(v) - len("&webId=") + len(f"&{name}=")
            if chunk and used + cost > room:
                out.append(chunk)
                chunk, used = [], 0
            chunk.append(v)
            used += cost
        if chunk:
            out.append(chunk)
        return out

    async def register(self, webids: Sequence[str]) -> tuple[dict[str, str], dict[str, str]]:
        """(marker per registered tag, PI's error per tag it refused)."""
        chunks = self.chunks("webId", webids)
        answers = await asyncio.gather(*(self._call("POST", "webId", c) for c in chunks))
        markers: dict[str, str] = {}
        refused: dict[str, str] = {}
        for chunk, answer in zip(chunks, answers, strict=True):
            items = _items(answer)
            for webid, item in zip(chunk, items, strict=False):
                marker = item.get("LatestMarker")
                if item.get("Status") != "Failed" and isinstance(marker, str):
                    markers[webid] = marker
                else:
                    refused[webid] = _error(item)
        return markers, refused

    async def retrieve(self, markers: Mapping[str, str]) -> Retrieval:
        """Every change since each tag's marker, and the next markers."""
        by_marker = {m: w for w, m in markers.items()}
        chunks = self.chunks("marker", list(by_marker))
        answers = await asyncio.gather(*(self._call("GET", "marker", c) for c in chunks))
        out = Retrieval(EVENT_SCHEMA.empty_table())
        groups: dict[str, dict[str, list[Any]]] = {a: {} for a in ACTIONS}
        units: dict[str, Any] = {}  # per tag, as a recorded read gives them: once per stream
        for answer in answers:
            for item in _items(answer):
                webid = by_marker.get(item.get("RequestedMarker", ""))
                if webid is None:
                    continue
                latest = item.get("LatestMarker")
                if item.get("Status") == "Failed" or not isinstance(latest, str):
                    out.lost[webid] = _error(item)
                    continue
                out.markers[webid] = latest
                for e in item.get("Events") or ():
                    if not isinstance(e, dict):  # not an event: the decoder quarantines it
                        groups["Add"].setdefault(webid, []).append(e)
                        continue
                    action = e.get("Action")
                    if "UnitsAbbreviation" in e:
                        units.setdefault(webid, e["UnitsAbbreviation"])
                    if action in groups:
                        # The value as a recorded read serves it: an event adds its
                        # action and units, which would make a bad value's raw text differ.
                        value = {k: v for k, v in e.items() if k in VALUE_FIELDS}
                        groups[action].setdefault(webid, []).append(value)
        tables = []
        observed = datetime.now(UTC)
        for action, streams in groups.items():
            if not streams:
                continue
            doc = {
                "Items": [
                    {"WebId": w, "UnitsAbbreviation": units.get(w), "Items": values}
                    for w, values in streams.items()
                ]
            }
            decoded = decode_streamset(doc, self.tags, source=ENDPOINT, ingestion_time=observed)
            if decoded.quarantine.num_rows:
                out.quarantine.append(decoded.quarantine)
            rows = decoded.rows
            self._order += 1
            n = rows.num_rows
            rows = rows.append_column("action", pa.array([action] * n, pa.string()))
            tables.append(rows.append_column("order", pa.array([self._order] * n, pa.int64())))
        if tables:
            out.events = pa.concat_tables(tables).cast(EVENT_SCHEMA)
        return out

    async def _call(self, method: str, name: str, values: Sequence[str]) -> Any:
        params = [(name, v) for v in values]
        try:
            if method == "POST":
                return await self.client.post_json(UPDATES_PATH, None, params, endpoint=ENDPOINT)
            return await self.client.get_json(UPDATES_PATH, params, endpoint=ENDPOINT)
        except PIWebAPIError as exc:
            if exc.status in (404, 501):
                raise UpdatesUnavailable(str(exc)) from None
            raise


def _items(answer: Any) -> list[dict[str, Any]]:
    items = answer.get("Items") if isinstance(answer, dict) else None
    return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []


def _error(item: dict[str, Any]) -> str:
    errors = (item.get("Exception") or {}).get("Errors") if isinstance(item, dict) else None
    return "; ".join(map(str, errors)) if isinstance(errors, list) and errors else "refused"
