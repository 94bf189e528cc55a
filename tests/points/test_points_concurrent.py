"""`pi_points` MERGEs of many shards at once do not conflict: 16 processes, each syncing the
points of its own buckets from mock-pi over HTTP, MERGE into one table released together;
every one lands at its first attempt, and the table holds every point once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from deltalake import DeltaTable

from tests.conftest import ROOT, start_mock
from workers.lake.schemas import PI_POINTS
from workers.lake.tables import TableStore
from workers.points.layout import POINT_BUCKETS, bucket_of

SHARDS = 16
TAGS = 2000
CLOCK_US = 1_780_000_000_000_000


def test_sixteen_shards_merge_at_once_without_a_conflict(tmp_path: Path) -> None:
    mock = start_mock(tag_count=TAGS, rate_limit=0, clock_start="2026-05-28T20:00:00Z")
    try:
        target = str(tmp_path / "lake")
        TableStore(target).create(PI_POINTS)
        barrier = tmp_path / "barrier"
        barrier.mkdir()
        url = f"http://127.0.0.1:{mock.port}/piwebapi"
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.points.merge_child",
                    url,
                    target,
                    str(i),
                    str(SHARDS),
                    str(barrier),
                    str(CLOCK_US),
                ],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(SHARDS)
        ]
        outs = [p.communicate(timeout=600) for p in procs]
    finally:
        mock.stop()
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    print(json.dumps(results))
    assert [r["attempts"] for r in results] == [1] * SHARDS
    assert [r["refused"] for r in results] == [0] * SHARDS
    assert [r["commits"] for r in results] == [1] * SHARDS
    # They ran at once: commits landed past other shards' (delta-rs found no conflict).
    assert sum(r["stepped_over"] for r in results) > 0
    table = DeltaTable(f"{target}/{PI_POINTS}")
    assert table.version() == SHARDS
    rows = table.to_pyarrow_table(columns=["data_server", "point_id", "point_bucket"])
    keys = list(zip(rows["data_server"].to_pylist(), rows["point_id"].to_pylist(), strict=True))
    assert len(keys) == len(set(keys)) == TAGS == sum(r["opened"] for r in results)
    assert rows["point_bucket"].to_pylist() == [bucket_of(d, p) for d, p in keys]
    assert table.metadata().partition_columns == ["point_bucket"]
    assert len({b % SHARDS for b in range(POINT_BUCKETS)}) == SHARDS
