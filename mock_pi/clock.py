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


def parse_start(text: str) -> datetime:
    """An ISO 8601 time with its zone (`2025-06-02T12:00:00Z`); ValueError otherwise."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone: add Z or an offset such as +02:00")
    return moment


def clock_from(start: str | None, real: Clock = time.time) -> Clock:
    """Epoch seconds now: `real` itself without a start, else `start` + real time elapsed."""
    if start is None:
        return real
    begin, anchor = parse_start(start).timestamp(), real()
    return lambda: begin + (real() - anchor)
