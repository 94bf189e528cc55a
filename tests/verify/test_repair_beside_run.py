"""A repair beside a `run` of the same shard: pi_timeseries is at writeSerializable
isolation, so the repair is not refused for that run's blind append. When an append of its
own shard landed while it was written, its buckets are checked again (docs/DESIGN.md
"Concurrent writers"); another shard's append changes nothing of its tags."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pytest

from tests.workers.test_checkpoints import SEC, T, pi_values
from workers.lake.schemas import PI_TIMESERIES
from workers.lake.tables import TableStore
from workers.lake.writer import DeltaWriter
from workers.timeseries.plan import TagRange
from workers.verify.verifier import MET_OWN_APPEND, Verifier

HOUR_US = 3_600_000_000


@pytest.mark.parametrize(
    ("appender", "when", "failed"),
    [
        ("pidelta-ts-0-of-2", "before", True),
        ("pidelta-ts-1-of-2", "before", False),
        ("pidelta-ts-0-of-2", "after", False),  # it saw the repair's rows: nothing doubled
    ],
)
def test_a_repair_beside_an_append_of_its_shard_is_checked_again(
    tmp_path: Path, appender: str, when: str, failed: bool
) -> None:
    store = TableStore(str(tmp_path))
    store.create_all()
    writer = DeltaWriter(store)
    writer.append(PI_TIMESERIES, pi_values(TagRange("A", T, T + 20 * SEC)), "pidelta-ts-0-of-2", 1)
    verifier = Verifier(
        summaries=None,  # type: ignore[arg-type]
        recorded=None,  # type: ignore[arg-type]
        writer=writer,
        tags={},
        bucket_us=HOUR_US,
        shard=(0, 2),
    )
    original = writer.replace_where
    late = pi_values(TagRange("B", T + 20 * SEC, T + 25 * SEC))

    def beside(*args: Any, **kw: Any) -> bool:
        if when == "before":  # the run's append lands between the snapshot and the repair
            writer.append(PI_TIMESERIES, late, appender, 7)
            return original(*args, **kw)
        written = original(*args, **kw)
        writer.append(PI_TIMESERIES, late, appender, 7)
        return written

    writer.replace_where = beside  # type: ignore[method-assign]
    start = int(T.timestamp() * 1_000_000) // HOUR_US * HOUR_US
    fresh = pl.from_arrow(pi_values(TagRange("A", T, T + 30 * SEC))).with_columns(
        bucket_start=pl.lit(start, pl.Int64)
    )
    result = verifier._repair([("A", start, start + HOUR_US)], fresh)
    assert result == ({("A", start): MET_OWN_APPEND} if failed else {})
    table = pl.from_arrow(writer.table(PI_TIMESERIES).to_pyarrow_table())
    assert table.filter(pl.col("tag_webid") == "A").height == fresh.height
    assert table.filter(pl.col("tag_webid") == "B").height == late.num_rows
