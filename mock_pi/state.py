"""Everything one mock-pi process knows, shared by the route modules."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from mock_pi import pitime, webid
from mock_pi.catalog import NAME_RE, Catalog, Point
from mock_pi.changes import ChangeModel
from mock_pi.point_changes import PointChanges
from mock_pi.series import TICKS, Series
from mock_pi.settings import MockSettings

DAY = 86_400.0


@dataclass
class MockState:
    settings: MockSettings
    catalog: Catalog
    clock: Callable[[], float] = time.time
    # Start of the archive: midnight UTC, HISTORY_DAYS before the day the process started.
    history_start: float = field(default=0.0)
    # WebIDs whose summaries and interpolations are refused (test-only, `/piwebapi/mock/refuse`).
    refused: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._series = lru_cache(maxsize=100_000)(self._make_series)
        self.changes = PointChanges(
            self.catalog,
            self.settings.point_changes,
            self.settings.point_change_seconds,
            self.history_start,
        )

    @classmethod
    def create(cls, settings: MockSettings, clock: Callable[[], float] | None = None) -> MockState:
        """A fresh state; its clock is `clock`, else the one `settings.clock_start` sets."""
        clock = clock or settings.clock()
        catalog = Catalog(
            settings.seed, settings.tag_count, settings.late_fraction, settings.scan_scale
        )
        today = (clock() // DAY) * DAY
        return cls(settings, catalog, clock, today - settings.history_days * DAY)

    @property
    def history_start_ticks(self) -> int:
        return round(self.history_start * TICKS)

    def now_ticks(self) -> int:
        """Wall clock in 100 ns ticks, truncated to whole microseconds as values are."""
        return pitime.ticks_of_seconds(self.clock())

    def point_by_webid(self, web_id: str) -> Point | None:
        """The point a WebID names at this moment, by its IDs (None if unknown or deleted)."""
        if not self.changes.enabled:
            return self.catalog.by_webid(web_id)
        pid = webid.point_id_of(web_id)
        point = None if pid is None else self.changes.by_point_id(pid, self.clock())
        return point if point is not None and webid.same_ids(point.webid, web_id) else None

    def point_by_name(self, name: str) -> Point | None:
        """The point of that name at this moment (renamed points answer to their new name)."""
        if not self.changes.enabled:
            return self.catalog.by_name(name)
        m = NAME_RE.match(name.strip())
        if not m or int(m.group(2)) >= self.catalog.tag_count:
            return None
        point = self.changes.current(int(m.group(2)), self.clock())
        return point if point is not None and point.name.upper() == name.strip().upper() else None

    def points_page(self, name_filter: str, start: int, count: int) -> list[Point]:
        """One page of the points that exist now and match the filter (original names)."""
        if not self.changes.enabled:
            return self.catalog.page(name_filter, start, count)
        if name_filter in ("", "*"):
            indices = np.arange(self.catalog.tag_count)
        else:
            indices = self.catalog.matching_indices(name_filter)
        t = self.clock()
        chosen = indices[self.changes.alive(indices, t)][start : start + count]
        return [p for i in chosen if (p := self.changes.current(int(i), t)) is not None]

    def series(self, point: Point) -> Series:
        """The value generator of a point (cached: building one hashes the seed)."""
        return self._series(point)

    def _make_series(self, point: Point) -> Series:
        settings = self.settings
        s = Series(settings.seed, point, settings.late_seconds, settings.bad_fraction)
        model = self.change_model(s)
        if model.edit_below:
            s.changes = model.apply
        return s

    def change_model(self, s: Series) -> ChangeModel:
        """The edits and deletions of a point's values (`mock_pi.changes`)."""
        settings = self.settings
        return ChangeModel.create(
            settings.seed,
            s,
            settings.edit_fraction,
            settings.delete_fraction,
            settings.change_seconds,
        )
