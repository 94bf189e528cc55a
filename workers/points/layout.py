"""The layout of `pi_points`: partitioned by `point_bucket`, so shards' MERGEs do not race.

`point_bucket` is a fixed hash of a point's key (CRC-32 of `<data_server>/<point_id>`,
modulo `POINT_BUCKETS`): it never changes for a point, whatever the shard layout. Shard i
of n syncs the points of the buckets b with b mod n == i, and its MERGE names the buckets it
writes (`t.point_bucket IN (...)`). delta-rs checks a MERGE against concurrent commits only
within what its predicate reads, so MERGEs of disjoint buckets never conflict, while two
shards that meet on a bucket (for instance while a reshard rolls out) still conflict, and the
loser computes its diff again on the newer snapshot. With more shards than buckets some
shards own none.

A table an older pidelta created (unpartitioned, no `point_bucket`) is migrated by the first
sync: one overwrite commit of the same rows with their buckets, partitioned; shards that race
on it find it done. Older versions stay readable by time travel.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterable

import pyarrow as pa
from deltalake import CommitProperties, write_deltalake
from deltalake.exceptions import DeltaError

from workers.errors import SinkError
from workers.lake.schemas import PI_POINTS
from workers.lake.tables import POINT_TABLES, TableStore

log = logging.getLogger(__name__)

POINT_BUCKETS = 128
BUCKET = "point_bucket"


def bucket_of(data_server: str, point_id: int) -> int:
    """The bucket of a point's key: stable across processes, versions and renames."""
    return zlib.crc32(f"{data_server}/{point_id}".encode()) % POINT_BUCKETS


def buckets_of(data_servers: Iterable[str], point_ids: Iterable[int]) -> list[int]:
    return [bucket_of(d, p) for d, p in zip(data_servers, point_ids, strict=True)]


def owned_buckets(shard_index: int, shard_count: int) -> list[int]:
    """The buckets shard `shard_index` of `shard_count` syncs."""
    return [b for b in range(POINT_BUCKETS) if b % shard_count == shard_index]


def in_buckets(buckets: Iterable[int]) -> str:
    """The MERGE predicate part that confines its conflict check to these buckets."""
    listed = ", ".join(str(b) for b in sorted(set(buckets)))
    return f"t.{BUCKET} IN ({listed})"


def migrate(store: TableStore) -> bool:
    """Bring an unpartitioned `pi_points` to the bucket layout in one commit; True if done
    here."""
    if not store.exists(PI_POINTS):
        return False
    table = store.open(PI_POINTS)
    if BUCKET in table.schema().to_arrow().names:
        return False
    spec = POINT_TABLES[PI_POINTS]
    rows = table.to_pyarrow_table()
    buckets = buckets_of(rows["data_server"].to_pylist(), rows["point_id"].to_pylist())
    rows = rows.append_column(BUCKET, pa.array(buckets, pa.int32()))
    try:
        write_deltalake(
            table,
            rows.select(spec.schema.names).cast(spec.schema),
            mode="overwrite",
            schema_mode="overwrite",
            partition_by=list(spec.partition_by),
            storage_options=store.options(PI_POINTS),
            commit_properties=CommitProperties(
                custom_metadata={"pidelta.operation": "pi_points bucket layout"},
                max_commit_retries=0,
            ),
        )
    except (DeltaError, OSError) as exc:
        if BUCKET in store.open(PI_POINTS).schema().to_arrow().names:
            return False  # another shard migrated it first
        raise SinkError(f"cannot migrate to the bucket layout: {exc}", table=PI_POINTS) from exc
    log.info("pi_points migrated to the bucket layout: %d rows rewritten", rows.num_rows)
    return True
