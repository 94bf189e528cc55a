"""`RecordedSource`: `/streamsets/recorded` calls within the server's URL and item limits,
paging per stream.

Why this shape: one HTTP call carries as many WebIDs as the URL allows, and `maxCount`
is chosen so that streams × maxCount stays under `MaxReturnedItemsPerCall` (150,000 by
default; above it the server answers 400). Streams are grouped by expected value count
(learned from the previous range of the same tag) so that a call full of slow tags is not
starved by one fast tag's maxCount. PI does not signal truncation at maxCount: a stream
whose page is full continues from its last timestamp with boundary `Inside`, and the
values already delivered at that timestamp are dropped (counted in `ReadStats`). A stream
with more values at one timestamp than one call may return cannot be paged past them: it
is quarantined (reason `unpageable`) and its range counts as read, so one such stream never
stops the others nor makes the worker fail on every restart.

Times are integer epoch microseconds (the resolution of `pi_timeseries.timestamp`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, replace
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc

from workers.errors import DecodeError, InconsistentAnswer, NeedsRawValues, UnpageableStream
from workers.pi.client import PIClient, backoff_delay
from workers.pi.times import format_us, utcnow
from workers.settings import Settings
from workers.timeseries.body import (
    ParsedBody,
    ParsedStream,
    Values,
    gc_paused,
    parse_json,
    readings,
    stamp_reader,
)
from workers.timeseries.calls import Call, Span, plan_calls
from workers.timeseries.decode import SequenceStart, TagLike, decode_parsed
from workers.timeseries.quarantine import (
    REASON_UNPAGEABLE,
    REASON_UNREADABLE_ANSWER,
    QuarantineRows,
)
from workers.timeseries.ranges import Bounds, outside
from workers.timeseries.source import SourceResult

log = logging.getLogger(__name__)

RECORDED_PATH = "/streamsets/recorded"
ENDPOINT = "streamsets/recorded"
# Reads of one answer that does not decode, backoff between them, before its streams are
# read one per call (and a stream alone is set aside).
DECODE_ATTEMPTS = 3
EXCERPT_BYTES = 200
# Expected values of a tag never seen before, per second of range: PI's fastest usual scan.
DEFAULT_RATE = 1.0


@dataclass(frozen=True, slots=True)
class StreamPage:
    """What one page said about one stream: item count, last timestamp, items at it, and
    how many items to keep (those after the last timestamp that parses come again on the
    next page)."""

    items: int
    last: int
    at_last: int
    kept: int


def continuation(span: Span, page: StreamPage, max_count: int, max_items: int) -> Span | None:
    """The span still to read after a page, or None when the stream is complete.

    A page shorter than maxCount is complete. A full page continues from its last
    timestamp; the continuation drops the `at_last` values it will get again there. A full
    page entirely at the span's start has made no progress: it is asked again with twice
    the maxCount (UnpageableStream past the server's item cap).
    """
    if page.items < max_count or page.last > span.end:
        return None  # complete, or a server answering past the range: nothing more to ask
    if page.last == span.start and page.at_last == page.items:
        if max_count >= max_items:
            raise UnpageableStream(span.webid, page.last, page.items)
        return Span(
            span.webid,
            span.start,
            span.end,
            span.skip,
            span.expected,
            min(max_items, 2 * max_count),
        )
    rate = page.items / max(1, page.last - span.start)
    return Span(span.webid, page.last, span.end, page.at_last, rate * (span.end - page.last))


class ClientLike(Protocol):
    """What `RecordedSource` needs of `workers.pi.client.PIClient`."""

    def url_length(self, path: str, params: Sequence[tuple[str, str]]) -> int: ...

    async def get_bytes(
        self, path: str, params: Sequence[tuple[str, str]] = (), *, endpoint: str
    ) -> bytes: ...

    async def pause(self, seconds: float) -> None: ...


def page_of(items: Values) -> StreamPage | None:
    """Count, last timestamp and values at it for one stream's page (None: no timestamps).

    Values without a timestamp that parses are not counted: the decoder gives them no
    sequence number, and `leading_at` steps over them.
    """
    stamp = stamp_reader(items)
    for pos in range(len(items) - 1, -1, -1):
        last = stamp(pos)
        if last is not None:
            at_last = 0
            for back in range(pos, -1, -1):
                t = stamp(back)
                if t is not None and t != last:
                    break
                at_last += t is not None
            return StreamPage(len(items), last, at_last, pos + 1)
    return None


def leading_at(items: Values, start: int, limit: int | None = None) -> int:
    """How many items at the front of a page to drop: the values at `start` (at most
    `limit` of them) and those without a timestamp that parses among them, which PI's
    order puts at `start` too. One after the last value dropped may be later: it stays."""
    stamp = stamp_reader(items)
    seen = drop = 0
    for pos in range(len(items)):
        if limit is not None and seen >= limit:
            break
        t = stamp(pos)
        if t is None:
            continue
        if t != start:
            break
        seen += 1
        drop = pos + 1
    return drop


class RecordedSource:
    """A `Source` over `/streamsets/recorded`: spans of many streams read with concurrent
    calls, each stream paged until its range is read.

    `rates` remembers values per second seen for each tag, so the next range of a tag is
    packed with tags of a similar rate and usually needs one page.
    """

    def __init__(
        self,
        client: ClientLike,
        *,
        max_url_bytes: int,
        max_items: int,
        page_size: int,
        max_attempts: int,
        tags: Mapping[str, TagLike],
        on_retry: Callable[[str], None] | None = None,
        max_in_flight: int = 16,
    ) -> None:
        self.client = client
        self.max_url_bytes = max_url_bytes
        self.max_items = max_items
        self.page_size = page_size
        self.max_attempts = max_attempts
        self.tags = tags
        self.on_retry = on_retry
        self.rates: dict[str, float] = {}
        self._slots = asyncio.Semaphore(max_in_flight)
        self._base_length: int | None = None

    @classmethod
    def from_settings(
        cls, client: PIClient, settings: Settings, tags: Mapping[str, TagLike]
    ) -> RecordedSource:
        """The worker's source: the server's limits and the client's retry observer."""
        return cls(
            client,
            max_url_bytes=settings.pi_max_url_bytes,
            max_items=settings.pi_max_items_per_call,
            page_size=settings.pi_page_size,
            max_attempts=settings.pi_max_attempts,
            tags=tags,
            on_retry=client.observer.on_retry,
            max_in_flight=settings.pi_max_concurrency,
        )

    def spans(self, ranges: Iterable[tuple[str, int, int]]) -> list[Span]:
        """Spans for (webid, start exclusive, end inclusive) with expected counts."""
        return [
            Span(w, s, e, None, self.rates.get(w, DEFAULT_RATE) * (e - s) / 1e6)
            for w, s, e in ranges
            if e > s
        ]

    def base_url_length(self) -> int:
        if self._base_length is None:
            probe = Call(0, 0, self.max_items, ())
            self._base_length = self.client.url_length(RECORDED_PATH, probe.params())
        return self._base_length

    def plan(self, spans: Iterable[Span]) -> list[Call]:
        return plan_calls(
            spans,
            base_url_length=self.base_url_length() + 64,  # room for longer time strings
            max_url_bytes=self.max_url_bytes,
            max_items=self.max_items,
            page_size=self.page_size,
        )

    async def read(self, spans: Sequence[tuple[str, int, int]]) -> SourceResult:
        """Every value with start < t <= end of each (webid, start, end), in PI order.

        A stream with more values at one timestamp than one call may return keeps what its
        earlier pages read (the first values at that timestamp among them), then gets one
        quarantine row (reason `unpageable`, the timestamp and item count in `raw`); its
        range counts as read, and the other streams go on.
        """
        result = SourceResult()
        firsts = {s.webid: s for s in self.spans(spans)}
        counts: dict[str, int] = {}
        pending: set[asyncio.Task[list[Span]]] = set()

        def launch(calls: list[Call]) -> None:
            for call in calls:
                pending.add(asyncio.ensure_future(self._one(call, result, counts)))

        launch(self.plan(firsts.values()))
        try:
            while pending:
                done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                more: list[Span] = []
                for task in done:
                    pending.discard(task)
                    more.extend(task.result())
                if more:
                    result.stats.continued += len(more)
                    launch(self.plan(more))
        finally:
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        if result.set_aside:
            _without(result, result.set_aside)
        for webid, span in firsts.items():
            seconds = (span.end - span.start) / 1e6
            if seconds > 0 and webid not in result.set_aside:
                self.rates[webid] = counts.get(webid, 0) / seconds
        return result

    async def _one(self, call: Call, result: SourceResult, counts: dict[str, int]) -> list[Span]:
        """One call, read again with backoff while its answer cannot be read; returns the
        spans still to read.

        An answer that contradicts the request is sent again once; after that, what lies
        inside is kept and the rest dropped and counted (`out_of_range`). An answer still
        unreadable after `DECODE_ATTEMPTS` is read again one stream per call, so that one
        bad stream does not hold the others; a stream unreadable on its own is set aside.
        """
        params = call.params()
        attempts = min(self.max_attempts, DECODE_ATTEMPTS)
        attempt = 1
        async with self._slots:
            while True:
                body = await self.client.get_bytes(RECORDED_PATH, params, endpoint=ENDPOINT)
                result.stats.calls += 1
                result.stats.bytes += len(body)
                try:
                    with gc_paused():
                        return self._absorb(call, body, result, counts, strict=attempt == 1)
                except DecodeError as exc:
                    if attempt >= attempts:
                        return self._unreadable(call, body, exc, result)
                    attempt += 1
                    if self.on_retry is not None:
                        inconsistent = isinstance(exc, InconsistentAnswer)
                        self.on_retry("inconsistent" if inconsistent else "decode")
                    await self.client.pause(backoff_delay(attempt))

    def _unreadable(
        self, call: Call, body: bytes, error: DecodeError, result: SourceResult
    ) -> list[Span]:
        """Streams of a call whose answer could not be read: each again on its own, or, when
        it was alone already, set aside with a quarantine row that shows the answer."""
        if len(call.spans) > 1:
            return [replace(span, alone=True) for span in call.spans]
        (span,) = call.spans
        result.set_aside.add(span.webid)
        result.stats.set_aside += 1
        tag = self.tags.get(span.webid)
        rows = QuarantineRows(ENDPOINT, utcnow())
        excerpt = body[:EXCERPT_BYTES].decode("utf-8", "replace")
        rows.add_text(
            span.webid,
            tag.name if tag is not None else None,
            f"{error}; reading {format_us(span.start)} to {format_us(span.end)} again later; "
            f"the answer began {excerpt!r}",
            REASON_UNREADABLE_ANSWER,
        )
        result.quarantine.append(rows.table())
        log.warning("%s: set aside until a later read: %s", span.webid, error)
        return []

    def _absorb(
        self,
        call: Call,
        body: bytes,
        result: SourceResult,
        counts: dict[str, int],
        *,
        strict: bool,
    ) -> list[Span]:
        """The body in the first reading whose values the decoder can judge: columns, then
        structs, then dicts (which keep the raw text of a value to quarantine)."""
        for parsed in readings(body):
            with suppress(NeedsRawValues):
                return self._absorb_parsed(call, parsed, result, counts, strict)
        return self._absorb_parsed(call, parse_json(body, ENDPOINT), result, counts, strict)

    def _absorb_parsed(
        self,
        call: Call,
        parsed: ParsedBody,
        result: SourceResult,
        counts: dict[str, int],
        strict: bool,
    ) -> list[Span]:
        """Page bookkeeping on the parsed body, then the decoder on what is new.

        Streams that were not asked for are dropped; a stream that was asked for and is
        missing makes the body unusable (DecodeError, so the call is sent again): treating
        it as empty would move its checkpoint past values never read. `result` is only
        touched once the decoder has succeeded (NeedsRawValues reads the body again).
        """
        by_webid = {s.webid: s for s in call.spans}
        kept: list[tuple[Span, ParsedStream, Values]] = []
        for stream in parsed.streams:
            span = by_webid.pop(stream.webid, None)
            if span is None:
                continue
            if stream.values is None and stream.error is None:
                raise DecodeError(f"no Items for {span.webid}", source=ENDPOINT)
            kept.append((span, stream, [] if stream.values is None else stream.values))
        if by_webid:
            missing = ", ".join(sorted(by_webid)[:3])
            raise DecodeError(f"{len(by_webid)} streams missing ({missing})", source=ENDPOINT)
        continues: dict[str, SequenceStart] = {}
        following: list[Span] = []
        unpageable: list[tuple[UnpageableStream, str | None, int]] = []
        redelivered = extra = 0
        got: dict[str, int] = {}
        for span, stream, items in kept:
            if len(items) > call.max_count:
                if strict:
                    raise InconsistentAnswer(
                        f"{span.webid}: {len(items)} values for maxCount {call.max_count}",
                        source=ENDPOINT,
                    )
                extra += len(items) - call.max_count
                items = items[: call.max_count]
            error = stream.error
            if error is not None:
                status = error.get("StatusCode") if isinstance(error, dict) else None
                if not isinstance(status, int) or status >= 500:
                    # Trouble on the server's side: reading this stream again may succeed;
                    # taking it as empty would move its checkpoint past unread values.
                    raise DecodeError(f"{span.webid}: {error}", source=ENDPOINT)
                # else e.g. 404: the point was deleted; its range is read, empty.
            if len(items) >= call.max_count:
                # A full page with no timestamp to continue from has made no progress.
                n = len(items)
                page = page_of(items) or StreamPage(n, span.start, n, n)
                try:
                    nxt = continuation(span, page, call.max_count, self.max_items)
                except UnpageableStream as stuck:
                    unpageable.append((stuck, stream.name, span.end))
                    items, nxt = [], None
                if nxt is not None:
                    following.append(nxt)
                    if (nxt.start, nxt.skip) == (span.start, span.skip):
                        # Stuck at one timestamp: the larger page asked for brings it all.
                        redelivered += len(items)
                        items = []
                    elif page.kept < n:
                        redelivered += n - page.kept
                        items = items[: page.kept]
            drop = leading_at(items, span.start, span.skip)
            if span.skip:
                continues[span.webid] = SequenceStart(span.start, span.skip)
            if drop:
                redelivered += drop if span.skip is not None else 0
                items = items[drop:]
            stream.values = items
            got[span.webid] = len(items)
        parsed.streams = [stream for _, stream, _ in kept]
        decoded = decode_parsed(parsed, self.tags, ENDPOINT, continues=continues or None)
        rows, quarantine = decoded.rows, decoded.quarantine
        bounds = [Bounds(s.webid, s.start, s.end, s.skip is not None) for s, _, _ in kept]
        stray_rows, stray_quarantine = outside(rows, bounds), outside(quarantine, bounds)
        if stray_rows is not None or stray_quarantine is not None:
            if strict:
                raise InconsistentAnswer("values outside the range asked for", source=ENDPOINT)
            if stray_rows is not None:
                extra += int(stray_rows.sum())
                rows = rows.filter(pa.array(~stray_rows))
            if stray_quarantine is not None:
                extra += int(stray_quarantine.sum())
                quarantine = quarantine.filter(pa.array(~stray_quarantine))
        if extra:
            log.warning(
                "%s: dropped %d values outside the range or past maxCount, twice sent",
                ENDPOINT,
                extra,
            )
        result.stats.out_of_range += extra
        result.stats.redelivered += redelivered
        for webid, n in got.items():
            counts[webid] = counts.get(webid, 0) + n
        result.stats.values += rows.num_rows
        if rows.num_rows:
            result.rows.append(rows)
        if quarantine.num_rows:
            result.quarantine.append(quarantine)
        if unpageable:
            result.quarantine.append(_unpageable_rows(self.tags, unpageable))
        return following


def _without(result: SourceResult, webids: set[str]) -> None:
    """Drop what earlier pages read of set-aside streams: their ranges are read whole later.
    Their `unreadable_answer` quarantine rows stay."""
    drop = pa.array(sorted(webids), pa.string())

    def kept(table: pa.Table, keep_reason: bool) -> pa.Table:
        mask = pc.invert(pc.fill_null(pc.is_in(table.column("tag_webid"), value_set=drop), False))
        if keep_reason:
            mask = pc.or_(mask, pc.equal(table.column("reason"), REASON_UNREADABLE_ANSWER))
        return table.filter(mask)

    result.rows = [kept(t, False) for t in result.rows]
    result.quarantine = [kept(t, True) for t in result.quarantine]


def _unpageable_rows(
    tags: Mapping[str, TagLike], streams: list[tuple[UnpageableStream, str | None, int]]
) -> pa.Table:
    """One quarantine row per stream that cannot be paged; `raw` says where it stuck."""
    rows = QuarantineRows(ENDPOINT, utcnow())
    for stuck, name, end in streams:
        tag = tags.get(stuck.webid)
        rows.add_text(
            stuck.webid,
            tag.name if tag is not None else name,
            f"at least {stuck.items} values at {format_us(stuck.at_us)}, the most one "
            f"call may return: values after it up to {format_us(end)} were not read",
            REASON_UNPAGEABLE,
        )
    return rows.table()
