"""Settings and exit codes: every bad value is one clear line and exit code 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT
from workers.errors import ConfigError
from workers.settings import Settings, load_settings


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_defaults_match_the_contract() -> None:
    s = Settings(_env_file=None)
    assert (s.pi_url, s.pi_auth, s.pi_verify_tls, s.pi_ca_bundle) == (
        "http://127.0.0.1:8440/piwebapi",
        "none",
        True,
        None,
    )
    assert (s.target, s.shard_index, s.shard_count, s.tag_filter, s.start) == (
        "./lakehouse",
        0,
        1,
        "*",
        "*-1h",
    )
    assert (s.safety_lag, s.poll_interval, s.metrics_port, s.log_format) == (10, 5, 9464, "text")


def test_environment_is_read_with_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIDELTA_SHARD_INDEX", "2")
    monkeypatch.setenv("PIDELTA_SHARD_COUNT", "4")
    monkeypatch.setenv("PIDELTA_TARGET", "s3://bucket/prefix/")
    s = load_settings()
    assert (s.shard_index, s.shard_count, s.target) == (2, 4, "s3://bucket/prefix")


def test_flags_override_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIDELTA_TAG_FILTER", "TI-*")
    assert load_settings(tag_filter="FI-*").tag_filter == "FI-*"
    assert load_settings(tag_filter=None).tag_filter == "TI-*"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"PIDELTA_SHARD_INDEX": "4", "PIDELTA_SHARD_COUNT": "4"},
            "invalid configuration: PIDELTA_SHARD_INDEX=4 must be below PIDELTA_SHARD_COUNT=4",
        ),
        (
            {"PIDELTA_PI_AUTH": "oidc", "PIDELTA_PI_CLIENT_ID": "x"},
            "invalid configuration: PIDELTA_PI_AUTH=oidc needs PIDELTA_PI_CLIENT_SECRET, "
            "PIDELTA_PI_TOKEN_URL",
        ),
        (
            {"PIDELTA_PI_URL": "ftp://pi"},
            "invalid configuration: PIDELTA_PI_URL: must start with http:// or https://",
        ),
        (
            {"PIDELTA_LOG_FORMAT": "xml"},
            "invalid configuration: PIDELTA_LOG_FORMAT: Input should be 'text' or 'json'",
        ),
        (
            {"PIDELTA_TARGET": "hdfs://x/y"},
            "invalid configuration: PIDELTA_TARGET: must be a folder, s3://, az://, gs://, "
            "file:// or uc://catalog.schema",
        ),
        (
            {"PIDELTA_STORAGE_OPTIONS": '{"aws_secret_access_key": "hunter2'},
            "invalid configuration: PIDELTA_STORAGE_OPTIONS: not valid JSON",
        ),
        (
            {
                "PIDELTA_PI_URL": "https://u:hunter2@pi.example/piwebapi",
                "PIDELTA_PI_AUTH": "basic",
                "PIDELTA_PI_USERNAME": "u",
                "PIDELTA_PI_PASSWORD": "p",
            },
            "invalid configuration: PIDELTA_PI_URL: must not hold credentials "
            "(user:password@); use PIDELTA_PI_USERNAME and PIDELTA_PI_PASSWORD",
        ),
    ],
)
def test_bad_configuration_is_one_line_and_exit_2(env: dict[str, str], message: str) -> None:
    proc = run_cli("once", env=env)
    assert proc.returncode == 2
    assert proc.stderr == f"pidelta: {message}\n"
    assert proc.stdout == ""


def test_secret_values_never_appear_in_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIDELTA_PI_AUTH", "basic")
    monkeypatch.setenv("PIDELTA_PI_PASSWORD", "hunter2-very-secret")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(info.value) == (
        "invalid configuration: PIDELTA_PI_AUTH=basic needs PIDELTA_PI_USERNAME"
    )
    monkeypatch.setenv("PIDELTA_PI_USERNAME", "u")
    s = load_settings()
    assert "hunter2" not in repr(s)
    assert "hunter2" not in str(s.model_dump())


def test_usage_error_exit_2() -> None:
    proc = run_cli("backfill", "--start", "*-1d")
    assert proc.returncode == 2
    assert proc.stderr == (
        "pidelta: the following arguments are required: --end (see `pidelta backfill --help`)\n"
    )


def test_help_lists_every_setting() -> None:
    proc = run_cli("--help")
    assert proc.returncode == 0
    for name in Settings.model_fields:
        assert f"PIDELTA_{name.upper()}" in proc.stdout
