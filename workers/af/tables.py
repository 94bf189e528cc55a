"""Delta writes of the AF and event-frame tables, through the one `DeltaWriter`.

The AF tables are snapshots: each sync replaces a whole table in one overwrite commit (a
reader sees the old hierarchy or the new one, never half of each), and only when the
snapshot's content hash differs from the one recorded in the table's last pidelta commit, so
a rerun with nothing changed writes nothing. `pi_event_frames` is kept by merges on
`event_frame_webid`: a frame that closes later is updated in place, and the search
watermark travels in the metadata of the very commit that holds the frames, so a crash can
never advance it past data that did not land.

The tables' schemas live with every other table's in `workers.lake.schemas`; this module
adds what AF means by a write: snapshots, hashes, watermarks.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from deltalake import DeltaTable
from deltalake.table import TableMerger

from workers.lake.schemas import AF_QUARANTINE, AF_QUARANTINE_SCHEMA, PI_EVENT_FRAMES, UTC_US
from workers.lake.tables import AF_TABLES, TableStore
from workers.lake.writer import DeltaWriter

log = logging.getLogger(__name__)

# Commit metadata keys (Delta `commitInfo`), read back to decide whether to write.
META_HASH = "pidelta.af.content_hash"
META_SNAPSHOT = "pidelta.af.snapshot_id"
META_SYNCED_AT = "pidelta.af.synced_at"
META_WATERMARK = "pidelta.events.watermark"
GONE = "_pidelta_gone"  # merge source flag: delete this frame
META_HISTORY_DEPTH = 200  # commits searched back for pidelta's metadata (others may OPTIMIZE)


class AfTables:
    """The AF/event-frame tables under the store's target: creation, reads, commits."""

    def __init__(self, store: TableStore, max_commit_retries: int = 100) -> None:
        self.store = store
        self.writer = DeltaWriter(store, max_commit_retries=max_commit_retries)

    def create_all(self) -> None:
        self.store.create_all(AF_TABLES)

    def open(self, name: str) -> DeltaTable:
        return self.writer.table(name)

    def read(self, name: str, columns: list[str] | None = None) -> pa.Table:
        return self.open(name).to_pyarrow_table(columns=columns)

    def last_metadata(self, name: str, key: str) -> dict[str, Any] | None:
        """The newest commitInfo of `name` that carries `key` (None if none does)."""
        for commit in self.open(name).history(META_HISTORY_DEPTH):
            if key in commit:
                return commit
        return None

    def overwrite(self, name: str, data: pa.Table, metadata: Mapping[str, str]) -> int:
        """Replace the whole table in one commit; the new version."""
        return self.writer.overwrite(name, data, metadata)

    def merge_frames(
        self, data: pa.Table, gone: list[str], metadata: Mapping[str, str]
    ) -> dict[str, Any]:
        """Upsert frames and delete `gone` ones, on `event_frame_webid`, in one commit.

        An open frame closes in place; a frame PI no longer knows (deleted, or recreated by
        an analysis backfill) leaves the table instead of staying open forever.
        """
        schema = AF_TABLES[PI_EVENT_FRAMES].schema
        rows = data.select(schema.names).cast(schema)
        if gone:
            dead = {
                f.name: pa.nulls(len(gone), f.type)
                for f in schema
                if f.name not in ("event_frame_webid", "synced_at")
            }
            stamp = rows["synced_at"][0] if rows.num_rows else pa.scalar(0, UTC_US)
            dead["event_frame_webid"] = pa.array(gone, pa.string())
            dead["synced_at"] = pa.array([stamp.value] * len(gone), pa.int64()).cast(UTC_US)
            rows = pa.concat_tables([rows, pa.table(dead).select(schema.names).cast(schema)])
        flag = [False] * data.num_rows + [True] * len(gone)
        source = rows.append_column(GONE, pa.array(flag, pa.bool_()))

        def clauses(merger: TableMerger) -> TableMerger:
            return (
                merger.when_matched_delete(predicate=f"s.{GONE}")
                .when_matched_update_all(except_cols=[GONE])
                .when_not_matched_insert_all(predicate=f"NOT s.{GONE}", except_cols=[GONE])
            )

        return self.writer.merge(
            PI_EVENT_FRAMES, source, "t.event_frame_webid = s.event_frame_webid", clauses, metadata
        )

    def append_quarantine(self, rows: pa.Table) -> None:
        self.writer.append(AF_QUARANTINE, rows)


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
