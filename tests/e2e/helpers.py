"""End-to-end plumbing: `pidelta` as subprocesses, the Delta tables read back, the truth.

Every comparison is exact: the multiset of (tag_webid, timestamp, sequence, value,
value_string, digital_state, digital_code, is_system_state, units, quality flags) in
`pi_timeseries` must equal what `mock_pi.truth` says the server holds, with no duplicate key.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import polars as pl
import pyarrow as pa
from deltalake import DeltaTable

from mock_pi.settings import MockSettings
from mock_pi.truth import GroundTruth
from tests.conftest import FIXED_NOW, ROOT, MockServer, SimClock, free_port

KEY = ["tag_webid", "timestamp", "sequence"]
COMPARED = [
    "tag_webid",
    "timestamp",
    "sequence",
    "value",
    "value_string",
    "digital_state",
    "digital_code",
    "is_system_state",
    "units",
    "quality_good",
    "quality_questionable",
    "quality_substituted",
    "quality_annotated",
]
TICKS_PER_US = 10


def worker_env(
    mock: MockServer | str, target: Path, *, clock: SimClock | None = None, **settings: object
) -> dict[str, str]:
    """Environment of a pidelta subprocess: PIDELTA_* from keyword arguments, on `clock`
    (by default the clock of `mock`, so that worker and server share one "now")."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIDELTA_")}
    clock = clock or (None if isinstance(mock, str) else mock.clock)
    if clock is not None:
        env.update(clock.process_env())
    env["PIDELTA_PI_URL"] = mock if isinstance(mock, str) else mock.url
    env["PIDELTA_TARGET"] = str(target)
    env["PIDELTA_METRICS_PORT"] = "0"
    env["PIDELTA_LOG_LEVEL"] = "INFO"
    env["PIDELTA_COMMIT_MAX_AGE"] = "3"  # a few polls per commit, so buffering is exercised
    env.update({f"PIDELTA_{k.upper()}": str(v) for k, v in settings.items()})
    return env


def pidelta(
    *args: str, env: Mapping[str, str], timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    """Run `python -m service ARGS` to completion."""
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        cwd=ROOT,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stderr[-4000:]}"
    return result


@dataclass
class Worker:
    """A `pidelta` subprocess started in the background (stderr kept in a file)."""

    process: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill9(self) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def terminate(self, timeout: float = 60) -> int:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def text(self) -> str:
        return self.log.read_text(errors="replace")


def start_worker(*args: str, env: Mapping[str, str], log: Path) -> Worker:
    handle = log.open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "service", *args],
        cwd=ROOT,
        env=dict(env),
        stdout=handle,
        stderr=subprocess.STDOUT,
    )
    handle.close()
    return Worker(proc, log)


def metrics_port_env(env: Mapping[str, str]) -> tuple[dict[str, str], int]:
    port = free_port()
    return {**env, "PIDELTA_METRICS_PORT": str(port)}, port


def scrape(port: int) -> dict[str, float]:
    """Prometheus text exposition → {'name{labels}': value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def wait_for(predicate: object, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(interval)
    return False


def read_table(target: Path, name: str = "pi_timeseries") -> pa.Table:
    return DeltaTable(str(target / name)).to_pyarrow_table()


def checkpoints(target: Path, prefix: str = "pidelta-ts-") -> dict[str, datetime]:
    """Latest checkpoint per tag over app ids of a prefix, as the pipeline reads them."""
    frame = pl.from_arrow(read_table(target, "_pidelta_checkpoints"))
    latest = (
        frame.filter(pl.col("app_id").str.starts_with(prefix))
        .group_by("tag_webid")
        .agg(pl.col("checkpoint").max())
    )
    return dict(zip(latest["tag_webid"].to_list(), latest["checkpoint"].to_list(), strict=True))


def truth_for(mock: MockServer) -> GroundTruth:
    """The ground truth of a running mock, built from its MOCK_PI_* environment."""
    fields = MockSettings.model_fields
    values = {
        k.removeprefix("MOCK_PI_").lower(): v
        for k, v in mock.env.items()
        if k.startswith("MOCK_PI_") and k.removeprefix("MOCK_PI_").lower() in fields
    }
    return GroundTruth(MockSettings(**values), clock=mock.clock.time if mock.clock else None)


def ticks(moment: datetime) -> int:
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    us = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return us * TICKS_PER_US


def expected(
    truth: GroundTruth,
    ranges: Mapping[str, tuple[datetime, datetime]] | Iterable[tuple[str, datetime, datetime]],
    at: float | None = None,
) -> pa.Table:
    """Truth rows of each tag with start <= timestamp <= end (grouped by equal ranges): a
    user's start (`backfill --start`, `PIDELTA_START`) is inclusive."""
    items = ranges.items() if isinstance(ranges, Mapping) else ((w, (s, e)) for w, s, e in ranges)
    groups: dict[tuple[datetime, datetime], list[str]] = {}
    for webid, (start, end) in items:
        groups.setdefault((start, end), []).append(webid)
    parts = [
        truth.recorded_table(webids, ticks(s), ticks(e), at=at)
        for (s, e), webids in groups.items()
        if e >= s
    ]
    return pa.concat_tables(parts) if parts else truth.recorded_table([], 0, 0)


def expected_quarantine(
    truth: GroundTruth, ranges: Mapping[str, tuple[datetime, datetime]]
) -> pa.Table:
    """Truth's malformed values (MOCK_PI_BAD_FRACTION) of each tag in [start, end]."""
    parts = [
        truth.quarantine_table([webid], ticks(s), ticks(e))
        for webid, (s, e) in ranges.items()
        if e >= s
    ]
    return pa.concat_tables(parts) if parts else truth.quarantine_table([], 0, 0)


def without_units(raw: str) -> str:
    """A raw TimedValue without `UnitsAbbreviation`: pidelta does not select it per value."""
    item = orjson.loads(raw)
    if isinstance(item, dict):
        item.pop("UnitsAbbreviation", None)
    return orjson.dumps(item).decode()


def comparable(quarantine: pl.DataFrame) -> pl.DataFrame:
    """Quarantine rows as (tag, reason, raw) to compare with the truth's."""
    return quarantine.select(
        "tag_webid", "reason", pl.col("raw").map_elements(without_units, return_dtype=pl.String)
    )


def frame(table: pa.Table) -> pl.DataFrame:
    return pl.from_arrow(table.select(COMPARED)).sort(KEY)


def assert_no_duplicates(table: pa.Table) -> None:
    keys = pl.from_arrow(table.select(KEY))
    dupes = keys.filter(keys.is_duplicated())
    assert dupes.height == 0, f"{dupes.height} rows share a key:\n{dupes.head(10)}"


def assert_same(actual: pa.Table, truth: pa.Table) -> None:
    """Exactly the truth's rows: same multiset of compared columns, no duplicate key."""
    assert_no_duplicates(actual)
    got, want = frame(actual), frame(truth)
    if got.equals(want):
        return
    extra = got.join(want, on=KEY, how="anti")
    missing = want.join(got, on=KEY, how="anti")
    changed = got.join(want, on=KEY, how="inner", suffix="_truth")
    raise AssertionError(
        f"table has {got.height} rows, truth {want.height}; {extra.height} extra, "
        f"{missing.height} missing\nextra:\n{extra.head(5)}\nmissing:\n{missing.head(5)}\n"
        f"joined:\n{changed.head(3)}"
    )


def within(table: pa.Table, ranges: Mapping[str, tuple[datetime, datetime]]) -> pa.Table:
    """Rows of `table` inside their tag's [start, end]."""
    bounds = pl.DataFrame(
        {
            "tag_webid": list(ranges),
            "_lo": [s for s, _ in ranges.values()],
            "_hi": [e for _, e in ranges.values()],
        },
        schema_overrides={"_lo": pl.Datetime("us", "UTC"), "_hi": pl.Datetime("us", "UTC")},
    )
    rows = pl.from_arrow(table).join(bounds, on="tag_webid", how="inner")
    rows = rows.filter(
        (pl.col("timestamp") >= pl.col("_lo")) & (pl.col("timestamp") <= pl.col("_hi"))
    )
    return rows.drop(["_lo", "_hi"]).to_arrow()


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def fixed_past(minutes_ago: float) -> datetime:
    """`FIXED_NOW` less some minutes: a start the same on every run, for a `SimClock` test."""
    return FIXED_NOW - timedelta(minutes=minutes_ago)
