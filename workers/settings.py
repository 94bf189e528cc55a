"""The one settings model: every `PIDELTA_` variable, validated once at start-up.

Built by `load_settings()` in the CLI and passed down explicitly; no other module
reads the environment.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from workers.errors import ConfigError
from workers.pi.times import parse_time

RESPONSE_BYTES_PER_ITEM = 1024
_SETTINGS_FIELD = re.compile(r'field "(\w+)"')

AuthKind = Literal["none", "basic", "bearer", "oidc", "kerberos"]


class _ObjectStores(BaseModel):
    """Object-store credentials: the providers' own variables, read here so that the one
    settings model stays the only reader of the environment (workers.lake.storage maps
    them to delta-rs storage options)."""

    aws_endpoint_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "PIDELTA_AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"
        ),
        description="S3-compatible endpoint (MinIO, moto, R2); http:// allows plain HTTP",
    )
    aws_region: str | None = Field(
        default=None,
        validation_alias=AliasChoices("PIDELTA_AWS_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"),
        description="S3 region",
    )
    aws_access_key_id: str | None = Field(
        default=None,
        validation_alias=AliasChoices("PIDELTA_AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"),
        description="S3 access key id",
    )
    aws_secret_access_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("PIDELTA_AWS_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"),
        description="S3 secret key",
    )
    aws_session_token: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("PIDELTA_AWS_SESSION_TOKEN", "AWS_SESSION_TOKEN"),
        description="S3 session token",
    )
    aws_profile: str | None = Field(
        default=None,
        validation_alias=AliasChoices("PIDELTA_AWS_PROFILE", "AWS_PROFILE"),
        description="AWS profile name",
    )
    azure_storage_account_name: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "PIDELTA_AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT_NAME"
        ),
        description="Azure account",
    )
    azure_storage_account_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "PIDELTA_AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_ACCOUNT_KEY"
        ),
        description="account key",
    )
    azure_storage_sas_token: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("PIDELTA_AZURE_STORAGE_SAS_TOKEN", "AZURE_STORAGE_SAS_TOKEN"),
        description="SAS token",
    )
    azure_client_id: str | None = Field(
        default=None,
        validation_alias=AliasChoices("PIDELTA_AZURE_CLIENT_ID", "AZURE_CLIENT_ID"),
        description="service principal id",
    )
    azure_client_secret: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("PIDELTA_AZURE_CLIENT_SECRET", "AZURE_CLIENT_SECRET"),
        description="principal secret",
    )
    azure_tenant_id: str | None = Field(
        default=None,
        validation_alias=AliasChoices("PIDELTA_AZURE_TENANT_ID", "AZURE_TENANT_ID"),
        description="Entra tenant id",
    )
    azure_storage_endpoint: str | None = Field(
        default=None,
        validation_alias=AliasChoices("PIDELTA_AZURE_STORAGE_ENDPOINT", "AZURE_STORAGE_ENDPOINT"),
        description="blob endpoint including the account (Azurite: http://127.0.0.1:10000/acct)",
    )
    azure_storage_use_emulator: bool = Field(
        default=False,
        validation_alias=AliasChoices(
            "PIDELTA_AZURE_STORAGE_USE_EMULATOR", "AZURE_STORAGE_USE_EMULATOR"
        ),
        description="talk to Azurite at its default loopback address",
    )
    google_application_credentials: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "PIDELTA_GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_APPLICATION_CREDENTIALS"
        ),
        description="path of a GCS service-account JSON file",
    )
    google_service_account_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "PIDELTA_GOOGLE_SERVICE_ACCOUNT_KEY", "GOOGLE_SERVICE_ACCOUNT_KEY"
        ),
        description="GCS service-account JSON itself",
    )


class _UnityCatalog(BaseModel):
    """Unity Catalog (PIDELTA_TARGET=uc://catalog.schema)."""

    uc_storage_root: str | None = Field(
        default=None,
        description="cloud folder under which pidelta creates missing EXTERNAL tables "
        "(<root>/<table>), e.g. s3://bucket/pidelta",
    )
    databricks_host: str | None = Field(
        default=None,
        validation_alias=AliasChoices("PIDELTA_DATABRICKS_HOST", "DATABRICKS_HOST"),
        description="workspace URL serving /api/2.1/unity-catalog",
    )
    databricks_token: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("PIDELTA_DATABRICKS_TOKEN", "DATABRICKS_TOKEN"),
        description="personal access token",
    )
    databricks_client_id: str | None = Field(
        default=None,
        validation_alias=AliasChoices("PIDELTA_DATABRICKS_CLIENT_ID", "DATABRICKS_CLIENT_ID"),
        description="service principal for OAuth machine-to-machine",
    )
    databricks_client_secret: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "PIDELTA_DATABRICKS_CLIENT_SECRET", "DATABRICKS_CLIENT_SECRET"
        ),
        description="OAuth M2M secret",
    )
    uc_request_timeout: float = Field(
        default=30.0, gt=0, description="seconds per Unity Catalog REST call"
    )
    credential_renew_margin: float = Field(
        default=300.0,
        gt=0,
        description="renew vended credentials this many seconds before they expire (capped "
        "at a third of their lifetime)",
    )


class Settings(BaseSettings, _ObjectStores, _UnityCatalog):
    """pidelta configuration (environment variables with the `PIDELTA_` prefix)."""

    model_config = SettingsConfigDict(
        env_prefix="PIDELTA_",
        extra="ignore",
        validate_default=True,
        frozen=True,
        populate_by_name=True,
    )

    # PI Web API connection
    pi_url: str = "http://127.0.0.1:8440/piwebapi"
    pi_auth: AuthKind = "none"
    pi_username: str | None = None
    pi_password: SecretStr | None = None
    pi_token: SecretStr | None = None
    pi_client_id: str | None = None
    pi_client_secret: SecretStr | None = None
    pi_token_url: str | None = None
    pi_token_scope: str | None = Field(
        default=None, description="OAuth scope for the OIDC client-credentials grant, if needed"
    )
    pi_verify_tls: bool = True
    allow_http_credentials: bool = Field(
        default=False,
        description="send credentials to a plain http:// PIDELTA_PI_TOKEN_URL or "
        "DATABRICKS_HOST; for test servers only: anyone on the path reads them",
    )
    pi_ca_bundle: Path | None = None
    pi_data_server: str | None = Field(
        default=None, description="data server name to read; all data servers when unset"
    )

    # Kerberos (PIDELTA_PI_AUTH=kerberos): a keytab, else the username and password, else
    # the ticket cache KRB5CCNAME (workers/pi/kerberos.py)
    pi_keytab: Path | None = Field(
        default=None, description="client keytab file; needs PIDELTA_PI_PRINCIPAL"
    )
    pi_keytab_base64: SecretStr | None = Field(
        default=None,
        description="the client keytab's bytes in base64, where secrets are text (a "
        "Databricks secret scope); written to a private temporary file at start-up",
    )
    pi_principal: str | None = Field(
        default=None, description="Kerberos client principal, e.g. svc-pidelta@PLANT.EXAMPLE"
    )
    pi_kerberos_hostname: str | None = Field(
        default=None,
        description="host of the service principal HTTP@host when it differs from the host "
        "of PIDELTA_PI_URL (a DNS alias, a load balancer)",
    )
    pi_kerberos_delegate: bool = Field(
        default=False, description="let the PI server act as this principal (delegation)"
    )
    krb5_config: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("PIDELTA_KRB5_CONFIG", "KRB5_CONFIG"),
        description="MIT Kerberos configuration (realms, KDCs); /etc/krb5.conf when unset",
    )
    krb5ccname: str | None = Field(
        default=None,
        validation_alias=AliasChoices("PIDELTA_KRB5CCNAME", "KRB5CCNAME"),
        description="the ticket cache MIT Kerberos reads when no keytab or password is set",
    )

    # Client behaviour
    pi_max_concurrency: int = Field(default=16, ge=1, le=512)
    pi_max_requests_per_second: float = Field(default=500.0, gt=0)
    pi_request_timeout: float = Field(default=60.0, gt=0)
    pi_max_attempts: int = Field(default=8, ge=1, le=100)
    pi_max_retry_seconds: float = Field(default=120.0, gt=0)
    pi_max_url_bytes: int = Field(default=16_000, ge=1024)
    pi_max_items_per_call: int = Field(default=150_000, ge=1000)
    pi_page_size: int = Field(default=10_000, ge=1, description="maxCount per stream")
    pi_max_response_bytes: int | None = Field(
        default=None,
        ge=1024,
        description="largest PI answer accepted, on the wire or inflated; default "
        "PIDELTA_PI_MAX_ITEMS_PER_CALL x 1 KiB (a recorded value takes about 150 bytes)",
    )
    pi_gzip: bool = Field(
        default=True,
        description="ask PI for gzip bodies (needed over a WAN; off saves CPU on a LAN)",
    )
    discovery_page_size: int = Field(
        default=10_000, ge=1, description="points per page when listing a data server"
    )
    discovery_max_points: int = Field(
        default=2_000_000,
        ge=1,
        description="points one discovery may list across data servers; past it discovery "
        "fails instead of paging a server that never ends",
    )
    discovery_timeout: float = Field(
        default=900.0, gt=0, description="seconds one discovery may take before it fails"
    )

    # Target and sharding
    target: str = "./lakehouse"
    shard_index: int = Field(default=0, ge=0)
    shard_count: int = Field(default=1, ge=1, le=100_000)
    tag_filter: str = "*"

    storage_options: dict[str, str] = Field(
        default_factory=dict,
        description="extra delta-rs storage options as a JSON object; override those derived "
        "from the AWS_*/AZURE_*/GOOGLE_* variables",
    )

    # Maintenance (`pidelta maintain`, and `pidelta run` on maintain_shard)
    maintain_shard: int = Field(
        default=0, ge=0, description="the shard whose `run` also maintains the tables"
    )
    maintain_interval: float = Field(
        default=3600.0,
        ge=0,
        description="seconds between maintenance passes in `pidelta run`; 0 turns them off",
    )
    compact_target_size: int = Field(
        default=128 * 1024 * 1024, ge=1024 * 1024, description="bytes per compacted file"
    )
    vacuum_retention_hours: float = Field(
        default=168.0,
        ge=0,
        description="removed files younger than this stay (readers of old versions); never "
        "below the table's delta.deletedFileRetentionDuration",
    )

    # Time
    start: str = "*-1h"
    safety_lag: float = Field(default=10.0, ge=0)
    poll_interval: float = Field(default=5.0, gt=0)
    late_lookback: float = Field(
        default=600.0, ge=0, description="seconds re-read behind each checkpoint for late values"
    )
    rediscover_interval: float = Field(default=300.0, gt=0)
    backfill_window: float = Field(default=3600.0, gt=0, description="seconds per backfill batch")
    # Change capture (workers/timeseries/follow.py)
    updates: bool = Field(
        default=False,
        description="`run` follows each tag with PI stream updates (arrivals, edits, "
        "deletions of any age); false: recorded re-reads with the late look-back",
    )

    # Commits
    commit_max_rows: int = Field(default=1_000_000, ge=1)
    commit_max_bytes: int = Field(default=256 * 1024 * 1024, ge=1024)
    commit_max_age: float = Field(default=30.0, gt=0)
    max_commit_retries: int = Field(default=100, ge=1)

    # Asset Framework and event frames (synced by one shard only, not sharded by tag)
    af_shard: int = Field(
        default=0, ge=0, description="the shard that syncs AF and event frames; others skip"
    )
    af_database_filter: str = Field(
        default="*",
        description="AF databases to sync: a name filter (`*`, `?`), or a `\\\\server\\db` path "
        "filter when it contains a backslash",
    )
    af_sync_interval: float = Field(
        default=600.0, gt=0, description="seconds between AF hierarchy syncs in `pidelta run`"
    )
    af_page_size: int = Field(
        default=1000, ge=1, le=150_000, description="elements or event frames per page"
    )
    events_sync_interval: float = Field(
        default=30.0, gt=0, description="seconds between event-frame syncs in `pidelta run`"
    )
    events_start: str = Field(
        default="*-1d",
        description="where event frames start with no watermark (ISO 8601 or PI time)",
    )
    events_max_window: float = Field(
        default=86_400.0,
        gt=0,
        description="seconds of event frames read and merged per commit when catching up",
    )
    events_lookback: float = Field(
        default=600.0,
        ge=0,
        description="seconds re-searched behind the event-frame watermark, for frames "
        "written late into PI",
    )

    # The tag dimension (pi_points, pi_digital_state_sets) and the interpolated grid
    points_interval: float = Field(
        default=3600.0, gt=0, description="seconds between points syncs in `pidelta run`"
    )
    points_batch_size: int = Field(
        default=500,
        ge=1,
        le=10_000,
        description="points whose attributes travel in one /batch request",
    )
    interpolated_interval: str | None = Field(
        default=None,
        description="a regular grid per tag into pi_interpolated, e.g. `1m` (s, m, h, d); "
        "off when unset",
    )
    interpolated_lookback: float = Field(
        default=3600.0,
        ge=0,
        description="seconds of the written grid read again each cycle, for late and edited values",
    )
    interpolated_max_points: int = Field(
        default=1440, ge=1, description="grid points per tag read and written per commit"
    )

    # Summaries (pi_summaries, opt-in)
    summaries: str | None = Field(
        default=None,
        description="summary buckets into pi_summaries, e.g. `1h:Average,Minimum;1d:Total` "
        "(durations s, m, h, d; PI summary types); off when unset",
    )
    summaries_basis: Literal["TimeWeighted", "EventWeighted"] = Field(
        default="TimeWeighted", description="PI's calculation basis of pi_summaries"
    )
    summaries_lookback: float = Field(
        default=7200.0,
        ge=0,
        description="seconds of written buckets read again each cycle (at least the last "
        "bucket), for late and edited values",
    )
    summaries_max_buckets: int = Field(
        default=168, ge=1, description="buckets per tag and duration read and written per commit"
    )
    summaries_interval: float = Field(
        default=300.0,
        gt=0,
        description="seconds between summaries cycles in `pidelta run` (at most the shortest "
        "duration is used)",
    )

    # Verification (`pidelta verify`, and `pidelta run` over a trailing horizon)
    verify_bucket: int = Field(
        default=3600,
        ge=60,
        le=86_400,
        description="seconds per verified bucket; a divisor of a day, buckets start at UTC "
        "midnight",
    )
    verify_horizon: float = Field(
        default=7 * 86_400.0,
        ge=0,
        description="seconds behind now that `pidelta run` keeps verified; 0 turns it off",
    )
    verify_budget_share: float = Field(
        default=0.05,
        gt=0,
        le=1,
        description="share of pi_max_requests_per_second that verification in `run` may use",
    )
    verify_interval: float = Field(
        default=600.0, gt=0, description="seconds between verification passes in `pidelta run`"
    )

    @field_validator("verify_bucket")
    @classmethod
    def _verify_bucket(cls, value: int) -> int:
        if 86_400 % value:
            raise ValueError(f"must divide a day (86400 seconds), got {value}")
        return value

    # Service
    metrics_port: int = Field(default=9464, ge=0, le=65535)
    metrics_host: str = Field(
        default="0.0.0.0",
        description="address the unauthenticated metrics and health server binds to; "
        "127.0.0.1 keeps it on the host",
    )
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @property
    def response_limit(self) -> int:
        """Bytes one PI answer may take: the server's own item limit times a generous
        size per item, unless set."""
        return self.pi_max_response_bytes or self.pi_max_items_per_call * RESPONSE_BYTES_PER_ITEM

    @field_validator("pi_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        if "@" in urlsplit(value).netloc:
            # aiohttp would send them as basic auth beside PIDELTA_PI_AUTH's own header, and
            # a URL ends up in logs and errors: credentials go in their own variables.
            raise ValueError(
                "must not hold credentials (user:password@); use PIDELTA_PI_USERNAME and "
                "PIDELTA_PI_PASSWORD"
            )
        return value.rstrip("/")

    @field_validator("target")
    @classmethod
    def _target(cls, value: str) -> str:
        if "://" in value and not value.startswith(("s3://", "az://", "gs://", "uc://", "file://")):
            raise ValueError(
                "must be a folder, s3://, az://, gs://, file:// or uc://catalog.schema"
            )
        return value.rstrip("/") or "/"

    @field_validator("storage_options", mode="before")
    @classmethod
    def _options(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return json.loads(value) if value.strip() else {}
            except ValueError:
                raise ValueError("not valid JSON (a JSON object of strings)") from None
        return value

    @field_validator("interpolated_interval")
    @classmethod
    def _grid(cls, value: str | None) -> str | None:
        if value is not None:
            grid_seconds(value)
        return value

    @property
    def interpolated_seconds(self) -> int | None:
        """The grid step of pi_interpolated in seconds, None when it is off."""
        return (
            None if self.interpolated_interval is None else grid_seconds(self.interpolated_interval)
        )

    @field_validator("summaries")
    @classmethod
    def _summaries(cls, value: str | None) -> str | None:
        if value is not None:
            summary_specs(value)
        return value

    @property
    def summary_specs(self) -> tuple[SummarySpec, ...]:
        """The durations and types of pi_summaries, none when it is off."""
        return () if self.summaries is None else summary_specs(self.summaries)

    @field_validator("start", "events_start")
    @classmethod
    def _time(cls, value: str) -> str:
        """A time string PI would refuse fails here, before any table is touched."""
        parse_time(value, datetime.now(UTC))
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("af_shard", "maintain_shard")
    @classmethod
    def _af_shard(cls, value: int, info: ValidationInfo) -> int:
        count = info.data.get("shard_count")
        if count is not None and value >= count:
            what = "syncs AF" if info.field_name == "af_shard" else "maintains the tables"
            raise ValueError(f"must be below PIDELTA_SHARD_COUNT={count}, or nobody {what}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.shard_index >= self.shard_count:
            raise ValueError(
                f"PIDELTA_SHARD_INDEX={self.shard_index} must be below "
                f"PIDELTA_SHARD_COUNT={self.shard_count}"
            )
        needs: dict[str, tuple[str, ...]] = {
            "basic": ("pi_username", "pi_password"),
            "bearer": ("pi_token",),
            "oidc": ("pi_client_id", "pi_client_secret", "pi_token_url"),
        }
        missing = [n for n in needs.get(self.pi_auth, ()) if getattr(self, n) is None]
        if missing:
            names = ", ".join(f"PIDELTA_{n.upper()}" for n in missing)
            raise ValueError(f"PIDELTA_PI_AUTH={self.pi_auth} needs {names}")
        if (
            self.pi_auth == "oidc"
            and (self.pi_token_url or "").startswith("http://")
            and not self.allow_http_credentials
        ):
            raise ValueError(
                "PIDELTA_PI_TOKEN_URL is plain http://: the client secret would cross the "
                "network in clear; use https://, or PIDELTA_ALLOW_HTTP_CREDENTIALS=true for a "
                "test server"
            )
        if self.target.startswith("uc://"):
            if self.databricks_host is None:
                raise ValueError("PIDELTA_TARGET=uc://... needs DATABRICKS_HOST")
            if self.databricks_host.startswith("http://") and not self.allow_http_credentials:
                raise ValueError(
                    "DATABRICKS_HOST is plain http://: the workspace token would cross the "
                    "network in clear; use https://, or PIDELTA_ALLOW_HTTP_CREDENTIALS=true for "
                    "a test server"
                )
            if self.databricks_token is None and (
                self.databricks_client_id is None or self.databricks_client_secret is None
            ):
                raise ValueError(
                    "PIDELTA_TARGET=uc://... needs DATABRICKS_TOKEN, or DATABRICKS_CLIENT_ID "
                    "and DATABRICKS_CLIENT_SECRET"
                )
        if self.pi_ca_bundle is not None and not self.pi_ca_bundle.is_file():
            raise ValueError(f"PIDELTA_PI_CA_BUNDLE={self.pi_ca_bundle} is not a file")
        return self

    @model_validator(mode="after")
    def _kerberos(self) -> Settings:
        if self.pi_auth != "kerberos":
            return self
        if self.pi_keytab is not None and self.pi_keytab_base64 is not None:
            raise ValueError("set PIDELTA_PI_KEYTAB or PIDELTA_PI_KEYTAB_BASE64, not both")
        if self.pi_keytab_base64 is not None:
            if not _is_keytab(self.pi_keytab_base64.get_secret_value()):
                raise ValueError(
                    "PIDELTA_PI_KEYTAB_BASE64 is not a base64-encoded keytab "
                    "(base64 -w0 pidelta.keytab)"
                )
            if not self.pi_principal:
                raise ValueError(
                    "PIDELTA_PI_KEYTAB_BASE64 needs PIDELTA_PI_PRINCIPAL (the key to use)"
                )
        elif self.pi_keytab is not None:
            if not self.pi_keytab.is_file():
                raise ValueError(f"PIDELTA_PI_KEYTAB={self.pi_keytab} is not a file")
            if not os.access(self.pi_keytab, os.R_OK):
                raise ValueError(f"PIDELTA_PI_KEYTAB={self.pi_keytab} is not readable")
            if not self.pi_principal:
                raise ValueError("PIDELTA_PI_KEYTAB needs PIDELTA_PI_PRINCIPAL (the key to use)")
        elif self.pi_password is not None and not self.pi_username:
            raise ValueError("PIDELTA_PI_PASSWORD needs PIDELTA_PI_USERNAME (the principal)")
        host = self.pi_kerberos_hostname
        if host is not None and (not host or any(c in host for c in "/:@ ")):
            raise ValueError(
                f"PIDELTA_PI_KERBEROS_HOSTNAME={host!r} must be a bare host name, e.g. "
                "pi.plant.example (the SPN is HTTP@<it>)"
            )
        if self.krb5_config is not None and not self.krb5_config.is_file():
            raise ValueError(f"KRB5_CONFIG={self.krb5_config} is not a file")
        return self


def _is_keytab(text: str) -> bool:
    """Base64 of an MIT keytab file: version bytes 0x05 0x01 or 0x05 0x02, then entries."""
    try:
        raw = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        return False
    return len(raw) > 2 and raw[0] == 5 and raw[1] in (1, 2)


_GRID = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
_GRID_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


def grid_seconds(text: str) -> int:
    """`1m` -> 60: a whole number of seconds, minutes, hours or days, at least one second."""
    m = _GRID.match(text.lower())
    seconds = int(m.group(1)) * _GRID_UNITS[m.group(2)] if m else 0
    if seconds < 1:
        raise ValueError(f"{text!r} is not a grid interval such as 30s, 1m, 1h or 1d")
    return seconds


# PI Web API's summary types (SummaryType); `All` and friends are left out, as they
# would not name one column of a row.
SUMMARY_TYPES = (
    "Total",
    "Average",
    "Minimum",
    "Maximum",
    "Range",
    "StdDev",
    "PopulationStdDev",
    "Count",
    "PercentGood",
)


@dataclass(frozen=True, slots=True)
class SummarySpec:
    """One duration of PIDELTA_SUMMARIES: its text (`1h`), seconds and summary types."""

    duration: str
    seconds: int
    types: tuple[str, ...]


def summary_specs(text: str) -> tuple[SummarySpec, ...]:
    """`1h:Average,Count;1d:Total` -> the specs; a ValueError names what is wrong."""
    specs: list[SummarySpec] = []
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        duration, sep, kinds = part.partition(":")
        if not sep:
            raise ValueError(f"{part!r} is not duration:types such as 1h:Average,Maximum")
        seconds = grid_seconds(duration)
        by_lower = {t.lower(): t for t in SUMMARY_TYPES}
        types: list[str] = []
        for kind in (k.strip() for k in kinds.split(",") if k.strip()):
            if kind.lower() not in by_lower:
                raise ValueError(f"{kind!r} is not a summary type ({', '.join(SUMMARY_TYPES)})")
            if by_lower[kind.lower()] not in types:
                types.append(by_lower[kind.lower()])
        if not types:
            raise ValueError(f"{part!r} names no summary type")
        if any(s.seconds == seconds for s in specs):
            raise ValueError(f"duration {duration.strip()!r} is given twice")
        specs.append(SummarySpec(duration.strip().lower(), seconds, tuple(types)))
    if not specs:
        raise ValueError("names no duration, e.g. 1h:Average")
    return tuple(specs)


def load_settings(**overrides: Any) -> Settings:
    """Build the settings from the environment plus command-line overrides.

    Raises ConfigError with one readable line naming the variable at fault.
    """
    clean = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**clean)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, "PIDELTA_")) from None
    except SettingsError as exc:
        # pydantic-settings parses JSON-valued variables before any validator runs; its
        # message names the field, and the value (maybe a secret) is left out on purpose.
        field = _SETTINGS_FIELD.search(str(exc))
        name = f"PIDELTA_{field.group(1).upper()}" if field else "a PIDELTA_ variable"
        raise ConfigError(f"invalid configuration: {name}: not valid JSON") from None


# PIDELTA_ variables read outside the settings: by the build (setup.py) and the tests.
NOT_SETTINGS = frozenset({"PIDELTA_PURE_WHEEL", "PIDELTA_REFERENCE_DIR"})


def known_variables() -> set[str]:
    """Every environment variable the settings read, provider variables included."""
    names = set(NOT_SETTINGS)
    for name in Settings.model_fields:
        names.update(setting_variables(name))
    return names


def unknown_variables() -> list[tuple[str, str | None]]:
    """`PIDELTA_*` variables of the environment that no setting reads, each with the
    closest known name (a misspelled variable is otherwise ignored without a word)."""
    known = sorted(n for n in known_variables() if n.startswith("PIDELTA_"))
    found = []
    for name in sorted(os.environ):
        if name.startswith("PIDELTA_") and name.upper() not in known:
            close = difflib.get_close_matches(name.upper(), known, n=1, cutoff=0.6)
            found.append((name, close[0] if close else None))
    return found


def describe_validation_error(exc: ValidationError, prefix: str) -> str:
    """One line per validation error, naming environment variables, never values of secrets."""
    parts = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = [str(p) for p in err.get("loc", ()) if p != "__root__"]
        msg = err.get("msg", "invalid").removeprefix("Value error, ")
        if not loc:
            parts.append(msg)
            continue
        # Fields read from a provider's variable report their alias, already upper-case.
        name = loc[0] if loc[0].isupper() else f"{prefix}{loc[0].upper()}"
        name += "".join(f"[{part}]" for part in loc[1:])  # a key of a JSON setting
        parts.append(f"{name}: {msg}")
    return "invalid configuration: " + "; ".join(parts)


# Help of the settings declared above without a description (`pidelta --help`); a test
# checks that every setting has one or the other.
HELP: dict[str, str] = {
    "pi_url": "PI Web API base URL",
    "pi_auth": "none, basic, bearer, oidc (client credentials, refreshed) or kerberos",
    "pi_username": "user name (basic; kerberos without a keytab)",
    "pi_password": "password (basic; kerberos without a keytab); never printed or logged",
    "pi_token": "bearer token (bearer); never printed or logged",
    "pi_client_id": "OIDC client id (oidc)",
    "pi_client_secret": "OIDC client secret (oidc); never printed or logged",
    "pi_token_url": "OIDC token endpoint (oidc), https://",
    "pi_verify_tls": "verify the PI Web API's TLS certificate",
    "pi_ca_bundle": "CA file (PEM) that signs the PI Web API's certificate",
    "pi_max_concurrency": "PI requests in flight at once",
    "pi_max_requests_per_second": "PI requests started per second at most",
    "pi_request_timeout": "seconds one PI request may take",
    "pi_max_attempts": "attempts of one PI request before it fails",
    "pi_max_retry_seconds": "seconds one PI request may spend retrying",
    "pi_max_url_bytes": "longest URL sent to PI (WebID lists are split below it)",
    "pi_max_items_per_call": "values one PI call may return (the server's MaxReturnedItemsPerCall)",
    "target": "where tables live: a folder, s3://, az://, gs://, file:// or uc://catalog.schema",
    "shard_index": "the consistent-hash shard this worker owns, from 0",
    "shard_count": "number of shards",
    "tag_filter": "PI point name filter for discovery (`*`, `?`)",
    "start": "where a tag with no checkpoint starts: ISO 8601 (a time without a zone is UTC) "
    "or PI time (*-1h)",
    "safety_lag": "seconds behind now where a read ends (values there are all recorded)",
    "poll_interval": "seconds between polls in `pidelta run`",
    "rediscover_interval": "seconds between discoveries in `pidelta run`",
    "commit_max_rows": "rows buffered before a commit",
    "commit_max_bytes": "bytes buffered before a commit",
    "commit_max_age": "seconds the oldest buffered batch waits before a commit",
    "max_commit_retries": "attempts of one Delta commit that meets concurrent commits",
    "metrics_port": "port of /metrics, /healthz and /readyz (0: any free port)",
    "log_format": "text or json",
    "log_level": "DEBUG, INFO, WARNING or ERROR; tracebacks only at DEBUG",
}


def setting_help(name: str) -> str:
    """The help text of a setting: its description, else its entry in HELP."""
    return Settings.model_fields[name].description or HELP.get(name, "")


def setting_variables(name: str) -> list[str]:
    """The environment variables of a setting, its PIDELTA_ name first."""
    alias = Settings.model_fields[name].validation_alias
    if isinstance(alias, AliasChoices):
        return [str(choice) for choice in alias.choices]
    return [alias if isinstance(alias, str) else f"PIDELTA_{name.upper()}"]
