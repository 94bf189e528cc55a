"""Points that change over time (`MOCK_PI_POINT_CHANGES`): renamed, re-unit-ed, or deleted
and re-created, at deterministic moments.

A hashed share of the points changes; each changing point has one kind of change and a
phase. Its k-th change (k = 1, 2, ...) happens at `anchor + phase + k * period` seconds,
the anchor being the start of the archive, so the state of a point is a pure function of
(seed, point, time) and a read shows the state at the moment of the request:
- rename: after change n the name is `TI-0000042_R<n>.PV` (the original name when n = 0);
- units: odd changes switch to the point kind's other units, even ones switch back (a
  point without units has its descriptor revised instead);
- recreate: odd changes delete the point, even ones create it again as a new point (new
  point ID, so a new WebID): generation g has point ID `index + 1 + g * tag_count`
  (g wraps around before the ID leaves Int32, as PI reuses IDs at last).
A WebID holds the point's current path, so a rename gives a new WebID; as PI does, a
WebID resolves by its IDs, so the old one still finds the renamed point. Name filters match
the original names. Creation and change dates are served as the point
attributes `creationdate` and `changedate`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from mock_pi import catalog as cat
from mock_pi import webid
from mock_pi.series import splitmix

NONE, RENAME, UNITS, RECREATE = 0, 1, 2, 3
ALT_UNITS: dict[str, str] = {
    "°C": "°F",
    "bar": "kPa",
    "%": "% open",
    "m3/h": "m3/d",
    "ppm": "mg/L",
    "kW": "MW",
    "rpm": "Hz",
    "count": "pcs",
}
# Points were built before the archive starts: creation in 2019-2020, a change since then.
BUILT_FROM = 1_546_300_800.0  # 2019-01-01T00:00:00Z
BUILT_SPREAD = 2 * 365 * 86_400
CHANGED_SPREAD = 365 * 86_400
_SALT = np.uint64(0xC6A4A7935BD1E995)
_SCALE = 1_000_000


@dataclass(frozen=True, slots=True)
class Version:
    """A point as it is at one moment: the served point (None while deleted) and dates."""

    point: cat.Point | None
    created_at: float  # seconds since the epoch
    changed_at: float


class PointChanges:
    """Which points change, how, and their state at any moment."""

    def __init__(self, catalog: cat.Catalog, fraction: float, period: float, anchor: float) -> None:
        self.catalog = catalog
        self.fraction = fraction
        self.period = period
        self.anchor = anchor
        self.key = np.uint64(catalog.seed & 0xFFFFFFFFFFFFFFFF)

    @property
    def enabled(self) -> bool:
        return self.fraction > 0

    def _hash(self, indices: np.ndarray) -> np.ndarray:
        return splitmix(indices.astype(np.uint64) * _SALT + self.key)

    def kinds(self, indices: np.ndarray) -> np.ndarray:
        """The change kind of each point (NONE for the points that never change)."""
        h = self._hash(indices)
        chosen = (h % np.uint64(_SCALE)).astype(np.int64) < round(self.fraction * _SCALE)
        kind = ((h >> np.uint64(24)) % np.uint64(3)).astype(np.int64) + 1
        return np.where(chosen, kind, NONE)

    def phases(self, indices: np.ndarray) -> np.ndarray:
        """Whole seconds in [0, period), so that change dates are whole seconds, as PI's."""
        h = self._hash(indices)
        return ((h >> np.uint64(32)) % np.uint64(max(1, int(self.period)))).astype(np.float64)

    def changes(self, indices: np.ndarray, t: float) -> np.ndarray:
        """How many changes each point has had at time t (0 for points that never change)."""
        n = np.floor((t - self.anchor - self.phases(indices)) / self.period).astype(np.int64)
        return np.where(self.kinds(indices) == NONE, 0, np.maximum(n, 0))

    def alive(self, indices: np.ndarray, t: float) -> np.ndarray:
        """False for the points deleted (and not yet re-created) at time t."""
        return ~((self.kinds(indices) == RECREATE) & (self.changes(indices, t) % 2 == 1))

    def change_time(self, index: int, k: int) -> float:
        """When change k (from 1) of a point happens."""
        return self.anchor + float(self.phases(np.array([index]))[0]) + k * self.period

    def version(self, index: int, t: float) -> Version:
        base = self.catalog.point(index)
        h = int(self._hash(np.array([index]))[0])
        created = BUILT_FROM + (h % BUILT_SPREAD)
        changed = created + ((h >> 20) % CHANGED_SPREAD)
        idx = np.array([index])
        kind = int(self.kinds(idx)[0]) if self.enabled else NONE
        n = int(self.changes(idx, t)[0]) if kind != NONE else 0
        if n == 0:
            return Version(base, created, changed)
        when = self.change_time(index, n)
        server = self.catalog.server_id
        if kind == RENAME:
            name = f"{base.kind.prefix}-{index:07d}_R{n}.PV"
            w = webid.pi_point(server, base.point_id, cat.SERVER_NAME, name)
            return Version(dataclasses.replace(base, name=name, webid=w), created, when)
        if kind == UNITS and not base.units:
            descriptor = f"{base.descriptor} (rev {n})"
            return Version(dataclasses.replace(base, descriptor=descriptor), created, when)
        if kind == UNITS:
            units = ALT_UNITS.get(base.units, base.units) if n % 2 else base.units
            point = dataclasses.replace(base, kind=dataclasses.replace(base.kind, units=units))
            return Version(point, created, when)
        if n % 2:
            return Version(None, created, when)
        count = self.catalog.tag_count
        generation = (n // 2) % max(1, (2**31 - 1) // count)  # IDs stay Int32, reused at last
        point_id = base.point_id + generation * count
        point = dataclasses.replace(
            base,
            point_id=point_id,
            webid=webid.pi_point(server, point_id, cat.SERVER_NAME, base.name),
        )
        return Version(point, when, when)

    def current(self, index: int, t: float) -> cat.Point | None:
        """The point at time t, None while deleted."""
        if not self.enabled:
            return self.catalog.point(index)
        return self.version(index, t).point

    def by_point_id(self, point_id: int, t: float) -> cat.Point | None:
        """The point that has this point ID at time t (None if none has, or deleted)."""
        count = self.catalog.tag_count
        if point_id < 1 or (not self.enabled and point_id > count):
            return None
        index = (point_id - 1) % count
        point = self.current(index, t)
        return point if point is not None and point.point_id == point_id else None
