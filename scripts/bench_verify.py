"""Benchmark `pidelta verify`: 1000 tags x 7 days in hourly buckets against mock-pi.

Starts `python -m mock_pi` (a ten-year archive, every scan period stretched by
`--scan-scale` so the week fits a laptop), backfills the week into a fresh folder, then:
1. `verify --dry-run` when nothing differs: wall time, PI requests, values read;
2. deletes `--tamper` tag-hours through delta-rs and runs `verify`: the repair reads only
   those buckets;
3. `verify --dry-run` again: all equal.
Figures come from the command's own summary lines.

Usage: .venv/bin/python scripts/bench_verify.py [--tags 1000] [--days 7] [--scan-scale 60]
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

from deltalake import DeltaTable

ROOT = Path(__file__).resolve().parents[1]
START = datetime(2026, 6, 1, tzinfo=UTC)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_mock(tags: int, scan_scale: float) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOCK_PI_")}
    env.update(
        MOCK_PI_PORT=str(port),
        MOCK_PI_TAG_COUNT=str(tags),
        MOCK_PI_RATE_LIMIT="0",
        MOCK_PI_HISTORY_DAYS="3650",
        MOCK_PI_SCAN_SCALE=str(scan_scale),
    )
    proc = subprocess.Popen([sys.executable, "-m", "mock_pi"], cwd=ROOT, env=env)
    url = f"http://127.0.0.1:{port}/piwebapi"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{url}/dataservers", timeout=5).read()
            return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("mock-pi did not start")


def pidelta(env: dict[str, str], *args: str) -> tuple[float, str, int]:
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "service", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode not in (0, 1):
        raise RuntimeError(done.stderr[-3000:])
    return time.perf_counter() - began, done.stdout, done.returncode


def figures(out: str) -> str:
    checked = re.search(r"buckets checked .*", out)
    requests = re.search(r"PI requests .*", out)
    return f"{checked.group(0) if checked else '?'}; {requests.group(0) if requests else '?'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tags", type=int, default=1000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--scan-scale", type=float, default=60.0)
    parser.add_argument("--tamper", type=int, default=10)
    args = parser.parse_args()
    end = START + timedelta(days=args.days)
    span = ["--start", START.isoformat(), "--end", end.isoformat()]
    proc, url = start_mock(args.tags, args.scan_scale)
    try:
        with tempfile.TemporaryDirectory() as folder:
            env = {k: v for k, v in os.environ.items() if not k.startswith("PIDELTA_")}
            env.update(PIDELTA_PI_URL=url, PIDELTA_TARGET=folder, PIDELTA_METRICS_PORT="0")
            seconds, _, _ = pidelta(env, "backfill", *span)
            rows = DeltaTable(f"{folder}/pi_timeseries").to_pyarrow_dataset().count_rows()
            print(f"backfill: {rows} rows in {seconds:.1f} s")
            tag_days = args.tags * args.days
            seconds, out, code = pidelta(env, "verify", *span, "--dry-run")
            print(
                f"verify --dry-run, nothing differs: {seconds:.1f} s, exit {code}; {figures(out)}"
            )
            summary = int(re.search(r"summary (\d+)", out).group(1))  # type: ignore[union-attr]
            print(f"  {tag_days / summary:.0f} tag-days per /streamsets/summary request")
            table = DeltaTable(f"{folder}/pi_timeseries")
            webids = sorted(
                set(
                    table.to_pyarrow_dataset().to_table(columns=["tag_webid"]).column(0).to_pylist()
                )
            )
            for i in range(args.tamper):
                lo = START + timedelta(hours=7 * i + 1)
                hi = lo + timedelta(hours=1)
                table.delete(
                    f"tag_webid = '{webids[i * 37 % len(webids)]}' AND \"timestamp\" >= "
                    f"'{lo.isoformat()}' AND \"timestamp\" < '{hi.isoformat()}'"
                )
            seconds, out, code = pidelta(env, "verify", *span)
            what = f"verify, {args.tamper} tag-hours deleted"
            print(f"{what}: {seconds:.1f} s, exit {code}; {figures(out)}")
            seconds, out, code = pidelta(env, "verify", *span, "--dry-run")
            print(f"verify --dry-run again: {seconds:.1f} s, exit {code}; {figures(out)}")
    finally:
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    main()
