"""AF and event-frame sync throughput against a mock-pi subprocess on this machine.

Targets (issue 4): 10,000 elements with 100,000 attributes synced in under 60 s, and at
least 1,000 event frames per second with their attributes. Prints wall time (PI and Delta
included) and this process's CPU time, so a slow mock and a slow client can be told apart.

    .venv/bin/python scripts/bench_af.py [--tags 80000] [--frames-days 30]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deltalake import DeltaTable

from tests.conftest import start_mock
from workers.af.events import sync_events
from workers.af.hierarchy import sync_af
from workers.af.tables import PI_EVENT_FRAMES
from workers.settings import load_settings

ELEMENT_TARGET = 10_000
ATTRIBUTE_TARGET = 100_000
AF_SECONDS_TARGET = 60.0
FRAMES_PER_SECOND_TARGET = 1_000.0


async def timed(coro_fn, *args):  # type: ignore[no-untyped-def]
    wall, cpu = time.perf_counter(), time.process_time()
    result = await coro_fn(*args)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def verdict(ok: bool) -> str:
    return "meets target" if ok else "MISSES target"


async def main(tags: int, days: float) -> None:
    server = start_mock(tag_count=tags, seed=42, rate_limit=0, history_days=max(days, 1))
    try:
        with tempfile.TemporaryDirectory() as cold, tempfile.TemporaryDirectory() as warm:
            # The first pass meets a cold mock (it builds its model lazily, which a PI
            # server does not have to do); the second pass, into an empty lake, does not.
            for label, lake in (("cold mock", cold), ("warm mock", warm)):
                settings = load_settings(
                    pi_url=server.url, target=lake, events_start=f"*-{days}d", metrics_port=0
                )
                af, wall, cpu = await timed(sync_af, settings)
                assert af is not None
                print(
                    f"AF, {label}: {af.elements:,} elements, {af.attributes:,} attributes in "
                    f"{wall:.1f} s (client CPU {cpu:.1f} s), wrote {', '.join(af.written)}: "
                    f"{verdict(wall < AF_SECONDS_TARGET and af.elements >= ELEMENT_TARGET)} "
                    f"(< {AF_SECONDS_TARGET:.0f} s for {ELEMENT_TARGET:,} / {ATTRIBUTE_TARGET:,})"
                )
                ev, wall, cpu = await timed(sync_events, settings)
                assert ev is not None
                frames = DeltaTable(f"{lake}/{PI_EVENT_FRAMES}").to_pyarrow_table().num_rows
                rate = frames / wall if wall else 0.0
                print(
                    f"events, {label}: {frames:,} frames ({ev.open_frames} open) with "
                    f"attributes in {wall:.1f} s (client CPU {cpu:.1f} s) = {rate:,.0f} frames/s: "
                    f"{verdict(rate >= FRAMES_PER_SECOND_TARGET)} "
                    f"(>= {FRAMES_PER_SECOND_TARGET:,.0f})"
                )
            again, wall, cpu = await timed(sync_af, settings)
            assert again is not None
            print(
                f"AF rerun, nothing changed: {wall:.1f} s (client CPU {cpu:.1f} s), "
                f"{len(again.written)} commits"
            )
            inc, wall, cpu = await timed(sync_events, settings)
            assert inc is not None
            print(f"events rerun, incremental: {inc.frames} frames in {wall:.2f} s")
    finally:
        server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tags", type=int, default=80_000, help="mock tags (10 per element)")
    parser.add_argument("--frames-days", type=float, default=30, help="days of event frames")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main(args.tags, args.frames_days))
