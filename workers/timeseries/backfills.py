"""The range of one `pidelta backfill`: capped at what PI can hold, and recorded.

A backfill records per-tag checkpoints like a live run; were its end in the future, they
would claim values PI has not recorded yet, and a later run would skip them for good. So
the end is capped at now minus the safety lag, and the range asked for goes into
`_pidelta_backfills`: the checkpoints then show how far it got, `status` how much is left,
and the same command run later carries on from the cap.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import pyarrow as pa

from workers.errors import ConfigError
from workers.lake.schemas import BACKFILLS, BACKFILLS_SCHEMA, UTC_US
from workers.lake.writer import DeltaWriter


@dataclass(frozen=True, slots=True)
class BackfillRange:
    """`[start, end]` as asked; this run loads `[start, until]`."""

    start: datetime
    end: datetime
    until: datetime

    @property
    def capped(self) -> bool:
        return self.until < self.end


def backfill_range(
    start: datetime, end: datetime, now: datetime, safety_lag: timedelta
) -> BackfillRange:
    """The range this run may load; ConfigError when PI can hold none of it yet."""
    ready = now - safety_lag
    if start >= ready:
        raise ConfigError(
            f"the range starts at {iso(start)}, not before now minus the safety lag "
            f"({iso(ready)}): PI holds none of it yet (PIDELTA_SAFETY_LAG="
            f"{safety_lag.total_seconds():g})"
        )
    return BackfillRange(start, end, min(end, ready))


def record_request(sink: DeltaWriter, app_id: str, rng: BackfillRange, at: datetime) -> None:
    """Append the range asked for and where this run stops (one row per run)."""
    rows = pa.Table.from_pydict(
        {
            "app_id": [app_id],
            "range_start": pa.array([rng.start], UTC_US),
            "range_end": pa.array([rng.end], UTC_US),
            "loaded_until": pa.array([rng.until], UTC_US),
            "requested_at": pa.array([at], UTC_US),
        },
        schema=BACKFILLS_SCHEMA,
    )
    sink.append(BACKFILLS, rows)


def iso(moment: datetime) -> str:
    """UTC, seconds, `Z`: how pidelta prints a moment to people."""
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")
