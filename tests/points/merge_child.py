"""One shard's `pi_points` MERGE in its own process, for the concurrency test: read this
shard's points from mock-pi, wait at a file barrier until every shard is ready, then MERGE;
prints what happened as one JSON line.

Usage: python -m tests.points.merge_child URL TARGET INDEX COUNT BARRIER_DIR CLOCK_US
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import polars as pl

from workers.lake.schemas import PI_POINTS
from workers.lake.tables import TableStore
from workers.lake.writer import DeltaWriter
from workers.pi.client import PIClient
from workers.points.layout import bucket_of, owned_buckets
from workers.points.source import read_points
from workers.points.sync import _merge
from workers.settings import load_settings
from workers.timeseries.discovery import discover_tags


class Counting:
    """The writer's observer, counting what the commits met."""

    def __init__(self) -> None:
        self.stepped_over = 0  # concurrent commits a landed commit stepped over
        self.refused = 0  # commits refused by a conflict
        self.commits = 0

    def committed(self, table: str, shard: str, rows: int, seconds: float, version: int) -> None:
        self.commits += 1

    def commit_conflicts(self, table: str, count: int) -> None:
        self.stepped_over += count

    def commit_retried(self, table: str) -> None:
        return None


async def read(url: str, target: str, index: int, count: int) -> tuple:
    settings = load_settings(pi_url=url, target=target, shard_index=index, shard_count=count)
    async with PIClient(settings) as client:
        tags = await discover_tags(client, settings)
        buckets = set(owned_buckets(index, count))
        mine = [t for t in tags if bucket_of(t.data_server, t.point_id) in buckets]
        served, _ = await read_points(client, settings, mine)
    alive = pl.DataFrame(
        {"data_server": [t.data_server for t in mine], "point_id": [t.point_id for t in mine]},
        schema={"data_server": pl.String, "point_id": pl.Int32},
    )
    return settings, served, alive


def main() -> None:
    url, target, index, count, barrier, clock_us = sys.argv[1:7]
    i, n = int(index), int(count)
    settings, served, alive = asyncio.run(read(url, target, i, n))
    observer = Counting()
    writer = DeltaWriter.from_settings(settings, TableStore.from_settings(settings), observer)
    writer.table(PI_POINTS)  # the snapshot every shard starts from
    ready = Path(barrier)
    (ready / f"ready-{i}").touch()
    while len(list(ready.glob("ready-*"))) < n:
        time.sleep(0.005)
    changes, attempts = _merge(writer, settings, served, alive, lambda: int(clock_us))
    observer.refused = attempts - 1
    print(json.dumps({"shard": i, "opened": changes.opened, "attempts": attempts,
                      "stepped_over": observer.stepped_over - observer.refused,
                      "refused": observer.refused, "commits": observer.commits}))  # fmt: skip


if __name__ == "__main__":
    main()
