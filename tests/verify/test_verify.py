"""`pidelta verify` against mock-pi over HTTP: tampered tables found, repaired, recorded.

Fixed times in the past (the simulator keeps a ten-year archive here), 20 tags, six hours.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable, write_deltalake

from tests.conftest import MockServer, start_mock
from tests.e2e.helpers import (
    assert_same,
    ok,
    pidelta,
    read_table,
    start_worker,
    worker_env,
)

START = datetime(2026, 6, 1, tzinfo=UTC)
END = START + timedelta(hours=6)
US = timedelta(microseconds=1)
RANGE = ["--start", START.isoformat(), "--end", END.isoformat()]


@pytest.fixture(scope="module")
def mock() -> Iterator[MockServer]:
    server = start_mock(tag_count=20, seed=42, rate_limit=0, history_days=3650)
    yield server
    server.stop()


def loaded(mock: MockServer, target: Path) -> dict[str, str]:
    env = worker_env(mock, target)
    ok(pidelta("backfill", *RANGE, env=env))
    return env


def hour(n: int) -> tuple[datetime, datetime]:
    return START + timedelta(hours=n), START + timedelta(hours=n + 1)


def tamper(target: Path) -> list[tuple[str, int]]:
    """Delete a tag-hour, change the values of another, append duplicates to a third."""
    uri = str(target / "pi_timeseries")
    rows = pl.from_arrow(DeltaTable(uri).to_pyarrow_table())
    numeric = rows.filter(pl.col("value").is_not_null())["tag_webid"].unique().sort().to_list()
    a, b, c = numeric[:3]
    lo1, hi1 = hour(1)
    DeltaTable(uri).delete(
        f"tag_webid = '{a}' AND \"timestamp\" >= '{lo1.isoformat()}' "
        f"AND \"timestamp\" < '{hi1.isoformat()}'"
    )
    lo2, hi2 = hour(2)
    in2 = (pl.col("tag_webid") == b) & pl.col("timestamp").is_between(lo2, hi2, closed="left")
    changed = rows.filter(in2).with_columns(pl.col("value") * 2 + 1)
    DeltaTable(uri).delete(
        f"tag_webid = '{b}' AND \"timestamp\" >= '{lo2.isoformat()}' "
        f"AND \"timestamp\" < '{hi2.isoformat()}'"
    )
    write_deltalake(uri, changed.to_arrow(), mode="append", partition_by=["date"])
    lo3, hi3 = hour(3)
    in3 = (pl.col("tag_webid") == c) & pl.col("timestamp").is_between(lo3, hi3, closed="left")
    write_deltalake(uri, rows.filter(in3).head(5).to_arrow(), mode="append", partition_by=["date"])
    return [(a, 1), (b, 2), (c, 3)]


def verification(target: Path) -> pl.DataFrame:
    return pl.from_arrow(read_table(target, "_pidelta_verification"))  # type: ignore[return-value]


def test_untouched_backfill_verifies_equal_including_a_value_at_the_start(
    mock: MockServer, tmp_path: Path
) -> None:
    """Ranges are [start, end]: a value stamped exactly at --start is loaded and verified."""
    env = loaded(mock, tmp_path)
    table = pl.from_arrow(read_table(tmp_path))
    assert table.filter(pl.col("timestamp") == START).height > 0
    result = pidelta("verify", *RANGE, "--dry-run", env=env)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "buckets checked 120: equal 120, repaired 0, differs 0, failed 0" in result.stdout
    assert "PI requests 1 (summary 1, recorded 0)" in result.stdout
    assert not (tmp_path / "_pidelta_verification").exists() or verification(tmp_path).height == 0


def test_tampered_buckets_are_found_repaired_and_recorded(mock: MockServer, tmp_path: Path) -> None:
    env = loaded(mock, tmp_path)
    before = read_table(tmp_path)
    tampered = tamper(tmp_path)

    dry = pidelta("verify", *RANGE, "--dry-run", env=env)
    assert dry.returncode == 1, dry.stdout + dry.stderr[-3000:]
    assert "equal 117, repaired 0, differs 3, failed 0" in dry.stdout

    fixed = pidelta("verify", *RANGE, env=env)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr[-3000:]
    assert "buckets checked 120: equal 117, repaired 3, differs 0, failed 0" in fixed.stdout
    assert "PI requests 4 (summary 1, recorded 3)" in fixed.stdout  # one per time range

    again = pidelta("verify", *RANGE, "--dry-run", env=env)
    assert again.returncode == 0, again.stdout
    assert "equal 120, repaired 0, differs 0, failed 0" in again.stdout

    assert_same(read_table(tmp_path), before)
    recorded = verification(tmp_path)
    assert recorded.height == 120
    repaired = recorded.filter(pl.col("result") == "repaired").sort("tag_webid")
    got = {
        (w, int((s - START).total_seconds() // 3600))
        for w, s in repaired.select("tag_webid", "bucket_start").iter_rows()
    }
    assert got == set(tampered)
    deleted = repaired.filter(pl.col("tag_webid") == tampered[0][0]).row(0, named=True)
    assert deleted["table_count"] == 0
    assert deleted["pi_count"] > 0


def test_kill_during_repair_then_rerun_is_equal(mock: MockServer, tmp_path: Path) -> None:
    """kill -9 as soon as the repair's data file is written (before or after its commit):
    the table holds the old or the new rows, and a re-run ends equal."""
    env = loaded(mock, tmp_path)
    before = read_table(tmp_path)
    tamper(tmp_path)
    part = tmp_path / "pi_timeseries" / "date=2026-06-01"
    files = set(part.iterdir())
    worker = start_worker("verify", *RANGE, env=env, log=tmp_path / "verify.log")
    deadline = time.monotonic() + 300
    while worker.alive() and time.monotonic() < deadline and set(part.iterdir()) == files:
        time.sleep(0.005)
    worker.kill9()
    DeltaTable(str(tmp_path / "pi_timeseries")).to_pyarrow_table()  # readable either way
    rerun = pidelta("verify", *RANGE, env=env)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr[-3000:]
    final = pidelta("verify", *RANGE, "--dry-run", env=env)
    assert final.returncode == 0, final.stdout
    assert "equal 120, repaired 0, differs 0, failed 0" in final.stdout
    assert_same(read_table(tmp_path), before)


def test_bad_values_and_system_states_count_as_pi_counts_them(tmp_path: Path) -> None:
    """Malformed values are quarantined; verify counts them as held, so it ends equal."""
    server = start_mock(tag_count=20, seed=7, rate_limit=0, history_days=3650, bad_fraction=0.01)
    try:
        env = loaded(server, tmp_path)
        quarantine = pl.from_arrow(read_table(tmp_path, "_pidelta_quarantine"))
        assert quarantine.filter(pl.col("timestamp").is_not_null()).height > 0
        result = pidelta("verify", *RANGE, "--dry-run", env=env)
        assert result.returncode == 0, result.stdout + result.stderr[-3000:]
        assert "equal 120, repaired 0, differs 0, failed 0" in result.stdout
        # Buckets holding a value with no readable timestamp are settled by reading them.
        assert "recorded 0)" not in result.stdout
    finally:
        server.stop()


def test_exit_codes_for_bad_arguments(mock: MockServer, tmp_path: Path) -> None:
    env = worker_env(mock, tmp_path)
    bad = pidelta("verify", "--start", "yesterday-ish", "--end", "*", env=env)
    assert bad.returncode == 2
    assert bad.stderr.startswith("pidelta: verify:")
    backwards = pidelta("verify", "--start", END.isoformat(), "--end", START.isoformat(), env=env)
    assert backwards.returncode == 2
    assert "is not after --start" in backwards.stderr
    odd = pidelta("verify", *RANGE, env={**env, "PIDELTA_VERIFY_BUCKET": "7000"})
    assert odd.returncode == 2
    assert "must divide a day (86400 seconds), got 7000" in odd.stderr
    assert not (tmp_path / "pi_timeseries").exists()
