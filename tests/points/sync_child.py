"""One aggregate sync (`interpolated` or `summaries`), as `once` and `run` do it, in a
process of its own that a crash test can kill; it prints `<kind> sync started` once it
has read the tags and is about to sync.

Usage: python -m tests.points.sync_child KIND (settings from the PIDELTA_ environment)
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT
from tests.e2e.helpers import Worker
from workers.lake.tables import TableStore
from workers.lake.writer import DeltaWriter
from workers.pi.client import PIClient
from workers.settings import load_settings
from workers.timeseries.discovery import discover_tags
from workers.timeseries.interpolated import sync_interpolated
from workers.timeseries.summary_table import sync_summaries

SYNCS = {"interpolated": sync_interpolated, "summaries": sync_summaries}


def started(kind: str) -> str:
    """The line the child prints before it syncs."""
    return f"{kind} sync started"


def start_sync(kind: str, env: dict[str, str], log: Path) -> Worker:
    """The child for `kind`, its output appended to `log`."""
    handle = log.open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.points.sync_child", kind],
        cwd=ROOT,
        env=env,
        stdout=handle,
        stderr=subprocess.STDOUT,
    )
    handle.close()
    return Worker(proc, log)


async def main(kind: str) -> None:
    settings = load_settings()
    writer = DeltaWriter.from_settings(settings, TableStore.from_settings(settings))
    async with PIClient(settings) as client:
        tags = await discover_tags(client, settings)
        print(started(kind), flush=True)
        await SYNCS[kind](settings, client, tags, writer)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
