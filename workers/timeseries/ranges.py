"""Rows a server sent outside what was asked: values past `endTime` (a proxy cache, a
broken server) or before `startTime`, which would be stored twice or in another batch's
range. Checked on the decoded columns, so the usual answer costs one vectorised pass.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


@dataclass(frozen=True, slots=True)
class Bounds:
    """The times one stream's answer may hold: after `start` (from `start` on when
    `inclusive`, as a continuation page reads), up to `end`."""

    webid: str
    start: int
    end: int
    inclusive: bool


def outside(table: pa.Table, bounds: Iterable[Bounds]) -> np.ndarray | None:
    """Mask of the rows of `table` (tag_webid, timestamp) outside their stream's bounds;
    None when every row is inside (the usual case). Rows without a timestamp are inside:
    the decoder has quarantined them already."""
    spans = list(bounds)
    if table.num_rows == 0 or not spans:
        return None
    webids = pa.array([b.webid for b in spans], pa.string())
    first = np.array([b.start + (0 if b.inclusive else 1) for b in spans], dtype=np.int64)
    last = np.array([b.end for b in spans], dtype=np.int64)
    index = pc.index_in(table.column("tag_webid"), value_set=webids)
    stamps = table.column("timestamp").cast(pa.int64())
    known = pc.and_(pc.is_valid(index), pc.is_valid(stamps)).to_numpy(zero_copy_only=False)
    at = pc.fill_null(index, 0).to_numpy(zero_copy_only=False)
    ts = pc.fill_null(stamps, 0).to_numpy(zero_copy_only=False)
    mask = known & ((ts < first[at]) | (ts > last[at]))
    return mask if mask.any() else None
