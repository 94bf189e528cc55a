"""Verification inside `pidelta run`: the trailing horizon kept verified, a little at a time.

Each pass finds the due tag-buckets of the horizon (`verify_horizon` back from the last
closed bucket, which ends `safety_lag` before now; for each tag, the whole buckets after its
first live range start and up to its checkpoint): those never verified equal, and those a
commit touched after their last check (rows with a later `ingestion_timestamp`: late values,
edits, rows appended by someone else). It verifies the oldest day that has any, for the tags
due in it, with the summary requests paced at `verify_budget_share` of
`pi_max_requests_per_second`, and then reports completeness. The caller repeats passes every
`verify_interval` (at once while days are still due).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

import polars as pl

from workers.lake.schemas import PI_TIMESERIES, VERIFICATION
from workers.lake.writer import DeltaWriter
from workers.observe import VerifyObserver
from workers.pi.client import PIClient
from workers.pi.times import to_us
from workers.settings import Settings
from workers.timeseries.discovery import TagInfo
from workers.timeseries.recorded import RecordedSource
from workers.timeseries.summaries import SummarySource
from workers.verify.completeness import (
    Completeness,
    completeness,
    good_checks,
    latest_results,
    tag_buckets,
)
from workers.verify.figures import changed_buckets
from workers.verify.verifier import DAY_US, Verifier, VerifyReport


def horizon(settings: Settings, now: datetime) -> tuple[int, int]:
    """[start, end) in µs of the closed buckets in the horizon, bucket-aligned."""
    b = settings.verify_bucket * 1_000_000
    end = (to_us(now) - round(settings.safety_lag * 1_000_000)) // b * b
    start = -(-(end - round(settings.verify_horizon * 1_000_000)) // b) * b
    return start, end


def tag_bounds(
    origins: Mapping[str, datetime],
    checkpoints: Mapping[str, datetime],
    start: int,
    end: int,
    bucket_us: int,
) -> dict[str, tuple[int, int]]:
    """Each tag's buckets to verify: whole buckets after its first live range start and up
    to its checkpoint (committed), inside the horizon [start, end)."""
    b = bucket_us
    out: dict[str, tuple[int, int]] = {}
    for w, origin in origins.items():
        if w in checkpoints:
            first = max(start, -(-(to_us(origin) + 1) // b) * b)
            out[w] = (first, min(end, (to_us(checkpoints[w]) + 1) // b * b))
    return out


class ContinuousVerification:
    """One shard's verification passes over the horizon (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        client: PIClient,
        writer: DeltaWriter,
        observer: VerifyObserver,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.client = client
        self.writer = writer
        self.observer = observer
        self.clock = clock
        self.bucket_us = settings.verify_bucket * 1_000_000
        self.summaries = SummarySource(
            client,
            max_url_bytes=settings.pi_max_url_bytes,
            max_items=settings.pi_max_items_per_call,
            max_in_flight=1,
            max_requests_per_second=settings.pi_max_requests_per_second
            * settings.verify_budget_share,
        )
        self._since: int | None = None
        self._changed = pl.DataFrame(
            schema={"tag_webid": pl.String, "bucket_start": pl.Int64, "changed": pl.Int64}
        )

    def horizon(self) -> tuple[int, int]:
        return horizon(self.settings, self.clock())

    async def run_pass(
        self,
        tags: Mapping[str, TagInfo],
        origins: Mapping[str, datetime],
        checkpoints: Mapping[str, datetime],
    ) -> tuple[VerifyReport | None, bool]:
        """Verify the oldest due day; the report (None when nothing was due) and whether
        another pass may start at once."""
        start, end = self.horizon()
        mine = {w: o for w, o in origins.items() if w in tags}
        bounds = tag_bounds(mine, checkpoints, start, end, self.bucket_us)
        due = await asyncio.to_thread(self._due, bounds, start, end)
        report, more = None, False
        if due.height:
            day = int(due["bucket_start"].min()) // DAY_US * DAY_US  # type: ignore[arg-type]
            webids = due.filter(pl.col("bucket_start") < day + DAY_US)["tag_webid"].unique()
            chosen = {w: tags[w] for w in webids.to_list()}
            verifier = Verifier(
                summaries=self.summaries,
                recorded=RecordedSource.from_settings(self.client, self.settings, chosen),
                writer=self.writer,
                tags=chosen,
                bucket_us=self.bucket_us,
                shard=(self.settings.shard_index, self.settings.shard_count),
                bounds=bounds,
                observer=self.observer,
            )
            report = await verifier.verify(max(day, start), min(day + DAY_US, end))
            due = await asyncio.to_thread(self._due, bounds, start, end)
            # Another pass at once only when this one moved on: a day whose buckets keep
            # failing waits for the next interval.
            more = bool(due.height) and int(due["bucket_start"].min()) >= day + DAY_US  # type: ignore[arg-type]
        found = await asyncio.to_thread(self._completeness, bounds, start, end)
        self._report(found)
        return report, more

    def _latest(self, start: int, end: int) -> pl.DataFrame:
        if not self.writer.store.exists(VERIFICATION):
            return pl.DataFrame(
                schema={
                    "tag_webid": pl.String,
                    "bucket_start": pl.Datetime("us", "UTC"),
                    "bucket_end": pl.Datetime("us", "UTC"),
                    "result": pl.String,
                    "checked_at": pl.Datetime("us", "UTC"),
                }
            )
        return latest_results(self.writer.table(VERIFICATION), start, end)

    def _due(self, bounds: Mapping[str, tuple[int, int]], start: int, end: int) -> pl.DataFrame:
        """(tag_webid, bucket_start µs) of the horizon not verified since their last change."""
        keys = ["tag_webid", "bucket_start"]
        good = good_checks(self._latest(start, end))
        since = self._since
        if since is None:
            since = int(good["checked"].min()) if good.height else start  # type: ignore[arg-type]
        self._since = to_us(self.clock())
        table = (
            self.writer.table(PI_TIMESERIES) if self.writer.store.exists(PI_TIMESERIES) else None
        )
        found = changed_buckets(table, list(bounds), start, end, self.bucket_us, since)
        changed = pl.concat([self._changed, found]).group_by(keys).agg(pl.col("changed").max())
        joined = (
            tag_buckets(bounds, self.bucket_us)
            .join(good, on=keys, how="left")
            .join(changed, on=keys, how="left")
        )
        touched = pl.col("changed").is_not_null() & (
            pl.col("checked").is_null() | (pl.col("changed") > pl.col("checked"))
        )
        # Changes seen once stay due until a check comes after them.
        self._changed = joined.filter(touched).select(*keys, "changed")
        return joined.filter(pl.col("checked").is_null() | touched).select(keys)

    def _completeness(
        self, bounds: Mapping[str, tuple[int, int]], start: int, end: int
    ) -> Completeness:
        return completeness(self._latest(start, end), bounds, self.bucket_us)

    def _report(self, found: Completeness) -> None:
        age = 0.0
        if found.oldest_unverified is not None:
            age = (self.clock() - found.oldest_unverified).total_seconds()
        self.observer.completeness(str(self.settings.shard_index), found.share, age)
