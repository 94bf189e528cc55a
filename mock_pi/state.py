"""Everything one mock-pi process knows, shared by the route modules."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mock_pi.catalog import Catalog
from mock_pi.settings import MockSettings

DAY = 86_400.0


@dataclass
class MockState:
    settings: MockSettings
    catalog: Catalog
    clock: Callable[[], float] = time.time
    # Start of the archive: midnight UTC, HISTORY_DAYS before the day the process started.
    history_start: float = field(default=0.0)

    @classmethod
    def create(cls, settings: MockSettings, clock: Callable[[], float] = time.time) -> MockState:
        catalog = Catalog(settings.seed, settings.tag_count, settings.late_fraction)
        today = (clock() // DAY) * DAY
        return cls(settings, catalog, clock, today - settings.history_days * DAY)
