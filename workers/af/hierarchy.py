"""AF hierarchy and element attributes into `pi_af_hierarchy` and `pi_af_attributes`.

One round trip per page of elements: a `/batch` holds the paged element search
(`searchFullHierarchy`, `startIndex`, `maxCount`) and a `RequestTemplate` over that page's
WebIDs that fetches every element's attributes, so the cost is pages, not elements. Pages
go out in parallel waves until one comes back short. Parents come from paths (AF paths are
unique), so no request per element is needed for them either. PI point references give
their point through `Links.Point`; config strings without one are resolved in bulk.

Each sync builds the whole snapshot, hashes its content, and overwrites a table only when
the hash differs from the one in the table's last pidelta commit: one commit per table per
change, none when nothing changed. Both tables carry the same `snapshot_id` (the hash), so a
reader can tell whether the two tables come from the same sync.

Only shard `af_shard` syncs AF: the hierarchy is not partitioned by tag, and two writers
would only race each other's overwrites.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

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
from workers.af.tables import (
    META_HASH,
    META_SNAPSHOT,
    META_SYNCED_AT,
    AfTables,
    Quarantine,
    content_hash,
)
from workers.errors import PIError
from workers.lake.schemas import (
    PI_AF_ATTRIBUTES,
    PI_AF_ATTRIBUTES_SCHEMA,
    PI_AF_HIERARCHY,
    PI_AF_HIERARCHY_SCHEMA,
    UTC_US,
)
from workers.lake.tables import TableStore
from workers.pi.client import PIClient
from workers.pi.replies import batch_content
from workers.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

ELEMENT_FIELDS = (
    "Items.WebId;Items.Id;Items.Name;Items.Path;Items.TemplateName;Items.Description;"
    "Items.CategoryNames;Items.HasChildren;Items.ElementType"
)
ATTRIBUTE_FIELDS = (
    "Items.WebId;Items.Id;Items.Name;Items.Path;Items.Description;Items.Type;"
    "Items.TypeQualifier;Items.DefaultUnitsName;Items.DefaultUnitsNameAbbreviation;"
    "Items.DataReferencePlugIn;Items.ConfigString;Items.CategoryNames;"
    "Items.IsConfigurationItem;Items.Links.Point"
)
PI_POINT = "PI Point"
MAX_ATTRIBUTES_PER_ELEMENT = 10_000
POINTS_PER_BATCH = 1000


# ----- snapshot ---------------------------------------------------------------------------
@dataclass
class _Page:
    elements: list[dict[str, Any]]
    attributes: list[Any]  # one sub-response per element, in the same order


@dataclass
class Snapshot:
    """The AF content of one sync, as columns of the two tables."""

    hierarchy: dict[str, list[Any]] = field(
        default_factory=lambda: {f.name: [] for f in PI_AF_HIERARCHY_SCHEMA}
    )
    attributes: dict[str, list[Any]] = field(
        default_factory=lambda: {f.name: [] for f in PI_AF_ATTRIBUTES_SCHEMA}
    )
    quarantine: Quarantine = field(default_factory=Quarantine.empty)

    def content(self) -> tuple[pa.Table, pa.Table]:
        """Both tables without their per-sync columns, sorted by key (what the hash covers)."""
        return (
            _content(self.hierarchy, PI_AF_HIERARCHY_SCHEMA, "element_webid"),
            _content(self.attributes, PI_AF_ATTRIBUTES_SCHEMA, "attribute_webid"),
        )


VOLATILE = ("snapshot_id", "synced_at")


def _content(columns: dict[str, list[Any]], schema: pa.Schema, key: str) -> pa.Table:
    fields = [f for f in schema if f.name not in VOLATILE]
    table = pa.table({f.name: pa.array(columns[f.name], f.type) for f in fields})
    return table.sort_by([(key, "ascending")])


def with_sync_columns(table: pa.Table, snapshot_id: str, synced_at_us: int) -> pa.Table:
    n = table.num_rows
    return table.append_column(
        "snapshot_id", pa.array([snapshot_id] * n, pa.string())
    ).append_column("synced_at", pa.array([synced_at_us] * n, pa.int64()).cast(UTC_US))


def config_point_path(config: str | None) -> str | None:
    """`\\\\server\\tag` from a PI Point config string, None when it is not absolute.

    AF stores `\\\\server\\tag`, `\\\\server\\tag;ptclassname=...` or the resolved
    `\\\\server?guid\\tag?id`; a string with `%substitutions%` needs AF to resolve it.
    """
    if not config:
        return None
    head = config.split(";", 1)[0].strip()
    if not head.startswith("\\\\") or "%" in head:
        return None
    server, sep, tag = head[2:].partition("\\")
    server, tag = server.split("?", 1)[0], tag.split("?", 1)[0]
    if not sep or not server or not tag or "\\" in tag:
        return None
    return f"\\\\{server}\\{tag}"


class AfSync:
    """Fetch one AF snapshot from PI (all databases in scope)."""

    def __init__(self, client: PIClient, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self.parallel = max(1, min(8, settings.pi_max_concurrency // 2))

    async def snapshot(self) -> Snapshot:
        snap = Snapshot()
        pending_points: list[tuple[int, str | None, str | None]] = []
        for db in await databases(self.client, self.settings):
            known = await templates(self.client, db)
            pages = await paged(
                lambda i, db=db: self._page(db, i),
                lambda p: len(p.elements),
                self.settings.af_page_size,
                self.parallel,
            )
            self._add_database(snap, db, known, pages, pending_points)
        await self._resolve_points(snap, pending_points)
        return snap

    async def _page(self, db: Database, index: int) -> _Page:
        size = self.settings.af_page_size
        elements = resource(
            self.settings,
            f"assetdatabases/{db.webid}/elements",
            [
                ("searchFullHierarchy", "true"),
                ("startIndex", str(index * size)),
                ("maxCount", str(size)),
                ("selectedFields", ELEMENT_FIELDS),
            ],
        )
        attributes = resource(
            self.settings,
            "elements/{0}/attributes",
            [
                ("searchFullHierarchy", "true"),
                ("maxCount", str(MAX_ATTRIBUTES_PER_ELEMENT)),
                ("selectedFields", ATTRIBUTE_FIELDS),
            ],
        )
        reply = await self.client.batch(
            {
                "e": {"Method": "GET", "Resource": elements},
                "a": {
                    "Method": "GET",
                    "RequestTemplate": {"Resource": attributes},
                    "Parameters": ["$.e.Content.Items[*].WebId"],
                    "ParentIds": ["e"],
                },
            }
        )
        items = (batch_content(reply, "e") or {}).get("Items") or []
        if not items:
            return _Page([], [])
        subs = (batch_content(reply, "a") or {}).get("Items") or []
        return _Page(items, list(subs))

    def _add_database(
        self,
        snap: Snapshot,
        db: Database,
        known: Mapping[str, Template],
        pages: Iterable[_Page],
        pending_points: list[tuple[int, str | None, str | None]],
    ) -> None:
        q = snap.quarantine
        seen: set[str] = set()
        kept: list[tuple[dict[str, Any], Any]] = []
        for page in pages:
            for i, element in enumerate(page.elements):
                webid, path = element.get("WebId"), element.get("Path")
                if not isinstance(webid, str) or not isinstance(path, str):
                    q.add(
                        "element",
                        text(webid),
                        "malformed element",
                        "no WebId or Path",
                        raw_json(element),
                    )
                    continue
                if webid in seen:
                    continue
                seen.add(webid)
                kept.append((element, page.attributes[i] if i < len(page.attributes) else None))
        by_path = {e["Path"].upper(): e["WebId"] for e, _ in kept}
        root = db.path.upper()
        h = snap.hierarchy
        for element, attrs in kept:
            webid, path = element["WebId"], element["Path"]
            parent_path = path[: path.rfind("\\")].upper()
            parent = None if parent_path == root else by_path.get(parent_path)
            if parent is None and parent_path != root:
                q.add("element", webid, "unknown parent", parent_path, raw_json(element))
            template = text(element.get("TemplateName")) or None
            if template and template.upper() not in known:
                q.add("element", webid, "missing template", template)
            h["element_webid"].append(webid)
            h["element_id"].append(text(element.get("Id")))
            h["name"].append(text(element.get("Name")))
            h["path"].append(path)
            h["parent_element_webid"].append(parent)
            h["depth"].append(path[len(db.path) + 1 :].count("\\"))
            h["template_name"].append(template)
            h["element_type"].append(text(element.get("ElementType")))
            h["description"].append(text(element.get("Description")))
            h["category_names"].append(strings(element.get("CategoryNames")))
            h["has_children"].append(
                element.get("HasChildren") if isinstance(element.get("HasChildren"), bool) else None
            )
            h["database_name"].append(db.name)
            h["database_webid"].append(db.webid)
            self._add_attributes(snap, db, webid, attrs, pending_points)

    def _add_attributes(
        self,
        snap: Snapshot,
        db: Database,
        element_webid: str,
        sub: Any,
        pending_points: list[tuple[int, str | None, str | None]],
    ) -> None:
        q = snap.quarantine
        status = sub.get("Status") if isinstance(sub, dict) else None
        content = sub.get("Content") if isinstance(sub, dict) else None
        if status != 200 or not isinstance(content, dict):
            q.add(
                "element", element_webid, "attributes not read", f"status {status}", raw_json(sub)
            )
            return
        items = content.get("Items") or []
        if len(items) >= MAX_ATTRIBUTES_PER_ELEMENT:
            q.add("element", element_webid, "attributes truncated", f"{len(items)} read")
        a = snap.attributes
        for attr in items:
            webid = attr.get("WebId") if isinstance(attr, dict) else None
            if not isinstance(webid, str):
                q.add("attribute", None, "malformed attribute", element_webid, raw_json(attr))
                continue
            reference = text(attr.get("DataReferencePlugIn")) or None
            config = text(attr.get("ConfigString")) or None
            point_webid = point_name = None
            if reference == PI_POINT:
                point_webid = webid_of_link((attr.get("Links") or {}).get("Point"))
                path = config_point_path(config)
                point_name = path.rsplit("\\", 1)[1] if path else None
                if point_webid is None or point_name is None:
                    if path is None and point_webid is None:
                        q.add(
                            "attribute",
                            webid,
                            "unresolvable PI point reference",
                            config or "",
                            raw_json(attr),
                        )
                    else:
                        pending_points.append((len(a["attribute_webid"]), path, point_webid))
            a["attribute_webid"].append(webid)
            a["attribute_id"].append(text(attr.get("Id")))
            a["element_webid"].append(element_webid)
            a["name"].append(text(attr.get("Name")))
            a["path"].append(text(attr.get("Path")))
            a["description"].append(text(attr.get("Description")))
            a["type"].append(text(attr.get("Type")))
            a["type_qualifier"].append(text(attr.get("TypeQualifier")) or None)
            a["units"].append(text(attr.get("DefaultUnitsNameAbbreviation")) or None)
            a["units_name"].append(text(attr.get("DefaultUnitsName")) or None)
            a["data_reference"].append(reference)
            a["config_string"].append(config)
            a["point_webid"].append(point_webid)
            a["point_name"].append(point_name)
            a["category_names"].append(strings(attr.get("CategoryNames")))
            a["is_configuration_item"].append(
                attr.get("IsConfigurationItem")
                if isinstance(attr.get("IsConfigurationItem"), bool)
                else None
            )
            a["database_webid"].append(db.webid)

    async def _resolve_points(
        self, snap: Snapshot, pending: list[tuple[int, str | None, str | None]]
    ) -> None:
        """Fill point WebIDs (and names) that attributes did not carry, in `/batch`es.

        Keyed by the point path, or by WebID when only the name is missing, each distinct
        point asked for once.
        """
        if not pending:
            return
        wanted: dict[str, str] = {}
        for _, path, webid in pending:
            key = webid or path
            if key is not None and key not in wanted:
                if webid is not None:
                    wanted[key] = resource(
                        self.settings, f"points/{webid}", [("selectedFields", "WebId;Name")]
                    )
                else:
                    wanted[key] = resource(
                        self.settings, "points", [("path", key), ("selectedFields", "WebId;Name")]
                    )
        keys = list(wanted)
        chunks = [keys[i : i + POINTS_PER_BATCH] for i in range(0, len(keys), POINTS_PER_BATCH)]
        replies = await asyncio.gather(
            *(
                self.client.batch(
                    {str(n): {"Method": "GET", "Resource": wanted[k]} for n, k in enumerate(c)}
                )
                for c in chunks
            )
        )
        found: dict[str, tuple[str, str]] = {}
        for chunk, reply in zip(chunks, replies, strict=True):
            for n, key in enumerate(chunk):
                try:
                    point = batch_content(reply, str(n))
                except PIError:
                    continue
                if isinstance(point, dict) and isinstance(point.get("WebId"), str):
                    found[key] = (point["WebId"], text(point.get("Name")) or "")
        a = snap.attributes
        for row, path, webid in pending:
            hit = found.get(webid or path or "")
            if hit is None:
                snap.quarantine.add(
                    "attribute",
                    a["attribute_webid"][row],
                    "unknown PI point",
                    webid or path or "",
                    a["config_string"][row],
                )
                continue
            a["point_webid"][row] = hit[0]
            a["point_name"][row] = a["point_name"][row] or hit[1] or None


# ----- sync -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AfSyncResult:
    snapshot_id: str
    elements: int
    attributes: int
    written: tuple[str, ...]  # tables that got a new commit
    quarantined: int
    seconds: float


def _write_snapshot(
    tables: AfTables,
    hierarchy: pa.Table,
    attributes: pa.Table,
    snapshot_id: str,
    synced_at_us: int,
    quarantine: Quarantine,
) -> list[Commit]:
    """Overwrite each table whose last recorded snapshot differs; attributes first."""
    tables.create_all()
    metadata = {
        META_HASH: snapshot_id,
        META_SNAPSHOT: snapshot_id,
        META_SYNCED_AT: iso_us(synced_at_us),
    }
    commits = []
    for name, data in ((PI_AF_ATTRIBUTES, attributes), (PI_AF_HIERARCHY, hierarchy)):
        last = tables.last_metadata(name, META_HASH)
        if last is not None and last[META_HASH] == snapshot_id:
            continue
        began = time.monotonic()
        version = tables.overwrite(name, data, metadata)
        commits.append(Commit(name, data.num_rows, time.monotonic() - began, version))
    if commits:
        tables.append_quarantine(quarantine.table(synced_at_us, snapshot_id))
    return commits


async def sync_af(
    settings: Settings,
    client: PIClient | None = None,
    observer: AfObserver | None = None,
) -> AfSyncResult | None:
    """One AF sync: the tables equal PI's hierarchy afterwards. None on a non-AF shard."""
    if not owns_af(settings, "AF hierarchy"):
        return None
    if client is None:
        async with PIClient(settings) as own:
            return await sync_af(settings, own, observer)
    observer = observer or NullAfObserver()
    started = time.monotonic()
    synced_at = now_us()
    snap = await AfSync(client, settings).snapshot()
    content_h, content_a = snap.content()
    snapshot_id = content_hash(content_h, content_a)
    hierarchy = with_sync_columns(content_h, snapshot_id, synced_at)
    attributes = with_sync_columns(content_a, snapshot_id, synced_at)
    tables = AfTables(TableStore.from_settings(settings), settings.max_commit_retries)
    commits = await asyncio.to_thread(
        _write_snapshot, tables, hierarchy, attributes, snapshot_id, synced_at, snap.quarantine
    )
    for commit in commits:
        observer.on_commit(commit.table, commit.rows, commit.seconds, commit.version)
    report_bad_input(snap.quarantine, observer)
    seconds = time.monotonic() - started
    written = tuple(c.table for c in commits)
    points = int(pc.sum(pc.is_valid(attributes["point_webid"])).as_py() or 0)
    log.info(
        "AF sync: %d elements, %d attributes (%d PI points), snapshot %s, %s in %.1f s",
        hierarchy.num_rows,
        attributes.num_rows,
        points,
        snapshot_id[:12],
        f"wrote {', '.join(written)}" if written else "unchanged",
        seconds,
    )
    return AfSyncResult(
        snapshot_id,
        hierarchy.num_rows,
        attributes.num_rows,
        written,
        len(snap.quarantine),
        seconds,
    )
