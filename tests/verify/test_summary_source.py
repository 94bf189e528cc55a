"""SummarySource planning: many tags and buckets per request, within the server's limits."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import Any

from workers.timeseries.summaries import SummaryAsk, SummarySource

HOUR = 3_600_000_000
DAY = 24 * HOUR
WEBID = "F1DPPnLzRsG6LFKZ6wZMfoI2fAAQAAAATU9DS1BJMDFcVEktMDAwMDAwMC5QVg"


class Lengths:
    """Measures URLs as the client does (base URL plus the encoded query)."""

    def url_length(self, path: str, params: Sequence[tuple[str, str]] = ()) -> int:
        base = len("https://pi.example.com/piwebapi/") + len(path) + 1
        return base + sum(len(k) + len(v) + 2 for k, v in params)

    async def get_json(self, path: str, params: Sequence[tuple[str, str]] = (), **_: Any) -> Any:
        raise AssertionError("not called")


ASK = SummaryAsk(("Count", "PercentGood", "Total", "Minimum", "Maximum"), "EventWeighted", HOUR)


def test_a_week_of_1000_tags_takes_one_request_per_hundred_tag_days_or_fewer() -> None:
    source = SummarySource(Lengths(), max_url_bytes=16_000, max_items=150_000)
    webids = [WEBID[:-6] + f"{i:06d}" for i in range(1000)]
    plan = source.plan(webids, 0, 7 * DAY, ASK)
    assert sum(len(ids) for ids, _, _ in plan) == 1000
    assert len(plan) <= 7000 // 100
    for ids, lo, hi in plan:
        assert (lo, hi) == (0, 7 * DAY)
        assert len(ids) * 168 * 5 <= 150_000
        params = source._params(lo, hi, ASK, ids)
        assert Lengths().url_length("streamsets/summary", params) <= 16_000


def test_a_range_too_long_for_one_tag_is_split_at_bucket_boundaries() -> None:
    source = SummarySource(Lengths(), max_url_bytes=16_000, max_items=1_000)
    plan = source.plan([WEBID], 0, 30 * DAY, ASK)
    windows = [(lo, hi) for _, lo, hi in plan]
    assert windows[0][0] == 0
    assert windows[-1][1] == 30 * DAY
    assert all(b[0] == a[1] for a, b in pairwise(windows))
    assert all((hi - lo) // HOUR * 5 <= 1_000 and lo % HOUR == 0 for lo, hi in windows)


def test_a_lone_bucket_asks_up_to_just_before_its_end() -> None:
    params = dict(SummarySource._params(0, HOUR, ASK, [WEBID]))
    assert params["startTime"] == "1970-01-01T00:00:00Z"
    assert params["endTime"] == "1970-01-01T00:59:59.999999Z"
    assert dict(SummarySource._params(0, 2 * HOUR, ASK, [WEBID]))["endTime"] == (
        "1970-01-01T02:00:00Z"
    )
