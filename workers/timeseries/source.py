"""The seam between the time-series loop and where values come from.

A `Source` reads spans of many streams and answers rows in the `pi_timeseries` schema,
quarantine rows and counters; the loop checkpoints each span's end once the rows are
committed. `workers.timeseries.recorded.RecordedSource` reads `/streamsets/recorded`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Protocol

import pyarrow as pa


@dataclass
class ReadStats:
    """Counters of one read, for metrics, the `once` summary and tests."""

    calls: int = 0
    bytes: int = 0
    values: int = 0
    continued: int = 0  # streams that needed another page
    redelivered: int = 0  # values dropped because another page has them
    out_of_range: int = 0  # values a server sent outside the range or past maxCount
    set_aside: int = 0  # streams whose answer could not be read, left for a later read

    def add(self, other: ReadStats) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


@dataclass
class SourceResult:
    """Rows of every span (pi_timeseries schema), quarantine rows and counters.

    `set_aside` names the streams whose answer could not be read this time (after retries):
    none of their rows are here, and the loop must not move their checkpoints, so that a
    later poll reads their ranges again. Each has a quarantine row saying why.
    """

    rows: list[pa.Table] = field(default_factory=list)
    quarantine: list[pa.Table] = field(default_factory=list)
    stats: ReadStats = field(default_factory=ReadStats)
    set_aside: set[str] = field(default_factory=set)


class Source(Protocol):
    """Reads values of streams over ranges.

    `read` takes (webid, start µs exclusive, end µs inclusive) and returns every value in
    each range it could read; a range it could not read in full is quarantined, never
    raised on (each source documents when). `rates` is the values per second it saw per
    WebID, which the loop uses to size batches.
    """

    @property
    def rates(self) -> Mapping[str, float]: ...

    async def read(self, spans: Sequence[tuple[str, int, int]]) -> SourceResult: ...
