"""Everything one mock-pi process knows, shared by the route modules."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

from mock_pi import pitime
from mock_pi.catalog import Catalog, Point
from mock_pi.changes import ChangeModel
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

    def __post_init__(self) -> None:
        self._series = lru_cache(maxsize=100_000)(self._make_series)

    @classmethod
    def create(cls, settings: MockSettings, clock: Callable[[], float] = time.time) -> MockState:
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
