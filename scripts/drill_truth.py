"""The shard drill's comparison of `pi_timeseries` with mock-pi's ground truth: exact for a
mock without changes; with edits, deletions and late values, PI's archive as each tag's
checkpoint saw it (`tests.changes.helpers.truth_as_of`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import polars as pl
import pyarrow as pa

from mock_pi.truth import GroundTruth
from tests.changes.helpers import truth_as_of
from tests.e2e.helpers import KEY, expected, frame, ticks, within

TAG_TIME = ["tag_webid", "timestamp"]


@dataclass(frozen=True)
class Comparison:
    lost: int
    extra: int
    changed: int
    # Of those, keys where the table is ahead of its checkpoint: it holds what PI holds now
    # (a value that arrived after the checkpoint, or was edited or deleted since), written
    # by a batch whose append landed while its checkpoints did not (a worker stopping in
    # the middle of a batch leaves the rest to its next start).
    ahead: int
    # Keys PI edited or deleted, left different: a change made while no marker covered the
    # tag is left to `pidelta verify` (README "Delivery guarantee").
    to_verify: int
    twice: pl.DataFrame  # the keys the table holds more than once

    @property
    def doubled(self) -> int:
        return int(self.twice["len"].sum() - self.twice.height) if self.twice.height else 0

    @property
    def equal(self) -> bool:
        return self.doubled == 0 and self.lost + self.extra + self.changed == (
            self.ahead + self.to_verify
        )


def compare(
    table: pa.Table,
    truth: GroundTruth,
    spans: dict[str, tuple[datetime, datetime]],
    changes: bool,
) -> Comparison:
    """The table against the truth over each tag's span (start, checkpoint]."""
    if changes:
        # Keys that arrived or changed within a few seconds of the checkpoint may go
        # either way: left out on both sides.
        want, doubt = truth_as_of(truth, spans)
        got = frame(within(table, spans)).join(doubt, on=TAG_TIME, how="anti")
        want = frame(want.join(doubt, on=TAG_TIME, how="anti").to_arrow())
    else:
        got, want = frame(table), frame(expected(truth, spans))
    twice = got.select(KEY).group_by(KEY).len().filter(pl.col("len") > 1)
    extra = got.join(want, on=KEY, how="anti")
    both = got.unique(KEY).join(want.select(KEY), on=KEY, how="semi")
    changed = both.join(want, on=got.columns, how="anti", nulls_equal=True)
    lost = want.join(got, on=KEY, how="anti")
    ahead = to_verify = 0
    if changes:
        now = frame(expected(truth, spans))
        as_now = pl.concat([extra, changed]).join(now, on=got.columns, how="semi", nulls_equal=True)
        gone = lost.join(now, on=KEY, how="anti")
        ahead = as_now.height + gone.height
        rest = pl.concat([extra, changed]).join(as_now, on=KEY, how="anti")
        to_verify = rest.join(_changed_keys(truth, spans), on=TAG_TIME, how="semi").height
    return Comparison(
        lost=lost.height,
        extra=extra.height,
        changed=changed.height,
        ahead=ahead,
        to_verify=to_verify,
        twice=twice,
    )


def _changed_keys(truth: GroundTruth, spans: dict[str, tuple[datetime, datetime]]) -> pl.DataFrame:
    """Every key (tag_webid, timestamp) PI edited or deleted within the spans, to this day."""
    rows = [
        (webid, value["Timestamp"])
        for webid, (start, end) in spans.items()
        for _, value, _ in truth.changes(webid, ticks(start) + 10, ticks(end))
    ]
    keys = pl.DataFrame(rows, schema={"tag_webid": pl.String, "ts": pl.String}, orient="row")
    stamp = pl.col("ts").str.to_datetime(time_unit="us", time_zone="UTC").alias("timestamp")
    return keys.select("tag_webid", stamp)


def late_arrivals(truth: GroundTruth, spans: dict[str, tuple[datetime, datetime]]) -> pl.DataFrame:
    """The values PI holds back (late tags' outages): tag_webid, us (timestamp), arrived_us."""
    rows = [
        (webid, ticks_of(value["Timestamp"]) // 10, visible // 10)
        for webid, (start, end) in spans.items()
        if truth.point(webid).late
        for value, visible in truth.visible_at(webid, ticks(start), ticks(end))
        if isinstance(value, dict) and "Timestamp" in value
    ]
    schema = {"tag_webid": pl.String, "us": pl.Int64, "arrived_us": pl.Int64}
    return pl.DataFrame(rows, schema=schema, orient="row").filter(
        pl.col("arrived_us") > pl.col("us")
    )


def ticks_of(stamp: str) -> int:
    """100 ns ticks since the epoch of an ISO timestamp."""
    return ticks(datetime.fromisoformat(stamp.replace("Z", "+00:00")))
