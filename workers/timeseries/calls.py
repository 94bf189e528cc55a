"""The `/streamsets/recorded` calls of a read: spans of streams grouped into requests that
stay under the server's URL length and `MaxReturnedItemsPerCall` (150,000 by default;
above it the server answers 400). Times are integer epoch microseconds."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote

from workers.pi.times import format_us

# The fields the decoder reads; everything else (Links, Name, Path) is left on the server.
# Units come once per stream (a PI point has one engineering unit), not once per value:
# that is a sixth of the body.
# The fields of one value the decoder reads, in PI's order. A value another endpoint serves
# with more (stream updates add `UnitsAbbreviation` per event) is cut to these, so that a bad
# value has one raw text whichever read met it (`DeltaSink.new_quarantine` lists it once).
VALUE_FIELDS = ("Timestamp", "Value", "Good", "Questionable", "Substituted", "Annotated", "Errors")
SELECTED_FIELDS = ";".join(
    ("Items.WebId", "Items.UnitsAbbreviation", *(f"Items.Items.{f}" for f in VALUE_FIELDS))
)


@dataclass(frozen=True, slots=True)
class Span:
    """What to read of one stream: values with `start` < t <= `end`.

    A continuation (`skip` not None) reads from `start` inclusive and drops the first
    `skip` values at `start`, which an earlier page already delivered.
    """

    webid: str
    start: int
    end: int
    skip: int | None = None
    expected: float = 0.0  # values expected in the span, to size maxCount
    min_count: int = 0  # a maxCount this span needs (more values at one time than a page)
    alone: bool = False  # read in a call of its own (its call's answer could not be read)


@dataclass(frozen=True, slots=True)
class Call:
    """One `/streamsets/recorded` request: spans sharing (start, end), one maxCount."""

    start: int
    end: int
    max_count: int
    spans: tuple[Span, ...]

    def params(self) -> list[tuple[str, str]]:
        out = [
            ("startTime", format_us(self.start)),
            ("endTime", format_us(self.end)),
            ("boundaryType", "Inside"),
            ("maxCount", str(self.max_count)),
            ("selectedFields", SELECTED_FIELDS),
        ]
        out.extend(("webId", s.webid) for s in self.spans)
        return out


def webid_cost(webid: str) -> int:
    """Bytes one `&webId=...` adds to the URL."""
    return len("&webId=") + len(quote(webid, safe=""))


def plan_calls(
    spans: Iterable[Span],
    *,
    base_url_length: int,
    max_url_bytes: int,
    max_items: int,
    page_size: int,
) -> list[Call]:
    """Group spans into calls: same (start, end), URL under the limit, items under the cap.

    Within a group, spans are taken largest expected count first, and a call holds n
    streams only while n × (largest expected + skip + 1) ≤ max_items, so that a call's
    maxCount (max_items // n, at most page_size) covers its streams in one page when the
    estimate holds. `base_url_length` is the URL length of a call with no WebIDs.
    """
    groups: dict[tuple[int, int], list[Span]] = {}
    calls: list[Call] = []
    for span in spans:
        if span.alone:
            need = max(span.min_count, 1)
            calls.append(_call(span.start, span.end, [span], max_items, page_size, need))
        else:
            groups.setdefault((span.start, span.end), []).append(span)
    room = max_url_bytes - base_url_length
    for (start, end), members in groups.items():
        members.sort(key=lambda s: s.expected + (s.skip or 0), reverse=True)
        chunk: list[Span] = []
        used = 0
        need = 1
        for span in members:
            cost = webid_cost(span.webid)
            span_need = max(
                span.min_count, min(page_size, math.ceil(span.expected) + (span.skip or 0) + 1)
            )
            new_need = max(need, span_need)
            if chunk and (used + cost > room or (len(chunk) + 1) * new_need > max_items):
                calls.append(_call(start, end, chunk, max_items, page_size, need))
                chunk, used, new_need = [], 0, span_need
            chunk.append(span)
            used += cost
            need = new_need
        if chunk:
            calls.append(_call(start, end, chunk, max_items, page_size, need))
    return calls


def _call(
    start: int, end: int, chunk: list[Span], max_items: int, page_size: int, need: int
) -> Call:
    max_count = max(1, min(page_size, max_items // len(chunk)))
    return Call(start, end, max(max_count, min(need, max_items)), tuple(chunk))
