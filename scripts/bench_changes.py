"""`make bench` (second part): `pidelta run` following PI's archive through stream updates.

A `run` of BENCH_CHANGES_TAGS (1000) tags against mock-pi with MOCK_PI_LATE_FRACTION=0.1,
edits (2%) and deletions (1%) made MOCK_PI_CHANGE_SECONDS (120) after their timestamp.
After a warm-up (every tag followed), the worker's own metrics are sampled at the start and
the end of BENCH_CHANGES_MINUTES (10) minutes of steady state:

- values read from PI per value written: the increase of `pidelta_values_ingested_total`
  over the rows the table gained plus the edits and deletions applied;
- PI requests per minute: the increase of `pidelta_pi_requests_total`;
- p99 freshness of a change: for each edit and deletion logged in `pi_timeseries_changes`
  in the window, `applied_at` minus the moment mock-pi made it (timestamp + CHANGE_SECONDS).

Figures are printed, never asserted.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import polars as pl  # noqa: E402
from deltalake import DeltaTable  # noqa: E402

from scripts.bench import free_port  # noqa: E402

CHANGE_SECONDS = 120.0


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def total(metrics: dict[str, float], prefix: str) -> float:
    return sum(v for k, v in metrics.items() if k.startswith(prefix))


def rows(target: Path) -> int:
    return DeltaTable(str(target / "pi_timeseries")).to_pyarrow_dataset().count_rows()


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("ab")
    try:
        return subprocess.Popen(
            [sys.executable, *args], cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT
        )
    finally:
        handle.close()


def main() -> int:
    tags = int(os.environ.get("BENCH_CHANGES_TAGS", "1000"))
    minutes = float(os.environ.get("BENCH_CHANGES_MINUTES", "10"))
    work = Path(tempfile.mkdtemp(prefix="pidelta-bench-changes-"))
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MOCK_PI_", "PIDELTA_"))}
    mock_port, metrics_port = free_port(), free_port()
    mock_env = {
        **base,
        "MOCK_PI_PORT": str(mock_port),
        "MOCK_PI_TAG_COUNT": str(tags),
        "MOCK_PI_RATE_LIMIT": "0",
        "MOCK_PI_LATE_FRACTION": "0.1",
        "MOCK_PI_EDIT_FRACTION": "0.02",
        "MOCK_PI_DELETE_FRACTION": "0.01",
        "MOCK_PI_CHANGE_SECONDS": str(CHANGE_SECONDS),
    }
    target = work / "lake"
    worker_env = {
        **base,
        "PIDELTA_PI_URL": f"http://127.0.0.1:{mock_port}/piwebapi",
        "PIDELTA_TARGET": str(target),
        "PIDELTA_START": "*-2m",
        "PIDELTA_UPDATES": "true",
        "PIDELTA_METRICS_PORT": str(metrics_port),
        "PIDELTA_METRICS_HOST": "127.0.0.1",
    }
    mock = start(["-m", "mock_pi"], mock_env, work / "mock.log")
    worker = None
    try:
        time.sleep(2)
        worker = start(["-m", "service", "run"], worker_env, work / "worker.log")
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            time.sleep(5)
            try:
                followed = total(scrape(metrics_port), "pidelta_marker_registrations_total")
            except OSError:
                continue
            if followed >= tags:
                break
        else:
            raise SystemExit("bench_changes: the worker did not follow every tag in 10 minutes")
        time.sleep(40)  # the first commits of the followed tags
        first, rows_first, began = scrape(metrics_port), rows(target), time.time()
        time.sleep(minutes * 60)
        last, rows_last, ended = scrape(metrics_port), rows(target), time.time()
    finally:
        for proc in (worker, mock):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(120)
    read = total(last, "pidelta_values_ingested_total") - total(
        first, "pidelta_values_ingested_total"
    )
    applied = {
        action: total(last, f'pidelta_changes_applied_total{{action="{action}"')
        - total(first, f'pidelta_changes_applied_total{{action="{action}"')
        for action in ("Add", "Update", "Delete")
    }
    written = rows_last - rows_first + applied["Update"] + 2 * applied["Delete"]
    requests = total(last, "pidelta_pi_requests_total") - total(first, "pidelta_pi_requests_total")
    fallbacks = total(last, "pidelta_fallback_rereads_total") - total(
        first, "pidelta_fallback_rereads_total"
    )
    log = pl.from_arrow(DeltaTable(str(target / "pi_timeseries_changes")).to_pyarrow_table())
    window = log.filter(
        pl.col("action").is_in(["Update", "Delete"])
        & (pl.col("applied_at").dt.epoch("s") >= began)
        & (pl.col("applied_at").dt.epoch("s") <= ended)
    )
    fresh = (
        pl.col("applied_at").dt.epoch("us") - pl.col("timestamp").dt.epoch("us")
    ) / 1e6 - CHANGE_SECONDS
    seconds = window.select(fresh.alias("s"))["s"]
    span = ended - began
    print(f"bench_changes: {tags} tags, {minutes:g} minutes of steady state ({span:.0f} s)")
    print(f"  values read from PI:   {read:,.0f}")
    print(
        f"  values written:        {written:,.0f} (rows +{rows_last - rows_first:,}, "
        f"edits {applied['Update']:.0f}, deletions {applied['Delete']:.0f}, "
        f"late arrivals {applied['Add']:.0f})"
    )
    print(f"  read per written:      {read / max(1.0, written):.3f}")
    print(f"  PI requests/minute:    {requests / (span / 60):.1f}")
    print(f"  fallback re-reads:     {fallbacks:.0f}")
    if len(seconds):
        print(
            f"  change freshness:      p50 {seconds.quantile(0.5):.1f} s, "
            f"p99 {seconds.quantile(0.99):.1f} s over {len(seconds)} edits and deletions"
        )
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
