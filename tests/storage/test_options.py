"""Unit tests: target parsing, storage options from the providers' variables (GCS has no
emulator here, so its mapping is tested this way), refusal rules, credential renewal."""

from __future__ import annotations

import pyarrow as pa
import pytest

from workers.errors import ConfigError
from workers.lake.credentials import CredentialCache, Vended, is_expired_credential_error
from workers.lake.maintenance import retention_hours
from workers.lake.schemas import PI_TIMESERIES_SCHEMA
from workers.lake.storage import parse_target, storage_options
from workers.lake.unity_catalog import create_table_sql, property_features, refusal, uc_columns
from workers.settings import Settings


def settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    for key in list(__import__("os").environ):
        if key.startswith(("PIDELTA_", "AWS_", "AZURE_", "GOOGLE_", "DATABRICKS_")):
            monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings(_env_file=None)


def test_targets() -> None:
    assert parse_target("./lakehouse").scheme == "local"
    assert parse_target("s3://bucket/prefix/").location == "s3://bucket/prefix"
    uc = parse_target("uc://main.pi")
    assert (uc.scheme, uc.catalog, uc.schema) == ("uc", "main", "pi")
    for bad in ("uc://main", "uc://a.b.c", "s3://"):
        with pytest.raises(ConfigError):
            parse_target(bad)


def test_gcs_options_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    s = settings(
        monkeypatch,
        PIDELTA_TARGET="gs://bucket/lake",
        GOOGLE_APPLICATION_CREDENTIALS="/secrets/sa.json",
        PIDELTA_STORAGE_OPTIONS='{"google_bucket": "other"}',
    )
    assert storage_options(s) == {
        "google_application_credentials": "/secrets/sa.json",
        "google_bucket": "other",
    }
    s = settings(monkeypatch, PIDELTA_TARGET="gs://b/l", GOOGLE_SERVICE_ACCOUNT_KEY='{"k": 1}')
    assert storage_options(s) == {"google_service_account_key": '{"k": 1}'}


def test_s3_options_with_custom_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    s = settings(
        monkeypatch,
        PIDELTA_TARGET="s3://bucket/lake",
        AWS_ENDPOINT_URL="http://127.0.0.1:9000",
        AWS_ACCESS_KEY_ID="AKID",
        AWS_SECRET_ACCESS_KEY="SECRET",
    )
    assert storage_options(s) == {
        "conditional_put": "etag",
        "aws_access_key_id": "AKID",
        "aws_secret_access_key": "SECRET",
        "aws_endpoint_url": "http://127.0.0.1:9000",
        "aws_allow_http": "true",
        "aws_virtual_hosted_style_request": "false",
        "aws_region": "us-east-1",
    }
    assert "SECRET" not in repr(s)


def test_azure_options_and_uc_keeps_no_static_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    s = settings(
        monkeypatch,
        PIDELTA_TARGET="az://container/lake",
        AZURE_STORAGE_ACCOUNT_NAME="acct",
        AZURE_STORAGE_ACCOUNT_KEY="KEY",
    )
    assert storage_options(s) == {
        "azure_storage_account_name": "acct",
        "azure_storage_account_key": "KEY",
    }
    s = settings(
        monkeypatch,
        PIDELTA_TARGET="uc://main.pi",
        PIDELTA_UC_STORAGE_ROOT="s3://bucket/root",
        DATABRICKS_HOST="https://example.cloud.databricks.com",
        DATABRICKS_TOKEN="dapi",
        AWS_ACCESS_KEY_ID="STATIC",
        AWS_REGION="eu-west-1",
    )
    assert storage_options(s) == {"conditional_put": "etag", "aws_region": "eu-west-1"}


def test_uc_target_needs_host_and_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="DATABRICKS_HOST"):
        settings(monkeypatch, PIDELTA_TARGET="uc://main.pi")
    with pytest.raises(ValueError, match="DATABRICKS_TOKEN, or DATABRICKS_CLIENT_ID"):
        settings(monkeypatch, PIDELTA_TARGET="uc://main.pi", DATABRICKS_HOST="h")


def test_refusal_rules() -> None:
    external = {"table_type": "EXTERNAL", "data_source_format": "DELTA"}
    assert refusal(external, {"appendOnly", "changeDataFeed"}) is None
    assert "MANAGED" in str(refusal({**external, "table_type": "MANAGED"}, set()))
    assert "catalog-managed" in str(refusal(external, {"catalogManaged"}))
    assert "clustering, vacuumProtocolCheck" in str(
        refusal(external, {"vacuumProtocolCheck", "clustering"})
    )
    assert property_features({"delta.enableRowTracking": "true"}) == {"rowTracking"}
    assert property_features({"delta.feature.deletionVectors": "supported"}) == {"deletionVectors"}


def test_columns_and_sql() -> None:
    columns = uc_columns(pa.schema([pa.field("m", pa.map_(pa.string(), pa.string()))]))
    assert (columns[0]["type_name"], columns[0]["type_text"]) == ("MAP", "map<string,string>")
    by_name = {c["name"]: c for c in uc_columns(PI_TIMESERIES_SCHEMA, ("date",))}
    timestamp = by_name["timestamp"]
    assert (timestamp["type_text"], timestamp["nullable"]) == ("timestamp", False)
    assert by_name["date"]["partition_index"] == 0
    assert "partition_index" not in timestamp
    sql = create_table_sql("main.pi.pi_timeseries", PI_TIMESERIES_SCHEMA, ("date",), "s3://b/t")
    assert "  `timestamp` TIMESTAMP NOT NULL," in sql
    assert "PARTITIONED BY (`date`)" in sql


def test_credentials_renewed_ahead_of_expiry() -> None:
    now = [1000.0]
    issued = []

    def vend(name: str) -> Vended:
        issued.append(now[0])
        return Vended({"key": str(len(issued))}, expires_at=now[0] + 60)

    cache = CredentialCache(vend, margin=300, clock=lambda: now[0])
    assert cache.get("t") == ({"key": "1"}, 1)
    now[0] += 39  # before the last third of the lifetime: same credentials
    assert cache.get("t") == ({"key": "1"}, 1)
    now[0] += 2  # 41 s of 60: renewed, 19 s before the expiry
    assert cache.get("t") == ({"key": "2"}, 2)
    cache.renew("t", failed_generation=1)  # a stale failure does not renew twice
    assert cache.generation("t") == 2
    assert is_expired_credential_error(OSError("S3 error: 400 ExpiredToken"))
    assert not is_expired_credential_error(OSError("connection reset"))


def test_retention_intervals() -> None:
    assert retention_hours(None) == 168.0
    assert retention_hours("interval 2 days") == 48.0
    assert retention_hours("interval 0 hours") == 0.0
    assert retention_hours("interval 1 weeks") == 168.0
