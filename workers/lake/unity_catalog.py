"""Unity Catalog tables: resolve or create each one, refuse what delta-rs must not write,
and vend temporary credentials as delta-rs storage options.

The tables come from the registry (`workers.lake.tables`), handed in by `TableStore`, so this
module knows their shapes without importing the module that uses it. Vended secrets are
never logged and never appear in an error message.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import pyarrow as pa
from deltalake import DeltaTable, Schema
from deltalake.exceptions import DeltaError

from workers.errors import ConfigError, PideltaError
from workers.lake.credentials import CredentialCache, Vended
from workers.lake.storage import parse_target, scheme_of, storage_options
from workers.lake.uc_client import UnityCatalogClient, UnityCatalogError
from workers.settings import Settings

log = logging.getLogger("pidelta.unity_catalog")

README_SECTION = "README.md, 'Cloud storage and Unity Catalog'"

# Writer features delta-rs 1.x writes correctly; any other one in a table's protocol means
# a commit by pidelta could corrupt the table for its other writers.
SUPPORTED_WRITER_FEATURES = frozenset(
    {
        "appendOnly",
        "invariants",
        "checkConstraints",
        "changeDataFeed",
        "generatedColumns",
        "timestampNtz",
    }
)
# What a legacy (pre-features) writer version implies.
_LEGACY_WRITER_FEATURES = {
    2: {"appendOnly", "invariants"},
    3: {"checkConstraints"},
    4: {"changeDataFeed", "generatedColumns"},
    5: {"columnMapping"},
    6: {"identityColumns"},
}
# Table properties that switch on features delta-rs lacks (set before the log shows them).
_FEATURE_PROPERTIES = {
    "delta.enableRowTracking": "rowTracking",
    "delta.enableInCommitTimestamps": "inCommitTimestamp",
    "delta.enableDeletionVectors": "deletionVectors",
    "delta.checkpointPolicy": "v2Checkpoint",
}
CATALOG_MANAGED_FEATURES = frozenset({"catalogManaged", "catalogOwned-preview"})


class IncompatibleTableError(ConfigError):
    """A catalog table pidelta must not write; the message says what to do instead."""


class TableShape(Protocol):
    """What the catalog needs of a table's spec to create it (`TableSpec` has it)."""

    @property
    def schema(self) -> pa.Schema: ...

    @property
    def partition_by(self) -> tuple[str, ...]: ...


@dataclass(frozen=True, slots=True)
class TableRef:
    """What pidelta needs of a catalog table."""

    full_name: str
    table_id: str
    storage_location: str


# ---------------------------------------------------------------------------- columns


def _type_text(delta_type: Any) -> str:
    if isinstance(delta_type, str):
        return {"integer": "int", "long": "bigint", "short": "smallint", "byte": "tinyint"}.get(
            delta_type, delta_type
        )
    kind = delta_type["type"]
    if kind == "array":
        return f"array<{_type_text(delta_type['elementType'])}>"
    if kind == "map":
        return f"map<{_type_text(delta_type['keyType'])},{_type_text(delta_type['valueType'])}>"
    fields = ",".join(f"{f['name']}:{_type_text(f['type'])}" for f in delta_type["fields"])
    return f"struct<{fields}>"


def _type_name(delta_type: Any) -> str:
    if isinstance(delta_type, dict):
        return {"array": "ARRAY", "map": "MAP", "struct": "STRUCT"}[delta_type["type"]]
    if delta_type.startswith("decimal"):
        return "DECIMAL"
    return {
        "integer": "INT",
        "long": "LONG",
        "short": "SHORT",
        "byte": "BYTE",
        "timestamp_ntz": "TIMESTAMP_NTZ",
    }.get(delta_type, delta_type.upper())


def uc_columns(schema: pa.Schema, partition_by: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """ColumnInfo records of an Arrow schema, typed as Delta (and Spark) spell them."""
    fields = json.loads(Schema.from_arrow(schema).to_json())["fields"]
    columns = []
    for position, field in enumerate(fields):
        column: dict[str, Any] = {
            "name": field["name"],
            "type_name": _type_name(field["type"]),
            "type_text": _type_text(field["type"]),
            "type_json": json.dumps(field),
            "position": position,
            "nullable": field["nullable"],
        }
        if field["name"] in partition_by:
            column["partition_index"] = partition_by.index(field["name"])
        columns.append(column)
    return columns


def create_table_sql(
    full_name: str, schema: pa.Schema, partition_by: tuple[str, ...], location: str
) -> str:
    """The Databricks SQL for an EXTERNAL table pidelta can append to (names quoted:
    `timestamp` and `date` are keywords)."""
    lines = []
    for column in uc_columns(schema):
        null = "" if column["nullable"] else " NOT NULL"
        lines.append(f"  `{column['name']}` {column['type_text'].upper()}{null}")
    parts = [f"CREATE TABLE {full_name} (", ",\n".join(lines), ")", "USING DELTA"]
    if partition_by:
        parts.append(f"PARTITIONED BY ({', '.join(f'`{c}`' for c in partition_by)})")
    parts.append(f"LOCATION '{location}'")
    parts.append(
        "TBLPROPERTIES (\n"
        "  'delta.enableDeletionVectors' = 'false',\n"
        "  'delta.enableRowTracking' = 'false',\n"
        "  'delta.enableInCommitTimestamps' = 'false',\n"
        "  'delta.checkpointPolicy' = 'classic'\n"
        ");"
    )
    return "\n".join(parts)


# ---------------------------------------------------------------------------- checks


def writer_features(table: DeltaTable) -> set[str]:
    """The table's writer features, legacy writer versions spelled as features."""
    protocol = table.protocol()
    features = set(protocol.writer_features or ())
    for version, implied in _LEGACY_WRITER_FEATURES.items():
        if protocol.min_writer_version >= version and protocol.min_writer_version < 7:
            features |= implied
    return features


def property_features(properties: Mapping[str, str]) -> set[str]:
    """Features a table's properties enable or declare (`delta.feature.X = supported`)."""
    found = {
        feature
        for key, feature in _FEATURE_PROPERTIES.items()
        if str(properties.get(key, "")).lower() in ("true", "v2")
    }
    found |= {
        key.removeprefix("delta.feature.")
        for key, value in properties.items()
        if key.startswith("delta.feature.") and str(value).lower() in ("supported", "enabled")
    }
    return found


def refusal(info: Mapping[str, Any], features: set[str]) -> str | None:
    """Why pidelta must not write this catalog table, or None when it may."""
    table_type = info.get("table_type")
    if table_type == "MANAGED" or features & CATALOG_MANAGED_FEATURES:
        return (
            "it is a MANAGED table, whose commits Unity Catalog owns (catalog-managed "
            "commits); delta-rs commits straight to storage and would bypass the catalog"
        )
    if table_type != "EXTERNAL":
        return f"it is a {table_type}, not an EXTERNAL Delta table"
    if info.get("data_source_format", "DELTA") != "DELTA":
        return f"its format is {info.get('data_source_format')}, not DELTA"
    lacking = sorted(features - SUPPORTED_WRITER_FEATURES)
    if lacking:
        return (
            f"it uses the writer features {', '.join(lacking)}, which delta-rs cannot "
            "maintain (row tracking, domain metadata, in-commit timestamps, liquid "
            "clustering, deletion vectors, vacuum protocol check and the like)"
        )
    return None


# ---------------------------------------------------------------------------- catalog


class UnityCatalog:
    """Locations and vended storage options of pidelta's tables in one UC schema."""

    def __init__(
        self,
        client: UnityCatalogClient,
        catalog: str,
        schema: str,
        tables: Mapping[str, TableShape],
        *,
        storage_root: str | None,
        base_options: Mapping[str, str] | None = None,
        renew_margin: float = 300.0,
    ) -> None:
        self.client = client
        self.catalog = catalog
        self.schema = schema
        self.storage_root = storage_root.rstrip("/") if storage_root else None
        self.base_options = dict(base_options or {})
        self._tables = tables
        self._refs: dict[str, TableRef] = {}
        self._lock = threading.Lock()
        self.credentials = CredentialCache(self._vend, margin=renew_margin)

    @classmethod
    def from_settings(cls, settings: Settings, tables: Mapping[str, TableShape]) -> UnityCatalog:
        """The catalog of `PIDELTA_TARGET`, able to create `tables` (the registry's)."""
        target = parse_target(settings.target)
        return cls(
            UnityCatalogClient.from_settings(settings),
            target.catalog or "",
            target.schema or "",
            tables,
            storage_root=settings.uc_storage_root,
            base_options=storage_options(settings),
            renew_margin=settings.credential_renew_margin,
        )

    def full_name(self, name: str) -> str:
        return f"{self.catalog}.{self.schema}.{name}"

    def location(self, name: str) -> str:
        return self.resolve(name).storage_location

    def options(self, name: str) -> tuple[dict[str, str], int]:
        self.resolve(name)
        return self.credentials.get(name)

    def resolve(self, name: str) -> TableRef:
        """The catalog's table (created EXTERNAL when missing), checked once per process."""
        with self._lock:
            ref = self._refs.get(name)
            if ref is None:
                ref = self._refs[name] = self._resolve(name)
            return ref

    def _resolve(self, name: str) -> TableRef:
        full = self.full_name(name)
        info = self.client.get_table(full)
        if info is None:
            info = self._create(name)
        problem = refusal(info, property_features(info.get("properties") or {}))
        if problem is None:
            ref = TableRef(full, str(info["table_id"]), str(info["storage_location"]).rstrip("/"))
            self._refs[name] = ref
            problem = self._protocol_problem(name, ref, info)
        if problem is not None:
            self._refs.pop(name, None)
            raise self._refuse(name, problem)
        log.info("Unity Catalog table %s at %s", full, ref.storage_location)
        return ref

    def _create(self, name: str) -> dict[str, Any]:
        spec = self._tables.get(name)
        if spec is None:
            raise ConfigError(f"{self.full_name(name)} is not a table pidelta writes")
        if not self.storage_root:
            raise ConfigError(
                f"Unity Catalog has no table {self.full_name(name)}: set PIDELTA_UC_STORAGE_ROOT "
                "(a cloud folder the catalog can reach) so pidelta creates it as EXTERNAL, or "
                f"create it with the SQL in {README_SECTION}"
            )
        try:
            created = self.client.create_external_table(
                self.catalog,
                self.schema,
                name,
                uc_columns(spec.schema, spec.partition_by),
                f"{self.storage_root}/{name}",
            )
        except UnityCatalogError as exc:
            if exc.status != 409:
                raise
            # Another shard created it between our GET and our POST.
            again = self.client.get_table(self.full_name(name))
            if again is None:
                raise
            return again
        log.info("created EXTERNAL table %s", self.full_name(name))
        return created

    def _protocol_problem(self, name: str, ref: TableRef, info: Mapping[str, Any]) -> str | None:
        options, _ = self.credentials.get(name)
        try:
            if not DeltaTable.is_deltatable(ref.storage_location, storage_options=options):
                return None
            features = writer_features(DeltaTable(ref.storage_location, storage_options=options))
        except (DeltaError, OSError) as exc:
            raise PideltaError(
                f"cannot read the Delta protocol of {ref.full_name} at {ref.storage_location}: "
                f"{exc}"
            ) from None
        return refusal(info, features)

    def _refuse(self, name: str, problem: str) -> IncompatibleTableError:
        full = self.full_name(name)
        root = self.storage_root or "<cloud folder>"
        return IncompatibleTableError(
            f"Unity Catalog table {full} cannot be written by pidelta: {problem}. Drop or "
            f"rename it and let pidelta create an EXTERNAL table under PIDELTA_UC_STORAGE_ROOT "
            f"({root}/{name}), or create a compatible EXTERNAL table with the SQL in "
            f"{README_SECTION}"
        )

    def _vend(self, name: str) -> Vended:
        ref = self._refs[name]
        payload = self.client.temporary_table_credentials(ref.table_id)
        expires = payload.get("expiration_time")
        return Vended(
            vended_options(payload, ref.storage_location, self.base_options),
            None if expires is None else float(expires) / 1000.0,
        )


def vended_options(
    payload: Mapping[str, Any], location: str, base: Mapping[str, str]
) -> dict[str, str]:
    """delta-rs storage options from a TemporaryCredentials response."""
    options = dict(base)
    aws = payload.get("aws_temp_credentials")
    azure = payload.get("azure_user_delegation_sas")
    if aws:
        options.update(
            {
                "aws_access_key_id": aws["access_key_id"],
                "aws_secret_access_key": aws["secret_access_key"],
                "aws_session_token": aws.get("session_token", ""),
            }
        )
        options.setdefault("conditional_put", "etag")
        return {k: v for k, v in options.items() if v}
    if azure:
        options["azure_storage_sas_token"] = azure["sas_token"]
        return options
    kind = scheme_of(location)
    raise UnityCatalogError(
        "POST",
        "/temporary-table-credentials",
        None,
        f"no credentials pidelta can use for a {kind} location (it uses AWS temporary "
        "credentials and Azure SAS tokens; delta-rs takes no GCS OAuth token as an option)",
    )
