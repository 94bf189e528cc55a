"""The one settings model: every `PIDELTA_` variable, validated once at start-up.

Built by `load_settings()` in the CLI and passed down explicitly; no other module
reads the environment.
"""

from __future__ import annotations

import json
import re
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
            return json.loads(value) if value.strip() else {}
        return value

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
        parts.append(f"{name}: {msg}")
    return "invalid configuration: " + "; ".join(parts)
