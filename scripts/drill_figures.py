"""The figures of the shard drill, read from where they are recorded, not from the workers'
own account: commits and their shards from the Delta logs (commitInfo, app transactions),
freshness from the timestamps in the files each version added and that version's commit
time, CPU and peak RSS from /proc, conflicts and retries from the workers' /metrics.
"""

from __future__ import annotations

import os
import re
import urllib.request
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from urllib.parse import unquote

import numpy as np
import orjson
import polars as pl
import pyarrow.parquet as pq
from pyarrow import fs

# App ids name their shard: pidelta-ts-3-of-32, pidelta-points-3-of-32, ...
SHARD_OF = re.compile(r"-(\d+)-of-(\d+)$")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
CONFLICTS = "pidelta_commit_conflicts_total"
RETRIES = "pidelta_commit_retries_total"
COMMIT_SECONDS = "pidelta_commit_duration_seconds_sum"
COMMITS = "pidelta_commit_duration_seconds_count"
PI_REQUESTS = "pidelta_pi_request_duration_seconds_count"
PI_SECONDS = "pidelta_pi_request_duration_seconds_sum"
SCRAPED = frozenset({CONFLICTS, RETRIES, COMMIT_SECONDS, COMMITS, PI_REQUESTS, PI_SECONDS})


@dataclass
class Commit:
    """One version of one table, as its log records it."""

    version: int
    millis: int
    operation: str
    shard: str | None  # "3-of-32"; None for commits no shard's app id names
    added: list[str]  # data files added with dataChange
    transactions: list[str]  # "app id@version" of its app transactions


@dataclass
class TableLog:
    name: str
    commits: list[Commit]
    log_files: int


def filesystem(target: str, options: dict[str, str]) -> tuple[fs.FileSystem, str]:
    """A pyarrow filesystem and the root path of the tables under `target`."""
    if target.startswith("s3://"):
        endpoint = options["aws_endpoint_url"]
        s3 = fs.S3FileSystem(
            access_key=options["aws_access_key_id"],
            secret_key=options["aws_secret_access_key"],
            region=options.get("aws_region", "us-east-1"),
            scheme="http" if endpoint.startswith("http://") else "https",
            endpoint_override=endpoint.split("://", 1)[1],
        )
        return s3, target.removeprefix("s3://").rstrip("/")
    return fs.LocalFileSystem(), target.rstrip("/")


def _shard(info: dict[str, object], txns: list[str]) -> str | None:
    for app_id in [str(info.get("pidelta.app_id", "")), *txns]:
        match = SHARD_OF.search(app_id)
        if match:
            return f"{match[1]}-of-{match[2]}"
    return None


def read_log(filesystem_: fs.FileSystem, root: str, table: str) -> TableLog:
    """Every commit of a table from its `_delta_log/*.json`, and how many log files it has."""
    infos = filesystem_.get_file_info(fs.FileSelector(f"{root}/{table}/_delta_log"))
    commits = []
    for info in infos:
        name = PurePosixPath(info.path).name
        if not re.fullmatch(r"\d{20}\.json", name):
            continue
        with filesystem_.open_input_stream(info.path) as stream:
            lines = stream.read().splitlines()
        commit_info: dict[str, object] = {}
        txns: list[str] = []
        versions: list[str] = []
        added: list[str] = []
        for line in lines:
            action = orjson.loads(line)
            if "commitInfo" in action:
                commit_info = action["commitInfo"]
            elif "txn" in action:
                txns.append(action["txn"]["appId"])
                versions.append(f"{action['txn']['appId']}@{action['txn']['version']}")
            elif "add" in action and action["add"].get("dataChange", True):
                added.append(action["add"]["path"])
        commits.append(
            Commit(
                int(name[:20]),
                int(commit_info.get("timestamp", 0)),  # type: ignore[call-overload]
                str(commit_info.get("operation", "?")),
                _shard(commit_info, txns),
                added,
                versions,
            )
        )
    commits.sort(key=lambda c: c.version)
    return TableLog(table, commits, len(infos))


def table_names(filesystem_: fs.FileSystem, root: str) -> list[str]:
    infos = filesystem_.get_file_info(fs.FileSelector(root))
    return sorted(PurePosixPath(i.path).name for i in infos if i.type == fs.FileType.Directory)


def freshness(
    filesystem_: fs.FileSystem,
    root: str,
    log: TableLog,
    since_us: int,
    arrivals: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Each value's arrival in PI (`us`) and the seconds from it to the commit time of the
    first version that added it, for values stamped after `since_us`: a replace that
    rewrites a file adds its rows again, and a rewrite is not when a value became readable.
    A value arrives at its timestamp unless `arrivals` (tag_webid, us: its timestamp,
    arrived_us) says later."""
    parts = []
    for commit in log.commits:
        for path in commit.added:
            keys = pl.from_arrow(
                pq.read_table(
                    f"{root}/{log.name}/{unquote(path)}",
                    columns=["tag_webid", "timestamp", "sequence"],
                    filesystem=filesystem_,
                )
            )
            assert isinstance(keys, pl.DataFrame)
            micros = keys.select(
                "tag_webid", "sequence", pl.col("timestamp").dt.epoch("us").alias("us")
            ).filter(pl.col("us") > since_us)
            parts.append(micros.with_columns(pl.lit(commit.millis * 1000).alias("at")))
    if not parts:
        return pl.DataFrame(
            {"us": [], "seconds": []}, schema={"us": pl.Int64, "seconds": pl.Float64}
        )
    first = pl.concat(parts).group_by("tag_webid", "us", "sequence").agg(pl.col("at").min())
    if arrivals is not None:
        first = first.join(arrivals, on=["tag_webid", "us"], how="left").with_columns(
            pl.coalesce("arrived_us", "us").alias("us")
        )
    return first.select("us", ((pl.col("at") - pl.col("us")) / 1e6).alias("seconds"))


def doubled_origins(
    filesystem_: fs.FileSystem, root: str, log: TableLog, doubled: pl.DataFrame
) -> list[str]:
    """For a post-mortem: which commits added the keys stored twice (`doubled`: the key
    columns), one line per commit with its time, app transactions and what it holds of them."""
    lines = []
    for commit in log.commits:
        found = []
        for path in commit.added:
            keys = pl.from_arrow(
                pq.read_table(
                    f"{root}/{log.name}/{unquote(path)}",
                    columns=list(doubled.columns),
                    filesystem=filesystem_,
                )
            )
            assert isinstance(keys, pl.DataFrame)
            found.append(keys.join(doubled, on=list(doubled.columns), how="semi"))
        hit = pl.concat(found) if found else pl.DataFrame()
        if hit.height:
            lines.append(
                f"  v{commit.version} at {commit.millis} ms, {commit.operation},"
                f" {','.join(commit.transactions) or 'no app transaction'}: {hit.height} of them,"
                f" {hit['tag_webid'].n_unique()} tags, {hit['timestamp'].min()} .."
                f" {hit['timestamp'].max()}"
            )
    return lines


@dataclass
class Usage:
    """CPU seconds and peak RSS of one process, from its last /proc sample."""

    cpu_seconds: float = 0.0
    peak_rss_mb: float = 0.0


def sample_proc(pid: int, usage: Usage) -> None:
    """Update `usage` from /proc/PID (silently nothing once the process is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open(f"/proc/{pid}/status") as f:
            status = f.read()
    except OSError:
        return
    usage.cpu_seconds = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    match = re.search(r"VmHWM:\s+(\d+) kB", status)
    if match:
        usage.peak_rss_mb = int(match[1]) / 1024


def scrape(port: int) -> dict[tuple[str, str], float] | None:
    """(metric, table) → value of the counters in SCRAPED (PI ones summed over their labels,
    table ""); None when the worker does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    out: dict[tuple[str, str], float] = defaultdict(float)
    for line in text.splitlines():
        name, _, rest = line.partition("{")
        if name not in SCRAPED:
            continue
        labels, _, value = rest.rpartition(" ")
        table = re.search(r'table="([^"]*)"', labels)
        out[(name, table[1] if table else "")] += float(value)
    return dict(out)


@dataclass
class Scraped:
    """The SCRAPED counters summed over every worker's last scrape."""

    counts: Counter[tuple[str, str]] = field(default_factory=Counter)

    def add(self, scraped: dict[tuple[str, str], float]) -> None:
        self.counts.update(scraped)

    def of(self, metric: str, table: str = "") -> float:
        return self.counts[(metric, table)]


def commit_rates(log: TableLog, start_ms: int, end_ms: int) -> tuple[int, float, dict[str, float]]:
    """Commits in [start, end), per minute, and per minute by shard."""
    minutes = max((end_ms - start_ms) / 60_000, 1e-9)
    window = [c for c in log.commits if start_ms <= c.millis < end_ms]
    by_shard: dict[str, int] = defaultdict(int)
    for commit in window:
        by_shard[commit.shard or "none"] += 1
    return len(window), len(window) / minutes, {s: n / minutes for s, n in by_shard.items()}


def percentile(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if values.size else float("nan")
