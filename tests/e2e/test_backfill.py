"""Backfill of 1000 tags over one day equals the mock's ground truth exactly, for every
value kind.

Size: a full day at the mock's realistic 1-60 s scans is about 15 million values, too much
for CI; `MOCK_PI_SCAN_SCALE=4.5` stretches every scan period (4.5-270 s), which leaves
about 3.4 million values of the same kinds (shared timestamps, system states, flags), and
the ground truth is built from the same settings.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from mock_pi.catalog import KINDS
from tests.conftest import FIXED_NOW, MockServer, SimClock, start_mock
from tests.e2e.helpers import (
    COMPARED,
    assert_same,
    checkpoints,
    expected,
    iso,
    ok,
    pidelta,
    read_table,
    truth_for,
    worker_env,
)

# The day `coarse_mock` (its clock starting at FIXED_NOW) serves: the same on every run.
FIXED_DAY = FIXED_NOW.replace(hour=0) - timedelta(days=2)
SCAN_SCALE = 4.5
POINT_TYPE = {kind.prefix: kind.point_type for kind, _ in KINDS}


@pytest.fixture(scope="module")
def coarse_mock() -> Iterator[MockServer]:
    """1000 tags with every scan period stretched 4.5 times."""
    server = start_mock(
        tag_count=1000, seed=42, rate_limit=0, scan_scale=SCAN_SCALE, clock_start=FIXED_NOW
    )
    yield server
    server.stop()


def kind_counts(truth: pa.Table) -> Counter[str]:
    """How many values of each kind the mock serves in a truth table."""
    columns = [
        "tag_name",
        "sequence",
        "value",
        "is_system_state",
        "value_string",
        "digital_state",
        "quality_questionable",
        "quality_substituted",
        "quality_annotated",
    ]
    rows = pl.from_arrow(truth.select(columns)).with_columns(
        pl.col("tag_name").str.extract(r"^([A-Z]+)-").replace_strict(POINT_TYPE).alias("type")
    )
    plain = rows.filter(~pl.col("is_system_state"))
    ints = plain.filter(pl.col("type") == "Int32")["value"]
    assert (ints == ints.round()).all()
    counts: Counter[str] = Counter()
    for point_type, column in (
        ("Float32", "value"),
        ("Float64", "value"),
        ("Int32", "value"),
        ("Digital", "digital_state"),
        ("String", "value_string"),
    ):
        present = plain.filter(pl.col("type") == point_type)[column].drop_nulls()
        counts[point_type] = present.len()
    counts.update(
        rows.select(
            pl.col("is_system_state").sum(),
            pl.col("quality_questionable").sum(),
            pl.col("quality_substituted").sum(),
            pl.col("quality_annotated").sum(),
            (pl.col("sequence") > 0).sum().alias("shared"),
            (pl.col("is_system_state") & pl.col("digital_state").is_not_null())
            .sum()
            .alias("states"),
        ).row(0, named=True)
    )
    return counts


def test_backfill_1000_tags_one_day_equals_truth(coarse_mock: MockServer, tmp_path: Path) -> None:
    start, end = FIXED_DAY, FIXED_DAY + timedelta(days=1)
    env = worker_env(coarse_mock, tmp_path, backfill_window=6 * 3600)
    result = ok(pidelta("backfill", "--start", iso(start), "--end", iso(end), env=env))
    assert result.stderr.count("100.0% done") == 1
    table = read_table(tmp_path).select(COMPARED)
    cps = checkpoints(tmp_path, "pidelta-bf-")
    assert len(cps) == 1000
    assert set(cps.values()) == {end}
    # Compared a hundred tags at a time: the test process never holds the whole truth.
    truth = truth_for(coarse_mock)
    webids = sorted(cps)
    kinds: Counter[str] = Counter()
    truth_rows = 0
    for lo in range(0, len(webids), 100):
        group = webids[lo : lo + 100]
        want = expected(truth, {w: (start, end) for w in group})
        assert_same(table.filter(pc.is_in(table["tag_webid"], pa.array(group))), want)
        kinds.update(kind_counts(want))
        truth_rows += want.num_rows
    assert table.num_rows == truth_rows
    assert 3_000_000 < truth_rows < 4_000_000
    assert len(kinds) == 11
    assert all(n > 100 for n in kinds.values()), kinds
    rows = table.num_rows
    del table
    # A second run over the same range finds everything done and writes nothing.
    ok(pidelta("backfill", "--start", iso(start), "--end", iso(end), env=env))
    assert read_table(tmp_path).num_rows == rows


def test_backfill_pages_small_calls_exactly(
    mock_pi_factory: Callable[..., MockServer], tmp_path: Path
) -> None:
    """maxCount 7 per stream and 2 kB URLs: every stream pages, values shared by one
    timestamp straddle pages, and the table is still exact."""
    mock = mock_pi_factory(tag_count=1000, seed=42, rate_limit=0, clock_start=FIXED_NOW)
    start, end = FIXED_DAY + timedelta(hours=5), FIXED_DAY + timedelta(hours=5, minutes=10)
    env = worker_env(
        mock, tmp_path, pi_page_size=7, pi_max_url_bytes=2048, tag_filter="*-00001??.PV"
    )
    ok(pidelta("backfill", "--start", iso(start), "--end", iso(end), env=env))
    cps = checkpoints(tmp_path, "pidelta-bf-")
    assert len(cps) == 100
    assert_same(read_table(tmp_path), expected(truth_for(mock), {w: (start, end) for w in cps}))


def test_backfill_into_the_future_is_capped_and_completed_later(
    mock_pi_factory: Callable[..., MockServer], tmp_path: Path
) -> None:
    """An end a minute ahead: the first run stops at now minus the safety lag and says the
    range is unfinished; the same command after the end has passed loads exactly the rest."""
    clock = SimClock.start()
    mock_pi = mock_pi_factory(clock=clock, tag_count=1000, seed=42, rate_limit=0)
    now = FIXED_NOW
    start, end = now - timedelta(minutes=3), now + timedelta(seconds=60)
    env = worker_env(mock_pi, tmp_path, tag_filter="*-000010?.PV", safety_lag=2)
    command = ("backfill", "--start", iso(start), "--end", iso(end))
    first = ok(pidelta(*command, env=env))
    assert "unfinished, loaded up to" in first.stderr
    assert "run the same command again after" in first.stderr
    cps = checkpoints(tmp_path, "pidelta-bf-")
    assert len(cps) == 10
    assert len(set(cps.values())) == 1
    cap = next(iter(cps.values()))
    assert now - timedelta(seconds=2) <= cap < end - timedelta(seconds=30)
    truth = truth_for(mock_pi)
    assert_same(read_table(tmp_path), expected(truth, {w: (start, cap) for w in cps}))
    requests = read_table(tmp_path, "_pidelta_backfills").to_pylist()
    assert [(r["range_start"], r["range_end"], r["loaded_until"]) for r in requests] == [
        (start, end, cap)
    ]

    assert _backfill_status(env) == (
        f"pidelta-bf-0-of-1\t10\t{_share(start, cap, end)} (0/10 tags done)\t"
        f"{_iso(start)} .. {_iso(end)}\t{_iso(cap)}"
    )

    time.sleep(max(0.0, (end - clock.now()).total_seconds() + 3))
    second = ok(pidelta(*command, env=env))
    assert "unfinished" not in second.stderr
    # One app-id vocabulary (status shows pidelta-bf-...), and 100 % said once.
    assert "backfill: shard 0 of 1 owns 10 tags, app id pidelta-bf-0-of-1" in second.stderr
    assert "pidelta-ts-" not in second.stderr
    assert second.stderr.count("backfill pidelta-bf-0-of-1: 100.0% done") == 1
    cps = checkpoints(tmp_path, "pidelta-bf-")
    assert set(cps.values()) == {end}
    assert_same(read_table(tmp_path), expected(truth, {w: (start, end) for w in cps}))
    assert _backfill_status(env).startswith("pidelta-bf-0-of-1\t10\t100.0% (10/10 tags done)\t")


def _backfill_status(env: dict[str, str]) -> str:
    """The backfill row of `pidelta status`, without its last-commit column."""
    block = ok(pidelta("status", env=env)).stdout.split("\n\n")[1].splitlines()
    assert block[0] == "backfill\ttags\tprogress\trange\tloaded_until\tlast_commit"
    assert len(block) == 2
    return block[1].rsplit("\t", 1)[0]


def _share(start: datetime, reached: datetime, end: datetime) -> str:
    return f"{100 * (reached - start) / (end - start):.1f}%"


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")
