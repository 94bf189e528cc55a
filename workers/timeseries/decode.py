"""Parsed streams (`workers.timeseries.body`) → Arrow rows in the `pi_timeseries` schema,
plus quarantine rows.

Two paths, one result. Columns of the C reader are all clean: `_decode_columns` only checks
each value's kind against its tag's and gathers the rows with numpy and Arrow. Structs or
dicts are judged value by value in bulk (`_decode_values`): every column is built with one
pass over all values and converted by pyarrow in C (`workers.timeseries.values`). A bad
value becomes a quarantine row, never an exception; a value whose raw text the reading has
lost raises `NeedsRawValues` (the next reading of the body keeps it); only a body that is
not JSON, or not shaped like a PI answer, raises `DecodeError`.

Timestamps: PI sends up to seven fractional digits (100 ns); they are parsed at nanosecond
resolution and truncated (not rounded) to microseconds, so `...00.1234567Z` becomes
`...00.123456Z` and a value never moves into the next microsecond or the next day.

Sequence: `sequence` is the position of a value among the values of its tag that share its
timestamp, in PI order, counting every value whose timestamp parses (a quarantined value
keeps its slot, so re-reading the same data yields the same keys). When a page continues a
run of equal timestamps, the read path passes `continues={webid: SequenceStart(t, k)}` to
say that the first `k` values at `t` came in an earlier page.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import chain, repeat
from operator import attrgetter
from typing import Any, Protocol

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from workers.errors import DecodeError, NeedsRawValues
from workers.lake.schemas import PI_TIMESERIES_SCHEMA, UTC_US
from workers.pi.times import to_us
from workers.timeseries.body import (
    FullTimedValue,
    ParsedBody,
    ParsedStream,
    Quality,
    TimedValue,
    ValueColumns,
    ValueKind,
    ValueSlice,
    from_json,
    gc_paused,
    parse_json,
    readings,
)
from workers.timeseries.quarantine import (
    REASON_BAD_TIMESTAMP,
    REASON_MISSING_TIMESTAMP,
    REASON_NOT_AN_OBJECT,
    REASON_WRONG_VALUE_TYPE,
    QuarantineRows,
)
from workers.timeseries.values import (
    PointKind,
    bools,
    error_texts,
    point_kind,
    strings,
    value_columns,
)

_US_PER_DAY = 86_400_000_000
QUALITY_FIELDS = ("Good", "Questionable", "Substituted", "Annotated")


class TagLike(Protocol):
    """What the decoder needs of a tag; `workers.timeseries.discovery.TagInfo` has this shape."""

    @property
    def webid(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def point_type(self) -> str | None: ...
    @property
    def units(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class TagMeta:
    """Minimal tag metadata for callers (and tests) that have no discovery `TagInfo`."""

    webid: str
    name: str
    point_type: str | None = None
    units: str | None = None
    digital_set: str | None = None


@dataclass(frozen=True, slots=True)
class SequenceStart:
    """The first `offset` values of a tag at `timestamp_us` were delivered by an earlier page."""

    timestamp_us: int
    offset: int


@dataclass(frozen=True, slots=True)
class DecodedBatch:
    """Decoded rows (pi_timeseries schema) and quarantine rows (app id and batch id null;
    timestamp and sequence set where the timestamp parsed)."""

    rows: pa.Table
    quarantine: pa.Table

    @property
    def values(self) -> int:
        return self.rows.num_rows

    @property
    def quarantined(self) -> int:
        return self.quarantine.num_rows


def decode_streamset(
    body: bytes | str | Mapping[str, Any],
    tags: Mapping[str, TagLike],
    *,
    source: str = "streamsets/recorded",
    ingestion_time: datetime | None = None,
    refused: dict[str, str] | None = None,
) -> DecodedBatch:
    """Decode a whole `/streamsets/recorded` body, or the `Content` of a `/batch`
    sub-response already parsed, with no paging: every stream as it came. Streams that
    carry an error (`WebException`) instead of values go into `refused`, WebID to text."""
    with gc_paused():
        if not isinstance(body, bytes | str):
            parsed = _whole(from_json(body, source), source, refused=refused)
            return decode_parsed(parsed, tags, source, ingestion_time)
        size = len(body)
        for parsed in readings(body):
            with suppress(NeedsRawValues):
                whole = _whole(parsed, source, size, refused)
                return decode_parsed(whole, tags, source, ingestion_time)
        whole = _whole(parse_json(body, source), source, size, refused)
        return decode_parsed(whole, tags, source, ingestion_time)


def _whole(
    parsed: ParsedBody,
    source: str,
    size: int | None = None,
    refused: dict[str, str] | None = None,
) -> ParsedBody:
    """The body, unless an entry of its `Items` is not a stream (DecodeError); streams with
    an error and no values noted in `refused`."""
    if parsed.strays:
        raise DecodeError("a stream has no WebId", source=source, size=size)
    if refused is not None:
        for stream in parsed.streams:
            if stream.error is not None:
                refused[stream.webid] = _error_text(stream.error)
    return parsed


def _error_text(error: Any) -> str:
    """The `Errors` of a WebException, else its JSON as text."""
    texts = error.get("Errors") if isinstance(error, dict) else None
    if isinstance(texts, list) and texts:
        return "; ".join(str(t) for t in texts)
    return str(error)


def decode_parsed(
    parsed: ParsedBody,
    tags: Mapping[str, TagLike],
    source: str,
    ingestion_time: datetime | None = None,
    continues: Mapping[str, SequenceStart] | None = None,
) -> DecodedBatch:
    """The rows and quarantine rows of the parsed streams (a stream without values is
    empty). NeedsRawValues when a value to quarantine lost its raw text in this reading."""
    ingested = ingestion_time or datetime.now(UTC)
    streams = [s if s.values is not None else _emptied(s) for s in parsed.streams]
    if any(isinstance(s.values, ValueSlice) for s in streams):
        return _decode_columns(streams, tags, source, ingested, continues)
    return _decode_values(streams, tags, source, ingested, continues)


def _emptied(stream: ParsedStream) -> ParsedStream:
    return ParsedStream(stream.webid, stream.name, stream.units, [], stream.error)


def _decode_values(
    streams: list[ParsedStream],
    tags: Mapping[str, TagLike],
    source: str,
    ingested: datetime,
    continues: Mapping[str, SequenceStart] | None,
) -> DecodedBatch:
    """Structs (`parse_typed`) or dicts (`parse_json`): every value judged."""
    names = [_tag_name(s, tags) for s in streams]
    quarantine = QuarantineRows(source, ingested)

    flat = list(chain.from_iterable(s.values for s in streams))
    # Values from `parse_typed` are all `TimedValue`s of one class (a list of them never
    # holds anything else), so the TypeError branch below is for dicts only.
    field = _attr_field if flat and isinstance(flat[0], TimedValue) else _field
    try:
        ts_raw = field(flat, "Timestamp")
    except TypeError:
        for i, s in enumerate(streams):
            for v in s.values:
                if type(v) is not dict:
                    quarantine.add(s.webid, names[i], v, REASON_NOT_AN_OBJECT, None)
            s.values = [v for v in s.values if type(v) is dict]
        flat = list(chain.from_iterable(s.values for s in streams))
        ts_raw = _field(flat, "Timestamp")

    n = len(flat)
    lengths = np.fromiter((len(s.values) for s in streams), dtype=np.int64, count=len(streams))
    starts = np.concatenate(([0], np.cumsum(lengths)))
    stream_of = np.repeat(np.arange(len(streams), dtype=np.int32), lengths)

    timestamps, ts_missing = _timestamps(ts_raw)
    keep = np.ones(n, dtype=bool)
    if timestamps.null_count:
        bad = np.asarray(timestamps.is_null().to_numpy(zero_copy_only=False))
        for i in np.flatnonzero(bad):
            s = int(stream_of[i])
            reason = REASON_MISSING_TIMESTAMP if ts_missing[i] else REASON_BAD_TIMESTAMP
            quarantine.add(streams[s].webid, names[s], flat[i], reason, None)
        keep &= ~bad

    point = np.repeat(_point_kinds(streams, tags), lengths)
    errors = field(flat, "Errors")
    values, rejected = value_columns(field(flat, "Value"), point, errors)
    for at, reason in rejected:
        if keep[at]:
            s = int(stream_of[at])
            quarantine.add(streams[s].webid, names[s], flat[at], reason, at)
            keep[at] = False

    ts_us = timestamps.cast(pa.int64()).fill_null(0).to_numpy()
    valid = np.asarray(timestamps.is_valid().to_numpy(zero_copy_only=False))
    sequence = _sequence(streams, stream_of, ts_us, valid, starts, continues)
    fallback_units = pa.array([_stream_units(s, tags) for s in streams], pa.string())
    value_units = field(flat, "UnitsAbbreviation")
    if value_units.count(None) == n:  # the usual case: units once per stream
        units = fallback_units.take(stream_of)
    else:
        units = pc.coalesce(strings(value_units), fallback_units.take(stream_of))
    quality = [bools(field(flat, name)) for name in QUALITY_FIELDS]
    per_value = [pa.array(sequence), *values, units, *quality, error_texts(errors)]
    table = _rows_table(streams, names, stream_of, timestamps, ts_us, per_value, ingested)
    if not keep.all():
        table = table.filter(pa.array(keep))
    return DecodedBatch(table, quarantine.table(ts_us, sequence))


def _point_kinds(streams: list[ParsedStream], tags: Mapping[str, TagLike]) -> np.ndarray:
    """The `PointKind` of each stream's tag (ANY for a tag not known)."""
    kinds = []
    for s in streams:
        tag = tags.get(s.webid)
        kinds.append(point_kind(tag.point_type if tag is not None else None))
    return np.array(kinds, dtype=np.int8)


def _decode_columns(
    streams: list[ParsedStream],
    tags: Mapping[str, TagLike],
    source: str,
    ingested: datetime,
    continues: Mapping[str, SequenceStart] | None,
) -> DecodedBatch:
    """Columns of `parse_columns`: every value is clean there, so this only checks each
    value's kind against its tag's and gathers the rows the streams kept. A number on a
    string or digital tag, or a string on a numeric or digital tag (maybe a `"NaN"`),
    raises NeedsRawValues: the next reading judges it."""
    columns, index = _kept(streams)

    def pick(values: np.ndarray) -> np.ndarray:
        return values if index is None else values[index]

    def take(values: pa.Array) -> pa.Array:
        return values if index is None else values.take(index)

    kind = pick(columns.kind)
    lengths = np.array([len(s.values) for s in streams], dtype=np.int64)
    starts = np.concatenate(([0], np.cumsum(lengths)))
    stream_of = np.repeat(np.arange(len(streams), dtype=np.int32), lengths)
    point = np.repeat(_point_kinds(streams, tags), lengths)
    number_misfit = (kind == ValueKind.NUMBER) & (
        (point == PointKind.STRING) | (point == PointKind.DIGITAL)
    )
    text_misfit = (kind == ValueKind.TEXT) & (
        (point == PointKind.NUMERIC) | (point == PointKind.DIGITAL)
    )
    if (number_misfit | text_misfit).any():
        raise NeedsRawValues(REASON_WRONG_VALUE_TYPE)

    ts_us = pick(columns.ts_us)
    sequence = _sequence(streams, stream_of, ts_us, np.ones(len(ts_us), bool), starts, continues)
    values = [
        pa.array(pick(columns.number), mask=kind != ValueKind.NUMBER),
        take(columns.text),
        take(columns.state),
        pa.array(pick(columns.code), mask=kind != ValueKind.STATE),
        pa.array(pick(columns.system)),
    ]
    quality = [pa.array(q == Quality.TRUE, mask=q == Quality.NULL) for q in pick(columns.quality).T]
    units = pa.array([_stream_units(s, tags) for s in streams], pa.string()).take(stream_of)
    names = [_tag_name(s, tags) for s in streams]
    per_value = [pa.array(sequence), *values, units, *quality, pa.nulls(len(ts_us), pa.string())]
    timestamps = pa.array(ts_us, UTC_US)
    table = _rows_table(streams, names, stream_of, timestamps, ts_us, per_value, ingested)
    return DecodedBatch(table, QuarantineRows(source, ingested).table())


def _kept(streams: list[ParsedStream]) -> tuple[ValueColumns, np.ndarray | None]:
    """The body's columns and the positions the streams kept, in stream order (None when
    that is all of them, as read: the usual case, with no copy)."""
    kept = [s.values for s in streams if isinstance(s.values, ValueSlice)]
    columns = kept[0].columns
    in_order = all(a.hi <= b.lo for a, b in itertools.pairwise(kept))
    if in_order and sum(map(len, kept)) == len(columns.ts_us):
        return columns, None
    return columns, np.concatenate([np.arange(x.lo, x.hi) for x in kept])


def _rows_table(
    streams: list[ParsedStream],
    names: list[str | None],
    stream_of: np.ndarray,
    timestamps: pa.Array,
    ts_us: np.ndarray,
    per_value: list[pa.Array],
    ingested: datetime,
) -> pa.Table:
    """The rows in the `pi_timeseries` schema: `per_value` holds its columns from `sequence`
    to `value_error`; tag ids come per stream, the date from `ts_us`."""
    return pa.Table.from_arrays(
        [
            pa.array([s.webid for s in streams], pa.string()).take(stream_of),
            pa.array(names, pa.string()).take(stream_of),
            timestamps,
            *per_value,
            pa.array(np.full(len(ts_us), to_us(ingested), dtype=np.int64)).cast(UTC_US),
            pa.array((ts_us // _US_PER_DAY).astype(np.int32)).cast(pa.date32()),
        ],
        schema=PI_TIMESERIES_SCHEMA,
    )


def _field(items: list[dict[str, Any]], key: str) -> list[Any]:
    """One field of every value (None where absent): the fastest pure-Python column read,
    faster than searching the body for a field that selectedFields left out."""
    return list(map(dict.get, items, repeat(key)))


_NOT_IN_PLAIN = frozenset(FullTimedValue.__struct_fields__) - set(TimedValue.__struct_fields__)


def _attr_field(items: list[TimedValue], key: str) -> list[Any]:
    """`_field` for `TimedValue`s (None where absent: the struct's default, and every value
    of a field the plain struct does not have)."""
    if key in _NOT_IN_PLAIN and type(items[0]) is TimedValue:
        return [None] * len(items)
    return list(map(attrgetter(key), items))


def _tag_name(stream: ParsedStream, tags: Mapping[str, TagLike]) -> str | None:
    tag = tags.get(stream.webid)
    return tag.name if tag is not None else stream.name


def _stream_units(stream: ParsedStream, tags: Mapping[str, TagLike]) -> str | None:
    if stream.units:
        return stream.units
    tag = tags.get(stream.webid)
    return tag.units if tag is not None else None


def _timestamps(raw: list[Any]) -> tuple[pa.Array, list[bool]]:
    """ISO 8601 strings → timestamp[us, UTC] (nulls where missing or unparseable)."""
    try:
        texts = pa.array(raw, pa.string())
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        texts = pa.array([t if type(t) is str else None for t in raw], pa.string())
    missing = [t is None for t in raw] if texts.null_count else []
    try:
        parsed = texts.cast(pa.timestamp("ns", tz="UTC")).cast(UTC_US, safe=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        # Nanoseconds end in 1677 and 2262; PI serves years 1 to 9999 (placeholders, bad
        # interface clocks). Parsed at microseconds, every such time fits, unshifted.
        parsed = (
            pl.Series(texts)
            .str.to_datetime(
                "%Y-%m-%dT%H:%M:%S%.f%#z", time_unit="us", time_zone="UTC", strict=False
            )
            .to_arrow()
            .cast(UTC_US)
        )
        if not missing:
            missing = [t is None for t in raw]
    return parsed, missing


def _sequence(
    streams: list[ParsedStream],
    stream_of: np.ndarray,
    ts_us: np.ndarray,
    valid: np.ndarray,
    starts: np.ndarray,
    continues: Mapping[str, SequenceStart] | None,
) -> np.ndarray:
    """Position among values of the same tag and timestamp, in input order (vectorised).

    PI returns each stream in time order, so the rows are usually already grouped and the
    positions are run lengths (O(n)); otherwise a stable sort groups them first.
    """
    codes: dict[str, int] = {}
    tag_code = np.array([codes.setdefault(s.webid, len(codes)) for s in streams], dtype=np.int64)
    rows = np.flatnonzero(valid)
    tag = tag_code[stream_of[rows]] if len(streams) else np.zeros(0, np.int64)
    ts = ts_us[rows]
    ordered = bool(np.all((tag[1:] > tag[:-1]) | ((tag[1:] == tag[:-1]) & (ts[1:] >= ts[:-1]))))
    order = np.arange(len(rows)) if ordered else np.lexsort((ts, tag))
    tag, ts = tag[order], ts[order]
    new_run = np.ones(len(rows), dtype=bool)
    new_run[1:] = (tag[1:] != tag[:-1]) | (ts[1:] != ts[:-1])
    position = np.arange(len(rows))
    run_start = np.maximum.accumulate(np.where(new_run, position, 0)) if len(rows) else position
    seq = np.zeros(len(ts_us), dtype=np.int32)
    seq[rows[order]] = position - run_start
    for webid, start in (continues or {}).items():
        at_us = start.timestamp_us
        for i, s in enumerate(streams):
            if s.webid == webid:
                lo, hi = int(starts[i]), int(starts[i + 1])
                hit = (ts_us[lo:hi] == at_us) & valid[lo:hi]
                seq[lo:hi][hit] += start.offset
    return seq
