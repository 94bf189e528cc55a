"""Points sync of many tags against a mock-pi subprocess: wall time, CPU and PI requests.

Three syncs into one lake, one after the other: the first writes every point, the next
ones meet the renames, unit changes and deletions of `--changes` of the points since the
sync before (mock-pi's MOCK_PI_POINT_CHANGES, one change per point every `--period` s).

    .venv/bin/python scripts/bench_points.py [--tags 100000] [--batch 500]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deltalake import DeltaTable

from tests.conftest import start_mock
from workers.lake.schemas import PI_POINTS
from workers.pi.client import PIClient
from workers.points.sync import sync_points
from workers.settings import load_settings


class Requests:
    """Counts PI requests by endpoint."""

    def __init__(self) -> None:
        self.by_endpoint: Counter[str] = Counter()

    def on_request(self, endpoint: str, status: str, seconds: float) -> None:
        self.by_endpoint[endpoint] += 1

    def on_retry(self, reason: str) -> None:
        return None


async def main(tags: int, batch: int, changes: float, period: float) -> None:
    server = start_mock(tag_count=tags, seed=42, rate_limit=0, point_changes=changes,
                        point_change_seconds=period)  # fmt: skip
    try:
        with tempfile.TemporaryDirectory() as lake:
            settings = load_settings(pi_url=server.url, target=lake, points_batch_size=batch,
                                     metrics_port=0)  # fmt: skip
            for label in ("first sync", "second sync", "third sync"):
                counter = Requests()
                wall, cpu = time.perf_counter(), time.process_time()
                async with PIClient(settings, counter) as client:
                    result = await sync_points(settings, client)
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                rows = DeltaTable(f"{lake}/{PI_POINTS}").to_pyarrow_table(columns=["point_id"])
                print(
                    f"{label}: {result.points:,} points, {result.opened:,} new, "
                    f"{result.changed:,} changed, {result.deleted:,} deleted in {wall:.1f} s "
                    f"(client CPU {cpu:.1f} s); {sum(counter.by_endpoint.values())} PI requests "
                    f"({dict(counter.by_endpoint)}); pi_points holds {rows.num_rows:,} rows"
                )
    finally:
        server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tags", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--changes", type=float, default=0.01)
    parser.add_argument("--period", type=float, default=120.0)
    args = parser.parse_args()
    asyncio.run(main(args.tags, args.batch, args.changes, args.period))
