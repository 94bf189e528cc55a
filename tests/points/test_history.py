"""The SCD2 diff on its own: where versions start when PI's change date does not help."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from workers.lake.schemas import PI_POINTS_SCHEMA
from workers.points.history import ATTRIBUTES, KEY, diff

US = 1_000_000
NOW = 1_780_000_000 * US


def moment(us: int) -> datetime:
    return datetime.fromtimestamp(us / US, UTC)


def served(**changes: Any) -> pa.Table:
    row: dict[str, Any] = {name: None for name in ATTRIBUTES}
    row.update(data_server="S", point_id=7, tag_webid="W7", tag_name="TI-7.PV",
               engineering_units="°C", change_date=moment(NOW - 3600 * US))  # fmt: skip
    row.update(changes)
    schema = pa.schema([PI_POINTS_SCHEMA.field(n) for n in ATTRIBUTES])
    return pa.Table.from_pylist([row], schema=schema)


def no_keys() -> pa.Table:
    return pa.table(
        {"data_server": pa.array([], pa.string()), "point_id": pa.array([], pa.int32())}
    )


def empty() -> pa.Table:
    return PI_POINTS_SCHEMA.empty_table()


def test_first_version_starts_at_pis_change_date_never_after_now() -> None:
    first = diff(served(), empty(), no_keys(), NOW)
    (row,) = first.rows.to_pylist()
    assert (first.opened, row["valid_from"], row["is_current"]) == (1, moment(NOW - 3600 * US),
                                                                      True)  # fmt: skip
    future = diff(served(change_date=moment(NOW + US)), empty(), no_keys(), NOW)
    assert future.rows.to_pylist()[0]["valid_from"] == moment(NOW)
    unknown = diff(served(change_date=None), empty(), no_keys(), NOW)
    assert unknown.rows.to_pylist()[0]["valid_from"] == moment(NOW)


def test_a_change_pi_dates_no_later_opens_at_the_sync_time() -> None:
    current = diff(served(), empty(), no_keys(), NOW - 60 * US).rows
    # Units changed, but PI's change date did not move: the sync's time is the boundary.
    changed = diff(served(engineering_units="°F"), current, no_keys(), NOW)
    closed, opened = changed.rows.to_pylist()
    assert changed.changed == 1
    assert (closed["valid_to"], closed["is_current"], closed["engineering_units"]) == (
        moment(NOW), False, "°C")  # fmt: skip
    assert (opened["valid_from"], opened["engineering_units"]) == (moment(NOW), "°F")
    # Only PI's change date (or changer) moved: no new version.
    same = diff(served(change_date=moment(NOW - 10 * US), changer="x"), current, no_keys(), NOW)
    assert same.empty


def test_deletion_closes_only_the_keys_given() -> None:
    current = diff(served(), empty(), no_keys(), NOW - 60 * US).rows
    kept = diff(served().slice(0, 0), current, no_keys(), NOW)
    assert kept.empty  # another shard's point, or still listed: not this diff's to close
    gone = pa.table({k: current[k] for k in KEY})
    deleted = diff(served().slice(0, 0), current, gone, NOW)
    (row,) = deleted.rows.to_pylist()
    assert deleted.deleted == 1
    assert (row["valid_to"], row["deleted_at"], row["is_current"]) == (moment(NOW), moment(NOW),
                                                                       False)  # fmt: skip
