"""A `pi_points` an older pidelta wrote (unpartitioned, no `point_bucket`) is migrated by the
next sync in one commit: same rows, their buckets added, partitioned; the history goes on
from it. Against mock-pi over HTTP."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from deltalake import DeltaTable, write_deltalake

from tests.points.test_points_sync import (
    PERIOD,
    TAGS,
    rows,
    served,  # noqa: F401 (fixture)
    settings_for,
)
from workers.lake.schemas import PI_POINTS
from workers.points.layout import BUCKET, bucket_of
from workers.points.sync import sync_points


async def test_an_older_table_is_migrated_to_the_bucket_layout(
    served: Callable[..., Any],  # noqa: F811
    tmp_path: Any,
) -> None:
    url, clock, _ = await served(point_changes=0.4, point_change_seconds=PERIOD)
    new, old = str(tmp_path / "new"), str(tmp_path / "old")
    await sync_points(settings_for(url, new), clock=clock.us)
    # What an older pidelta left: the same rows, without the bucket, unpartitioned.
    before = DeltaTable(f"{new}/{PI_POINTS}").to_pyarrow_table().drop_columns([BUCKET])
    write_deltalake(f"{old}/{PI_POINTS}", before)

    clock.t += 2 * PERIOD  # renames, unit changes and deletions since
    results = [await sync_points(settings_for(url, t), clock=clock.us) for t in (new, old)]
    assert results[0].changed + results[0].deleted > 0
    assert [(r.opened, r.changed, r.deleted) for r in results[1:]] == [
        (results[0].opened, results[0].changed, results[0].deleted)
    ]
    migrated = DeltaTable(f"{old}/{PI_POINTS}")
    assert migrated.metadata().partition_columns == [BUCKET]
    ops = [h["operation"] for h in migrated.history()]
    assert ops == ["MERGE", "WRITE", "WRITE"]  # newest first: synced, migrated, older write

    def key(r: dict[str, Any]) -> tuple:
        return (r["point_id"], r["valid_from"])

    found, expected = sorted(rows(old), key=key), sorted(rows(new), key=key)
    assert len(found) > TAGS
    assert found == expected
    assert all(r[BUCKET] == bucket_of(r["data_server"], r["point_id"]) for r in found)
