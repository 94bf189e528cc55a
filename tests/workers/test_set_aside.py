"""`_pidelta_set_aside` on a real Delta table: noted ranges stay open, for any worker that
starts later, until resolved."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from workers.lake.tables import TableStore
from workers.lake.writer import DeltaWriter
from workers.timeseries.plan import LIVE, REREAD, TagRange
from workers.timeseries.set_aside import SetAside

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def test_noted_ranges_are_due_until_resolved_and_survive_a_restart(tmp_path: Path) -> None:
    store = TableStore(str(tmp_path / "lake"))
    store.create_all()
    aside = SetAside(DeltaWriter(store))
    a = TagRange("A", T0, T0 + timedelta(minutes=1), LIVE)
    b = TagRange("B", T0, T0 + timedelta(minutes=2), LIVE)
    aside.note("pidelta-ts-0-of-1", 3, [a, b])
    as_reread = [TagRange(r.webid, r.start, r.end, REREAD) for r in (a, b)]
    assert aside.due({"A", "B", "C"}) == as_reread
    assert aside.due({"B"}) == as_reread[1:]
    restarted = SetAside(DeltaWriter(store))
    assert restarted.due({"A", "B"}) == as_reread
    restarted.resolve("pidelta-ts-0-of-1", 4, as_reread[:1])
    assert restarted.due({"A", "B"}) == as_reread[1:]
    assert SetAside(DeltaWriter(store)).due({"A", "B"}) == as_reread[1:]
