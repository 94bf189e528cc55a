"""The registry of every table pidelta writes, and `TableStore`: where each one lives.

Each table's name and Arrow schema (declared in `workers/lake/schemas.py`) is paired here,
once, with its partition columns and Parquet writer settings; the writer, the catalog
registration, maintenance and the README test all read them from here. Tables are created
with their explicit schema before the first write, so that an empty batch, a concurrent
shard or a reader never sees a table whose schema was inferred from whatever data happened
to come first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
from deltalake import ColumnProperties, CommitProperties, DeltaTable, Field, WriterProperties
from deltalake.exceptions import DeltaError

from workers.errors import SinkError
from workers.lake.credentials import is_expired_credential_error
from workers.lake.repartition import partitions, repartition
from workers.lake.schemas import (
    AF_QUARANTINE,
    AF_QUARANTINE_SCHEMA,
    BACKFILLS,
    BACKFILLS_SCHEMA,
    BATCHES,
    BATCHES_SCHEMA,
    CHECKPOINTS,
    CHECKPOINTS_SCHEMA,
    MARKERS,
    MARKERS_SCHEMA,
    PI_AF_ATTRIBUTES,
    PI_AF_ATTRIBUTES_SCHEMA,
    PI_AF_HIERARCHY,
    PI_AF_HIERARCHY_SCHEMA,
    PI_DIGITAL_STATE_SETS,
    PI_DIGITAL_STATE_SETS_SCHEMA,
    PI_EVENT_FRAMES,
    PI_EVENT_FRAMES_SCHEMA,
    PI_INTERPOLATED,
    PI_INTERPOLATED_SCHEMA,
    PI_POINTS,
    PI_POINTS_SCHEMA,
    PI_SUMMARIES,
    PI_SUMMARIES_SCHEMA,
    PI_TIMESERIES,
    PI_TIMESERIES_CHANGES,
    PI_TIMESERIES_CHANGES_SCHEMA,
    PI_TIMESERIES_SCHEMA,
    QUARANTINE,
    QUARANTINE_SCHEMA,
    SET_ASIDE,
    SET_ASIDE_SCHEMA,
    SHARDS,
    SHARDS_SCHEMA,
    VERIFICATION,
    VERIFICATION_SCHEMA,
)
from workers.lake.storage import parse_target, storage_options
from workers.lake.unity_catalog import UnityCatalog
from workers.settings import Settings


@dataclass(frozen=True, slots=True)
class TableSpec:
    """A table's name, Arrow schema, partition columns and Parquet writer settings."""

    name: str
    schema: pa.Schema
    partition_by: tuple[str, ...] = ()
    writer: WriterProperties | None = None
    configuration: Mapping[str, str] | None = None

    @property
    def serializes_writes(self) -> bool:
        """At writeSerializable isolation: a replace is not refused for a blind append."""
        return (self.configuration or {}).get(ISOLATION) == WRITE_SERIALIZABLE


# The state tables take a commit per data commit of every shard, and only their latest
# snapshot is ever read: a day of log (not Delta's 30) keeps their `_delta_log` bounded at
# a day of commits once checkpoints pass it (delta-rs cleans expired log files after each
# checkpoint it writes, every 100 commits).
STATE_LOG = {"delta.logRetentionDuration": "interval 1 days"}

# pi_timeseries: shards append their own tags' rows blind while a follower replaces the few
# rows its edits touch; at delta-rs's default (Serializable) every append over those times
# refused the replace (docs/DESIGN.md "Concurrent writers"). delta-rs reads the value in
# this spelling only; Delta Spark reads it regardless of case.
ISOLATION = "delta.isolationLevel"
WRITE_SERIALIZABLE = "writeSerializable"


# zstd level 1 and no dictionary for the columns that rarely repeat: measured on 1.3 M
# mock-pi rows, 0.31 CPU-s per million rows and 10.3 MB, against 0.37 and 15.5 MB with
# delta-rs's defaults (snappy, dictionaries tried on every column). Statistics per row
# group, not per page: the Delta log's per-file min/max/null counts (data skipping) come
# from those; page indexes cost a quarter of the write (0.29 against 0.40 CPU-s per million
# rows, 3 M rows) for lookups inside one file.
TIMESERIES_WRITER = WriterProperties(
    compression="ZSTD",
    compression_level=1,
    default_column_properties=ColumnProperties(statistics_enabled="CHUNK"),
    column_properties={
        column: ColumnProperties(dictionary_enabled=False, statistics_enabled="CHUNK")
        for column in ("timestamp", "sequence", "value", "ingestion_timestamp")
    },
)


TABLES: Mapping[str, TableSpec] = {
    spec.name: spec
    for spec in (
        TableSpec(
            PI_TIMESERIES,
            PI_TIMESERIES_SCHEMA,
            ("date",),
            TIMESERIES_WRITER,
            {ISOLATION: WRITE_SERIALIZABLE},
        ),
        TableSpec(QUARANTINE, QUARANTINE_SCHEMA),
        # Partitioned by app id: a shard folds its own rows (`replace_where` on its own
        # partition) without touching a file another shard's append could conflict with.
        TableSpec(BATCHES, BATCHES_SCHEMA, ("app_id",), configuration=STATE_LOG),
        TableSpec(CHECKPOINTS, CHECKPOINTS_SCHEMA, ("app_id",), configuration=STATE_LOG),
        TableSpec(SHARDS, SHARDS_SCHEMA),
        TableSpec(SET_ASIDE, SET_ASIDE_SCHEMA),
        TableSpec(BACKFILLS, BACKFILLS_SCHEMA),
        TableSpec(VERIFICATION, VERIFICATION_SCHEMA),
        TableSpec(PI_TIMESERIES_CHANGES, PI_TIMESERIES_CHANGES_SCHEMA),
        TableSpec(MARKERS, MARKERS_SCHEMA, configuration=STATE_LOG),
    )
}
"""The time-series tables, created by every shard at start-up."""

AF_TABLES: Mapping[str, TableSpec] = {
    spec.name: spec
    for spec in (
        TableSpec(PI_AF_HIERARCHY, PI_AF_HIERARCHY_SCHEMA),
        TableSpec(PI_AF_ATTRIBUTES, PI_AF_ATTRIBUTES_SCHEMA),
        TableSpec(PI_EVENT_FRAMES, PI_EVENT_FRAMES_SCHEMA),
        TableSpec(AF_QUARANTINE, AF_QUARANTINE_SCHEMA),
    )
}
"""The AF and event-frame tables, created by the shard that syncs AF, when it does."""

POINT_TABLES: Mapping[str, TableSpec] = {
    spec.name: spec
    for spec in (
        TableSpec(PI_POINTS, PI_POINTS_SCHEMA, ("point_bucket",)),
        TableSpec(PI_DIGITAL_STATE_SETS, PI_DIGITAL_STATE_SETS_SCHEMA),
        TableSpec(PI_INTERPOLATED, PI_INTERPOLATED_SCHEMA, ("date",), TIMESERIES_WRITER),
        TableSpec(PI_SUMMARIES, PI_SUMMARIES_SCHEMA, ("date",)),
    )
}
"""The tag dimension (points with history, digital state sets) and the interpolated grid,
created when first synced."""

ALL_TABLES: Mapping[str, TableSpec] = {**TABLES, **AF_TABLES, **POINT_TABLES}
"""Every table pidelta writes, and so the only ones it registers and maintains."""

REPARTITIONED: frozenset[str] = frozenset({BATCHES, CHECKPOINTS})
"""Tables an older pidelta created unpartitioned: `create` rewrites them partitioned."""


def _same_columns(actual: pa.Schema, declared: pa.Schema) -> bool:
    """Names and types must match; nullability is not compared (Delta may relax it)."""
    return [(f.name, f.type) for f in actual] == [(f.name, f.type) for f in declared]


def _added_columns(actual: pa.Schema, declared: pa.Schema) -> list[pa.Field]:
    """The nullable columns a newer pidelta declares after all of an older table's."""
    n = len(actual)
    if n >= len(declared) or not _same_columns(actual, pa.schema(list(declared)[:n])):
        return []
    added = list(declared)[n:]
    return added if all(f.nullable for f in added) else []


class TableStore:
    """Knows where the tables live, creates them and opens them; shared by every writer.

    `create` is the one creation path, time-series and AF tables alike: many shards start
    at once, so it tolerates a concurrent creator and checks the schema it finds.

    With a Unity Catalog (`uc://` targets) each table has its own location and its own
    vended, expiring credentials: `options(name)` gives the current ones and `refresh`
    re-opens a `DeltaTable` whose credentials were renewed since it was opened.
    """

    def __init__(
        self,
        target: str,
        storage_options: Mapping[str, str] | None = None,
        catalog: UnityCatalog | None = None,
    ) -> None:
        self.target = target.rstrip("/") or "/"
        self.storage_options: dict[str, str] = dict(storage_options or {})
        self.catalog = catalog

    @classmethod
    def from_settings(cls, settings: Settings) -> TableStore:
        target = parse_target(settings.target)
        catalog = UnityCatalog.from_settings(settings, ALL_TABLES) if target.is_catalog else None
        return cls(settings.target, storage_options(settings), catalog)

    @property
    def is_local(self) -> bool:
        return "://" not in self.target or self.target.startswith("file://")

    def uri(self, name: str) -> str:
        """`<target>/<name>`; a local folder is made absolute so logs name the real place."""
        if self.catalog is not None:
            return self.catalog.location(name)
        if "://" in self.target:
            return f"{self.target}/{name}"
        return str(Path(self.target).resolve() / name)

    def options(self, name: str) -> dict[str, str] | None:
        """Storage options for one table (vended ones renewed when due), None when none."""
        if self.catalog is not None:
            return self.catalog.options(name)[0]
        return self.storage_options or None

    def create_all(self, names: Iterable[str] = TABLES) -> None:
        """Create every table of `names` (default: the time-series ones) that does not exist
        yet; safe to call from many shards at once."""
        for name in names:
            self.create(name)

    def _configure(self, name: str, table: DeltaTable, spec: TableSpec) -> None:
        """Table properties a table created by an older pidelta lacks, set once."""

        def missing(t: DeltaTable) -> dict[str, str]:
            have = t.metadata().configuration
            return {k: v for k, v in (spec.configuration or {}).items() if have.get(k) != v}

        if wanted := missing(table):
            try:
                table.alter.set_table_properties(wanted, raise_if_not_exists=False)
            except (DeltaError, OSError) as exc:  # another shard may have done it first
                if missing(self.open(name)):
                    raise SinkError(
                        f"cannot set {wanted}: {exc}", table=name, uri=self.uri(name)
                    ) from exc

    def create(self, name: str) -> None:
        """Create one table with its declared schema, tolerating a concurrent creator."""
        spec = ALL_TABLES[name]
        uri = self.uri(name)
        if self.is_local:
            Path(uri.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
        if not self.exists(name):
            try:
                DeltaTable.create(
                    uri,
                    spec.schema,
                    mode="ignore",
                    partition_by=list(spec.partition_by) or None,
                    name=name,
                    configuration=dict(spec.configuration or {}) or None,
                    storage_options=self.options(name),
                    # A loser of the race must fail, not retry as version 1 with new metadata.
                    commit_properties=CommitProperties(max_commit_retries=0),
                )
            except (DeltaError, OSError) as exc:
                # Another shard may have committed version 0 between our check and our write.
                if not self.exists(name):
                    raise SinkError(f"cannot create: {exc}", table=name, uri=uri) from exc
        table = self.open(name)
        self._configure(name, table, spec)
        actual = pa.schema(table.schema().to_arrow())
        added = _added_columns(actual, spec.schema)
        if added:
            self._add_columns(name, table, added)
        elif not _same_columns(actual, spec.schema):
            raise SinkError(
                f"existing schema differs from the declared one: {actual}", table=name, uri=uri
            )
        if name in REPARTITIONED and partitions(table) != list(spec.partition_by):
            repartition(self, name, spec.schema, spec.partition_by)

    def _add_columns(self, name: str, table: DeltaTable, added: list[pa.Field]) -> None:
        """Bring a table an older pidelta created up to date: the new columns are nullable,
        so its rows read them as null. Shards starting together race; a loser finds them."""
        try:
            table.alter.add_columns([Field.from_arrow(f) for f in added])
        except (DeltaError, OSError) as exc:
            latest = pa.schema(self.open(name).schema().to_arrow())
            if not _same_columns(latest, ALL_TABLES[name].schema):
                raise SinkError(
                    f"cannot add columns {[f.name for f in added]}: {exc}",
                    table=name,
                    uri=self.uri(name),
                ) from exc

    def exists(self, name: str) -> bool:
        return DeltaTable.is_deltatable(self.uri(name), storage_options=self.options(name))

    def open(self, name: str, version: int | None = None) -> DeltaTable:
        """Open the latest version of a table, or `version`."""
        uri = self.uri(name)
        generation = 0
        if self.catalog is not None:
            options, generation = self.catalog.options(name)
        else:
            options = self.storage_options
        try:
            table = DeltaTable(uri, version=version, storage_options=options or None)
        except (DeltaError, OSError) as exc:
            raise SinkError(f"cannot open: {exc}", table=name, uri=uri) from exc
        table.pidelta_credentials = generation  # type: ignore[attr-defined]
        return table

    def refresh(self, name: str, table: DeltaTable) -> DeltaTable:
        """`table` at its latest version, re-opened if its credentials have been renewed."""
        if self.catalog is not None:
            _, generation = self.catalog.options(name)
            if getattr(table, "pidelta_credentials", None) != generation:
                return self.open(name)
        try:
            table.update_incremental()
        except (DeltaError, OSError) as exc:
            if not self.renew_if_refused(name, table, exc):
                raise SinkError(f"cannot refresh: {exc}", table=name, uri=self.uri(name)) from exc
            return self.open(name)
        return table

    def renew_if_refused(self, name: str, table: DeltaTable | None, exc: BaseException) -> bool:
        """After an error: renew vended credentials it shows were refused; True if renewed."""
        if self.catalog is None or not is_expired_credential_error(exc):
            return False
        self.catalog.credentials.renew(name, getattr(table, "pidelta_credentials", None))
        return True
