"""What the change-capture tests compare: the table as of a moment, and the change log."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import polars as pl
import pyarrow as pa

from mock_pi.truth import GroundTruth
from tests.conftest import MockServer
from tests.e2e.helpers import (
    KEY,
    assert_same,
    checkpoints,
    expected,
    iso,
    read_table,
    ticks,
    wait_for,
    within,
    worker_env,
)

US = 1_000_000
# `make drill-changes` runs these tests longer (CHANGES_DRILL_SCALE=4): more kills, longer runs.
SCALE = float(os.environ.get("CHANGES_DRILL_SCALE", "1"))
SLACK = timedelta(seconds=3)  # a change this close to the compared moment may go either way
# After a (re)start, the first batches replay what arrived and changed while no worker ran:
# a value and its edit met in one batch are one first write, not a logged change.
SETTLE = timedelta(seconds=6)


def follower_env(mock: MockServer, target: Path, origin: datetime, **env: object) -> dict[str, str]:
    """A `run` worker that follows stream updates from `origin`, polling every second 2 s
    behind the tests' clock."""
    return worker_env(
        mock, target, start=iso(origin), poll_interval=1, safety_lag=2, updates=True, **env
    )


def moments(truth: GroundTruth, ranges: Mapping[str, tuple[datetime, datetime]]) -> pl.DataFrame:
    """Every key of the ranges with the moments it arrives and changes (null: never)."""
    rows: list[dict[str, object]] = []
    for webid, (start, end) in ranges.items():
        for value, visible in truth.visible_at(webid, ticks(start) + 10, ticks(end)):
            if isinstance(value, dict) and "Timestamp" in value:
                rows.append({"tag_webid": webid, "ts": value["Timestamp"], "moment": visible // 10})
        for _, value, at in truth.changes(webid, ticks(start) + 10, ticks(end)):
            rows.append({"tag_webid": webid, "ts": value["Timestamp"], "moment": at // 10})
    frame = pl.DataFrame(rows, schema={"tag_webid": pl.String, "ts": pl.String, "moment": pl.Int64})
    return frame.with_columns(
        pl.col("ts").str.to_datetime(time_unit="us", time_zone="UTC").alias("timestamp")
    )


def truth_as_of(
    truth: GroundTruth,
    ranges: Mapping[str, tuple[datetime, datetime]],
    at: datetime | None = None,
    unseen: pl.DataFrame | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """PI's archive over the ranges as of `at` (default: each tag's range end, its
    checkpoint: the moment its last retrieval was sent), and the keys (tag_webid, timestamp)
    left out of a comparison: those whose arrival or change falls within SLACK of that
    moment, and the `unseen` ones."""
    moment = {w: at or end for w, (_, end) in ranges.items()}
    bounds = pl.DataFrame(
        {
            "tag_webid": list(moment),
            "_lo": [int((m - SLACK).timestamp() * US) for m in moment.values()],
            "_hi": [int((m + SLACK).timestamp() * US) for m in moment.values()],
        }
    )
    doubt = (
        moments(truth, ranges)
        .join(bounds, on="tag_webid")
        .filter((pl.col("moment") > pl.col("_lo")) & (pl.col("moment") <= pl.col("_hi")))
        .select("tag_webid", "timestamp")
        .unique()
    )
    if unseen is not None:
        doubt = pl.concat([doubt, unseen.select("tag_webid", "timestamp")]).unique()
    groups: dict[datetime, dict[str, tuple[datetime, datetime]]] = {}
    for webid, m in moment.items():
        groups.setdefault(m, {})[webid] = ranges[webid]
    want = pl.concat(
        [pl.from_arrow(expected(truth, part, at=m.timestamp())) for m, part in groups.items()]
    )
    return want, doubt


def assert_table_as_of(
    table: pa.Table,
    truth: GroundTruth,
    ranges: Mapping[str, tuple[datetime, datetime]],
    at: datetime | None = None,
    unseen: pl.DataFrame | None = None,
) -> int:
    """The table equals PI's archive over the ranges as of `at` (`truth_as_of`), but for
    the keys in doubt. Returns the keys compared."""
    want, doubt = truth_as_of(truth, ranges, at, unseen)
    got = pl.from_arrow(within(table, ranges))
    keys = ["tag_webid", "timestamp"]
    want = want.join(doubt, on=keys, how="anti")
    got = got.join(doubt, on=keys, how="anti")
    assert_same(got.to_arrow(), want.to_arrow())
    return want.height


def follower_ranges(
    target: Path, origin: datetime
) -> tuple[dict[str, tuple[datetime, datetime]], datetime]:
    """(origin, checkpoint] per tag, and the earliest checkpoint (the compared moment)."""
    cps = checkpoints(target)
    return {w: (origin, c) for w, c in cps.items()}, min(cps.values())


def change_log(target: Path) -> pl.DataFrame:
    return pl.from_arrow(read_table(target, "pi_timeseries_changes"))


def assert_log_matches(
    log: pl.DataFrame,
    table: pa.Table,
    truth: GroundTruth,
    ranges: Mapping[str, tuple[datetime, datetime]],
    windows: Sequence[tuple[datetime, datetime]],
    late: set[str],
) -> dict[str, int]:
    """Each logged edit or deletion is one of PI's (key, new value), logged once; every
    change PI made to a value of an on-time tag while a worker was following (one of the
    `windows`, from a worker's start-up to its end, less SETTLE and SLACK) is logged;
    logged late arrivals are rows of the table unless deleted later. Returns the rows by
    action."""
    assert log.filter(pl.struct([*KEY, "action"]).is_duplicated()).height == 0
    changes: list[dict[str, object]] = []
    for webid, (start, end) in ranges.items():
        for action, value, at in truth.changes(webid, ticks(start) + 10, ticks(end)):
            changes.append(
                {
                    "tag_webid": webid,
                    "ts": value["Timestamp"],
                    "action": action,
                    "moment": at // 10,
                    "good": value["Good"],
                    "substituted": value["Substituted"],
                }
            )
    truth_changes = pl.DataFrame(
        changes,
        schema={
            "tag_webid": pl.String,
            "ts": pl.String,
            "action": pl.String,
            "moment": pl.Int64,
            "good": pl.Boolean,
            "substituted": pl.Boolean,
        },
    ).with_columns(pl.col("ts").str.to_datetime(time_unit="us", time_zone="UTC").alias("timestamp"))
    edits = log.filter(pl.col("action") != "Add")
    matched = edits.join(truth_changes, on=["tag_webid", "timestamp", "action"], how="left")
    assert matched.filter(pl.col("moment").is_null()).height == 0, matched.head(5)
    updates = matched.filter(pl.col("action") == "Update")
    assert updates.filter(pl.col("new_quality_substituted") != pl.col("substituted")).height == 0
    following = pl.lit(False)
    for since, until in windows:
        lo, hi = int((since + SETTLE).timestamp() * US), int((until - SLACK).timestamp() * US)
        following = following | ((pl.col("moment") > lo) & (pl.col("moment") <= hi))
    due = truth_changes.filter(following & ~pl.col("tag_webid").is_in(late))
    missing = due.join(edits, on=["tag_webid", "timestamp", "action"], how="anti")
    assert missing.height == 0, missing.head(5)
    deleted = log.filter(pl.col("action") == "Delete").select(KEY)
    adds = log.filter(pl.col("action") == "Add").select(KEY).join(deleted, on=KEY, how="anti")
    assert adds.join(pl.from_arrow(table.select(KEY)), on=KEY, how="anti").height == 0
    tally = log.group_by("action").len()
    return dict(zip(tally["action"].to_list(), tally["len"].to_list(), strict=True))


def wait_following(target: Path, tags: int, timeout: float = 120) -> bool:
    """Every tag has a marker row (it follows stream updates)."""

    def ready() -> bool:
        try:
            markers = read_table(target, "_pidelta_markers")
        except Exception:
            return False
        return len(set(markers.column("tag_webid").to_pylist())) >= tags

    return wait_for(ready, timeout)


def pause(seconds: float) -> None:
    time.sleep(seconds)


def log_entries(table: Path, after: int = -1) -> list[dict[str, object]]:
    """The commits of a local Delta table after version `after`, read from its log: the
    operation, its mode and predicate, the app transactions (app id -> version), and the
    files added and removed."""
    out: list[dict[str, object]] = []
    for path in sorted((table / "_delta_log").glob("*.json")):
        version = int(path.stem)
        if version <= after:
            continue
        entry: dict[str, object] = {"version": version, "txn": {}, "adds": 0, "removes": 0}
        for line in path.read_bytes().splitlines():
            action = orjson.loads(line)
            if "commitInfo" in action:
                info = action["commitInfo"]
                params = info.get("operationParameters") or {}
                entry |= {
                    "operation": info.get("operation"),
                    "mode": params.get("mode"),
                    "predicate": params.get("predicate"),
                }
            elif "txn" in action:
                entry["txn"][action["txn"]["appId"]] = action["txn"]["version"]  # type: ignore[index]
            elif "add" in action:
                entry["adds"] += 1  # type: ignore[operator]
            elif "remove" in action:
                entry["removes"] += 1  # type: ignore[operator]
        out.append(entry)
    return out


def predicate_times(predicate: object) -> list[datetime]:
    """The timestamps a replace's predicate names, as delta-rs logged it (its own SQL)."""
    found = re.findall(r"'(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?)Z?'", str(predicate))
    return sorted(datetime.fromisoformat(t).replace(tzinfo=UTC) for t in found)
