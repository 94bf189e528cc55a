"""PI summaries of many streams per request: `/streamsets/summary` into columns.

A read covers tags x buckets (a fixed bucket length from a bucket-aligned start): it packs
as many tags into one request as the URL and the server's item limit allow (every bucket
of every requested type is one item), splits the time range only when one tag's buckets
alone would exceed the item limit, and keeps at most `max_in_flight` requests at once and
at most `max_requests_per_second` started per second.

Buckets are [start, end): PI counts an event at an interval's start in that interval and
leaves the range's end out when a request has several intervals; a request of a single
interval takes both ends, so an EventWeighted one asks up to one microsecond before the
bucket's end (a TimeWeighted one interpolates at the end, both ends are its own).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import polars as pl

from workers.errors import MalformedAnswer
from workers.pi.times import format_us

SUMMARY_PATH = "streamsets/summary"
# A fixed guess at the bytes of one `&webId=...` (a point WebID is about 60 characters).
WEBID_PARAM_BYTES = 80


class SummaryClient(Protocol):
    def url_length(self, path: str, params: Sequence[tuple[str, str]] = ()) -> int: ...

    async def get_json(
        self, path: str, params: Sequence[tuple[str, str]] = (), *, endpoint: str
    ) -> Any: ...


@dataclass(frozen=True, slots=True)
class SummaryAsk:
    """What to summarise: PI summary types, calculation basis, bucket length (µs); with
    `detail`, also each value's system state name (when not good) and units."""

    types: tuple[str, ...]
    basis: str
    bucket_us: int
    detail: bool = False


@dataclass
class SummaryStats:
    requests: int = 0
    items: int = 0


class SummarySource:
    """Reads summaries of tags over bucket-aligned ranges (see the module docstring)."""

    def __init__(
        self,
        client: SummaryClient,
        *,
        max_url_bytes: int,
        max_items: int,
        max_in_flight: int = 4,
        max_requests_per_second: float | None = None,
    ) -> None:
        self.client = client
        self.max_url_bytes = max_url_bytes
        self.max_items = max_items
        self.max_in_flight = max_in_flight
        self.min_gap = 1.0 / max_requests_per_second if max_requests_per_second else 0.0
        self.stats = SummaryStats()
        self._next_start = 0.0

    def plan(
        self, webids: Sequence[str], start_us: int, end_us: int, ask: SummaryAsk
    ) -> list[tuple[list[str], int, int]]:
        """Requests as (webids, start, end): as many tags per request as fit, the range
        split only where one tag's buckets exceed the item limit."""
        buckets = -(-(end_us - start_us) // ask.bucket_us)
        per_tag = buckets * len(ask.types)
        windows = [(start_us, end_us)]
        if per_tag > self.max_items:
            step = max(1, self.max_items // len(ask.types)) * ask.bucket_us
            windows = [(s, min(s + step, end_us)) for s in range(start_us, end_us, step)]
        per_window = -(-(end_us - start_us) // len(windows) // ask.bucket_us) * len(ask.types)
        base = self.client.url_length(SUMMARY_PATH, self._params(start_us, end_us, ask, []))
        by_url = max(1, (self.max_url_bytes - base - 64) // WEBID_PARAM_BYTES)
        by_items = max(1, self.max_items // max(1, per_window))
        size = min(by_url, by_items)
        return [
            (list(webids[i : i + size]), lo, hi)
            for lo, hi in windows
            for i in range(0, len(webids), size)
        ]

    async def read(
        self, webids: Sequence[str], start_us: int, end_us: int, ask: SummaryAsk
    ) -> tuple[pl.DataFrame, dict[str, str]]:
        """One row per (tag, bucket) with a column per type (lower case; null when PI has
        no good value; with `detail` also `<type>_state` and `<type>_units`), and the tags
        PI refused with its error text."""
        slots = asyncio.Semaphore(self.max_in_flight)
        failed: dict[str, str] = {}

        async def one(ids: list[str], lo: int, hi: int) -> pl.DataFrame:
            async with slots:
                await self._pace()
                body = await self.client.get_json(
                    SUMMARY_PATH, self._params(lo, hi, ask, ids), endpoint="summary"
                )
                self.stats.requests += 1
            return self._columns(body, lo, hi, ask, failed)

        frames = await asyncio.gather(
            *(one(ids, lo, hi) for ids, lo, hi in self.plan(webids, start_us, end_us, ask))
        )
        return pl.concat([_empty(ask), *frames], how="vertical_relaxed"), failed

    async def _pace(self) -> None:
        if not self.min_gap:
            return
        now = time.monotonic()
        wait = self._next_start - now
        self._next_start = max(now, self._next_start) + self.min_gap
        if wait > 0:
            await asyncio.sleep(wait)

    @staticmethod
    def _params(lo: int, hi: int, ask: SummaryAsk, ids: list[str]) -> list[tuple[str, str]]:
        lone = hi - lo <= ask.bucket_us and ask.basis == "EventWeighted"
        fields = "Items.WebId;Items.Items.Type;Items.Items.Value.Value;Items.Items.Value.Good;"
        if ask.detail:
            fields += "Items.Items.Value.UnitsAbbreviation;"
        params = [
            ("startTime", format_us(lo)),
            ("endTime", format_us(hi - 1 if lone else hi)),
            ("summaryDuration", f"{ask.bucket_us // 1_000_000}s"),
            ("calculationBasis", ask.basis),
            ("timeType", "EarliestTime"),
            ("selectedFields", fields + "Items.WebException"),
        ]
        params.extend(("summaryType", t) for t in ask.types)
        params.extend(("webId", w) for w in ids)
        return params

    def _columns(
        self, body: Any, lo: int, hi: int, ask: SummaryAsk, failed: dict[str, str]
    ) -> pl.DataFrame:
        """Items of each type in interval order: the k-th starts at lo + k * bucket length."""
        buckets = -(-(hi - lo) // ask.bucket_us)
        tags: list[str] = []
        values: dict[str, list[float | None]] = {t: [] for t in ask.types}
        details: dict[str, list[str | None]] = {
            f"{t.lower()}_{d}": [] for t in ask.types for d in ("state", "units") if ask.detail
        }
        for stream in body.get("Items") or []:
            webid = stream.get("WebId", "")
            error = stream.get("WebException")
            if error:
                failed[webid] = "; ".join(error.get("Errors") or []) or "refused"
                continue
            items = stream.get("Items") or []
            if len(items) != buckets * len(ask.types):
                raise MalformedAnswer(
                    f"summary of {webid}: {len(items)} items for {buckets} intervals "
                    f"of {len(ask.types)} types"
                )
            self.stats.items += len(items)
            tags.extend([webid] * buckets)
            by_type: dict[str, list[dict[str, Any]]] = {t: [] for t in ask.types}
            for item in items:
                by_type.setdefault(item.get("Type", ""), []).append(item.get("Value") or {})
            for kind in ask.types:
                if len(by_type[kind]) != buckets:
                    raise MalformedAnswer(f"summary of {webid}: {kind} not in {buckets} intervals")
                values[kind].extend(_number(v) for v in by_type[kind])
                if ask.detail:
                    details[f"{kind.lower()}_state"].extend(_state(v) for v in by_type[kind])
                    details[f"{kind.lower()}_units"].extend(
                        v.get("UnitsAbbreviation") for v in by_type[kind]
                    )
        starts = [lo + k * ask.bucket_us for k in range(buckets)]
        frame = pl.DataFrame(
            {
                "tag_webid": tags,
                "bucket_start": starts * (len(tags) // buckets if buckets else 0),
                **{kind.lower(): pl.Series(v, dtype=pl.Float64) for kind, v in values.items()},
                **{name: pl.Series(v, dtype=pl.String) for name, v in details.items()},
            },
            schema_overrides={"tag_webid": pl.String, "bucket_start": pl.Int64},
        )
        return frame.with_columns(
            bucket_end=pl.min_horizontal(pl.col("bucket_start") + ask.bucket_us, pl.lit(hi))
        )


def _number(value: Any) -> float | None:
    """A good numeric summary value, else None (PI puts a system state there)."""
    if not isinstance(value, dict) or value.get("Good") is False:
        return None
    inner = value.get("Value")
    return float(inner) if isinstance(inner, int | float) and not isinstance(inner, bool) else None


def _state(value: dict[str, Any]) -> str | None:
    """The system state PI puts in place of a summary without good data, else None."""
    inner = value.get("Value")
    return str(inner.get("Name")) if isinstance(inner, dict) and "Name" in inner else None


def _empty(ask: SummaryAsk) -> pl.DataFrame:
    details = [f"{t.lower()}_{d}" for t in ask.types for d in ("state", "units") if ask.detail]
    return pl.DataFrame(
        schema={
            "tag_webid": pl.String,
            "bucket_start": pl.Int64,
            **{t.lower(): pl.Float64 for t in ask.types},
            **dict.fromkeys(details, pl.String),
            "bucket_end": pl.Int64,
        }
    )
