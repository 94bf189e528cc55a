"""The registry of every table pidelta writes, and `TableStore`: where each one lives.

Each table's name, Arrow schema, partition columns and Parquet writer settings are declared
here once; the writer, the catalog registration, maintenance and the README test all read
them from here. Tables are created with their explicit schema before the first write, so
that an empty batch, a concurrent shard or a reader never sees a table whose schema was
inferred from whatever data happened to come first.
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
from workers.lake.storage import parse_target, storage_options
from workers.lake.unity_catalog import UnityCatalog
from workers.settings import Settings

UTC_US = pa.timestamp("us", tz="UTC")

PI_TIMESERIES = "pi_timeseries"
QUARANTINE = "_pidelta_quarantine"
BATCHES = "_pidelta_batches"
CHECKPOINTS = "_pidelta_checkpoints"
SHARDS = "_pidelta_shards"
SET_ASIDE = "_pidelta_set_aside"
PI_AF_HIERARCHY = "pi_af_hierarchy"
PI_AF_ATTRIBUTES = "pi_af_attributes"
PI_EVENT_FRAMES = "pi_event_frames"
AF_QUARANTINE = "_pidelta_af_quarantine"
PI_POINTS = "pi_points"
PI_DIGITAL_STATE_SETS = "pi_digital_state_sets"
PI_INTERPOLATED = "pi_interpolated"
PI_SUMMARIES = "pi_summaries"
BACKFILLS = "_pidelta_backfills"
VERIFICATION = "_pidelta_verification"
PI_TIMESERIES_CHANGES = "pi_timeseries_changes"
MARKERS = "_pidelta_markers"

PI_TIMESERIES_SCHEMA = pa.schema(
    [
        pa.field("tag_webid", pa.string(), nullable=False),
        pa.field("tag_name", pa.string()),
        pa.field("timestamp", UTC_US, nullable=False),
        pa.field("sequence", pa.int32(), nullable=False),
        pa.field("value", pa.float64()),
        pa.field("value_string", pa.string()),
        pa.field("digital_state", pa.string()),
        pa.field("digital_code", pa.int32()),
        pa.field("is_system_state", pa.bool_()),
        pa.field("units", pa.string()),
        pa.field("quality_good", pa.bool_()),
        pa.field("quality_questionable", pa.bool_()),
        pa.field("quality_substituted", pa.bool_()),
        pa.field("quality_annotated", pa.bool_()),
        pa.field("value_error", pa.string()),
        pa.field("ingestion_timestamp", UTC_US, nullable=False),
        pa.field("date", pa.date32(), nullable=False),
    ]
)

QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("tag_webid", pa.string()),
        pa.field("tag_name", pa.string()),
        pa.field("raw", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("source", pa.string()),
        pa.field("app_id", pa.string()),
        pa.field("batch_id", pa.int64()),
        pa.field("ingestion_timestamp", UTC_US, nullable=False),
        # The value's key, as in pi_timeseries, when its timestamp parses: a look-back that
        # reads the value again finds it here. `create` adds them to tables made without.
        pa.field("timestamp", UTC_US),
        pa.field("sequence", pa.int32()),
    ]
)

SHARDS_SCHEMA = pa.schema(
    [
        pa.field("generation", pa.int64(), nullable=False),
        pa.field("shard_count", pa.int64(), nullable=False),
        pa.field("announced_at", UTC_US, nullable=False),
        pa.field("announced_by", pa.string(), nullable=False),
    ]
)

BATCHES_SCHEMA = pa.schema(
    [
        pa.field("app_id", pa.string(), nullable=False),
        pa.field("batch_id", pa.int64(), nullable=False),
        pa.field("tag_webid", pa.string(), nullable=False),
        pa.field("range_start", UTC_US, nullable=False),
        pa.field("range_end", UTC_US, nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("planned_at", UTC_US, nullable=False),
    ]
)

# Ranges whose PI answer could not be read (workers/timeseries/set_aside.py): a row when
# set aside, another with `resolved_at` once read again.
SET_ASIDE_SCHEMA = pa.schema(
    [
        pa.field("tag_webid", pa.string(), nullable=False),
        pa.field("range_start", UTC_US, nullable=False),
        pa.field("range_end", UTC_US, nullable=False),
        pa.field("app_id", pa.string(), nullable=False),
        pa.field("batch_id", pa.int64(), nullable=False),
        pa.field("noted_at", UTC_US, nullable=False),
        pa.field("resolved_at", UTC_US),
    ]
)

# One row per `pidelta backfill` command: the range asked for, and where this run had to
# stop (now minus the safety lag); `status` shows a backfill's progress against it.
BACKFILLS_SCHEMA = pa.schema(
    [
        pa.field("app_id", pa.string(), nullable=False),
        pa.field("range_start", UTC_US, nullable=False),
        pa.field("range_end", UTC_US, nullable=False),
        pa.field("loaded_until", UTC_US, nullable=False),
        pa.field("requested_at", UTC_US, nullable=False),
    ]
)

CHECKPOINTS_SCHEMA = pa.schema(
    [
        pa.field("tag_webid", pa.string(), nullable=False),
        pa.field("checkpoint", UTC_US, nullable=False),
        pa.field("app_id", pa.string(), nullable=False),
        pa.field("batch_id", pa.int64(), nullable=False),
        pa.field("committed_at", UTC_US, nullable=False),
    ]
)

# One row per bucket `pidelta verify` checked (workers/verify/): PI's figures against the
# table's, and what was done. Fingerprints are event-weighted over good numeric values.
VERIFICATION_SCHEMA = pa.schema(
    [
        pa.field("tag_webid", pa.string(), nullable=False),
        pa.field("tag_name", pa.string()),
        pa.field("bucket_start", UTC_US, nullable=False),
        pa.field("bucket_end", UTC_US, nullable=False),
        pa.field("pi_count", pa.int64()),
        pa.field("table_count", pa.int64(), nullable=False),
        pa.field("pi_total", pa.float64()),
        pa.field("table_total", pa.float64()),
        pa.field("pi_minimum", pa.float64()),
        pa.field("table_minimum", pa.float64()),
        pa.field("pi_maximum", pa.float64()),
        pa.field("table_maximum", pa.float64()),
        pa.field("result", pa.string(), nullable=False),  # equal, repaired, failed
        pa.field("detail", pa.string()),
        pa.field("shard_index", pa.int64(), nullable=False),
        pa.field("shard_count", pa.int64(), nullable=False),
        pa.field("checked_at", UTC_US, nullable=False),
    ]
)

# One row per change applied to pi_timeseries after its range was first read
# (workers/timeseries/apply.py): the value's key, PI's action, the row before and after.
CHANGE_VALUE_COLUMNS = (
    ("value", pa.float64()),
    ("value_string", pa.string()),
    ("digital_state", pa.string()),
    ("digital_code", pa.int32()),
    ("is_system_state", pa.bool_()),
    ("quality_good", pa.bool_()),
    ("quality_questionable", pa.bool_()),
    ("quality_substituted", pa.bool_()),
    ("quality_annotated", pa.bool_()),
)
PI_TIMESERIES_CHANGES_SCHEMA = pa.schema(
    [
        pa.field("tag_webid", pa.string(), nullable=False),
        pa.field("tag_name", pa.string()),
        pa.field("timestamp", UTC_US, nullable=False),
        pa.field("sequence", pa.int32(), nullable=False),
        pa.field("action", pa.string(), nullable=False),
        *(pa.field(f"old_{name}", kind) for name, kind in CHANGE_VALUE_COLUMNS),
        *(pa.field(f"new_{name}", kind) for name, kind in CHANGE_VALUE_COLUMNS),
        pa.field("pi_change_time", UTC_US),
        pa.field("observed_at", UTC_US, nullable=False),
        pa.field("applied_at", UTC_US, nullable=False),
        pa.field("app_id", pa.string(), nullable=False),
        pa.field("batch_id", pa.int64(), nullable=False),
    ]
)

# Stream-update markers (workers/timeseries/follow.py): the marker each tag resumes from
# after batch `batch_id` of `app_id` landed.
MARKERS_SCHEMA = pa.schema(
    [
        pa.field("tag_webid", pa.string(), nullable=False),
        pa.field("marker", pa.string(), nullable=False),
        pa.field("covered_until", UTC_US, nullable=False),
        pa.field("app_id", pa.string(), nullable=False),
        pa.field("batch_id", pa.int64(), nullable=False),
        pa.field("noted_at", UTC_US, nullable=False),
    ]
)

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

# The tag dimension (workers/points): one row per version of a point, keyed by (data server,
# point ID) and `valid_from`; the PI attribute columns, then the history columns.
PI_POINTS_SCHEMA = pa.schema(
    [
        pa.field("data_server", pa.string(), nullable=False),
        pa.field("point_id", pa.int32(), nullable=False),
        pa.field("tag_webid", pa.string(), nullable=False),
        pa.field("tag_name", pa.string()),
        pa.field("descriptor", pa.string()),
        pa.field("extended_descriptor", pa.string()),
        pa.field("engineering_units", pa.string()),
        pa.field("point_type", pa.string()),
        pa.field("point_class", pa.string()),
        pa.field("digital_set_name", pa.string()),
        pa.field("zero", pa.float64()),
        pa.field("span", pa.float64()),
        pa.field("typical_value", pa.float64()),
        pa.field("step", pa.bool_()),
        pa.field("future", pa.bool_()),
        pa.field("point_source", pa.string()),
        pa.field("instrument_tag", pa.string()),
        pa.field("source_tag", pa.string()),
        pa.field("location1", pa.int32()),
        pa.field("location2", pa.int32()),
        pa.field("location3", pa.int32()),
        pa.field("location4", pa.int32()),
        pa.field("location5", pa.int32()),
        pa.field("compressing", pa.bool_()),
        pa.field("comp_dev", pa.float64()),
        pa.field("comp_dev_percent", pa.float64()),
        pa.field("comp_min", pa.int32()),
        pa.field("comp_max", pa.int32()),
        pa.field("exc_dev", pa.float64()),
        pa.field("exc_dev_percent", pa.float64()),
        pa.field("exc_min", pa.int32()),
        pa.field("exc_max", pa.int32()),
        pa.field("archiving", pa.bool_()),
        pa.field("scan", pa.bool_()),
        pa.field("shutdown", pa.bool_()),
        pa.field("display_digits", pa.int32()),
        pa.field("creator", pa.string()),
        pa.field("creation_date", UTC_US),
        pa.field("changer", pa.string()),
        pa.field("change_date", UTC_US),
        pa.field("valid_from", UTC_US, nullable=False),
        pa.field("valid_to", UTC_US),
        pa.field("is_current", pa.bool_(), nullable=False),
        pa.field("deleted_at", UTC_US),
        pa.field("synced_at", UTC_US, nullable=False),
        # A fixed hash of (data_server, point_id), the partition (see workers/points/layout).
        pa.field("point_bucket", pa.int32(), nullable=False),
    ]
)

PI_DIGITAL_STATE_SETS_SCHEMA = pa.schema(
    [
        pa.field("data_server", pa.string(), nullable=False),
        pa.field("set_name", pa.string(), nullable=False),
        pa.field("code", pa.int32(), nullable=False),
        pa.field("state_name", pa.string(), nullable=False),
        pa.field("is_system_set", pa.bool_(), nullable=False),
        pa.field("set_webid", pa.string()),
        pa.field("synced_at", UTC_US, nullable=False),
    ]
)

# A regular grid per tag (workers/timeseries/interpolated.py, opt-in): pi_timeseries's
# columns without `sequence` (one value per tag and grid time), keyed by (tag, timestamp).
PI_INTERPOLATED_SCHEMA = pa.schema([f for f in PI_TIMESERIES_SCHEMA if f.name != "sequence"])

# PI summaries per tag and closed bucket (workers/timeseries/summary_table.py, opt-in): one
# row per (tag, duration, basis, type, bucket); `value` is null and `system_state` holds
# PI's state name when the bucket has no good data.
PI_SUMMARIES_SCHEMA = pa.schema(
    [
        pa.field("tag_webid", pa.string(), nullable=False),
        pa.field("tag_name", pa.string()),
        pa.field("bucket_start", UTC_US, nullable=False),
        pa.field("bucket_end", UTC_US, nullable=False),
        pa.field("duration", pa.string(), nullable=False),
        pa.field("calculation_basis", pa.string(), nullable=False),
        pa.field("summary_type", pa.string(), nullable=False),
        pa.field("value", pa.float64()),
        pa.field("system_state", pa.string()),
        pa.field("percent_good", pa.float64()),
        pa.field("units", pa.string()),
        pa.field("ingestion_timestamp", UTC_US, nullable=False),
        pa.field("date", pa.date32(), nullable=False),
    ]
)


@dataclass(frozen=True, slots=True)
class TableSpec:
    """A table's name, Arrow schema, partition columns and Parquet writer settings."""

    name: str
    schema: pa.Schema
    partition_by: tuple[str, ...] = ()
    writer: WriterProperties | None = None
    configuration: Mapping[str, str] | None = None


# The state tables take a commit per data commit of every shard, and only their latest
# snapshot is ever read: a day of log (not Delta's 30) keeps their `_delta_log` bounded at
# a day of commits once checkpoints pass it (delta-rs cleans expired log files after each
# checkpoint it writes, every 100 commits).
STATE_LOG = {"delta.logRetentionDuration": "interval 1 days"}


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
        TableSpec(PI_TIMESERIES, PI_TIMESERIES_SCHEMA, ("date",), TIMESERIES_WRITER),
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
