"""`make bench`: end-to-end backfill throughput against bare fetch, on mock-pi with 1000 tags.

What it measures (and how), in one run:
1. end to end: `pidelta backfill` as a subprocess, from mock-pi (a subprocess) into a local
   Delta folder; values/s = values written / wall time of the worker process; the worker's
   CPU seconds and peak RSS come from `os.wait4` on exactly that child;
2. requests per 1000 values: the PI calls the worker logged for the values it read;
3. bare fetch: the same requests (recorded by an in-process run of the same pipeline with
   the same settings, then replayed with the worker's concurrency), bodies read and thrown
   away: the ceiling that mock-pi and HTTP allow on this machine;
4. peak memory of a large backfill (BENCH_BIG_TAGS tags over BENCH_BIG_MINUTES minutes);
5. steps 1 and 3 again without gzip (`PIDELTA_PI_GZIP=false`): on loopback, inflating the
   bodies is worker CPU that a real server over a WAN makes worth paying.

Figures are printed, never asserted. Environment: BENCH_TAGS (1000), BENCH_HOURS (6: about
3.9 million values, so that the worker's start-up, about a second of imports, discovery and
table creation that every figure includes, is a small share), BENCH_BIG_TAGS (10000),
BENCH_BIG_MINUTES (1440, a day: at the mock's mix of 1-60 s scans about as many values as
a 5 s scan; 0 skips it).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

from workers.pi.client import PIClient  # noqa: E402
from workers.settings import Settings  # noqa: E402
from workers.timeseries.pipeline import Pipeline  # noqa: E402

SUMMARY = re.compile(r"(\d+) rows written in (\d+) batches; (\d+) values read in (\d+) PI calls")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_mock(tags: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOCK_PI_")}
    env.update(
        {"MOCK_PI_PORT": str(port), "MOCK_PI_TAG_COUNT": str(tags), "MOCK_PI_RATE_LIMIT": "0"}
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "mock_pi"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, f"http://127.0.0.1:{port}/piwebapi"
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("bench: mock-pi did not start")


@dataclass
class Run:
    seconds: float
    cpu: float
    max_rss_mb: float
    rows: int
    values: int
    calls: int


def worker_backfill(
    url: str, target: Path, start: datetime, end: datetime, *, gzip: bool = True
) -> Run:
    """`pidelta backfill` as a child; its own rusage through wait4."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIDELTA_")}
    env.update(
        {
            "PIDELTA_PI_URL": url,
            "PIDELTA_TARGET": str(target),
            "PIDELTA_METRICS_PORT": "0",
            "PIDELTA_LOG_LEVEL": "INFO",
            "PIDELTA_PI_GZIP": str(gzip).lower(),
        }
    )
    log = target.parent / f"{target.name}.log"
    with log.open("wb") as handle:
        began = time.perf_counter()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "service",
                "backfill",
                "--start",
                start.isoformat(),
                "--end",
                end.isoformat(),
            ],
            cwd=ROOT,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - began
    text = log.read_text(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"bench: backfill failed:\n{text[-3000:]}")
    found = SUMMARY.findall(text)
    rows, _, values, calls = (int(x) for x in found[-1])
    return Run(
        seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, rows, values, calls
    )


class RecordingClient(PIClient):
    """The real client, remembering every recorded-values request it sends."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.recorded: list[str] = []

    async def get_bytes(
        self, path: str, params: Sequence[tuple[str, str]] = (), *, endpoint: str
    ) -> bytes:
        if endpoint == "streamsets/recorded":
            self.recorded.append(self._url(path, params))
        return await super().get_bytes(path, params, endpoint=endpoint)


async def record_requests(url: str, target: Path, start: datetime, end: datetime) -> list[str]:
    settings = Settings(pi_url=url, target=str(target), metrics_port=0)
    client = RecordingClient(settings)
    async with client, Pipeline(settings, client=client) as pipeline:
        await pipeline.prepare()
        await pipeline.backfill(start, end)
    return client.recorded


async def bare_fetch(urls: list[str], concurrency: int, *, gzip: bool = True) -> tuple[float, int]:
    """Replay the requests with `concurrency` in flight; bodies read and discarded."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    for u in urls:
        queue.put_nowait(u)
    total = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    encoding = "gzip, deflate" if gzip else "identity"
    headers = {"Accept": "application/json", "Accept-Encoding": encoding}
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def worker() -> None:
            nonlocal total
            while not queue.empty():
                u = queue.get_nowait()
                async with session.get(u) as resp:
                    total += len(await resp.read())

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - began, total


def main() -> int:
    tags = int(os.environ.get("BENCH_TAGS", "1000"))
    hours = float(os.environ.get("BENCH_HOURS", "6"))
    big_tags = int(os.environ.get("BENCH_BIG_TAGS", "10000"))
    big_minutes = float(os.environ.get("BENCH_BIG_MINUTES", "1440"))
    day = (datetime.now(UTC) - timedelta(days=3)).replace(hour=0, minute=0, second=0, microsecond=0)
    start, end = day, day + timedelta(hours=hours)
    work = Path(tempfile.mkdtemp(prefix="pidelta-bench-"))
    mock, url = start_mock(tags)
    try:
        print(
            f"bench: {tags} tags, backfill {start:%Y-%m-%d %H:%M} + {hours:g} h, "
            f"mock-pi and worker as subprocesses, {os.cpu_count()} CPUs",
            flush=True,
        )
        e2e = worker_backfill(url, work / "e2e", start, end)
        urls = asyncio.run(record_requests(url, work / "record", start, end))
        concurrency = Settings().pi_max_concurrency
        bare_seconds, bare_bytes = asyncio.run(bare_fetch(urls, concurrency))
        plain = worker_backfill(url, work / "plain", start, end, gzip=False)
        plain_seconds, _ = asyncio.run(bare_fetch(urls, concurrency, gzip=False))
    finally:
        mock.terminate()
        mock.wait(10)
    e2e_rate = e2e.values / e2e.seconds
    bare_rate = e2e.values / bare_seconds
    print(
        f"end to end:      {e2e.values:,} values in {e2e.seconds:.1f} s = {e2e_rate:,.0f} values/s"
        f" ({e2e.rows:,} rows written)"
    )
    print(
        f"bare fetch:      {len(urls)} requests, {bare_bytes / 1e6:,.0f} MB in {bare_seconds:.1f} s"
        f" = {bare_rate:,.0f} values/s"
    )
    print(f"end to end / bare fetch: {e2e_rate / bare_rate:.0%}")
    per_million = e2e.cpu / (e2e.values / 1e6)
    print(f"worker CPU:      {e2e.cpu:.1f} s = {per_million:.2f} CPU-s per million values")
    print(f"worker peak RSS: {e2e.max_rss_mb:,.0f} MB")
    print(
        f"HTTP requests:   {e2e.calls} = {1000 * e2e.calls / e2e.values:.3f} per 1000 values, "
        f"{e2e.values / e2e.calls:,.0f} values per request"
    )
    plain_rate = plain.values / plain.seconds
    print(
        f"without gzip:    {plain_rate:,.0f} values/s end to end = "
        f"{plain_rate / (plain.values / plain_seconds):.0%} of bare fetch "
        f"({plain.values / plain_seconds:,.0f} values/s); worker CPU "
        f"{plain.cpu / (plain.values / 1e6):.2f} CPU-s per million values, "
        f"peak RSS {plain.max_rss_mb:,.0f} MB"
    )
    if big_minutes > 0:
        mock, url = start_mock(big_tags)
        try:
            big = worker_backfill(url, work / "big", start, start + timedelta(minutes=big_minutes))
        finally:
            mock.terminate()
            mock.wait(10)
        print(
            f"large backfill:  {big_tags:,} tags x {big_minutes:g} min = {big.values:,} values in "
            f"{big.seconds:.1f} s, worker peak RSS {big.max_rss_mb:,.0f} MB, "
            f"{big.cpu / (big.values / 1e6):.2f} CPU-s per million values, "
            f"{big.values / big.calls:,.0f} values per request"
        )
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
