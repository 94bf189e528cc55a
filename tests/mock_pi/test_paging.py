"""Paging `recorded` by maxCount as a PI client does returns each value exactly once.

A page continues from the last timestamp seen (boundary Inside includes it) and drops the
values it already has at that timestamp; runs of values sharing a timestamp may be split
between pages, which is what this test makes sure happens.
"""

from __future__ import annotations

from typing import Any

from mock_pi.catalog import Catalog
from tests.conftest import FIXED_NOW, MockServer
from tests.mock_pi import get, iso, truth_for, url
from tests.spec import validate_response

END = FIXED_NOW.timestamp() - 7200
START = END - 1200


def walk(fetch: Any, start: str, end: str, page_size: int) -> tuple[list[dict], int, int]:
    """All values by pages; also how many were dropped as already seen and how many pages
    began inside a run of shared timestamps."""
    out: list[dict] = []
    dropped = splits = 0
    cursor = start
    while True:
        page = fetch(cursor, end, page_size)
        if out:
            seen = sum(1 for v in out if v["Timestamp"] == cursor)
            head = [v for v in page[:seen] if v["Timestamp"] == cursor]
            dropped += len(head)
            rest = page[len(head) :]
            if rest and rest[0]["Timestamp"] == cursor:
                splits += 1
            out.extend(rest)
        else:
            out.extend(page)
        if len(page) < page_size:
            return out, dropped, splits
        cursor = page[-1]["Timestamp"]


def test_paging_returns_each_value_once_across_split_runs(mock_pi: MockServer) -> None:
    truth = truth_for(mock_pi.clock, tag_count=1000, seed=42)
    catalog = Catalog(42, 1000)
    point = next(
        p
        for p in (catalog.point(i) for i in range(1000))
        if p.scan_seconds == 1 and p.point_type == "Float64"
    )
    expected = truth.recorded(point, iso(START), iso(END))
    assert len(expected) > 300

    def from_truth(cursor: str, end: str, size: int) -> list[dict]:
        return truth.recorded(point, cursor, end)[:size]

    size = next(m for m in range(5, 80) if walk(from_truth, iso(START), iso(END), m)[2] > 0)
    calls = 0

    def from_server(cursor: str, end: str, count: int) -> list[dict]:
        nonlocal calls
        calls += 1
        status, body = get(
            url(
                mock_pi.url,
                f"/streams/{point.webid}/recorded",
                startTime=cursor,
                endTime=end,
                maxCount=count,
            )
        )
        assert status == 200
        validate_response(body, "/streams/{webId}/recorded")
        return body["Items"]

    values, dropped, splits = walk(from_server, iso(START), iso(END), size)
    assert splits > 0, "no page ended inside a run of shared timestamps"
    assert dropped >= calls - 1
    assert values == expected
