"""Where tables live: `PIDELTA_TARGET` parsed, and delta-rs storage options from the settings.

The options come from the settings model (which reads the providers' own AWS_*, AZURE_*,
GOOGLE_* variables) rather than from delta-rs reading the environment itself, so that one
place decides them, `PIDELTA_STORAGE_OPTIONS` can override any of them, and a test can see
exactly what a worker will use.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from workers.errors import ConfigError
from workers.settings import Settings

Scheme = Literal["local", "s3", "az", "gs", "uc"]

_UC_NAME = re.compile(r"^[A-Za-z0-9_\-]+$")


@dataclass(frozen=True, slots=True)
class Target:
    """A parsed `PIDELTA_TARGET`: a folder or object-store prefix, or a UC schema."""

    scheme: Scheme
    location: str
    catalog: str | None = None
    schema: str | None = None

    @property
    def is_catalog(self) -> bool:
        return self.scheme == "uc"


def parse_target(target: str) -> Target:
    """`./lakehouse`, `file:///x`, `s3://b/p`, `az://c/p`, `gs://b/p` or `uc://catalog.schema`."""
    head, sep, rest = target.partition("://")
    text = f"{head}{sep}{rest.rstrip('/')}" if sep else (target.rstrip("/") or "/")
    if text.startswith("uc://"):
        parts = text.removeprefix("uc://").split(".")
        if len(parts) != 2 or not all(_UC_NAME.match(p) for p in parts):
            raise ConfigError(
                f"PIDELTA_TARGET: {target!r} is not uc://catalog.schema (two names, one dot)"
            )
        return Target("uc", text, parts[0], parts[1])
    for scheme in ("s3", "az", "gs"):
        if text.startswith(f"{scheme}://"):
            if not text.removeprefix(f"{scheme}://").split("/")[0]:
                raise ConfigError(f"PIDELTA_TARGET: {target!r} names no bucket or container")
            return Target(scheme, text)  # type: ignore[arg-type]
    return Target("local", text)


def scheme_of(location: str) -> Scheme:
    """The object store of a cloud URL (`s3a://` and `abfss://` included), or local."""
    head = location.split("://", 1)[0].lower() if "://" in location else "file"
    if head in ("s3", "s3a"):
        return "s3"
    if head in ("az", "abfs", "abfss", "adl", "azure", "wasb", "wasbs"):
        return "az"
    if head in ("gs", "gcs"):
        return "gs"
    return "local"


def storage_options(settings: Settings, scheme: Scheme | None = None) -> dict[str, str]:
    """delta-rs storage options for the target's object store, then PIDELTA_STORAGE_OPTIONS.

    For `uc://` the store is that of `PIDELTA_UC_STORAGE_ROOT`; only the non-secret options
    (endpoint, region, ...) apply there, since Unity Catalog vends the credentials.
    """
    kind = scheme or parse_target(settings.target).scheme
    if kind == "uc":
        kind = scheme_of(settings.uc_storage_root or "")
        options = _no_secrets(_object_store_options(settings, kind))
    else:
        options = _object_store_options(settings, kind)
    options.update(settings.storage_options)
    return options


def _secret(value: object) -> str | None:
    return None if value is None else value.get_secret_value()  # type: ignore[attr-defined]


def _object_store_options(settings: Settings, kind: Scheme) -> dict[str, str]:
    if kind == "s3":
        return s3_options(settings)
    if kind == "az":
        return azure_options(settings)
    if kind == "gs":
        return gcs_options(settings)
    return {}


def s3_options(settings: Settings) -> dict[str, str]:
    """S3: credentials, region, endpoint, and conditional writes for concurrent committers.

    delta-rs 1.x commits a log entry with a put-if-absent (`If-None-Match: *`), which S3 and
    most compatible stores honour; `conditional_put=etag` also makes object_store use it for
    its own conditional operations, so many shards appending to one table lose no commit.
    """
    options = {"conditional_put": "etag"}
    pairs = {
        "aws_access_key_id": settings.aws_access_key_id,
        "aws_secret_access_key": _secret(settings.aws_secret_access_key),
        "aws_session_token": _secret(settings.aws_session_token),
        "aws_region": settings.aws_region,
        "aws_endpoint_url": settings.aws_endpoint_url,
        "aws_profile": settings.aws_profile,
    }
    options.update({k: v for k, v in pairs.items() if v})
    endpoint = settings.aws_endpoint_url or ""
    if endpoint.startswith("http://"):
        options["aws_allow_http"] = "true"
    if endpoint:
        # A custom endpoint (MinIO, moto, R2) addresses buckets by path, not virtual host.
        options["aws_virtual_hosted_style_request"] = "false"
    if "aws_region" not in options and endpoint:
        options["aws_region"] = "us-east-1"
    return options


def azure_options(settings: Settings) -> dict[str, str]:
    """Azure Blob / ADLS Gen2: account with key, SAS or service principal; Azurite too."""
    pairs = {
        "azure_storage_account_name": settings.azure_storage_account_name,
        "azure_storage_account_key": _secret(settings.azure_storage_account_key),
        "azure_storage_sas_token": _secret(settings.azure_storage_sas_token),
        "azure_client_id": settings.azure_client_id,
        "azure_client_secret": _secret(settings.azure_client_secret),
        "azure_tenant_id": settings.azure_tenant_id,
    }
    options = {k: v for k, v in pairs.items() if v}
    if settings.azure_storage_use_emulator:
        options["azure_storage_use_emulator"] = "true"
    endpoint = settings.azure_storage_endpoint
    if endpoint:
        options["azure_endpoint"] = endpoint
        if endpoint.startswith("http://"):
            options["azure_allow_http"] = "true"
    return options


def gcs_options(settings: Settings) -> dict[str, str]:
    """GCS: a service-account file (GOOGLE_APPLICATION_CREDENTIALS) or its JSON content."""
    options: dict[str, str] = {}
    if settings.google_application_credentials:
        options["google_application_credentials"] = settings.google_application_credentials
    key = _secret(settings.google_service_account_key)
    if key:
        options["google_service_account_key"] = key
    return options


_SECRET_KEYS = (
    "aws_access_key_id",
    "aws_secret_access_key",
    "aws_session_token",
    "aws_profile",
    "azure_storage_account_key",
    "azure_storage_sas_token",
    "azure_client_secret",
    "azure_client_id",
    "azure_tenant_id",
    "google_application_credentials",
    "google_service_account_key",
)


def _no_secrets(options: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in options.items() if k not in _SECRET_KEYS}
