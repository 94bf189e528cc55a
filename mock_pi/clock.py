"""The simulator's "now": the real clock, or one that starts at a set instant and runs.

With `MOCK_PI_CLOCK_START` every "now" of the server (the `*` of time strings, which values
are visible yet, late arrivals, stream updates, event frames, the start of the archive)
reads the set instant plus the real time elapsed since the clock was made, so a test or a
demo sees the same days whenever it runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

Clock = Callable[[], float]


def clock_from(start: datetime | None, real: Clock = time.time) -> Clock:
    """Epoch seconds now: `real` itself without a start, else `start` + real time elapsed."""
    if start is None:
        return real
    begin, anchor = start.timestamp(), real()
    return lambda: begin + (real() - anchor)
