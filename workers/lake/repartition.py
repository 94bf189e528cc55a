"""The rewrite of a state table an older pidelta created unpartitioned (docs/DESIGN.md
"Exactly once"): `_pidelta_batches` and `_pidelta_checkpoints` are partitioned by app id so
that a shard's fold rewrites only its own partition.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import DeltaError

from workers.errors import SinkError


class Store(Protocol):
    """What of `TableStore` a repartition uses."""

    def open(self, name: str) -> DeltaTable: ...

    def options(self, name: str) -> dict[str, str] | None: ...

    def uri(self, name: str) -> str: ...


log = logging.getLogger("pidelta.lake")

# How many times a repartition is tried on a fresh snapshot before giving up.
REPARTITION_ATTEMPTS = 20


def partitions(table: DeltaTable) -> list[str]:
    return list(table.metadata().partition_columns)


def repartition(store: Store, name: str, schema: pa.Schema, partition_by: tuple[str, ...]) -> None:
    """Rewrite table `name` partitioned by `partition_by`, every row and app transaction kept.

    The rewrite is one overwrite commit that must be the very next version after the
    snapshot it copied (no commit retries): a row another worker appended meanwhile makes it
    fail, and it is made again on a fresh snapshot, so no row is lost. App transactions live
    in the log, not in files: they stay. Shards starting together race; a loser finds the
    table partitioned.
    """
    wanted = list(partition_by)
    for attempt in range(1, REPARTITION_ATTEMPTS + 1):
        table = store.open(name)
        if partitions(table) == wanted:
            return
        rows = table.to_pyarrow_table().select(schema.names).cast(schema)
        try:
            write_deltalake(
                table,
                rows,
                mode="overwrite",
                schema_mode="overwrite",
                partition_by=wanted,
                storage_options=store.options(name),
                commit_properties=CommitProperties(
                    max_commit_retries=0,
                    custom_metadata={"pidelta.operation": "repartition"},
                ),
            )
        except (DeltaError, OSError) as exc:
            log.info("%s: repartition met a concurrent commit (try %d): %s", name, attempt, exc)
            time.sleep(min(2.0, 0.1 * attempt))
            continue
        log.warning(
            "%s: rewritten partitioned by %s (%d rows; made by an older pidelta)",
            name,
            ", ".join(wanted),
            rows.num_rows,
        )
        return
    raise SinkError(
        f"cannot repartition by {', '.join(wanted)}: other writers commit without pause; "
        "stop the workers of the older pidelta version and start again",
        table=name,
        uri=store.uri(name),
    )
