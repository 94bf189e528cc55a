"""Time `discover_tags` against a local mock-pi.

    python scripts/bench_discovery.py [TAGS [PAGE_SIZE]]

Starts mock-pi with MOCK_PI_TAG_COUNT=TAGS (default 100,000, rate limit off), discovers
every point once (default PIDELTA_DISCOVERY_PAGE_SIZE unless PAGE_SIZE is given), checks
the count, and prints the time. Timing stays out of the tests, where a loaded machine
would make it flaky. The client's own CPU time is printed too: against one mock-pi
process on the same machine, most of the wall time is the mock building JSON.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from conftest import start_mock  # noqa: E402

from workers.pi.client import PIClient  # noqa: E402
from workers.settings import Settings  # noqa: E402
from workers.timeseries.discovery import discover_tags  # noqa: E402


async def run(url: str, expected: int, page_size: int | None) -> None:
    overrides = {"discovery_page_size": page_size} if page_size else {}
    settings = Settings(pi_url=url, pi_request_timeout=600, **overrides)
    async with PIClient(settings) as client:
        started, cpu = time.perf_counter(), time.process_time()
        tags = await discover_tags(client, settings)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    if len(tags) != expected:
        raise SystemExit(f"discovered {len(tags)} points, expected {expected}")
    print(
        f"discovered {len(tags):,} points in {seconds:.2f} s "
        f"({len(tags) / seconds:,.0f} points/s; page {settings.discovery_page_size:,}, "
        f"concurrency {settings.pi_max_concurrency}; client CPU {cpu:.2f} s, the rest is "
        "mock-pi)"
    )


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    page_size = int(sys.argv[2]) if len(sys.argv) > 2 else None
    server = start_mock(tag_count=count, rate_limit=0)
    try:
        asyncio.run(run(server.url, count, page_size))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
