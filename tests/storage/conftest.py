"""Real object stores on loopback: moto's S3 server, Azurite (npm), the test UC server.

`.ci/run` installs Azurite into `.tools/` (`npm install --prefix .tools azurite`) and the
dev extra installs `moto[server]`; a test needing a server that is not installed fails
rather than skips, so CI cannot pass without it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Protocol

import boto3
import polars as pl
import pyarrow as pa
import pytest
from deltalake import DeltaTable

from tests.conftest import FIXED_NOW, ROOT, MockServer, free_port
from tests.e2e.helpers import assert_same, expected, truth_for, worker_env
from tests.storage.azurite_proxy import StartFromProxy
from tests.storage.uc_server import UCServer

AZURITE = ROOT / ".tools" / "node_modules" / ".bin" / "azurite-blob"
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
# A whole day two days before FIXED_NOW: settled history for backfills from a mock-pi whose
# clock starts at FIXED_NOW (`clock_start=FIXED_NOW`), the same in every test and every run.
DAY = FIXED_NOW.replace(hour=0) - timedelta(days=2)
MOTO_KEYS = {"AWS_ACCESS_KEY_ID": "moto-admin", "AWS_SECRET_ACCESS_KEY": "moto-secret"}


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{what} did not listen on {port} within {timeout} s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@dataclass
class S3:
    """A moto S3 server and one bucket; `env` configures a pidelta subprocess for it."""

    endpoint: str
    bucket: str

    def root(self, prefix: str) -> str:
        return f"s3://{self.bucket}/{prefix}"

    def env(self, prefix: str) -> dict[str, str]:
        return {
            "PIDELTA_TARGET": self.root(prefix),
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": "us-east-1",
            **MOTO_KEYS,
        }

    def options(self) -> dict[str, str]:
        return {
            "aws_endpoint_url": self.endpoint,
            "aws_region": "us-east-1",
            "aws_access_key_id": MOTO_KEYS["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": MOTO_KEYS["AWS_SECRET_ACCESS_KEY"],
            "aws_allow_http": "true",
        }

    def table(self, uri: str) -> DeltaTable:
        return DeltaTable(uri, storage_options=self.options())


def start_moto(port: int, log: IO[bytes]) -> subprocess.Popen[bytes]:
    """moto's S3 server on loopback, its conditional writes atomic as S3's are
    (`tests/storage/moto_server.py`)."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.storage.moto_server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3]:
    port = free_port()
    # Its request log goes to a file: an unread pipe would fill up and stall the server.
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("wb")
    proc = start_moto(port, log)
    log.close()
    try:
        _wait_port(port, proc, "moto server")
        endpoint = f"http://127.0.0.1:{port}"
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id=MOTO_KEYS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=MOTO_KEYS["AWS_SECRET_ACCESS_KEY"],
        )
        client.create_bucket(Bucket="lake")
        yield S3(endpoint, "lake")
    finally:
        _stop(proc)


@dataclass
class Azure:
    """An Azurite blob service and one container."""

    endpoint: str
    container: str

    def root(self, prefix: str) -> str:
        return f"az://{self.container}/{prefix}"

    def env(self, prefix: str) -> dict[str, str]:
        return {
            "PIDELTA_TARGET": self.root(prefix),
            "AZURE_STORAGE_ACCOUNT_NAME": AZURITE_ACCOUNT,
            "AZURE_STORAGE_ACCOUNT_KEY": AZURITE_KEY,
            "AZURE_STORAGE_ENDPOINT": self.endpoint,
        }

    def options(self) -> dict[str, str]:
        return {
            "azure_storage_account_name": AZURITE_ACCOUNT,
            "azure_storage_account_key": AZURITE_KEY,
            "azure_endpoint": self.endpoint,
            "azure_allow_http": "true",
        }

    def table(self, uri: str) -> DeltaTable:
        return DeltaTable(uri, storage_options=self.options())


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azure]:
    if not AZURITE.exists():
        pytest.fail(
            f"Azurite is not installed at {AZURITE}: run `npm install --prefix .tools azurite`"
        )
    port = free_port()
    workdir = tmp_path_factory.mktemp("azurite")
    proc = subprocess.Popen(
        [
            str(AZURITE),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(port),
            "--location",
            str(workdir),
            "--skipApiVersionCheck",
            "--loose",
            "--silent",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ},
    )
    try:
        _wait_port(port, proc, "azurite")
        from azure.storage.blob import BlobServiceClient

        service = BlobServiceClient(
            f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}",
            credential={"account_name": AZURITE_ACCOUNT, "account_key": AZURITE_KEY},
        )
        service.create_container("lake")
        proxy = StartFromProxy(f"http://127.0.0.1:{port}").start()
        try:
            yield Azure(f"http://127.0.0.1:{proxy.port}/{AZURITE_ACCOUNT}", "lake")
        finally:
            proxy.stop()
    finally:
        _stop(proc)


@pytest.fixture
def uc_server(moto_s3: S3) -> Iterator[UCServer]:
    """A fresh UC server (15 s credentials) with its S3 gate in front of moto."""
    server = UCServer(moto_s3.endpoint, credential_seconds=15.0).start()
    yield server
    server.stop()
    assert server.state.invalid == [], "responses off the spec:\n" + "\n".join(server.state.invalid)


def uc_env(server: UCServer, catalog_schema: str = "main.pi", **extra: str) -> dict[str, str]:
    """Environment of a pidelta subprocess writing to `uc://main.pi` through the gate."""
    return {
        "PIDELTA_TARGET": f"uc://{catalog_schema}",
        "PIDELTA_UC_STORAGE_ROOT": f"s3://lake/uc-{uuid.uuid4().hex[:8]}",
        "DATABRICKS_HOST": server.host,
        "DATABRICKS_TOKEN": server.token,
        "PIDELTA_ALLOW_HTTP_CREDENTIALS": "true",  # the test UC server is plain HTTP
        "AWS_ENDPOINT_URL": server.s3_endpoint,
        "AWS_REGION": "us-east-1",
        **extra,
    }


def merged(base: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """A worker environment without the test process's own cloud variables."""
    drop = ("AWS_", "AZURE_", "DATABRICKS_", "GOOGLE_")
    return {**{k: v for k, v in base.items() if not k.startswith(drop)}, **extra}


class ObjectStore(Protocol):
    """What the tests use of `S3` and `Azure`."""

    def root(self, prefix: str) -> str: ...
    def env(self, prefix: str) -> dict[str, str]: ...
    def table(self, uri: str) -> DeltaTable: ...


@pytest.fixture(params=["moto_s3", "azurite"], ids=["s3", "azure"])
def object_store(request: pytest.FixtureRequest) -> ObjectStore:
    """Each object store in turn (the servers are started once per session)."""
    store: ObjectStore = request.getfixturevalue(request.param)
    return store


def store_env(
    mock: MockServer, store: ObjectStore, prefix: str, **settings: object
) -> dict[str, str]:
    """A worker environment writing under `prefix` of the store."""
    return merged(worker_env(mock, Path("unused"), **settings), store.env(prefix))


def latest_checkpoints(table: pa.Table, prefix: str) -> dict[str, datetime]:
    """The highest checkpoint per tag over the app ids starting with `prefix`."""
    frame = pl.from_arrow(table).filter(pl.col("app_id").str.starts_with(prefix))
    latest = frame.group_by("tag_webid").agg(pl.col("checkpoint").max())
    return dict(zip(latest["tag_webid"].to_list(), latest["checkpoint"].to_list(), strict=True))


def assert_holds_truth(
    mock: MockServer,
    timeseries: DeltaTable,
    checkpoints: DeltaTable,
    app_prefix: str,
    start: datetime,
    end: datetime | None = None,
) -> dict[str, datetime]:
    """The time series equal the mock's truth over (start, end] of every tag with a
    checkpoint of `app_prefix` (end: the tag's own checkpoint when None); returns them."""
    cps = latest_checkpoints(checkpoints.to_pyarrow_table(), app_prefix)
    ranges = {w: (start, end or c) for w, c in cps.items()}
    assert_same(timeseries.to_pyarrow_table(), expected(truth_for(mock), ranges))
    return cps


def store_holds_truth(
    mock: MockServer,
    store: ObjectStore,
    prefix: str,
    app_prefix: str,
    start: datetime,
    end: datetime | None = None,
) -> dict[str, datetime]:
    """`assert_holds_truth` for the tables under `prefix` of the store."""
    root = store.root(prefix)
    tables = (store.table(f"{root}/pi_timeseries"), store.table(f"{root}/_pidelta_checkpoints"))
    return assert_holds_truth(mock, *tables, app_prefix, start, end)
