"""Table maintenance: compaction, checkpoints, vacuum, log clean-up, on pidelta's tables only.

Why it cannot fail a writer: compaction commits a rewrite (remove small files, add large
ones, all marked as no data change) with delta-rs's conflict check. Shards append, and a
blind append does not conflict with a rewrite that changes no data, so their commits go
through whether they land before or after the compaction's. (Shards also fold their own
rows of the state tables, and followers replace edited rows of `pi_timeseries`: real
deletes. A rewrite of files one of those removed loses the race.) Compaction goes one
partition at a time, oldest first, committing what it has merged every `COMMIT_EVERY`: a
lost race costs that partition's last bins, not the pass. A partition that keeps losing is
retried on the new version `COMPACT_ATTEMPTS` times and then left to the next pass, logged
and reported as skipped, not failed.

Vacuum only deletes files the log removed longer than the retention ago (never below the
table's `delta.deletedFileRetentionDuration`), so files a writer is about to commit, and
files readers of recent versions need, stay.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta

import polars as pl
import pyarrow as pa
from deltalake import CommitProperties, DeltaTable
from deltalake.exceptions import CommitFailedError, DeltaError

from workers.errors import ConfigError
from workers.lake.tables import ALL_TABLES, TableStore
from workers.settings import Settings

log = logging.getLogger("pidelta.maintenance")

COMPACT_ATTEMPTS = 5
COMMIT_EVERY = timedelta(seconds=10)


@dataclass
class TableReport:
    """What one pass did to one table."""

    table: str
    version: int = -1
    files_before: int = 0
    files_after: int = 0
    files_added: int = 0
    files_removed: int = 0
    vacuumed: int = 0
    checkpoint: bool = False
    errors: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # left to the next pass, not failures
    seconds: dict[str, float] = field(default_factory=dict)  # per step


def owned_tables() -> list[str]:
    """The tables pidelta writes, and so the only ones it maintains."""
    return sorted(ALL_TABLES)


class Maintainer:
    """Runs maintenance passes over the tables of one `TableStore`."""

    def __init__(
        self,
        store: TableStore,
        *,
        target_size: int,
        retention_hours: float,
        max_commit_retries: int = 100,
    ) -> None:
        self.store = store
        self.target_size = target_size
        self.retention_hours = retention_hours
        self.max_commit_retries = max_commit_retries

    @classmethod
    def from_settings(cls, settings: Settings, store: TableStore | None = None) -> Maintainer:
        return cls(
            store or TableStore.from_settings(settings),
            target_size=settings.compact_target_size,
            retention_hours=settings.vacuum_retention_hours,
            max_commit_retries=settings.max_commit_retries,
        )

    def run(self, names: Iterable[str] | None = None) -> list[TableReport]:
        """One pass over the named tables (default: every owned table that exists)."""
        owned = set(owned_tables())
        reports = []
        for name in names or sorted(owned):
            if name not in owned:
                raise ConfigError(f"maintain: {name} is not a table pidelta owns")
            if not self.store.exists(name):
                continue
            reports.append(self.maintain(name))
        return reports

    def maintain(self, name: str) -> TableReport:
        """Compact, vacuum, checkpoint and clean the log of one table, each step only when it
        has work; errors are reported."""
        report = TableReport(name)
        table = self.store.open(name)
        report.files_before = len(table.file_uris())
        opened_at = table.version()
        # Each step costs requests (many, on object storage beside busy writers: a pass of
        # every step on every table took over 6 minutes on moto S3 beside 16 shards), so a
        # step runs only when it has something to do: compaction when a partition holds
        # small files to merge; the checkpoint and the log clean-up when this pass made a
        # commit (writers checkpoint every 100 commits and clean up then).
        if crowded := self._crowded(table):
            compact = functools.partial(self._compact, crowded)
            self._step("compact", compact, table, report)
            table = self.store.refresh(name, table)
        # Vacuum before the checkpoint: without `full`, it looks at files removed since the
        # last checkpoint, which are those compaction just removed.
        self._step("vacuum", self._vacuum, table, report)
        table = self.store.refresh(name, table)
        if table.version() != opened_at:
            self._step("checkpoint", self._checkpoint, table, report)
            self._step("log clean-up", self._cleanup, table, report)
        table = self.store.refresh(name, table)
        report.version = table.version()
        report.files_after = len(table.file_uris())
        # One line per table as it is done: a pass over slow storage can take minutes, and
        # the operator (or a drill) sees which step of which table it spends them on.
        log.info(
            "maintained %s: %d -> %d files, %d vacuumed%s%s (%s)",
            name,
            report.files_before,
            report.files_after,
            report.vacuumed,
            f", skipped: {'; '.join(report.skipped)}" if report.skipped else "",
            f", errors: {'; '.join(report.errors)}" if report.errors else "",
            ", ".join(f"{label} {sec:.1f} s" for label, sec in report.seconds.items()),
        )
        return report

    @staticmethod
    def _step(
        label: str,
        step: Callable[[DeltaTable, TableReport], None],
        table: DeltaTable,
        report: TableReport,
    ) -> None:
        """Run one step, timed; a failure is reported, and the next step still runs."""
        began = time.perf_counter()
        try:
            step(table, report)
        except (DeltaError, OSError) as exc:
            report.errors.append(f"{label}: {exc}")
            log.warning("maintenance of %s: %s failed: %s", report.table, label, exc)
        report.seconds[label] = time.perf_counter() - began

    def _crowded(self, table: DeltaTable) -> list[dict[str, str]]:
        """The partitions (their values, oldest first) holding two files or more below the
        target size; `[{}]` for an unpartitioned table that does. Read from the snapshot
        already loaded: no request."""
        actions = pl.from_arrow(pa.table(table.get_add_actions(flatten=True)))
        assert isinstance(actions, pl.DataFrame)
        if actions.height < 2:
            return []
        parts = [c for c in actions.columns if c.startswith("partition.")]
        small = actions.filter(pl.col("size_bytes") < self.target_size)
        if not parts:
            return [{}] if small.height >= 2 else []
        crowded = small.group_by(parts).len().filter(pl.col("len") >= 2).sort(parts)
        return [
            {column.removeprefix("partition."): str(value) for column, value in row.items()}
            for row in crowded.select(parts).iter_rows(named=True)
        ]

    def _compact(
        self, crowded: list[dict[str, str]], table: DeltaTable, report: TableReport
    ) -> None:
        for partition in crowded:
            self._compact_partition(table, partition, report)

    def _compact_partition(
        self, table: DeltaTable, partition: dict[str, str], report: TableReport
    ) -> None:
        where = ", ".join(f"{column}={value}" for column, value in partition.items()) or "table"
        filters = [(column, "=", value) for column, value in partition.items()] or None
        for attempt in range(1, COMPACT_ATTEMPTS + 1):
            try:
                metrics = table.optimize.compact(
                    partition_filters=filters,
                    target_size=self.target_size,
                    min_commit_interval=COMMIT_EVERY,
                    writer_properties=ALL_TABLES[report.table].writer,
                    commit_properties=CommitProperties(
                        custom_metadata={"pidelta.operation": "maintain"},
                        max_commit_retries=self.max_commit_retries,
                    ),
                )
            except CommitFailedError as exc:
                # Another writer removed files this rewrite read: again on the new version.
                log.info(
                    "compaction of %s (%s) lost a race (try %d): %s",
                    report.table,
                    where,
                    attempt,
                    exc,
                )
                time.sleep(0.2 * attempt)
                table.update_incremental()
                continue
            report.files_added += int(metrics.get("numFilesAdded", 0))
            report.files_removed += int(metrics.get("numFilesRemoved", 0))
            return
        report.skipped.append(
            f"compact {where}: other writers' commits met all {COMPACT_ATTEMPTS} attempts"
        )

    def _checkpoint(self, table: DeltaTable, report: TableReport) -> None:
        table.create_checkpoint()
        report.checkpoint = True

    def _vacuum(self, table: DeltaTable, report: TableReport) -> None:
        configured = table.metadata().configuration.get("delta.deletedFileRetentionDuration")
        hours = max(self.retention_hours, retention_hours(configured))
        deleted = table.vacuum(
            retention_hours=math.ceil(hours),
            dry_run=False,
            enforce_retention_duration=True,
            commit_properties=CommitProperties(custom_metadata={"pidelta.operation": "maintain"}),
        )
        report.vacuumed = len(deleted)

    def _cleanup(self, table: DeltaTable, report: TableReport) -> None:
        table.cleanup_metadata()


_UNIT_HOURS = {
    "second": 1 / 3600,
    "minute": 1 / 60,
    "hour": 1.0,
    "day": 24.0,
    "week": 168.0,
}


def retention_hours(interval: str | None) -> float:
    """A Delta `interval N unit` in hours; the protocol's default (one week) when unset."""
    if not interval:
        return 168.0
    parts = interval.lower().split()
    if len(parts) != 3 or parts[0] != "interval":
        return 168.0
    unit = parts[2].rstrip("s")
    try:
        return float(parts[1]) * _UNIT_HOURS[unit]
    except (KeyError, ValueError):
        return 168.0


def format_reports(reports: list[TableReport]) -> str:
    lines = ["table\tversion\tfiles_before\tfiles_after\tcompacted\tvacuumed\tskipped\terrors"]
    for r in reports:
        lines.append(
            f"{r.table}\t{r.version}\t{r.files_before}\t{r.files_after}\t"
            f"{r.files_removed}->{r.files_added}\t{r.vacuumed}\t"
            f"{'; '.join(r.skipped) or '-'}\t{'; '.join(r.errors) or '-'}"
        )
    return "\n".join(lines)
