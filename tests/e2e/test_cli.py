"""The `pidelta` command line as users meet it: exit codes, one-line errors, and the
outputs of discover, status and shards plan checked against the mock's catalog."""

from __future__ import annotations

from pathlib import Path

import pytest

from mock_pi.catalog import Catalog
from shard_config.jump_hash import JumpHash
from shard_config.plan import compute_plan, format_plan
from tests.conftest import MockServer
from tests.e2e.helpers import (
    aligned_past,
    iso,
    ok,
    pidelta,
    read_table,
    worker_env,
)


@pytest.mark.parametrize(
    ("args", "env", "line"),
    [
        (
            ["once"],
            {"PIDELTA_SHARD_INDEX": "4", "PIDELTA_SHARD_COUNT": "4"},
            "pidelta: invalid configuration: PIDELTA_SHARD_INDEX=4 must be below "
            "PIDELTA_SHARD_COUNT=4",
        ),
        (
            ["run"],
            {"PIDELTA_PI_URL": "ftp://pi"},
            "pidelta: invalid configuration: PIDELTA_PI_URL: must start with http:// or https://",
        ),
        (
            ["backfill", "--start", "yesterday-ish", "--end", "*"],
            {},
            "pidelta: backfill: Cannot parse time string 'yesterday-ish'.",
        ),
        (
            ["backfill", "--start", "*", "--end", "*-1d"],
            {},
            "pidelta: backfill: --end *-1d is not after --start",
        ),
        (
            ["shards", "plan", "--shards", "0"],
            {},
            "pidelta: shards plan: --shards must be at least 1, got 0",
        ),
    ],
)
def test_bad_configuration_exits_2_with_one_line(
    tmp_path: Path, args: list[str], env: dict[str, str], line: str
) -> None:
    base = worker_env("http://127.0.0.1:9/piwebapi", tmp_path / "lake")
    result = pidelta(*args, env={**base, **env}, timeout=60)
    assert result.returncode == 2
    assert result.stderr == line + "\n"
    assert result.stdout == ""
    assert not (tmp_path / "lake").exists()


def test_unreachable_server_exits_1_logged(tmp_path: Path) -> None:
    env = worker_env(
        "http://127.0.0.1:9/piwebapi", tmp_path / "lake", pi_max_attempts=2, pi_max_retry_seconds=2
    )
    result = pidelta("once", env=env, timeout=120)
    assert result.returncode == 1
    assert "pidelta once failed" in result.stderr


def test_discover_lists_every_tag_with_its_shard(mock_pi: MockServer, tmp_path: Path) -> None:
    env = worker_env(mock_pi, tmp_path, shard_count=4)
    lines = ok(pidelta("discover", env=env)).stdout.splitlines()
    assert lines[0] == "name\twebid\tpoint_type\tunits\tshard"
    catalog = Catalog(42, 1000)
    want = sorted(
        (p.name, p.webid, p.point_type, p.units, str(JumpHash(4).owner(p.webid)))
        for p in (catalog.point(i) for i in range(1000))
    )
    assert sorted(tuple(line.split("\t")) for line in lines[1:]) == want


def test_shards_plan_is_the_plan_of_the_discovered_tags(
    mock_pi: MockServer, tmp_path: Path
) -> None:
    out = ok(pidelta("shards", "plan", "--shards", "5", env=worker_env(mock_pi, tmp_path))).stdout
    catalog = Catalog(42, 1000)
    webids = [catalog.point(i).webid for i in range(1000)]
    assert out == format_plan(compute_plan(webids, 5)) + "\n"


def test_status_reads_the_tables(mock_pi: MockServer, tmp_path: Path) -> None:
    target = tmp_path / "lake"
    env = worker_env(mock_pi, target, start=iso(aligned_past(3)), tag_filter="TI-*")
    empty = ok(pidelta("status", env=env)).stdout
    assert "pi_timeseries\t-\t-\t-\tnot created" in empty
    ok(pidelta("once", env=env))
    out = ok(pidelta("status", env=env)).stdout
    shards, tables = out.split("\n\n")
    header, row = shards.splitlines()
    assert header == "shard\ttags\tlag_seconds\toldest_checkpoint\tlast_commit"
    app, tags, lag, _, _ = row.split("\t")
    assert app == "pidelta-ts-0-of-1"
    assert int(tags) == len(read_table(target, "_pidelta_checkpoints"))
    assert 0 < float(lag) < 120
    rows = {line.split("\t")[0]: line.split("\t") for line in tables.splitlines()[1:]}
    assert int(rows["pi_timeseries"][1]) == read_table(target).num_rows > 0
    assert int(rows["pi_timeseries"][2]) >= 1
