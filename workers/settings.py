"""The one settings model: every `PIDELTA_` variable, validated once at start-up.

Built by `load_settings()` in the CLI and passed down explicitly; no other module
reads the environment.
"""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
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
from workers.setting_values import SummarySpec, grid_seconds, is_keytab, summary_specs
from workers.settings_stores import ObjectStoreFields, UnityCatalogFields

RESPONSE_BYTES_PER_ITEM = 1024
_SETTINGS_FIELD = re.compile(r'field "(\w+)"')

AuthKind = Literal["none", "basic", "bearer", "oidc", "kerberos"]


class Settings(BaseSettings, ObjectStoreFields, UnityCatalogFields):
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
        default=True,
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
            if not is_keytab(self.pi_keytab_base64.get_secret_value()):
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
