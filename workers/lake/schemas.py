"""The names and Arrow schemas of the tables pidelta writes.

Declared once, read by the registry (`workers/lake/tables.py`: partitioning, writer
settings, where each table lives), the writers, the catalog registration and the README's
schema test.
"""

from __future__ import annotations

import pyarrow as pa

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
