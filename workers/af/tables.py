"""Arrow schemas and Delta writes of the AF and event-frame tables.

The AF tables are snapshots: each sync replaces a whole table in one overwrite commit (a
reader sees the old hierarchy or the new one, never half of each), and only when the
snapshot's content hash differs from the one recorded in the table's last pidelta commit, so
a rerun with nothing changed writes nothing. `pi_event_frames` is kept by merges on
`event_frame_webid`: a frame that closes later is updated in place, and the search
watermark travels in the metadata of the very commit that holds the frames, so a crash can
never advance it past data that did not land.

Locations and the `TableSpec` record come from `workers.lake.tables.TableStore`; the specs live
here because that module's registry holds the time-series tables only.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import DeltaError

from workers.lake.tables import UTC_US, SinkError, TableSpec, TableStore

log = logging.getLogger(__name__)

PI_AF_HIERARCHY = "pi_af_hierarchy"
PI_AF_ATTRIBUTES = "pi_af_attributes"
PI_EVENT_FRAMES = "pi_event_frames"
AF_QUARANTINE = "_pidelta_af_quarantine"

# Commit metadata keys (Delta `commitInfo`), read back to decide whether to write.
META_HASH = "pidelta.af.content_hash"
META_SNAPSHOT = "pidelta.af.snapshot_id"
META_SYNCED_AT = "pidelta.af.synced_at"
META_WATERMARK = "pidelta.events.watermark"
GONE = "_pidelta_gone"  # merge source flag: delete this frame
META_HISTORY_DEPTH = 200  # commits searched back for pidelta's metadata (others may OPTIMIZE)

STRINGS = pa.list_(pa.string())

PI_AF_HIERARCHY_SCHEMA = pa.schema(
    [
        pa.field("element_webid", pa.string(), nullable=False),
        pa.field("element_id", pa.string()),
        pa.field("name", pa.string()),
        pa.field("path", pa.string()),
        pa.field("parent_element_webid", pa.string()),
        pa.field("depth", pa.int32()),
        pa.field("template_name", pa.string()),
        pa.field("element_type", pa.string()),
        pa.field("description", pa.string()),
        pa.field("category_names", STRINGS),
        pa.field("has_children", pa.bool_()),
        pa.field("database_name", pa.string()),
        pa.field("database_webid", pa.string()),
        pa.field("snapshot_id", pa.string(), nullable=False),
        pa.field("synced_at", UTC_US, nullable=False),
    ]
)

PI_AF_ATTRIBUTES_SCHEMA = pa.schema(
    [
        pa.field("attribute_webid", pa.string(), nullable=False),
        pa.field("attribute_id", pa.string()),
        pa.field("element_webid", pa.string(), nullable=False),
        pa.field("name", pa.string()),
        pa.field("path", pa.string()),
        pa.field("description", pa.string()),
        pa.field("type", pa.string()),
        pa.field("type_qualifier", pa.string()),
        pa.field("units", pa.string()),
        pa.field("units_name", pa.string()),
        pa.field("data_reference", pa.string()),
        pa.field("config_string", pa.string()),
        pa.field("point_webid", pa.string()),
        pa.field("point_name", pa.string()),
        pa.field("category_names", STRINGS),
        pa.field("is_configuration_item", pa.bool_()),
        pa.field("database_webid", pa.string()),
        pa.field("snapshot_id", pa.string(), nullable=False),
        pa.field("synced_at", UTC_US, nullable=False),
    ]
)

PI_EVENT_FRAMES_SCHEMA = pa.schema(
    [
        pa.field("event_frame_webid", pa.string(), nullable=False),
        pa.field("event_frame_id", pa.string()),
        pa.field("name", pa.string()),
        pa.field("path", pa.string()),
        pa.field("template_name", pa.string()),
        pa.field("description", pa.string()),
        pa.field("start_time", UTC_US),
        pa.field("end_time", UTC_US),
        pa.field("primary_referenced_element_webid", pa.string()),
        pa.field("referenced_element_webids", STRINGS),
        pa.field("severity", pa.string()),
        pa.field("can_be_acknowledged", pa.bool_()),
        pa.field("is_acknowledged", pa.bool_()),
        pa.field("acknowledged_by", pa.string()),
        pa.field("acknowledged_date", UTC_US),
        pa.field("is_alarm", pa.bool_()),
        pa.field("category_names", STRINGS),
        pa.field("attributes", pa.map_(pa.string(), pa.string())),
        pa.field("database_webid", pa.string()),
        pa.field("synced_at", UTC_US, nullable=False),
    ]
)

AF_QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("kind", pa.string(), nullable=False),  # element, attribute, event_frame
        pa.field("object_webid", pa.string()),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detail", pa.string()),
        pa.field("raw", pa.string()),
        pa.field("snapshot_id", pa.string()),
        pa.field("synced_at", UTC_US, nullable=False),
    ]
)

AF_TABLES: Mapping[str, TableSpec] = {
    spec.name: spec
    for spec in (
        TableSpec(PI_AF_HIERARCHY, PI_AF_HIERARCHY_SCHEMA),
        TableSpec(PI_AF_ATTRIBUTES, PI_AF_ATTRIBUTES_SCHEMA),
        TableSpec(PI_EVENT_FRAMES, PI_EVENT_FRAMES_SCHEMA),
        TableSpec(AF_QUARANTINE, AF_QUARANTINE_SCHEMA),
    )
}


def _columns(schema: pa.Schema) -> list[tuple[str, pa.DataType]]:
    return [(f.name, f.type) for f in schema]


class AfTables:
    """The AF/event-frame tables under the store's target: creation, reads, commits."""

    def __init__(self, store: TableStore, max_commit_retries: int | None = None) -> None:
        self.store = store
        self.max_commit_retries = max_commit_retries

    def _options(self, name: str) -> dict[str, str] | None:
        return self.store.options(name)

    def create(self, name: str) -> None:
        """Create one table with its declared schema (idempotent, tolerant of a racer)."""
        spec = AF_TABLES[name]
        uri = self.store.uri(name)
        if self.store.is_local:
            Path(uri.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
        if not self.store.exists(name):
            try:
                DeltaTable.create(
                    uri, spec.schema, mode="ignore", name=name, storage_options=self._options(name)
                )
            except (DeltaError, OSError) as exc:
                if not self.store.exists(name):
                    raise SinkError(f"cannot create: {exc}", table=name, uri=uri) from exc
        actual = pa.schema(self.store.open(name).schema().to_arrow())
        if _columns(actual) != _columns(spec.schema):
            raise SinkError(
                f"existing schema differs from the declared one: {actual}", table=name, uri=uri
            )

    def create_all(self) -> None:
        for name in AF_TABLES:
            self.create(name)

    def open(self, name: str) -> DeltaTable:
        return self.store.open(name)

    def read(self, name: str, columns: list[str] | None = None) -> pa.Table:
        return self.open(name).to_pyarrow_table(columns=columns)

    def last_metadata(self, name: str, key: str) -> dict[str, Any] | None:
        """The newest commitInfo of `name` that carries `key` (None if none does)."""
        for commit in self.open(name).history(META_HISTORY_DEPTH):
            if key in commit:
                return commit
        return None

    def _properties(self, metadata: Mapping[str, str]) -> CommitProperties:
        return CommitProperties(
            custom_metadata=dict(metadata), max_commit_retries=self.max_commit_retries
        )

    def overwrite(self, name: str, data: pa.Table, metadata: Mapping[str, str]) -> int:
        """Replace the whole table in one commit; the new version."""
        spec = AF_TABLES[name]
        write_deltalake(
            self.store.uri(name),
            data.select(spec.schema.names).cast(spec.schema),
            mode="overwrite",
            storage_options=self._options(name),
            commit_properties=self._properties(metadata),
        )
        return self.open(name).version()

    def merge_frames(
        self, data: pa.Table, gone: list[str], metadata: Mapping[str, str]
    ) -> dict[str, Any]:
        """Upsert frames and delete `gone` ones, on `event_frame_webid`, in one commit.

        An open frame closes in place; a frame PI no longer knows (deleted, or recreated by
        an analysis backfill) leaves the table instead of staying open forever.
        """
        spec = AF_TABLES[PI_EVENT_FRAMES]
        rows = data.select(spec.schema.names).cast(spec.schema)
        if gone:
            dead = {
                f.name: pa.nulls(len(gone), f.type)
                for f in spec.schema
                if f.name not in ("event_frame_webid", "synced_at")
            }
            stamp = rows["synced_at"][0] if rows.num_rows else pa.scalar(0, UTC_US)
            dead["event_frame_webid"] = pa.array(gone, pa.string())
            dead["synced_at"] = pa.array([stamp.value] * len(gone), pa.int64()).cast(UTC_US)
            rows = pa.concat_tables(
                [rows, pa.table(dead).select(spec.schema.names).cast(spec.schema)]
            )
        flag = [False] * data.num_rows + [True] * len(gone)
        source = rows.append_column(GONE, pa.array(flag, pa.bool_()))
        return (
            self.open(PI_EVENT_FRAMES)
            .merge(
                source,
                "t.event_frame_webid = s.event_frame_webid",
                source_alias="s",
                target_alias="t",
                commit_properties=self._properties(metadata),
            )
            .when_matched_delete(predicate=f"s.{GONE}")
            .when_matched_update_all(except_cols=[GONE])
            .when_not_matched_insert_all(predicate=f"NOT s.{GONE}", except_cols=[GONE])
            .execute()
        )

    def append_quarantine(self, rows: pa.Table) -> None:
        if rows.num_rows:
            write_deltalake(
                self.store.uri(AF_QUARANTINE),
                rows.cast(AF_QUARANTINE_SCHEMA),
                mode="append",
                storage_options=self._options(AF_QUARANTINE),
                commit_properties=self._properties({}),
            )


def content_hash(*tables: pa.Table) -> str:
    """A digest of the rows' content, independent of row order and chunking.

    Callers pass tables without their volatile columns (`snapshot_id`, `synced_at`) and
    sorted by key, so the same hierarchy always hashes the same.
    """
    digest = hashlib.blake2b(digest_size=16)
    for table in tables:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table.combine_chunks())
        digest.update(sink.getvalue().to_pybytes())
    return digest.hexdigest()


@dataclass(slots=True)
class Quarantine:
    """Bad input met during one sync: rows for `_pidelta_af_quarantine`, counts per reason."""

    kind: list[str]
    object_webid: list[str | None]
    reason: list[str]
    detail: list[str | None]
    raw: list[str | None]

    @classmethod
    def empty(cls) -> Quarantine:
        return cls([], [], [], [], [])

    def add(
        self, kind: str, webid: str | None, reason: str, detail: str = "", raw: str | None = None
    ) -> None:
        self.kind.append(kind)
        self.object_webid.append(webid)
        self.reason.append(reason)
        self.detail.append(detail or None)
        self.raw.append(raw[:4000] if raw else None)

    def __len__(self) -> int:
        return len(self.kind)

    def counts(self) -> dict[tuple[str, str], int]:
        out: dict[tuple[str, str], int] = {}
        for kind, reason in zip(self.kind, self.reason, strict=True):
            out[(kind, reason)] = out.get((kind, reason), 0) + 1
        return out

    def table(self, synced_at_us: int, snapshot_id: str | None = None) -> pa.Table:
        n = len(self)
        return pa.table(
            {
                "kind": pa.array(self.kind, pa.string()),
                "object_webid": pa.array(self.object_webid, pa.string()),
                "reason": pa.array(self.reason, pa.string()),
                "detail": pa.array(self.detail, pa.string()),
                "raw": pa.array(self.raw, pa.string()),
                "snapshot_id": pa.array([snapshot_id] * n, pa.string()),
                "synced_at": pa.array([synced_at_us] * n, pa.int64()).cast(UTC_US),
            },
            schema=AF_QUARANTINE_SCHEMA,
        )
