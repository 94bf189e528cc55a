"""Four shards appending to one S3 table (moto server on loopback) lose no commit
(put-if-absent log entries). Backfill and run into S3: `test_object_stores.py`."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from tests.conftest import FIXED_NOW, MockServer
from tests.e2e.helpers import iso, start_worker
from tests.storage.conftest import DAY, S3, store_env, store_holds_truth


def test_four_shards_append_to_one_s3_table(
    mock_pi_factory: Callable[..., MockServer], moto_s3: S3, tmp_path: Path
) -> None:
    """Four `backfill` workers at once, small commits: every commit lands exactly once."""
    mock = mock_pi_factory(tag_count=60, rate_limit=0, clock_start=FIXED_NOW)
    start, end = DAY + timedelta(hours=3), DAY + timedelta(minutes=200)
    workers = []
    for shard in range(4):
        env = store_env(
            mock,
            moto_s3,
            "four",
            shard_index=shard,
            shard_count=4,
            backfill_window=300,
            commit_max_rows=1_000,  # a commit per batch at least: many racing commits
        )
        args = ("backfill", "--start", iso(start), "--end", iso(end))
        workers.append(start_worker(*args, env=env, log=tmp_path / f"shard{shard}.log"))
    for worker in workers:
        assert worker.process.wait(240) == 0, worker.text()[-3000:]
    table = moto_s3.table(f"{moto_s3.root('four')}/pi_timeseries")
    assert len(store_holds_truth(mock, moto_s3, "four", "pidelta-bf-", start, end)) == 60
    writers = {c.get("pidelta.app_id") for c in table.history() if c.get("operation") == "WRITE"}
    assert {f"pidelta-bf-{i}-of-4" for i in range(4)} <= writers
    # Many commits, from all four shards interleaved: conflicts were met and resolved.
    print(f"four shards: {table.version() + 1} versions of pi_timeseries")
    assert table.version() >= 16, table.version()
