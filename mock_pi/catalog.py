"""The simulated PI Data Archive's points: a pure function of (seed, index), built lazily.

A million points cost nothing until asked for; `point(i)`, `by_webid()` and `by_name()`
are O(1), `matching()` walks names without keeping them.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import polars as pl

from mock_pi import webid

SERVER_NAME = "MOCKPI01"


@dataclass(frozen=True, slots=True)
class PointKind:
    prefix: str
    point_type: str  # PI point type: Float32, Float64, Int32, Digital, String
    units: str
    zero: float
    span: float
    digital_set: str | None = None


# Weighted mix of instrument kinds, as in a process plant.
KINDS: tuple[tuple[PointKind, int], ...] = (
    (PointKind("TI", "Float32", "°C", 0.0, 400.0), 20),
    (PointKind("PI", "Float32", "bar", 0.0, 40.0), 12),
    (PointKind("LI", "Float32", "%", 0.0, 100.0), 8),
    (PointKind("FI", "Float64", "m3/h", 0.0, 1200.0), 15),
    (PointKind("AI", "Float64", "ppm", 0.0, 50.0), 5),
    (PointKind("JI", "Float64", "kW", 0.0, 5000.0), 5),
    (PointKind("SI", "Int32", "rpm", 0.0, 3600.0), 6),
    (PointKind("CNT", "Int32", "count", 0.0, 1_000_000.0), 4),
    (PointKind("XV", "Digital", "", 0.0, 0.0, "Valve"), 9),
    (PointKind("MTR", "Digital", "", 0.0, 0.0, "Motor"), 8),
    (PointKind("BATCH", "String", "", 0.0, 0.0), 4),
    (PointKind("MSG", "String", "", 0.0, 0.0), 4),
)
_KIND_TABLE: tuple[PointKind, ...] = tuple(k for k, w in KINDS for _ in range(w))

# State sets: (name, code) in code order, as PI enumeration sets.
DIGITAL_SETS: dict[str, tuple[str, ...]] = {
    "Valve": ("Closed", "Open", "Transit", "Fault"),
    "Motor": ("Stopped", "Running", "Tripped"),
}
# PI system states (the "SYSTEM" set) that replace a value with Good = false.
SYSTEM_STATES: dict[str, int] = {
    "I/O Timeout": 246,
    "Pt Created": 252,
    "Shutdown": 254,
    "Bad Input": 307,
}
SCAN_PERIODS: tuple[int, ...] = (1, 1, 2, 5, 5, 5, 10, 10, 30, 60)

# Original names, and names after a rename (mock_pi.point_changes).
NAME_RE = re.compile(r"^([A-Z]+)-(\d{7})(?:_R\d+)?\.PV$", re.IGNORECASE)


def mix(seed: int, *parts: object) -> int:
    """A stable 64-bit hash of the seed and parts (not Python's salted hash())."""
    key = f"{seed}:" + ":".join(map(str, parts))
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")


@dataclass(frozen=True, slots=True)
class Point:
    index: int
    point_id: int
    name: str
    webid: str
    kind: PointKind
    scan_seconds: float  # SCAN_PERIODS entry times the catalog's scan scale
    descriptor: str
    late: bool  # holds its values back (interface outage), see mock_pi settings

    @property
    def point_type(self) -> str:
        return self.kind.point_type

    @property
    def units(self) -> str:
        return self.kind.units

    @property
    def digital_set(self) -> str | None:
        return self.kind.digital_set

    @property
    def path(self) -> str:
        return f"\\\\{SERVER_NAME}\\{self.name}"


class Catalog:
    """All points of the one simulated data server."""

    def __init__(
        self, seed: int, tag_count: int, late_fraction: float = 0.0, scan_scale: float = 1.0
    ) -> None:
        self.seed = seed
        self.tag_count = tag_count
        self.late_fraction = late_fraction
        self.scan_scale = scan_scale
        self.server_id: uuid.UUID = webid.stable_guid(seed, "dataserver", SERVER_NAME)
        self.server_webid = webid.data_server(self.server_id, SERVER_NAME)
        self.point = lru_cache(maxsize=200_000)(self._make_point)

    def __len__(self) -> int:
        return self.tag_count

    def _make_point(self, index: int) -> Point:
        if not 0 <= index < self.tag_count:
            raise IndexError(index)
        h = mix(self.seed, "point", index)
        kind = _KIND_TABLE[h % len(_KIND_TABLE)]
        name = f"{kind.prefix}-{index:07d}.PV"
        late = (mix(self.seed, "late", index) % 1_000_000) < self.late_fraction * 1_000_000
        return Point(
            index=index,
            point_id=index + 1,
            name=name,
            webid=webid.pi_point(self.server_id, index + 1, SERVER_NAME, name),
            kind=kind,
            scan_seconds=SCAN_PERIODS[(h >> 16) % len(SCAN_PERIODS)] * self.scan_scale,
            descriptor=f"{kind.prefix} instrument {index}",
            late=late,
        )

    def by_webid(self, web_id: str) -> Point | None:
        pid = webid.point_id_of(web_id)
        if pid is None or not 1 <= pid <= self.tag_count:
            return None
        point = self.point(pid - 1)
        return point if point.webid == web_id else None

    def by_name(self, name: str) -> Point | None:
        m = NAME_RE.match(name.strip())
        if not m:
            return None
        index = int(m.group(2))
        if index >= self.tag_count:
            return None
        point = self.point(index)
        return point if point.name.upper() == name.strip().upper() else None

    def matching(self, name_filter: str = "*") -> Iterator[Point]:
        """Points whose name matches a PI name filter (`*`, `?`; case-insensitive)."""
        if name_filter in ("", "*"):
            yield from (self.point(i) for i in range(self.tag_count))
            return
        for i in self.matching_indices(name_filter):
            yield self.point(int(i))

    def page(self, name_filter: str, start: int, count: int) -> list[Point]:
        """One page of `matching()`: O(page) for `*`, so paging a million tags stays linear."""
        if name_filter in ("", "*"):
            return [self.point(i) for i in range(start, min(start + count, self.tag_count))]
        return [
            self.point(int(i)) for i in self.matching_indices(name_filter)[start : start + count]
        ]

    def matching_indices(self, name_filter: str) -> np.ndarray:
        """Indices of the points a filter matches, cached for a few filters (paging re-asks)."""
        return self._matching(name_filter.upper())

    @lru_cache(maxsize=8)  # noqa: B019 - one catalog per process, kept for its lifetime
    def _matching(self, name_filter: str) -> np.ndarray:
        pattern = "".join(
            ".*" if c == "*" else "." if c == "?" else re.escape(c) for c in name_filter
        )
        hits = self._names().str.contains(f"(?s)^{pattern}$")
        return np.flatnonzero(hits.to_numpy())

    @lru_cache(maxsize=1)  # noqa: B019 - one catalog per process, kept for its lifetime
    def _names(self) -> pl.Series:
        """All point names, upper-case, built once on the first filtered search."""
        prefixes = np.array([k.prefix for k in _KIND_TABLE], dtype=object)
        kinds = np.fromiter(
            (mix(self.seed, "point", i) % len(_KIND_TABLE) for i in range(self.tag_count)),
            dtype=np.int64,
            count=self.tag_count,
        )
        frame = pl.DataFrame({"prefix": prefixes[kinds], "index": np.arange(self.tag_count)})
        return frame.select(
            pl.concat_str(
                [
                    pl.col("prefix"),
                    pl.lit("-"),
                    pl.col("index").cast(pl.String).str.zfill(7),
                    pl.lit(".PV"),
                ]
            )
        ).to_series()
