"""One sync of this shard's points into `pi_points`, and of the state sets.

Each shard syncs the points of the `point_bucket`s it owns (a fixed hash of the point's key,
see `layout`) and closes the current versions of its buckets' points PI no longer lists; so
the shards never touch the same point, their MERGEs name disjoint partitions and do not
conflict, and the table scales with them. A sync is one MERGE commit
through the one writer, computed against the table's latest snapshot (`history.diff`):
a crash before it lands leaves nothing, a crash after it leaves nothing more to do (the
next diff is empty), and a MERGE that lost a race with another shard's is computed again
on the newer snapshot. So each version lands exactly once whatever crashes.

`pi_digital_state_sets` is a snapshot of every data server's state sets, written by shard
0 only, in one overwrite commit and only when it differs from the table.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import polars as pl
import pyarrow as pa
from deltalake.table import TableMerger

from workers.errors import SinkError
from workers.lake.schemas import (
    PI_DIGITAL_STATE_SETS,
    PI_DIGITAL_STATE_SETS_SCHEMA,
    PI_POINTS,
    PI_POINTS_SCHEMA,
    UTC_US,
)
from workers.lake.tables import TableStore
from workers.lake.writer import DeltaWriter
from workers.observe import DimensionObserver
from workers.pi.client import PIClient
from workers.points.history import KEY, Changes, diff
from workers.points.layout import BUCKET, bucket_of, in_buckets, migrate, owned_buckets
from workers.points.source import read_points, read_state_sets
from workers.settings import Settings
from workers.timeseries.discovery import discover_tags

log = logging.getLogger(__name__)

MERGE_ATTEMPTS = 12  # dozens of shards syncing at once each lose races; ~3 min at most
MERGE_BACKOFF_CAP = 30.0
STATE_SET_SHARD = 0
VERSION_KEY = (
    "t.data_server = s.data_server AND t.point_id = s.point_id AND t.valid_from = s.valid_from"
)


@dataclass(frozen=True, slots=True)
class PointsSyncResult:
    points: int  # points of this shard PI serves
    opened: int
    changed: int
    deleted: int
    state_sets: int | None  # states written, None when unchanged or not this shard's
    requests: int  # /batch requests for the attributes
    seconds: float
    merge_attempts: int = 0  # MERGEs tried (1 + races lost); 0 when nothing changed


def now_us() -> int:
    return time.time_ns() // 1000


async def sync_points(
    settings: Settings,
    client: PIClient | None = None,
    observer: DimensionObserver | None = None,
    *,
    clock: Callable[[], int] = now_us,
) -> PointsSyncResult:
    """One sync: `pi_points` holds PI's points of this shard afterwards, with history.
    `clock` (epoch µs) stamps the versions: tests fix it."""
    if client is None:
        async with PIClient(settings) as own:
            return await sync_points(settings, own, observer, clock=clock)
    began = time.monotonic()
    writer = DeltaWriter.from_settings(settings, TableStore.from_settings(settings), observer)
    await asyncio.to_thread(migrate, writer.store)
    await asyncio.to_thread(writer.store.create_all, (PI_POINTS, PI_DIGITAL_STATE_SETS))
    tags = await discover_tags(client, settings)
    buckets = set(owned_buckets(settings.shard_index, settings.shard_count))
    mine = [t for t in tags if bucket_of(t.data_server, t.point_id) in buckets]
    served, requests = await read_points(client, settings, mine)
    alive = pl.DataFrame(
        {"data_server": [t.data_server for t in mine], "point_id": [t.point_id for t in mine]},
        schema={"data_server": pl.String, "point_id": pl.Int32},
    )
    changes, attempts = await asyncio.to_thread(_merge, writer, settings, served, alive, clock)
    state_sets = None
    if settings.shard_index == STATE_SET_SHARD:
        sets = await read_state_sets(client, settings)
        state_sets = await asyncio.to_thread(_write_state_sets, writer, sets, clock())
    result = PointsSyncResult(
        served.num_rows, changes.opened, changes.changed, changes.deleted, state_sets,
        requests, time.monotonic() - began, attempts,
    )  # fmt: skip
    if observer is not None:
        observer.points_synced(
            str(settings.shard_index), result.points,
            {"opened": result.opened, "changed": result.changed, "deleted": result.deleted},
            state_sets or 0, max(0, attempts - 1), result.seconds,
        )  # fmt: skip
    log.info(
        "points sync: %d points of shard %d, %d new, %d changed, %d deleted; state sets %s; "
        "%d batch requests in %.1f s",
        result.points, settings.shard_index, result.opened, result.changed, result.deleted,
        "unchanged" if state_sets is None else f"{state_sets} states", requests, result.seconds,
    )  # fmt: skip
    return result


def _merge(
    writer: DeltaWriter,
    settings: Settings,
    served: pa.Table,
    alive: pl.DataFrame,
    clock: Callable[[], int],
) -> tuple[Changes, int]:
    """Diff against the latest snapshot and MERGE, again on a newer one after a lost race;
    the changes and the MERGEs tried (0 when there was nothing to write)."""
    mine = owned_buckets(settings.shard_index, settings.shard_count)
    for attempt in range(1, MERGE_ATTEMPTS + 1):
        current = _current(writer, mine)
        gone = _gone(current, alive)
        changes = diff(served, current, gone, clock())
        if changes.empty:
            return changes, attempt - 1
        # Naming the buckets written confines delta-rs's conflict check to them (`layout`).
        touched = in_buckets(changes.rows[BUCKET].to_pylist())
        predicate = f"{touched} AND t.{BUCKET} = s.{BUCKET} AND {VERSION_KEY}"
        try:
            writer.merge(PI_POINTS, changes.rows, predicate, _upsert, _metadata(settings))
            return changes, attempt
        except SinkError as exc:
            if attempt == MERGE_ATTEMPTS:
                raise
            log.info("points merge lost a race (%s), computed again", exc)
            # Full jitter, doubling: the shards that lost spread out instead of racing again.
            time.sleep(random.uniform(0.1, min(MERGE_BACKOFF_CAP, 0.5 * 2**attempt)))
    raise AssertionError("unreachable")


def _upsert(merger: TableMerger) -> TableMerger:
    return merger.when_matched_update_all().when_not_matched_insert_all()


def _metadata(settings: Settings) -> dict[str, str]:
    return {"pidelta.points.shard": f"{settings.shard_index}-of-{settings.shard_count}"}


def _current(writer: DeltaWriter, buckets: list[int]) -> pa.Table:
    """The current versions of the points of `buckets` (the partitions this shard owns)."""
    if not buckets:
        return PI_POINTS_SCHEMA.empty_table()
    return writer.table(PI_POINTS).to_pyarrow_table(
        filters=[(BUCKET, "in", buckets), ("is_current", "=", True)]
    )


def _gone(current: pa.Table, alive: pl.DataFrame) -> pa.Table:
    """Keys of this shard's current versions (its buckets) that PI no longer lists."""
    cur = pl.from_arrow(current.select(KEY))
    return cur.join(alive, on=KEY, how="anti").select(KEY).to_arrow()


def _write_state_sets(writer: DeltaWriter, sets: pa.Table, synced_at: int) -> int | None:
    """Overwrite the state sets when they differ from the table; states written, or None."""
    order = [("data_server", "ascending"), ("set_name", "ascending"), ("code", "ascending")]
    content = [f.name for f in PI_DIGITAL_STATE_SETS_SCHEMA if f.name != "synced_at"]
    old = writer.table(PI_DIGITAL_STATE_SETS).to_pyarrow_table(columns=content)
    new = sets.select(content).cast(PI_DIGITAL_STATE_SETS_SCHEMA.remove(6))
    if old.sort_by(order).equals(new.sort_by(order).cast(old.schema)):
        return None
    stamp = pa.array([synced_at] * sets.num_rows, pa.int64()).cast(UTC_US)
    writer.overwrite(PI_DIGITAL_STATE_SETS, new.append_column("synced_at", stamp),
                     {"pidelta.operation": "state sets"})  # fmt: skip
    return sets.num_rows
