"""Event frames (alarms included) into `pi_event_frames`, incrementally and exactly once.

Each sync searches `searchMode=Overlapped` from the watermark (minus `events_lookback`) to
now: that returns every frame that started in the window, and every frame still open or
closed since, so a frame that closes is fetched again and its row is updated in place by a
merge on `event_frame_webid`. Frames the table still holds as open but the search no longer
returns (closed with a back-dated end) are re-read by WebID. Pages go out as `/batch`es:
the search page and a `RequestTemplate` on `streamsets/{webId}/value` for the attribute
values of every frame in it, one round trip per page.

The new watermark (the window end) is stored in the metadata of the merge commit itself, so
it only advances with the frames it covers: a crash before the commit re-reads the same
window, and the merge makes the re-read harmless (no duplicate, no gap).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from workers.af.common import (
    AfObserver,
    Commit,
    Database,
    NullAfObserver,
    Template,
    databases,
    iso_us,
    now_us,
    owns_af,
    paged,
    raw_json,
    report_bad_input,
    resource,
    strings,
    templates,
    text,
    webid_of_link,
)
from workers.af.tables import META_WATERMARK, AfTables, Quarantine
from workers.errors import ConfigError, MalformedAnswer, PIWebAPIError
from workers.lake.schemas import PI_AF_HIERARCHY, PI_EVENT_FRAMES, PI_EVENT_FRAMES_SCHEMA
from workers.lake.tables import TableStore
from workers.pi.client import PIClient
from workers.pi.replies import batch_content
from workers.pi.times import from_us, parse_iso_us, parse_time, to_us
from workers.settings import Settings

log = logging.getLogger(__name__)

# One frame's fields; the search prefixes each with `Items.`.
FRAME_FIELDS = (
    "WebId;Id;Name;Path;TemplateName;Description;StartTime;EndTime;Severity;"
    "CanBeAcknowledged;IsAcknowledged;AcknowledgedBy;AcknowledgedDate;CategoryNames;"
    "RefElementWebIds;Links.PrimaryReferencedElement;Links.Database"
)
VALUE_FIELDS = "Items.Name;Items.Value.Value;Items.Value.Good;Items.Value.Errors"
# PI shows an in-progress frame's end as 9999-12-31T23:59:59Z (AF's MaxValue).
OPEN_FROM_US = parse_iso_us("9999-01-01T00:00:00Z")
RECHECK_PER_BATCH = 500


@dataclass
class _Page:
    frames: list[dict[str, Any]]
    values: list[Any]  # one sub-response per frame, in the same order


@dataclass
class FrameRows:
    """Frames of one sync as columns of `pi_event_frames`."""

    columns: dict[str, list[Any]] = field(
        default_factory=lambda: {f.name: [] for f in PI_EVENT_FRAMES_SCHEMA}
    )
    seen: set[str] = field(default_factory=set)

    def table(self) -> pa.Table:
        return pa.table(
            {f.name: pa.array(self.columns[f.name], f.type) for f in PI_EVENT_FRAMES_SCHEMA},
            schema=PI_EVENT_FRAMES_SCHEMA,
        )


def value_text(value: Any) -> tuple[str | None, bool]:
    """An attribute value as map text, and whether it was well-formed.

    Numbers and strings as PI sends them, booleans as true/false, enumeration values by
    name; anything else (objects without a Name, lists) is malformed.
    """
    if value is None:
        return None, True
    if isinstance(value, bool):
        return ("true" if value else "false"), True
    if isinstance(value, str | int | float):
        return str(value), True
    if isinstance(value, dict) and isinstance(value.get("Name"), str):
        return value["Name"], True
    return None, False


def _time_us(value: Any) -> int:
    """Epoch µs of a PI timestamp; MalformedAnswer when it is not one."""
    if not isinstance(value, str):
        raise MalformedAnswer(f"not a timestamp: {value!r}")
    try:
        return parse_iso_us(value)
    except ValueError as exc:
        raise MalformedAnswer(str(exc)) from None


class EventsSync:
    """Read frames in a window (plus open ones) into columns; quarantine what is bad."""

    def __init__(
        self,
        client: PIClient,
        settings: Settings,
        known_elements: set[str] | None,
        synced_at_us: int,
    ) -> None:
        self.client = client
        self.settings = settings
        self.known_elements = known_elements
        self.synced_at_us = synced_at_us
        self.parallel = max(1, min(8, settings.pi_max_concurrency // 2))
        self.rows = FrameRows()
        self.gone: list[str] = []  # open frames PI answers 404 for: deleted
        self.quarantine = Quarantine.empty()

    async def window(
        self, db: Database, known: Mapping[str, Template], start: str, end: str
    ) -> None:
        pages = await paged(
            lambda i: self._page(db, start, end, i),
            lambda p: len(p.frames),
            self.settings.af_page_size,
            self.parallel,
        )
        for page in pages:
            for i, frame in enumerate(page.frames):
                self.add(db, known, frame, page.values[i] if i < len(page.values) else None)

    async def _page(self, db: Database, start: str, end: str, index: int) -> _Page:
        size = self.settings.af_page_size
        frames = resource(
            self.settings,
            f"assetdatabases/{db.webid}/eventframes",
            [
                ("searchMode", "Overlapped"),
                ("startTime", start),
                ("endTime", end),
                ("searchFullHierarchy", "true"),
                ("sortField", "StartTime"),
                ("sortOrder", "Ascending"),
                ("startIndex", str(index * size)),
                ("maxCount", str(size)),
                ("selectedFields", ";".join(f"Items.{f}" for f in FRAME_FIELDS.split(";"))),
            ],
        )
        reply = await self.client.batch(
            {
                "f": {"Method": "GET", "Resource": frames},
                "v": {
                    "Method": "GET",
                    "RequestTemplate": {
                        "Resource": resource(
                            self.settings,
                            "streamsets/{0}/value",
                            [("selectedFields", VALUE_FIELDS)],
                        )
                    },
                    "Parameters": ["$.f.Content.Items[*].WebId"],
                    "ParentIds": ["f"],
                },
            }
        )
        items = (batch_content(reply, "f") or {}).get("Items") or []
        if not items:
            return _Page([], [])
        return _Page(items, list((batch_content(reply, "v") or {}).get("Items") or []))

    async def recheck(self, known: Mapping[str, Template], webids: list[str]) -> None:
        """Re-read frames the table holds as open that the window search did not return."""
        for at in range(0, len(webids), RECHECK_PER_BATCH):
            chunk = webids[at : at + RECHECK_PER_BATCH]
            requests: dict[str, Any] = {}
            for n, w in enumerate(chunk):
                requests[f"f{n}"] = {
                    "Method": "GET",
                    "Resource": resource(
                        self.settings, f"eventframes/{w}", [("selectedFields", FRAME_FIELDS)]
                    ),
                }
                requests[f"v{n}"] = {
                    "Method": "GET",
                    "Resource": resource(
                        self.settings, f"streamsets/{w}/value", [("selectedFields", VALUE_FIELDS)]
                    ),
                }
            reply = await self.client.batch(requests)
            for n, w in enumerate(chunk):
                try:
                    frame = batch_content(reply, f"f{n}")
                except PIWebAPIError as exc:
                    if exc.status == 404:
                        self.gone.append(w)
                    else:
                        self.quarantine.add("event_frame", w, "open frame not read", str(exc))
                    continue
                self.add(None, known, frame, reply.get(f"v{n}"))

    def add(
        self, db: Database | None, known: Mapping[str, Template], frame: Any, values: Any
    ) -> None:
        """One frame's row; `db` None when read by WebID (its database from its Links)."""
        q = self.quarantine
        webid = frame.get("WebId") if isinstance(frame, dict) else None
        if not isinstance(webid, str):
            q.add("event_frame", None, "malformed event frame", "no WebId", raw_json(frame))
            return
        if webid in self.rows.seen:
            return
        try:
            start = _time_us(frame.get("StartTime"))
            end = _time_us(frame.get("EndTime"))
        except MalformedAnswer as exc:
            q.add("event_frame", webid, "malformed event frame", str(exc), raw_json(frame))
            return
        end_time = None if end >= OPEN_FROM_US else end
        self.rows.seen.add(webid)
        template_name = text(frame.get("TemplateName")) or None
        template = known.get(template_name.upper()) if template_name else None
        if template_name and template is None:
            q.add("event_frame", webid, "missing template", template_name)
        can_ack = frame.get("CanBeAcknowledged") is True
        acked = frame.get("IsAcknowledged") is True
        refs = strings(frame.get("RefElementWebIds"))
        links = frame.get("Links") if isinstance(frame.get("Links"), dict) else {}
        primary = webid_of_link(links.get("PrimaryReferencedElement"))
        if self.known_elements is not None:
            for ref in {*(refs or ()), *([primary] if primary else [])}:
                if ref not in self.known_elements:
                    q.add("event_frame", webid, "unknown referenced element", ref)
        ack_date = None
        if acked:
            try:
                ack_date = _time_us(frame.get("AcknowledgedDate"))
            except MalformedAnswer as exc:
                q.add("event_frame", webid, "malformed acknowledgement", str(exc))
        c = self.rows.columns
        c["event_frame_webid"].append(webid)
        c["event_frame_id"].append(text(frame.get("Id")))
        c["name"].append(text(frame.get("Name")))
        c["path"].append(text(frame.get("Path")))
        c["template_name"].append(template_name)
        c["description"].append(text(frame.get("Description")))
        c["start_time"].append(start)
        c["end_time"].append(end_time)
        c["primary_referenced_element_webid"].append(primary)
        c["referenced_element_webids"].append(refs)
        c["severity"].append(text(frame.get("Severity")))
        c["can_be_acknowledged"].append(can_ack)
        c["is_acknowledged"].append(acked)
        c["acknowledged_by"].append((text(frame.get("AcknowledgedBy")) or None) if acked else None)
        c["acknowledged_date"].append(ack_date)
        c["is_alarm"].append(template.is_alarm if template is not None else can_ack)
        c["category_names"].append(strings(frame.get("CategoryNames")))
        c["attributes"].append(self._attributes(webid, values))
        c["database_webid"].append(db.webid if db else webid_of_link(links.get("Database")))
        c["synced_at"].append(self.synced_at_us)

    def _attributes(self, webid: str, sub: Any) -> list[tuple[str, str | None]] | None:
        status = sub.get("Status") if isinstance(sub, dict) else None
        content = sub.get("Content") if isinstance(sub, dict) else None
        if status != 200 or not isinstance(content, dict):
            self.quarantine.add(
                "event_frame", webid, "attribute values not read", f"status {status}", raw_json(sub)
            )
            return None
        out: list[tuple[str, str | None]] = []
        for item in content.get("Items") or []:
            name = item.get("Name") if isinstance(item, dict) else None
            timed = item.get("Value") if isinstance(item, dict) else None
            if not isinstance(name, str) or not isinstance(timed, dict) or timed.get("Errors"):
                self.quarantine.add(
                    "event_frame",
                    webid,
                    "malformed attribute value",
                    text(name) or "",
                    raw_json(item),
                )
                if isinstance(name, str):
                    out.append((name, None))
                continue
            value, ok = value_text(timed.get("Value"))
            if not ok:
                self.quarantine.add(
                    "event_frame", webid, "malformed attribute value", name, raw_json(item)
                )
            out.append((name, value))
        return out


# ----- state ------------------------------------------------------------------------------
def _read_state(tables: AfTables) -> tuple[int | None, list[str], set[str] | None]:
    """(watermark µs, WebIDs of frames stored as open, known element WebIDs or None)."""
    tables.create_all()
    last = tables.last_metadata(PI_EVENT_FRAMES, META_WATERMARK)
    watermark = parse_iso_us(last[META_WATERMARK]) if last is not None else None
    frames = tables.open(PI_EVENT_FRAMES).to_pyarrow_dataset()
    open_ids = frames.to_table(
        columns=["event_frame_webid"], filter=pc.field("end_time").is_null()
    )["event_frame_webid"].to_pylist()
    elements = tables.read(PI_AF_HIERARCHY, ["element_webid"])["element_webid"]
    known = set(elements.to_pylist()) if len(elements) else None
    return watermark, open_ids, known


def _commit(
    tables: AfTables, rows: pa.Table, gone: list[str], watermark_us: int, quarantine: pa.Table
) -> Commit:
    """Merge the frames and advance the watermark in the same commit."""
    began = time.monotonic()
    tables.merge_frames(rows, gone, {META_WATERMARK: iso_us(watermark_us)})
    commit = Commit(
        PI_EVENT_FRAMES,
        rows.num_rows + len(gone),
        time.monotonic() - began,
        tables.open(PI_EVENT_FRAMES).version(),
    )
    tables.append_quarantine(quarantine)
    return commit


@dataclass(frozen=True, slots=True)
class EventsSyncResult:
    frames: int  # rows merged
    open_frames: int
    deleted: int  # open frames PI no longer knows, removed
    watermark: str
    quarantined: int
    seconds: float


def windows(start_us: int, end_us: int, max_seconds: float) -> list[tuple[int, int]]:
    """[start, end] cut into consecutive windows of at most `max_seconds` (at least one)."""
    step = max(1, round(max_seconds * 1_000_000))
    out = []
    while True:
        stop = min(end_us, start_us + step)
        out.append((start_us, stop))
        if stop >= end_us:
            return out
        start_us = stop


def _first_start_us(settings: Settings, now: int) -> int:
    try:
        return to_us(parse_time(settings.events_start, from_us(now)))
    except ValueError as exc:
        raise ConfigError(f"PIDELTA_EVENTS_START={settings.events_start!r}: {exc}") from None


async def sync_events(
    settings: Settings,
    client: PIClient | None = None,
    observer: AfObserver | None = None,
) -> EventsSyncResult | None:
    """One event-frame sync up to now. None on a shard that does not own AF.

    A long gap (first run, or a worker down for days) is read in windows of at most
    `events_max_window`, each merged with its own watermark, so memory stays bounded and
    progress survives a crash part way.
    """
    if not owns_af(settings, "event frames"):
        return None
    if client is None:
        async with PIClient(settings) as own:
            return await sync_events(settings, own, observer)
    observer = observer or NullAfObserver()
    started = time.monotonic()
    tables = AfTables(TableStore.from_settings(settings), settings.max_commit_retries)
    watermark, open_ids, known_elements = await asyncio.to_thread(_read_state, tables)
    end_us = now_us()
    start_us = (
        _first_start_us(settings, end_us)
        if watermark is None
        else watermark - round(settings.events_lookback * 1_000_000)
    )
    scope = [(db, await templates(client, db)) for db in await databases(client, settings)]
    all_templates = {name: t for _, known in scope for name, t in known.items()}
    spans = windows(min(start_us, end_us), end_us, settings.events_max_window)
    seen: set[str] = set()
    merged = deleted = still_open = quarantined = 0
    for n, (lo, hi) in enumerate(spans):
        sync = EventsSync(client, settings, known_elements, end_us)
        for db, known in scope:
            await sync.window(db, known, iso_us(lo), iso_us(hi))
        seen |= sync.rows.seen
        if n == len(spans) - 1:
            missing = [w for w in open_ids if w not in seen]
            if missing:
                await sync.recheck(all_templates, missing)
        rows = sync.rows.table()
        if rows.num_rows or sync.gone:
            commit = await asyncio.to_thread(
                _commit, tables, rows, sync.gone, hi, sync.quarantine.table(end_us)
            )
            observer.on_commit(commit.table, commit.rows, commit.seconds, commit.version)
        report_bad_input(sync.quarantine, observer)
        merged += rows.num_rows
        deleted += len(sync.gone)
        quarantined += len(sync.quarantine)
        still_open = int(pc.sum(pc.is_null(rows["end_time"])).as_py() or 0)
    seconds = time.monotonic() - started
    log.info(
        "event frames: %d merged (%d open), %d deleted in PI, from %s to %s in %d window(s), "
        "%.1f s",
        merged,
        still_open,
        deleted,
        iso_us(spans[0][0]),
        iso_us(end_us),
        len(spans),
        seconds,
    )
    return EventsSyncResult(merged, still_open, deleted, iso_us(end_us), quarantined, seconds)
