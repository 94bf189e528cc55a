"""`uc://catalog.schema` targets against the test Unity Catalog server (responses checked
against the reference spec) vending moto-S3 credentials that expire after 15 s."""

from __future__ import annotations

import json
import multiprocessing
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pyarrow as pa
import pytest

from tests.conftest import FIXED_NOW, MockServer, SimClock
from tests.e2e.helpers import (
    fixed_past,
    iso,
    ok,
    pidelta,
    start_worker,
    worker_env,
)
from tests.storage.conftest import DAY, S3, assert_holds_truth, merged, uc_env
from tests.storage.uc_server import UCServer
from workers.errors import ConfigError
from workers.lake.schemas import CHECKPOINTS, PI_TIMESERIES, PI_TIMESERIES_SCHEMA
from workers.lake.tables import TABLES, TableStore
from workers.lake.unity_catalog import IncompatibleTableError, uc_columns
from workers.settings import Settings
from workers.timeseries.sink import DeltaSink

REFUSED_MANAGED = (
    "pidelta: Unity Catalog table main.pi.pi_timeseries cannot be written by pidelta: it is a "
    "MANAGED table, whose commits Unity Catalog owns (catalog-managed commits); delta-rs "
    "commits straight to storage and would bypass the catalog. Drop or rename it and let "
    "pidelta create an EXTERNAL table under PIDELTA_UC_STORAGE_ROOT ({root}/pi_timeseries), or "
    "create a compatible EXTERNAL table with the SQL in README.md, 'Cloud storage and Unity "
    "Catalog'"
)


def env_for(mock: MockServer, server: UCServer, **settings: object) -> dict[str, str]:
    return merged(worker_env(mock, Path("unused"), **settings), uc_env(server))


def location(server: UCServer, name: str) -> str:
    return server.state.tables[f"main.pi.{name}"]["storage_location"]


def uc_holds_truth(
    mock: MockServer,
    s3: S3,
    server: UCServer,
    app_prefix: str,
    start: datetime,
    end: datetime | None = None,
) -> dict[str, datetime]:
    """`assert_holds_truth` for the tables Unity Catalog placed on S3."""
    tables = (s3.table(location(server, PI_TIMESERIES)), s3.table(location(server, CHECKPOINTS)))
    return assert_holds_truth(mock, *tables, app_prefix, start, end)


def test_missing_tables_created_external_and_backfill_equals_truth(
    mock_pi_factory: Callable[..., MockServer], uc_server: UCServer, moto_s3: S3
) -> None:
    mock = mock_pi_factory(tag_count=50, rate_limit=0, clock_start=FIXED_NOW)
    start, end = DAY, DAY + timedelta(minutes=30)
    env = env_for(mock, uc_server, backfill_window=600)
    result = ok(pidelta("backfill", "--start", iso(start), "--end", iso(end), env=env))
    root = env["PIDELTA_UC_STORAGE_ROOT"]
    for name, spec in TABLES.items():  # AF tables are created by `af`/`events`, not here
        info = uc_server.state.tables[f"main.pi.{name}"]
        assert info["table_type"] == "EXTERNAL"
        assert info["data_source_format"] == "DELTA"
        assert info["storage_location"] == f"{root}/{name}"
        assert info["columns"] == uc_columns(spec.schema, spec.partition_by)
    columns = {c["name"]: c for c in uc_server.state.tables["main.pi.pi_timeseries"]["columns"]}
    assert (columns["timestamp"]["type_name"], columns["timestamp"]["type_text"]) == (
        "TIMESTAMP",
        "timestamp",
    )
    assert (columns["sequence"]["type_name"], columns["digital_code"]["type_text"]) == (
        "INT",
        "int",
    )
    assert columns["date"]["partition_index"] == 0
    assert json.loads(columns["tag_webid"]["type_json"])["nullable"] is False
    assert len(uc_holds_truth(mock, moto_s3, uc_server, "pidelta-bf-", start, end)) == 50
    assert uc_server.token not in result.stderr
    status = ok(pidelta("status", env=env)).stdout
    rows = moto_s3.table(location(uc_server, PI_TIMESERIES)).to_pyarrow_table().num_rows
    assert f"pi_timeseries\t{rows}\t" in status, status


def test_managed_table_refused_with_one_clear_line(
    mock_pi_factory: Callable[..., MockServer], uc_server: UCServer
) -> None:
    mock = mock_pi_factory(tag_count=10, rate_limit=0)
    uc_server.add_table(
        "main.pi.pi_timeseries", table_type="MANAGED", storage_location="s3://lake/managed/ts"
    )
    env = env_for(mock, uc_server)
    result = pidelta("once", env=env)
    assert result.returncode == 2, result.stderr[-3000:]
    root = env["PIDELTA_UC_STORAGE_ROOT"]
    assert result.stderr.strip().splitlines()[-1] == REFUSED_MANAGED.format(root=root)
    assert "Traceback" not in result.stderr


def _settings(server: UCServer, **extra: object) -> dict[str, object]:
    env = uc_env(server)
    return {
        "target": env["PIDELTA_TARGET"],
        "uc_storage_root": env["PIDELTA_UC_STORAGE_ROOT"],
        "databricks_host": server.host,
        "databricks_token": server.token,
        "allow_http_credentials": True,
        "aws_endpoint_url": server.s3_endpoint,
        "aws_region": "us-east-1",
        **extra,
    }


def in_child(function: Callable[..., object], *args: object) -> object:
    """Run pidelta code in a fresh process: delta-rs holds the GIL while it waits on the
    network, so in this process it would starve the UC server's thread it is talking to."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args).result(timeout=120)


def _refusals(settings: dict[str, object]) -> list[str]:
    store = TableStore.from_settings(Settings(_env_file=None, **settings))
    found = []
    for name in (PI_TIMESERIES, "_pidelta_batches"):
        try:
            store.create(name) if name == PI_TIMESERIES else store.uri(name)
        except IncompatibleTableError as exc:
            found.append(str(exc))
    return found


def test_table_with_features_delta_rs_lacks_is_refused(uc_server: UCServer, moto_s3: S3) -> None:
    """Row tracking and domain metadata in the Delta log; in-commit timestamps by property."""
    log = {
        "protocol": {
            "minReaderVersion": 1,
            "minWriterVersion": 7,
            "writerFeatures": ["rowTracking", "domainMetadata", "appendOnly"],
        }
    }
    meta = {
        "metaData": {
            "id": "3f1e8a4e-0000-4000-8000-000000000001",
            "format": {"provider": "parquet", "options": {}},
            "schemaString": json.dumps(
                {
                    "type": "struct",
                    "fields": [{"name": "x", "type": "long", "nullable": True, "metadata": {}}],
                }
            ),
            "partitionColumns": [],
            "configuration": {},
            "createdTime": 0,
        }
    }
    boto3.client(
        "s3",
        endpoint_url=moto_s3.endpoint,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="y",
    ).put_object(
        Bucket="lake",
        Key="odd/ts/_delta_log/00000000000000000000.json",
        Body=(json.dumps(log) + "\n" + json.dumps(meta) + "\n").encode(),
    )
    uc_server.add_table("main.pi.pi_timeseries", storage_location="s3://lake/odd/ts")
    uc_server.add_table(
        "main.pi._pidelta_batches",
        storage_location="s3://lake/odd/batches",
        properties={"delta.enableInCommitTimestamps": "true"},
    )
    timeseries, batches = in_child(_refusals, _settings(uc_server))  # type: ignore[misc]
    assert "main.pi.pi_timeseries cannot be written by pidelta" in timeseries
    assert "writer features domainMetadata, rowTracking, which delta-rs" in timeseries
    assert "main.pi._pidelta_batches cannot be written by pidelta" in batches
    assert "writer features inCommitTimestamp, which delta-rs" in batches


def _append_across_revocation(settings: dict[str, object], host: str) -> tuple[bool, ...]:
    store = TableStore.from_settings(Settings(_env_file=None, **settings))
    store.create_all()
    sink = DeltaSink(store)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    row = {"tag_webid": "W1", "timestamp": now, "sequence": 0, "ingestion_timestamp": now}
    rows = pa.Table.from_pylist([{**row, "date": now.date()}], schema=PI_TIMESERIES_SCHEMA)
    first = sink.append(PI_TIMESERIES, rows, "app", 1)
    before = sink.table(PI_TIMESERIES)
    urllib.request.urlopen(urllib.request.Request(f"{host}/_test/revoke", method="POST"))
    second = sink.append(PI_TIMESERIES, rows, "app", 2)
    reopened = sink._tables[PI_TIMESERIES] is not before
    again = sink.append(PI_TIMESERIES, rows, "app", 2)
    return first, second, reopened, again


def test_refused_write_is_renewed_and_retried(uc_server: UCServer, moto_s3: S3) -> None:
    """Credentials that die between two commits: the append renews them and lands once."""
    first, second, reopened, again = in_child(  # type: ignore[misc]
        _append_across_revocation, _settings(uc_server), uc_server.host
    )
    assert (first, second, reopened, again) == (True, True, True, False)
    assert uc_server.gate.refused_expired >= 1
    location = uc_server.state.tables["main.pi.pi_timeseries"]["storage_location"]
    assert moto_s3.table(location).to_pyarrow_table().num_rows == 2


def _resolve(settings: dict[str, object]) -> str:
    try:
        return TableStore.from_settings(Settings(_env_file=None, **settings)).uri(PI_TIMESERIES)
    except ConfigError as exc:
        return f"ConfigError: {exc}"


def test_oauth_m2m_token_and_secret_never_in_errors(uc_server: UCServer) -> None:
    m2m = {"databricks_token": None, "databricks_client_id": uc_server.client_id}
    good = _settings(uc_server, **m2m, databricks_client_secret=uc_server.client_secret)
    assert str(in_child(_resolve, good)).endswith("/pi_timeseries")
    assert uc_server.state.tokens, "no OAuth token was issued"
    wrong = _settings(uc_server, **m2m, databricks_client_secret="not-the-secret")
    error = str(in_child(_resolve, wrong))
    assert error.startswith("ConfigError: OAuth token request")
    assert "DATABRICKS_CLIENT_SECRET" in error
    assert "not-the-secret" not in error


@pytest.mark.slow
def test_run_across_many_credential_expiries_loses_nothing(
    mock_pi_factory: Callable[..., MockServer], uc_server: UCServer, moto_s3: S3, tmp_path: Path
) -> None:
    """80 s of `run` with 15 s credentials: five expiries per table, none met by a write."""
    clock = SimClock.start()
    uc_server.gate.clock = clock.time
    mock = mock_pi_factory(clock=clock, tag_count=100, rate_limit=0)
    origin = fixed_past(3)
    env = env_for(
        mock,
        uc_server,
        start=iso(origin),
        poll_interval=1,
        safety_lag=2,
        late_lookback=20,
        commit_max_age=2,
    )
    env["PIDELTA_CREDENTIAL_RENEW_MARGIN"] = "5"
    worker = start_worker("run", env=env, log=tmp_path / "run.log")
    time.sleep(80)
    assert worker.terminate() == 0, worker.text()[-3000:]
    text = worker.text()
    assert " ERROR " not in text, text[-3000:]
    assert uc_server.gate.refused_expired == 0
    assert text.count("renewed (expiring)") >= 3 * 4  # four tables written all along
    assert uc_server.token not in text
    assert not [s for s in uc_server.state.secrets if s in text], "a vended secret was logged"
    renewals = text.count("renewed (expiring)")
    print(
        f"credentials vended {uc_server.state.vended}, renewed ahead of expiry {renewals}, "
        f"S3 requests refused as expired {uc_server.gate.refused_expired}, "
        f"forwarded {uc_server.gate.forwarded}"
    )
    cps = uc_holds_truth(mock, moto_s3, uc_server, "pidelta-ts-", origin)
    assert len(cps) == 100
    assert min(cps.values()) > clock.now() - timedelta(minutes=1)
