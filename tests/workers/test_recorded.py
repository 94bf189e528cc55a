"""`RecordedSource`: URL splitting, maxCount, paging continuations, unreadable streams."""

from __future__ import annotations

import pyarrow as pa
import pytest

from workers.errors import PideltaError, UnpageableStream
from workers.pi.times import TimeParseError, format_us, parse_iso_us
from workers.timeseries.calls import Call, Span, plan_calls, webid_cost
from workers.timeseries.decode import TagMeta
from workers.timeseries.recorded import (
    RecordedSource,
    StreamPage,
    continuation,
    leading_at,
    page_of,
)
from workers.timeseries.source import SourceResult

T0 = 1_700_000_000_000_000


def _webids(n: int) -> list[str]:
    return [f"F1DPabcdefghijklmnopqrstuvwxyz{i:06d}" for i in range(n)]


def test_time_round_trip_and_seven_digits() -> None:
    assert format_us(T0) == "2023-11-14T22:13:20Z"
    assert format_us(T0 + 5) == "2023-11-14T22:13:20.000005Z"
    assert parse_iso_us("2023-11-14T22:13:20.0000059Z") == T0 + 5
    assert parse_iso_us("2023-11-14T22:13:20.000005999Z") == T0 + 5  # as the decoder reads it
    assert parse_iso_us("2023-11-14T22:13:20Z") == T0
    assert parse_iso_us("2023-11-15T00:13:20+02:00") == T0
    with pytest.raises(TimeParseError) as caught:
        parse_iso_us("yesterday")  # a PI time string, but no data timestamp
    assert isinstance(caught.value, PideltaError)
    assert isinstance(caught.value, ValueError)  # pydantic validators rely on it


def test_calls_stay_under_url_and_item_limits() -> None:
    spans = [Span(w, T0, T0 + 3_600_000_000, expected=100) for w in _webids(1000)]
    calls = plan_calls(
        spans, base_url_length=300, max_url_bytes=4000, max_items=150_000, page_size=10_000
    )
    assert sorted(s.webid for c in calls for s in c.spans) == sorted(s.webid for s in spans)
    for call in calls:
        assert 300 + sum(webid_cost(s.webid) for s in call.spans) <= 4000
        assert len(call.spans) * call.max_count <= 150_000
        assert call.max_count >= 101


def test_fast_streams_get_fewer_per_call_and_a_page_each() -> None:
    fast = [Span(w, T0, T0 + 10, expected=3600) for w in _webids(100)]
    calls = plan_calls(
        fast, base_url_length=300, max_url_bytes=100_000, max_items=150_000, page_size=10_000
    )
    assert all(len(c.spans) <= 150_000 // 3601 for c in calls)
    assert all(c.max_count >= 3601 for c in calls)


def test_spans_with_different_ranges_never_share_a_call() -> None:
    a = Span("A", T0, T0 + 10)
    b = Span("B", T0 + 1, T0 + 10)
    calls = plan_calls(
        [a, b], base_url_length=10, max_url_bytes=10_000, max_items=1000, page_size=1000
    )
    assert sorted((c.start, [s.webid for s in c.spans]) for c in calls) == [
        (T0, ["A"]),
        (T0 + 1, ["B"]),
    ]


def test_call_params_carry_every_webid_and_max_count() -> None:
    call = Call(T0, T0 + 1, 500, (Span("A", T0, T0 + 1), Span("B", T0, T0 + 1)))
    params = call.params()
    assert [v for k, v in params if k == "webId"] == ["A", "B"]
    assert ("maxCount", "500") in params
    assert ("boundaryType", "Inside") in params


def _item(us: int) -> dict[str, object]:
    return {"Timestamp": format_us(us), "Value": 1.0}


def test_page_summary_counts_values_at_the_last_timestamp() -> None:
    items = [_item(T0), _item(T0 + 1), _item(T0 + 2), _item(T0 + 2)]
    assert page_of(items) == StreamPage(4, T0 + 2, 2, 4)
    assert leading_at(items, T0) == 1
    assert leading_at(items, T0 - 1) == 0
    assert page_of([{"Value": 1}]) is None


def test_values_without_a_timestamp_are_stepped_over() -> None:
    """Only values whose timestamp parses are counted at T (the decoder numbers those);
    a page is cut after its last one (the continuation brings the rest again), and the
    front of a continuation drops the broken values among the ones it skips."""
    broken = {"Timestamp": "yesterday", "Value": 1.0}
    items = [broken, _item(T0 + 2), 42, _item(T0 + 2), broken, {"Value": 2}]
    assert page_of(items) == StreamPage(6, T0 + 2, 2, 4)
    assert leading_at(items, T0 + 2) == 4
    assert leading_at(items, T0 + 2, 1) == 2
    assert leading_at(items, T0 + 2, 0) == 0
    assert leading_at(items, T0) == 0


def test_short_page_is_complete_and_full_page_continues_from_last_timestamp() -> None:
    span = Span("A", T0, T0 + 100)
    assert continuation(span, StreamPage(9, T0 + 50, 1, 9), 10, 1000) is None
    nxt = continuation(span, StreamPage(10, T0 + 50, 3, 10), 10, 1000)
    assert nxt is not None
    assert (nxt.start, nxt.end, nxt.skip) == (T0 + 50, T0 + 100, 3)


def test_page_stuck_at_one_timestamp_asks_for_more_then_gives_up() -> None:
    span = Span("A", T0, T0 + 100, skip=10)
    nxt = continuation(span, StreamPage(10, T0, 10, 10), 10, 1000)
    assert nxt is not None
    assert (nxt.start, nxt.skip, nxt.min_count) == (T0, 10, 20)
    with pytest.raises(UnpageableStream):
        continuation(span, StreamPage(1000, T0, 1000, 1000), 1000, 1000)


class _Client:
    """Answers each call with the next body; remembers the WebIDs asked for."""

    def __init__(self, *bodies: bytes) -> None:
        self.bodies = list(bodies)
        self.asked: list[list[str]] = []
        self.paused: list[float] = []

    def url_length(self, path: str, params: object) -> int:
        return 200

    async def get_bytes(self, path: str, params: list[tuple[str, str]], *, endpoint: str) -> bytes:
        self.asked.append([v for k, v in params if k == "webId"])
        return self.bodies.pop(0)

    async def pause(self, seconds: float) -> None:
        self.paused.append(seconds)


def _body(*streams: tuple[str, list[dict[str, object]]]) -> bytes:
    import orjson

    return orjson.dumps({"Items": [{"WebId": w, "Items": items} for w, items in streams]})


def _source(client: _Client, retries: list[str]) -> RecordedSource:
    return RecordedSource(
        client,
        max_url_bytes=16_000,
        max_items=150_000,
        page_size=1000,
        max_attempts=3,
        tags={},
        on_retry=retries.append,
    )


async def test_missing_stream_is_retried_and_extra_streams_dropped() -> None:
    good = _body(("A", [_item(T0 + 1)]), ("B", [_item(T0 + 2)]), ("X", [_item(T0 + 3)]))
    client = _Client(_body(("A", [_item(T0 + 1)])), b'{"Items": [', good)
    retries: list[str] = []
    result = await _source(client, retries).read([("A", T0, T0 + 10), ("B", T0, T0 + 10)])
    assert retries == ["decode", "decode"]
    assert sorted(pa.concat_tables(result.rows).column("tag_webid").to_pylist()) == ["A", "B"]


async def _paged(page_size: int, *bodies: bytes) -> tuple[SourceResult, list[tuple[int, int]]]:
    """Stream A over (T0, T0+10] read from `bodies` in turn: the result, and each row's
    (microseconds after T0, sequence)."""
    source = _source(_Client(*bodies), [])
    source.page_size = page_size
    result = await source.read([("A", T0, T0 + 10)])
    rows = pa.concat_tables(result.rows)
    stamps = [round(t.timestamp() * 1e6) - T0 for t in rows.column("timestamp").to_pylist()]
    return result, list(zip(stamps, rows.column("sequence").to_pylist(), strict=True))


async def test_full_pages_continue_and_sequence_counts_across_pages() -> None:
    """Three values share T0+2; pages of 3 split them 2 + 1, and one page is stuck at T0+2."""
    at2 = [_item(T0 + 2)] * 3
    page1 = _body(("A", [_item(T0 + 1), *at2[:2]]))
    stuck = _body(("A", at2))  # full and all at the continuation's start: ask for more
    page3 = _body(("A", [*at2, _item(T0 + 3)]))
    result, keys = await _paged(3, page1, stuck, page3)
    assert keys == [(1, 0), (2, 0), (2, 1), (2, 2), (3, 0)]
    assert result.stats.redelivered == 3 + 2  # the stuck page, then two at T0+2
    assert result.stats.continued == 2


async def test_a_broken_value_ending_a_full_page_is_read_once() -> None:
    """PI continues from the last timestamp that parses: the broken value after it comes
    again on the next page and is quarantined once, as is one inside a run at T."""
    broken = {"Timestamp": "noon", "Value": 1.0}
    inner = {"Timestamp": "night", "Value": 2.0}
    page1 = _body(("A", [_item(T0 + 1), _item(T0 + 2), inner, _item(T0 + 2), broken]))
    page2 = _body(("A", [_item(T0 + 2), inner, _item(T0 + 2), broken, _item(T0 + 3)]))
    page3 = _body(("A", [_item(T0 + 3)]))
    result, keys = await _paged(5, page1, page2, page3)
    assert keys == [(1, 0), (2, 0), (2, 1), (3, 0)]
    raws = pa.concat_tables(result.quarantine).column("raw").to_pylist()
    assert sorted(raws) == sorted(
        ['{"Timestamp":"night","Value":2.0}', '{"Timestamp":"noon","Value":1.0}']
    )
    assert result.stats.redelivered == 1 + 3 + 1


async def test_a_stream_stuck_at_one_timestamp_is_quarantined_and_the_others_read() -> None:
    """Stream A has more values at T0+1 than one call may return (max_items 4): pages of 2,
    then 2 again (stuck: ask for 4), then 4 (stuck at the cap). A gets one quarantine row,
    its two values of the first page stay, B is read, and nothing raises."""
    at1 = [_item(T0 + 1)] * 4
    client = _Client(
        _body(("A", at1[:2]), ("B", [_item(T0 + 2)])), _body(("A", at1[:2])), _body(("A", at1))
    )
    source = RecordedSource(
        client,
        max_url_bytes=16_000,
        max_items=4,
        page_size=2,
        max_attempts=1,
        tags={"A": TagMeta("A", "stuck.tag")},
    )
    result = await source.read([("A", T0, T0 + 10), ("B", T0, T0 + 10)])
    assert client.asked == [["A", "B"], ["A"], ["A"]]
    rows = pa.concat_tables(result.rows)
    stamps = [round(t.timestamp() * 1e6) - T0 for t in rows.column("timestamp").to_pylist()]
    assert sorted(zip(rows.column("tag_webid").to_pylist(), stamps, strict=True)) == [
        ("A", 1),
        ("A", 1),
        ("B", 2),
    ]
    quarantine = pa.concat_tables(result.quarantine).to_pylist()
    assert [
        (q["tag_webid"], q["tag_name"], q["reason"], q["raw"], q["source"], q["timestamp"])
        for q in quarantine
    ] == [
        (
            "A",
            "stuck.tag",
            "unpageable",
            "at least 4 values at 2023-11-14T22:13:20.000001Z, the most one call may "
            "return: values after it up to 2023-11-14T22:13:20.000010Z were not read",
            "streamsets/recorded",
            None,
        )
    ]
    assert (result.stats.calls, result.stats.values, result.stats.continued) == (3, 3, 2)


def _stamps(result: SourceResult) -> list[tuple[str, int]]:
    rows = pa.concat_tables(result.rows)
    stamps = [round(t.timestamp() * 1e6) - T0 for t in rows.column("timestamp").to_pylist()]
    return sorted(zip(rows.column("tag_webid").to_pylist(), stamps, strict=True))


async def test_values_outside_the_range_are_read_again_then_dropped_and_counted() -> None:
    """A server (or a proxy cache) answering values after endTime, or at the excluded
    start: the call is sent again once; the second answer's values inside are kept."""
    stray = _body(("A", [_item(T0), _item(T0 + 5), _item(T0 + 11)]), ("B", [_item(T0 + 2)]))
    client = _Client(stray, stray)
    retries: list[str] = []
    result = await _source(client, retries).read([("A", T0, T0 + 10), ("B", T0, T0 + 10)])
    assert retries == ["inconsistent"]
    assert _stamps(result) == [("A", 5), ("B", 2)]
    assert result.stats.out_of_range == 1  # T0 itself is dropped as every read drops it
    assert (result.stats.calls, result.stats.values) == (2, 2)


async def test_an_answer_fixed_on_the_second_read_loses_nothing() -> None:
    stray = _body(("A", [_item(T0 + 5), _item(T0 + 20)]))
    good = _body(("A", [_item(T0 + 5), _item(T0 + 7)]))
    retries: list[str] = []
    result = await _source(_Client(stray, good), retries).read([("A", T0, T0 + 10)])
    assert retries == ["inconsistent"]
    assert _stamps(result) == [("A", 5), ("A", 7)]
    assert result.stats.out_of_range == 0


async def test_more_values_than_max_count_are_cut_there_and_paged_on() -> None:
    """10 values for maxCount 4, twice: the first 4 are kept as a full page, and the stream
    continues from the last of them instead of one commit growing past its bound."""
    flood = _body(("A", [_item(T0 + n) for n in range(1, 11)]))
    pages = [_body(("A", [_item(T0 + n) for n in ns])) for ns in ((4, 5, 6, 7), (7, 8, 9, 10))]
    source = _source(_Client(flood, flood, *pages, _body(("A", [_item(T0 + 10)]))), [])
    source.page_size = 4
    result = await source.read([("A", T0, T0 + 10)])
    assert _stamps(result) == [("A", n) for n in range(1, 11)]
    assert result.stats.out_of_range == 6


class _ByStreams(_Client):
    """Answers by the WebIDs asked: each tuple of WebIDs has its own queue of bodies."""

    def __init__(self, answers: dict[tuple[str, ...], list[bytes]]) -> None:
        super().__init__()
        self.answers = answers

    async def get_bytes(self, path: str, params: list[tuple[str, str]], *, endpoint: str) -> bytes:
        webids = tuple(v for k, v in params if k == "webId")
        self.asked.append(list(webids))
        return self.answers[webids].pop(0)


async def test_an_unreadable_stream_is_set_aside_and_the_others_read() -> None:
    """The call of A and B answers HTML three times (backoff between): A and B are read one
    per call; A's answer is fine; B's is first inconsistent (a value past the range), then
    HTML twice, so B is set aside, quarantined with what came back, and nothing of it kept."""
    html = b"<html>Service Unavailable</html>"
    client = _ByStreams(
        {
            ("A", "B"): [html] * 3,
            ("A",): [_body(("A", [_item(T0 + 1)]))],
            ("B",): [_body(("B", [_item(T0 + 2), _item(T0 + 99)])), html, html],
        }
    )
    retries: list[str] = []
    result = await _source(client, retries).read([("A", T0, T0 + 10), ("B", T0, T0 + 10)])
    assert (
        sorted(map(tuple, client.asked))
        == [("A",), ("A", "B"), ("A", "B"), ("A", "B")] + [("B",)] * 3
    )
    assert sorted(retries) == ["decode", "decode", "decode", "inconsistent"]
    assert len(client.paused) == 4
    assert _stamps(result) == [("A", 1)]
    assert result.set_aside == {"B"}
    assert result.stats.set_aside == 1
    (row,) = pa.concat_tables(result.quarantine).to_pylist()
    assert (row["tag_webid"], row["reason"], row["timestamp"]) == ("B", "unreadable_answer", None)
    assert row["raw"] == (
        "cannot decode streamsets/recorded, 32 bytes: unexpected character, expected a JSON "
        "value: line 1 column 1 "
        "(char 0); reading 2023-11-14T22:13:20Z to 2023-11-14T22:13:20.000010Z again later; "
        "the answer began '<html>Service Unavailable</html>'"
    )
