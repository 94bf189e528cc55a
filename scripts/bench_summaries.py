"""`pi_summaries` throughput against a mock-pi subprocess on this machine (issue 18): the
summaries of 1000 tags x 7 days at 1 h, written into an empty lake, then a second cycle
that finds nothing new (its requests are the re-read of the recent buckets). Prints wall
time (PI and Delta included), this process's CPU time, requests and commits.

    .venv/bin/python scripts/bench_summaries.py [--tags 1000] [--days 7]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deltalake import DeltaTable

from tests.conftest import start_mock
from workers.lake.schemas import PI_SUMMARIES
from workers.lake.tables import TableStore
from workers.lake.writer import DeltaWriter
from workers.pi.client import PIClient
from workers.settings import Settings, load_settings
from workers.timeseries.discovery import discover_tags
from workers.timeseries.summary_table import SummaryResult, sync_summaries

TYPES = "Average,Minimum,Maximum,Count,StdDev,PercentGood"


async def cycle(settings: Settings) -> tuple[list[SummaryResult], float, float]:
    writer = DeltaWriter.from_settings(settings, TableStore.from_settings(settings))
    async with PIClient(settings) as client:
        tags = await discover_tags(client, settings)
        wall, cpu = time.perf_counter(), time.process_time()
        results = await sync_summaries(settings, client, tags, writer)
        return results, time.perf_counter() - wall, time.process_time() - cpu


async def main(tags: int, days: int) -> None:
    server = start_mock(tag_count=tags, seed=42, rate_limit=0, history_days=days + 1)
    try:
        # The first lake meets a cold mock (it builds its model lazily, which a PI server
        # does not have to do); the second, as empty, does not.
        for mock in ("cold", "warm"):
            with tempfile.TemporaryDirectory() as lake:
                settings = load_settings(pi_url=server.url, target=lake, metrics_port=0,
                                         summaries=f"1h:{TYPES}", start=f"*-{days}d")  # fmt: skip
                for label in (f"{days} days into an empty lake", "next cycle, nothing new"):
                    results, wall, cpu = await cycle(settings)
                    (hourly,) = results
                    print(
                        f"{mock} mock, {label}: {tags:,} tags x 1 h x {TYPES.count(',') + 1} "
                        f"types: {hourly.inserted:,} rows, {hourly.rewritten:,} rewritten, "
                        f"{hourly.requests} requests, {hourly.commits} commits in {wall:.1f} s "
                        f"(client CPU {cpu:.1f} s)"
                    )
                rows = DeltaTable(f"{lake}/{PI_SUMMARIES}").to_pyarrow_table().num_rows
                print(f"pi_summaries holds {rows:,} rows")
    finally:
        server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tags", type=int, default=1000)
    parser.add_argument("--days", type=int, default=7)
    args = parser.parse_args()
    asyncio.run(main(args.tags, args.days))
