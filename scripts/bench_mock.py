"""Benchmark mock-pi as a client sees it: start-up, memory, recorded values per second.

Starts `python -m mock_pi` as a subprocess (as the tests do) and prints:
- start-up time (until the port answers and a points page is served) and RSS at 1,000,000 tags;
- values/s for `/streamsets/recorded` 100 tags x 1000 values (median of N), without and
  with gzip;
- values/s for 1000 tags x 100 values (10 streamsets calls of 100 tags).
Wall times include the client's decoding; server CPU seconds (all threads, from /proc)
give a per-core figure that holds on a busy machine.

Usage: .venv/bin/python scripts/bench_mock.py [--repeat N]
"""

from __future__ import annotations

import argparse
import gzip
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(tag_count: int) -> tuple[subprocess.Popen[bytes], str, float]:
    """Start a server; return it, its base URL and the seconds until it served a request."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOCK_PI_")}
    env.update(MOCK_PI_PORT=str(port), MOCK_PI_TAG_COUNT=str(tag_count), MOCK_PI_RATE_LIMIT="0")
    began = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mock_pi"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}/piwebapi"
    while True:
        try:
            fetch(f"{url}/dataservers")
            return proc, url, time.perf_counter() - began
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError("mock-pi exited") from None
            time.sleep(0.02)


def fetch(url: str, gz: bool = False) -> bytes:
    headers = {"Accept-Encoding": "gzip"} if gz else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60) as r:
        body = r.read()
        return gzip.decompress(body) if r.headers.get("Content-Encoding") == "gzip" else body


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def webids(url: str, count: int) -> list[str]:
    server = orjson.loads(fetch(f"{url}/dataservers"))["Items"][0]["WebId"]
    page = fetch(f"{url}/dataservers/{server}/points?maxCount={count}&selectedFields=Items.WebId")
    return [p["WebId"] for p in orjson.loads(page)["Items"]]


def recorded_url(url: str, ids: list[str], per_tag: int) -> str:
    query = "&".join(f"webId={w}" for w in ids)
    return (
        f"{url}/streamsets/recorded?{query}&startTime=*-30d&endTime=*&maxCount={per_tag}"
        "&selectedFields=Items.WebId;Items.Items.Timestamp;Items.Items.Value;Items.Items.Good"
    )


def timed(url: str, gz: bool) -> tuple[float, int]:
    began = time.perf_counter()
    body = orjson.loads(fetch(url, gz))
    elapsed = time.perf_counter() - began
    return elapsed, sum(len(s["Items"]) for s in body["Items"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()

    proc, url, startup = start(1_000_000)
    try:
        ids = webids(url, 1)
        fetch(recorded_url(url, ids, 10))
        print(f"start-up at 1,000,000 tags: {startup:.2f} s, RSS {rss_mb(proc.pid):.0f} MB")
    finally:
        proc.terminate()
        proc.wait(10)

    proc, url, _ = start(1000)
    try:
        ids = webids(url, 1000)
        target = recorded_url(url, ids[:100], 1000)
        for gz in (False, True):
            timed(target, gz)
            cpu = cpu_seconds(proc.pid)
            runs = [timed(target, gz) for _ in range(args.repeat)]
            cpu = (cpu_seconds(proc.pid) - cpu) / args.repeat
            median = statistics.median(t for t, _ in runs)
            values = runs[0][1]
            label = "gzip" if gz else "plain"
            print(
                f"/streamsets/recorded 100 tags x 1000 ({label}): {values} values, "
                f"median {median * 1000:.0f} ms wall, {values / median:,.0f} values/s; "
                f"server CPU {cpu * 1000:.0f} ms/call, {values / cpu:,.0f} values/CPU-s"
            )
        began = time.perf_counter()
        cpu = cpu_seconds(proc.pid)
        total = 0
        for i in range(0, 1000, 100):
            total += timed(recorded_url(url, ids[i : i + 100], 100), False)[1]
        elapsed = time.perf_counter() - began
        cpu = cpu_seconds(proc.pid) - cpu
        print(
            f"1000 tags x 100 values (10 calls): {total} values, {elapsed * 1000:.0f} ms wall, "
            f"{total / elapsed:,.0f} values/s; server CPU {cpu * 1000:.0f} ms, "
            f"{total / cpu:,.0f} values/CPU-s; server RSS {rss_mb(proc.pid):.0f} MB"
        )
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
