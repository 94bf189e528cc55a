"""Late data over HTTP: a past range's recorded values grow as outage values arrive."""

from __future__ import annotations

import time
from collections.abc import Callable

from mock_pi.catalog import Point
from mock_pi.series import OUTAGE_PERIOD, Series
from tests.conftest import MockServer, SimClock
from tests.mock_pi import get, iso, truth_for, url

LATE_SECONDS = 3


def test_recorded_grows_then_equals_the_truth(mock_pi_factory: Callable[..., MockServer]) -> None:
    settings = {"tag_count": 300, "seed": 42, "late_fraction": 1, "late_seconds": LATE_SECONDS}
    clock = SimClock.start()
    truth = truth_for(clock, **settings)
    server = mock_pi_factory(clock=clock, **settings, rate_limit=0)
    began = clock.time()
    start, end = iso(began - 15), iso(began)

    def in_outage(series: Series) -> bool:
        """The tag's outage covers the last 20 s and the next 30 s."""
        return all(
            (int(began + d) - series.outage_phase) % OUTAGE_PERIOD < series.outage_length
            for d in (-20, 30)
        )

    def fresh_values(point: Point) -> bool:
        """Values stamped in the last two seconds: still held back by the outage."""
        return bool(truth.recorded(point, iso(began - 2), end, at=began + LATE_SECONDS + 1))

    point = next(
        (
            p
            for p in (truth.state.catalog.point(i) for i in range(300))
            if p.scan_seconds == 1 and in_outage(truth.state.series(p)) and fresh_values(p)
        ),
        None,
    )
    assert point is not None, "no 1 s tag inside an outage right now"
    target = url(
        server.url,
        f"/streams/{point.webid}/recorded",
        startTime=start,
        endTime=end,
        maxCount=10_000,
    )
    asked = clock.time()
    _, first = get(target)
    answered = clock.time()
    seen_before = truth.recorded(point, start, end, at=asked)
    seen_after = truth.recorded(point, start, end, at=answered)
    assert first["Items"][: len(seen_before)] == seen_before
    assert seen_after[: len(first["Items"])] == first["Items"]
    time.sleep(LATE_SECONDS + 1)
    _, second = get(target)
    final = truth.recorded(point, start, end)
    assert second["Items"] == final
    assert len(second["Items"]) > len(first["Items"])
