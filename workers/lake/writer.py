"""The one Delta writer: every commit pidelta makes to a table's rows goes through here.

What every write needs is done once: rows cast to the registry's schema and written with its
partitioning and Parquet settings, the commit's metadata, the retries, vended credentials
renewed when the store refused them, and the observer told of each commit.

Idempotence: an append may carry `Transaction(app_id, batch_id)` in the same commit as its
rows. delta-rs records it but does not refuse a stale version, so `append` reads
`transaction_version(app_id)` first and skips a batch already in the table: a batch re-run
after a crash lands once. A commit may cover several consecutive planned batches; its
version is then the highest batch id it holds, and every lower id counts as committed.

Retries: delta-rs retries a commit that lost a race itself (`max_commit_retries`). A commit
it refuses because a concurrent commit outdated its snapshot (a metadata change, or a
delete, which delta-rs 1.x counts against a blind append too) is made again here on a fresh
snapshot, for the writes that read nothing (appends, column metadata): redoing them is right
whatever the conflict was. Overwrites, replaces and merges read the table, so they are not.
Each such retry first waits a jittered, exponentially growing pause ("full jitter"), so
dozens of shards refused by the same commit do not race again in step.

Contention is reported per table: every commit that landed past the version after its
snapshot met that many concurrent commits (delta-rs checked each for conflicts and stepped
over it), a refused commit met one, and each retry on a fresh snapshot is counted too.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Self, TypeVar

import pyarrow as pa
from deltalake import (
    CommitProperties,
    DeltaTable,
    PostCommitHookProperties,
    Transaction,
    write_deltalake,
)
from deltalake.exceptions import CommitFailedError, DeltaError
from deltalake.table import TableMerger

from workers.errors import SinkError
from workers.lake.tables import ALL_TABLES, TableSpec, TableStore
from workers.observe import CommitObserver
from workers.settings import Settings

# How many times a write whose snapshot a concurrent commit outdated is tried in all.
REBASE_ATTEMPTS = 5
# Pause before retry n (1, 2, ...): uniform in [0, min(cap, base * 2**(n - 1))] seconds.
BACKOFF_BASE = 0.1
BACKOFF_CAP = 5.0

T = TypeVar("T")

# One turn at a time per process on the tables at writeSerializable isolation.
_TURNS = {name: threading.Lock() for name, spec in ALL_TABLES.items() if spec.serializes_writes}
_NO_TURNS = contextlib.nullcontext()


def outdated(exc: BaseException) -> bool:
    """A commit refused because a concurrent commit outdated its snapshot."""
    return isinstance(exc, CommitFailedError)


def backoff(retry: int) -> float:
    """Seconds to wait before retry `retry` (1-based): full jitter over a doubling ceiling."""
    return random.uniform(0.0, min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (retry - 1)))


class DeltaWriter:
    """Writes Arrow tables to the Delta tables of one `TableStore`."""

    def __init__(
        self,
        store: TableStore,
        *,
        max_commit_retries: int = 100,
        observer: CommitObserver | None = None,
        shard: str = "0",
    ) -> None:
        self.store = store
        self.max_commit_retries = max_commit_retries
        self.observer = observer
        self.shard = shard
        self._tables: dict[str, DeltaTable] = {}

    @classmethod
    def from_settings(
        cls, settings: Settings, store: TableStore, observer: CommitObserver | None = None
    ) -> Self:
        return cls(
            store,
            max_commit_retries=settings.max_commit_retries,
            observer=observer,
            shard=str(settings.shard_index),
        )

    def table(self, name: str) -> DeltaTable:
        """The table at its latest version (cached, refreshed incrementally, re-opened when
        its vended credentials were renewed)."""
        table = self._tables.get(name)
        table = self.store.open(name) if table is None else self.store.refresh(name, table)
        self._tables[name] = table
        return table

    def committed_version(self, name: str, app_id: str) -> int | None:
        """Highest batch id of `app_id` committed to the table, None when none."""
        return self.table(name).transaction_version(app_id)

    def append(
        self,
        name: str,
        rows: pa.Table,
        app_id: str | None = None,
        batch_id: int | None = None,
        *,
        check: Callable[[DeltaTable], None] | None = None,
    ) -> bool:
        """Append `rows` unless batch `batch_id` of `app_id` is already in; True if written.

        Without `app_id` the append is blind (no app transaction). An empty table writes
        nothing (there is nothing to make idempotent). Each attempt reads the batch's
        transaction version again, so a batch lands once whatever happened before; `check`
        runs on the very snapshot each attempt commits against (the sink's fence).
        """
        what = "append" if app_id is None else f"append of batch {batch_id} for {app_id}"

        def attempt(table: DeltaTable) -> bool:
            if app_id is not None and batch_id is not None:
                done = table.transaction_version(app_id)
                if done is not None and done >= batch_id:
                    return False
            if rows.num_rows == 0:
                return False
            if check is not None:
                check(table)
            metadata: dict[str, str] = {}
            transactions = None
            if app_id is not None and batch_id is not None:
                metadata = {"pidelta.app_id": app_id, "pidelta.batch_id": str(batch_id)}
                transactions = [Transaction(app_id, batch_id)]
            began = time.perf_counter()
            self._write(
                table, name, rows, "append", metadata, transactions=transactions, blind=True
            )
            self._observe(name, rows.num_rows, began, table)
            return True

        return self._commit(name, attempt, what, rebase=True)

    def overwrite(self, name: str, rows: pa.Table, metadata: Mapping[str, str]) -> int:
        """Replace the whole table by `rows` in one commit; the new version."""

        def attempt(table: DeltaTable) -> int:
            began = time.perf_counter()
            self._write(table, name, rows, "overwrite", metadata)
            self._observe(name, rows.num_rows, began, table)
            return table.version()

        return self._commit(name, attempt, "overwrite", rebase=False)

    def replace_rows(self, name: str, rows: pa.Table, predicate: str) -> None:
        """Atomically replace the rows matching `predicate` by `rows` (all must match it).

        A concurrent commit that touches the same rows makes this fail with SinkError and
        change nothing, so callers that only tidy up can ignore the error and retry later.
        """

        def attempt(table: DeltaTable) -> None:
            metadata = {"pidelta.operation": "compact"}
            self._write(table, name, rows, "overwrite", metadata, predicate=predicate, retries=0)

        self._commit(name, attempt, f"replace where {predicate}", rebase=False)

    def replace_where(
        self,
        spec: TableSpec | str,
        predicate: str,
        rows: pa.Table,
        app_id: str | None = None,
        version: int | None = None,
        *,
        snapshot: int | None = None,
        check: Callable[[DeltaTable], None] | None = None,
    ) -> bool:
        """In one commit, delete the rows matching `predicate` and write `rows` (each must
        match it), unless `version` of `app_id` is in already; True if written.

        The app transaction goes in the same commit, so a replace re-run after a crash
        lands once. Only the files holding matching rows are rewritten: put the partition
        columns in the predicate. A concurrent commit that touches those files makes it
        fail (SinkError), never half-apply; it reads the table, so it is not rebased.
        `snapshot`: the table version `rows` were computed from. The replace is committed
        against it, so delta-rs checks every commit since then for a conflict (against the
        latest version, a row another writer added in between would be deleted unseen).
        `check` runs on that snapshot (the sink's fence), as in `append`.
        """
        name = spec if isinstance(spec, str) else spec.name
        what = f"replace where {predicate}" if app_id is None else f"replace {version} of {app_id}"

        def attempt(table: DeltaTable) -> bool:
            if app_id is not None and version is not None:
                done = table.transaction_version(app_id)
                if done is not None and done >= version:
                    return False
            if snapshot is not None and table.version() != snapshot:
                table = self.store.open(name, snapshot)
            if check is not None:
                check(table)
            metadata: dict[str, str] = {"pidelta.operation": "replace"}
            transactions = None
            if app_id is not None and version is not None:
                metadata |= {"pidelta.app_id": app_id, "pidelta.batch_id": str(version)}
                transactions = [Transaction(app_id, version)]
            began = time.perf_counter()
            self._write(
                table,
                name,
                rows,
                "overwrite",
                metadata,
                predicate=predicate,
                transactions=transactions,
            )
            self._observe(name, rows.num_rows, began, table)
            return True

        return self._commit(name, attempt, what, rebase=False)

    def merge(
        self,
        name: str,
        source: pa.Table,
        predicate: str,
        clauses: Callable[[TableMerger], TableMerger],
        metadata: Mapping[str, str],
        *,
        transaction: Transaction | None = None,
    ) -> dict[str, Any]:
        """One MERGE of `source` (alias `s`) into the table (alias `t`) on `predicate`, with
        the `when_...` clauses `clauses` adds, and an app transaction in the same commit
        when given; delta-rs's merge metrics."""

        def attempt(table: DeltaTable) -> dict[str, Any]:
            began = time.perf_counter()
            read = table.version()
            merger = table.merge(
                source,
                predicate,
                source_alias="s",
                target_alias="t",
                commit_properties=self._properties(
                    metadata, transactions=[transaction] if transaction else None
                ),
            )
            metrics = clauses(merger).execute()
            self._raced(name, read, table.version())
            self._observe(name, source.num_rows, began, table)
            return metrics

        return self._commit(name, attempt, "merge", rebase=False)

    def set_column_metadata(
        self,
        name: str,
        column: str,
        metadata: Mapping[str, str],
        *,
        unless: Callable[[DeltaTable], bool],
        what: str,
    ) -> None:
        """Set metadata of one column, unless `unless(table)` says the latest snapshot needs
        no change (a racer set it first)."""

        def attempt(table: DeltaTable) -> None:
            if not unless(table):
                table.alter.set_column_metadata(
                    column,
                    dict(metadata),
                    commit_properties=CommitProperties(max_commit_retries=self.max_commit_retries),
                )

        self._commit(name, attempt, what, rebase=True)

    def _commit(
        self, name: str, attempt: Callable[[DeltaTable], T], what: str, *, rebase: bool
    ) -> T:
        """Run `attempt` on the latest snapshot: again on a fresh one when a concurrent commit
        outdated it (with `rebase`), once more after renewing refused vended credentials."""
        renewed = False
        tries = 1
        while True:
            table = self.table(name)
            try:
                return attempt(table)
            except (DeltaError, OSError) as exc:
                if outdated(exc) and self.observer is not None:
                    self.observer.commit_conflicts(name, 1)
                if rebase and outdated(exc) and tries < REBASE_ATTEMPTS:
                    if self.observer is not None:
                        self.observer.commit_retried(name)
                    time.sleep(backoff(tries))
                    tries += 1
                    continue
                if renewed or not self.store.renew_if_refused(name, table, exc):
                    raise SinkError(
                        f"{what} failed: {exc}", table=name, uri=self.store.uri(name)
                    ) from exc
                renewed = True
                self._tables.pop(name, None)

    def _write(
        self,
        table: DeltaTable,
        name: str,
        rows: pa.Table,
        mode: str,
        metadata: Mapping[str, str],
        *,
        predicate: str | None = None,
        retries: int | None = None,
        transactions: list[Transaction] | None = None,
        blind: bool = False,
    ) -> None:
        """`rows` in the registry's schema, partitioning and Parquet settings, one commit.

        An append is marked a blind append (`isBlindAppend`): on a table at
        `writeSerializable` isolation (pi_timeseries) another writer's replace is not
        refused for it (docs/DESIGN.md "Concurrent writers"). The commits of one process
        to such a table take turns, so none of its replaces passes over its own appends.
        """
        spec = ALL_TABLES[name]
        read = table.version()
        with _TURNS.get(name, _NO_TURNS):
            write_deltalake(
                table,
                rows.select(spec.schema.names).cast(spec.schema),
                mode=mode,  # type: ignore[arg-type]
                predicate=predicate,
                partition_by=list(spec.partition_by) or None,
                storage_options=self.store.options(name),
                writer_properties=spec.writer,
                commit_properties=self._properties(metadata, retries, transactions, blind),
                post_commithook_properties=PostCommitHookProperties(create_checkpoint=True),
            )
        self._raced(name, read, table.version())
        table.update_incremental()

    def _properties(
        self,
        metadata: Mapping[str, str],
        retries: int | None = None,
        transactions: list[Transaction] | None = None,
        blind: bool = False,
    ) -> CommitProperties:
        custom: dict[str, Any] = dict(metadata)
        if blind:
            custom["isBlindAppend"] = True
        return CommitProperties(
            custom_metadata=custom,
            max_commit_retries=self.max_commit_retries if retries is None else retries,
            app_transactions=transactions,
        )

    def _raced(self, name: str, read: int, landed: int) -> None:
        """Report the concurrent commits a commit stepped over (the write leaves the table
        at the version it landed at; with no racer that is the one after its snapshot)."""
        if landed > read + 1 and self.observer is not None:
            self.observer.commit_conflicts(name, landed - read - 1)

    def _observe(self, name: str, rows: int, began: float, table: DeltaTable) -> None:
        if self.observer is not None:
            self.observer.committed(
                name, self.shard, rows, time.perf_counter() - began, table.version()
            )
