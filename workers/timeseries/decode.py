"""PI JSON bytes → Arrow columns in the `pi_timeseries` schema, plus quarantine rows.

Why it is shaped like this: the PI `Value` field is polymorphic (a number, a string or a
digital-state object), which neither `pyarrow.json` nor `polars.read_json` can read. So a
body goes to the first of three readers that takes it (`read_body`): the C reader
`workers.timeseries._pijson` turns the usual, clean body straight into arrays (`parse_columns`, rows
built by `_decode_columns` with numpy and Arrow only); msgspec reads any other well-formed
body into one small `TimedValue` struct per value (`parse_typed`); orjson dicts
(`parse_body`) serve a body of odd shape or with a value to quarantine. Only the last two
judge bad values. From structs or dicts every column is built with one pass over all values
and converted by pyarrow in C. Values
are split by Python type across all streams (numbers, strings, digital-state objects), one
`pyarrow.array` call per type, and scattered back: a numeric stream with a few system states
stays columnar; only nulls, odd types and doubtful objects are classified one by one. A bad
value becomes a quarantine row, never an exception; only a body that is not JSON, or not
shaped like a PI answer, raises `DecodeError`.

Timestamps: PI sends up to seven fractional digits (100 ns); they are parsed at nanosecond
resolution and truncated (not rounded) to microseconds, so `...00.1234567Z` becomes
`...00.123456Z` and a value never moves into the next microsecond or the next day.

Sequence: `sequence` is the position of a value among the values of its tag that share its
timestamp, in PI order, counting every value whose timestamp parses (a quarantined value
keeps its slot, so re-reading the same data yields the same keys). When a page continues a
run of equal timestamps, the fetch layer either concatenates the pages of a stream before
decoding, or passes `continues={webid: SequenceStart(timestamp, k)}` to say that the first
`k` values at that timestamp came in an earlier page.
"""

from __future__ import annotations

import gc
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import chain, compress, repeat
from operator import attrgetter
from typing import Any, Protocol, TypeVar

import msgspec
import numpy as np
import orjson
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from workers.errors import PideltaError
from workers.lake.tables import PI_TIMESERIES_SCHEMA, QUARANTINE_SCHEMA, UTC_US

try:
    from workers.timeseries import _pijson
except ImportError:  # installed without a C compiler: msgspec and orjson read every body
    _pijson = None

NUMERIC_POINT_TYPES = frozenset({"Float16", "Float32", "Float64", "Int16", "Int32", "Int64"})
STRING_POINT_TYPES = frozenset({"String"})
DIGITAL_POINT_TYPES = frozenset({"Digital"})

NON_FINITE_STRINGS: Mapping[str, float] = {
    "NaN": float("nan"),
    "Infinity": float("inf"),
    "-Infinity": float("-inf"),
}

REASON_NOT_AN_OBJECT = "not_an_object"
REASON_MISSING_TIMESTAMP = "missing_timestamp"
REASON_BAD_TIMESTAMP = "bad_timestamp"
REASON_WRONG_VALUE_TYPE = "wrong_value_type"
REASON_BAD_DIGITAL_STATE = "bad_digital_state"
QUARANTINE_REASONS: tuple[str, ...] = (
    REASON_NOT_AN_OBJECT,
    REASON_MISSING_TIMESTAMP,
    REASON_BAD_TIMESTAMP,
    REASON_WRONG_VALUE_TYPE,
    REASON_BAD_DIGITAL_STATE,
)

_T = TypeVar("_T")
_NUMERIC, _STRING, _DIGITAL, _ANY = "numeric", "string", "digital", "any"
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_US_PER_DAY = 86_400_000_000


class DecodeError(PideltaError):
    """The body is not JSON or not shaped like a PI answer (e.g. truncated): retry the call."""

    def __init__(self, message: str, *, source: str, size: int | None = None) -> None:
        where = f"{source}, {size} bytes" if size is not None else source
        super().__init__(f"cannot decode {where}: {message}")
        self.source = source
        self.size = size


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
    """The first `offset` values of a tag at `timestamp` were delivered by an earlier page."""

    timestamp: datetime
    offset: int


@dataclass(frozen=True, slots=True)
class DecodedBatch:
    """Decoded rows (pi_timeseries schema) and quarantine rows (app id and batch id null;
    timestamp and sequence set where the timestamp parsed)."""

    rows: pa.Table
    quarantine: pa.Table
    non_finite: int = 0

    @property
    def values(self) -> int:
        return self.rows.num_rows

    @property
    def quarantined(self) -> int:
        return self.quarantine.num_rows


class TimedValue(msgspec.Struct, gc=False, forbid_unknown_fields=True):
    """One PI TimedValue read by `parse_typed`: no dict per value. Every field is `Any` so
    that any JSON value decodes; the decoder judges the types as it does for dicts.

    Only the fields pidelta selects per value, bar `Errors`: the usual body decodes into
    these, and the decoder skips reading the absent fields (two passes of eight). A value
    with any other field fails the body over to `FullTimedValue`, at once in practice (a
    server that adds a field adds it to the first value).
    """

    Timestamp: Any = None
    Value: Any = None
    Good: Any = None
    Questionable: Any = None
    Substituted: Any = None
    Annotated: Any = None


class FullTimedValue(TimedValue, forbid_unknown_fields=False):
    """A TimedValue that may carry `Errors` or its own units (other fields are ignored)."""

    UnitsAbbreviation: Any = None
    Errors: Any = None


def _streamset_decoder(value: type[TimedValue]) -> msgspec.json.Decoder[Any]:
    stream = msgspec.defstruct(
        f"Stream[{value.__name__}]",
        [
            ("WebId", Any, None),
            ("Name", Any, None),
            ("UnitsAbbreviation", Any, None),
            ("Items", list[value] | None, None),  # type: ignore[valid-type]
            ("WebException", Any, None),
        ],
        gc=False,
    )
    body = msgspec.defstruct(f"Body[{value.__name__}]", [("Items", list[stream])], gc=False)  # type: ignore[valid-type]
    return msgspec.json.Decoder(body)


_TYPED_DECODERS = (_streamset_decoder(TimedValue), _streamset_decoder(FullTimedValue))


class NeedsRawValues(Exception):
    """A body read by `parse_columns` or `parse_typed` holds a value to quarantine: columns
    and a `TimedValue` have lost its raw text, so decode the body again with the next
    reader of `PARSERS`, and at last from `parse_body`."""


@dataclass(frozen=True, slots=True)
class ValueColumns:
    """Every value of a body read by `workers.timeseries._pijson`, one array per field."""

    ts_us: np.ndarray
    kind: np.ndarray  # _C_NUMBER, _C_TEXT or _C_STATE
    number: np.ndarray
    quality: np.ndarray  # (n, 4): Good, Questionable, Substituted, Annotated; 2 is null
    text: pa.Array
    state: pa.Array
    code: np.ndarray
    system: np.ndarray


_C_NUMBER, _C_TEXT, _C_STATE = range(3)
_C_NULL = 2


@dataclass(frozen=True, slots=True)
class ValueSlice:
    """One stream's values in a body's `ValueColumns`: `[lo, hi)`. It stands in for the list
    of values where the fetch layer pages (`len`, slices and `timestamps`)."""

    columns: ValueColumns
    lo: int
    hi: int

    def __len__(self) -> int:
        return self.hi - self.lo

    def __getitem__(self, key: slice) -> ValueSlice:
        start, stop, step = key.indices(len(self))
        if step != 1:
            raise ValueError("a ValueSlice takes contiguous slices only")
        return ValueSlice(self.columns, self.lo + start, self.lo + max(start, stop))

    def timestamps(self) -> np.ndarray:
        return self.columns.ts_us[self.lo : self.hi]


@dataclass(slots=True)
class _Stream:
    webid: str
    name: str | None
    units: str | None
    items: list[Any]


def decode_streamset(
    body: bytes | str | Mapping[str, Any],
    tags: Mapping[str, TagLike],
    *,
    source: str = "streamsets/recorded",
    ingestion_time: datetime | None = None,
    continues: Mapping[str, SequenceStart] | None = None,
) -> DecodedBatch:
    """Decode a `/streamsets/recorded` body, or the `Content` of a `/batch` sub-response.

    `body` may already be parsed (a `/batch` answer parsed once by the fetch layer).
    """
    with gc_paused():
        return _decode_body(body, tags, source, ingestion_time, continues)


def _decode_body(
    body: bytes | str | Mapping[str, Any],
    tags: Mapping[str, TagLike],
    source: str,
    ingestion_time: datetime | None,
    continues: Mapping[str, SequenceStart] | None,
) -> DecodedBatch:
    if isinstance(body, bytes | str):
        raw = body
        return read_body(
            raw, source, lambda doc: _decode_doc(doc, tags, source, ingestion_time, continues, raw)
        )
    return _decode_doc(body, tags, source, ingestion_time, continues, None)


def read_body(body: bytes | str, source: str, use: Callable[[Any], _T]) -> _T:
    """`use` of the body as read by the first reader of `PARSERS` that takes it and whose
    values `use` can judge (NeedsRawValues hands it on), at last by `parse_body`."""
    for parse in PARSERS:
        doc = parse(body)
        if doc is not None:
            try:
                return use(doc)
            except NeedsRawValues:
                pass
    return use(parse_body(body, source))


def _decode_doc(
    doc: Any,
    tags: Mapping[str, TagLike],
    source: str,
    ingestion_time: datetime | None,
    continues: Mapping[str, SequenceStart] | None,
    body: bytes | str | None,
) -> DecodedBatch:
    size = len(body) if body is not None else None
    if not isinstance(doc, Mapping) or not isinstance(doc.get("Items"), list):
        raise DecodeError("no Items list at the top level", source=source, size=size)
    streams = []
    for stream in doc["Items"]:
        if not isinstance(stream, Mapping) or not isinstance(stream.get("WebId"), str):
            raise DecodeError("a stream has no WebId", source=source, size=size)
        items = stream.get("Items") or []
        if not isinstance(items, list | ValueSlice):
            raise DecodeError(f"Items of {stream['WebId']} is not a list", source=source)
        streams.append(
            _Stream(stream["WebId"], stream.get("Name"), stream.get("UnitsAbbreviation"), items)
        )
    return _decode(streams, tags, source, ingestion_time, continues)


def decode_streams(
    streams: Iterable[tuple[str, Sequence[Any]]],
    tags: Mapping[str, TagLike],
    *,
    source: str = "streams/recorded",
    ingestion_time: datetime | None = None,
    continues: Mapping[str, SequenceStart] | None = None,
) -> DecodedBatch:
    """Decode per-stream lists of TimedValue dicts (e.g. pages concatenated per stream)."""
    parsed = [_Stream(webid, None, None, list(items)) for webid, items in streams]
    return _decode(parsed, tags, source, ingestion_time, continues)


def decode_values(
    webid: str,
    values: Sequence[Any],
    tags: Mapping[str, TagLike],
    **kwargs: Any,
) -> DecodedBatch:
    """Decode the TimedValue list of one stream."""
    return decode_streams([(webid, values)], tags, **kwargs)


@contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic GC off while a body is parsed and decoded: that makes up to a million
    containers (dicts, lists), and the collections they trigger walk them all while finding
    nothing to free (~10% of an orjson parse, 3% of the worker's CPU with msgspec). Wrap the
    call that owns the parsed body, so that it is freed before the GC runs again."""
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


def parse_body(body: bytes | str, source: str) -> Any:
    """orjson: every value a dict, whatever its shape, for the decoder to judge."""
    try:
        with gc_paused():
            return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(str(exc), source=source, size=len(body)) from None


def parse_typed(body: bytes | str) -> dict[str, Any] | None:
    """The body as `{"Items": [stream dicts]}` whose values are `TimedValue`s, or None when
    it is not a well-formed streamset (e.g. a value that is not an object): the caller then
    uses `parse_body`, which keeps every oddity for the decoder to quarantine.

    msgspec builds one small struct per value instead of a dict: about a third of the CPU
    of `parse_body` on a full TimedValue body, half on a trimmed one.
    """
    plain, full = _TYPED_DECODERS
    try:
        doc = plain.decode(body)
    except msgspec.ValidationError:
        try:
            doc = full.decode(body)
        except (msgspec.DecodeError, UnicodeDecodeError):  # ValidationError included
            return None
    except (msgspec.DecodeError, UnicodeDecodeError):  # msgspec raises the latter for bad UTF-8
        return None
    return {
        "Items": [
            {
                "WebId": s.WebId,
                "Name": s.Name,
                "UnitsAbbreviation": s.UnitsAbbreviation,
                "Items": s.Items,
                "WebException": s.WebException,
            }
            for s in doc.Items
        ]
    }


def parse_columns(body: bytes | str) -> dict[str, Any] | None:
    """The body as `{"Items": [stream dicts]}` whose `Items` are `ValueSlice`s, or None when
    the C reader is not installed or the body is not the usual clean one (any field, type
    or text it does not know): the caller then uses `parse_typed`.

    No Python object per value: about a third of the CPU of `parse_typed` alone, and the
    decoder then builds the columns with numpy and Arrow only.
    """
    if _pijson is None or not isinstance(body, bytes):
        return None
    parsed = _pijson.decode(body)
    if parsed is None:
        return None
    streams, n, ts_us, kind, number, quality, text_ends, text, code, system, state_ends, state = (
        parsed
    )
    kinds = np.frombuffer(kind, np.uint8)
    columns = ValueColumns(
        ts_us=np.frombuffer(ts_us, np.int64),
        kind=kinds,
        number=np.frombuffer(number, np.float64),
        quality=np.frombuffer(quality, np.uint8).reshape(n, 4),
        text=_string_array(text_ends, text, kinds == _C_TEXT),
        state=_string_array(state_ends, state, kinds == _C_STATE),
        code=np.frombuffer(code, np.int32),
        system=np.frombuffer(system, np.bool_),
    )
    items, lo = [], 0
    for webid, name, units, count in streams:
        items.append(
            {
                "WebId": webid,
                "Name": name,
                "UnitsAbbreviation": units,
                "Items": ValueSlice(columns, lo, lo + count),
                "WebException": None,
            }
        )
        lo += count
    return {"Items": items}


def _string_array(ends: bytes, data: bytes, present: np.ndarray) -> pa.Array:
    """Arrow strings straight from the reader's offsets and bytes (UTF-8 checked in C)."""
    n = len(present)
    if not present.any():
        return pa.nulls(n, pa.string())
    validity = None if present.all() else pa.py_buffer(np.packbits(present, bitorder="little"))
    return pa.StringArray.from_buffers(n, pa.py_buffer(ends), pa.py_buffer(data), validity)


PARSERS = (parse_columns, parse_typed)


def _point_kind(tag: TagLike | None) -> str:
    point_type = tag.point_type if tag is not None else None
    if point_type in NUMERIC_POINT_TYPES:
        return _NUMERIC
    if point_type in STRING_POINT_TYPES:
        return _STRING
    if point_type in DIGITAL_POINT_TYPES:
        return _DIGITAL
    return _ANY


def _decode(
    streams: list[_Stream],
    tags: Mapping[str, TagLike],
    source: str,
    ingestion_time: datetime | None,
    continues: Mapping[str, SequenceStart] | None,
) -> DecodedBatch:
    ingested = ingestion_time or datetime.now(UTC)
    if any(isinstance(s.items, ValueSlice) for s in streams):
        return _decode_columns(streams, tags, source, ingested, continues)
    names = [_tag_name(s, tags) for s in streams]
    quarantine = _QuarantineRows(source, ingested)

    flat = list(chain.from_iterable(s.items for s in streams))
    # Values from `parse_typed` are all `TimedValue`s of one class (a list of them never
    # holds anything else), so the TypeError branch below is for dicts only.
    field = _attr_field if flat and isinstance(flat[0], TimedValue) else _field
    try:
        ts_raw = field(flat, "Timestamp")
    except TypeError:
        for i, s in enumerate(streams):
            for v in s.items:
                if type(v) is not dict:
                    quarantine.add(s.webid, names[i], v, REASON_NOT_AN_OBJECT, None)
            s.items = [v for v in s.items if type(v) is dict]
        flat = list(chain.from_iterable(s.items for s in streams))
        ts_raw = _field(flat, "Timestamp")

    n = len(flat)
    lengths = np.fromiter((len(s.items) for s in streams), dtype=np.int64, count=len(streams))
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

    kinds = [_point_kind(tags.get(s.webid)) for s in streams]
    errors = field(flat, "Errors")
    values, rejected, non_finite = _value_columns(field(flat, "Value"), kinds, starts, errors)
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
        units = pc.coalesce(_strings(value_units), fallback_units.take(stream_of))
    quality = [_bools(field(flat, name)) for name in QUALITY_FIELDS]
    per_value = [pa.array(sequence), *values, units, *quality, _errors(errors)]
    table = _rows_table(streams, names, stream_of, timestamps, ts_us, per_value, ingested)
    if not keep.all():
        table = table.filter(pa.array(keep))
    return DecodedBatch(table, quarantine.table(ts_us, sequence), non_finite)


QUALITY_FIELDS = ("Good", "Questionable", "Substituted", "Annotated")


def _decode_columns(
    streams: list[_Stream],
    tags: Mapping[str, TagLike],
    source: str,
    ingested: datetime,
    continues: Mapping[str, SequenceStart] | None,
) -> DecodedBatch:
    """`_decode` for the `ValueColumns` of `parse_columns`: every value is clean there, so
    this only checks each value's type against its tag's point type and gathers the rows
    the streams kept. A number on a string or digital tag, or a string on a numeric or
    digital tag (maybe a `"NaN"`), raises NeedsRawValues: the next reader judges it."""
    columns, index = _kept(streams)

    def pick(values: np.ndarray) -> np.ndarray:
        return values if index is None else values[index]

    def take(values: pa.Array) -> pa.Array:
        return values if index is None else values.take(index)

    kind = pick(columns.kind)
    lengths = np.array([len(s.items) for s in streams], dtype=np.int64)
    starts = np.concatenate(([0], np.cumsum(lengths)))
    stream_of = np.repeat(np.arange(len(streams), dtype=np.int32), lengths)
    point = np.array([_KIND_CODES[_point_kind(tags.get(s.webid))] for s in streams], np.int8)
    point = np.repeat(point, lengths)
    numeric, string, digital = (_KIND_CODES[k] for k in (_NUMERIC, _STRING, _DIGITAL))
    number_misfit = (kind == _C_NUMBER) & ((point == string) | (point == digital))
    text_misfit = (kind == _C_TEXT) & ((point == numeric) | (point == digital))
    if (number_misfit | text_misfit).any():
        raise NeedsRawValues(REASON_WRONG_VALUE_TYPE)

    ts_us = pick(columns.ts_us)
    sequence = _sequence(streams, stream_of, ts_us, np.ones(len(ts_us), bool), starts, continues)
    values = [
        pa.array(pick(columns.number), mask=kind != _C_NUMBER),
        take(columns.text),
        take(columns.state),
        pa.array(pick(columns.code), mask=kind != _C_STATE),
        pa.array(pick(columns.system)),
    ]
    quality = [pa.array(q == 1, mask=q == _C_NULL) for q in pick(columns.quality).T]
    units = pa.array([_stream_units(s, tags) for s in streams], pa.string()).take(stream_of)
    names = [_tag_name(s, tags) for s in streams]
    per_value = [pa.array(sequence), *values, units, *quality, pa.nulls(len(ts_us), pa.string())]
    timestamps = pa.array(ts_us, UTC_US)
    table = _rows_table(streams, names, stream_of, timestamps, ts_us, per_value, ingested)
    return DecodedBatch(table, _QuarantineRows(source, ingested).table(ts_us, sequence))


def _kept(streams: list[_Stream]) -> tuple[ValueColumns, np.ndarray | None]:
    """The body's columns and the positions the streams kept, in stream order (None when
    that is all of them, as read: the usual case, with no copy)."""
    if any(len(s.items) and not isinstance(s.items, ValueSlice) for s in streams):
        raise TypeError("a body decodes from one reader's values only")
    kept = [s.items for s in streams if isinstance(s.items, ValueSlice)]
    columns = kept[0].columns
    in_order = all(a.hi <= b.lo for a, b in itertools.pairwise(kept))
    if in_order and sum(map(len, kept)) == len(columns.ts_us):
        return columns, None
    return columns, np.concatenate([np.arange(x.lo, x.hi) for x in kept])


def _rows_table(
    streams: list[_Stream],
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
            pa.array(np.full(len(ts_us), _to_us(ingested), dtype=np.int64)).cast(UTC_US),
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


def _tag_name(stream: _Stream, tags: Mapping[str, TagLike]) -> str | None:
    tag = tags.get(stream.webid)
    return tag.name if tag is not None else stream.name


def _stream_units(stream: _Stream, tags: Mapping[str, TagLike]) -> str | None:
    if stream.units:
        return stream.units
    tag = tags.get(stream.webid)
    return tag.units if tag is not None else None


def _to_us(moment: datetime) -> int:
    delta = moment.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _timestamps(raw: list[Any]) -> tuple[pa.Array, list[bool]]:
    """ISO 8601 strings → timestamp[us, UTC] (nulls where missing or unparseable)."""
    try:
        strings = pa.array(raw, pa.string())
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        strings = pa.array([t if type(t) is str else None for t in raw], pa.string())
    missing = [t is None for t in raw] if strings.null_count else []
    try:
        parsed = strings.cast(pa.timestamp("ns", tz="UTC")).cast(UTC_US, safe=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        parsed = (
            pl.Series(strings)
            .str.to_datetime(
                "%Y-%m-%dT%H:%M:%S%.f%#z", time_unit="ns", time_zone="UTC", strict=False
            )
            .dt.cast_time_unit("us")
            .to_arrow()
            .cast(UTC_US)
        )
        if not missing:
            missing = [t is None for t in raw]
    return parsed, missing


def _sequence(
    streams: list[_Stream],
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
        at_us = _to_us(start.timestamp)
        for i, s in enumerate(streams):
            if s.webid == webid:
                lo, hi = int(starts[i]), int(starts[i + 1])
                hit = (ts_us[lo:hi] == at_us) & valid[lo:hi]
                seq[lo:hi][hit] += start.offset
    return seq


_VALUE_TYPES = (pa.float64(), pa.string(), pa.string(), pa.int32(), pa.bool_())
_NUMBER, _TEXT, _OBJECT, _NULL, _OTHER = range(5)
_WRONG = REASON_WRONG_VALUE_TYPE
_TYPE_CODES: Mapping[type, int] = {
    float: _NUMBER,
    int: _NUMBER,
    str: _TEXT,
    dict: _OBJECT,
    type(None): _NULL,
}
_KIND_CODES: Mapping[str, int] = {_NUMERIC: 0, _STRING: 1, _DIGITAL: 2, _ANY: 3}


def _value_columns(
    raw: list[Any], kinds: list[str], starts: np.ndarray, errors: list[Any]
) -> tuple[list[pa.Array], list[tuple[int, str]], int]:
    """The five value columns of all streams, with (flat position, reason) of rejects.

    Values are split by Python type in one C-level pass, whatever stream they belong to:
    numbers, strings and objects are each converted with one pyarrow call and scattered
    back to their positions, so a numeric stream holding a few system states stays
    columnar. Only nulls, odd types, non-finite strings and objects that are not clean
    digital states are looked at one by one.
    """
    n = len(raw)
    code = np.fromiter(map(_TYPE_CODES.get, map(type, raw), repeat(_OTHER)), np.int8, count=n)
    kind = np.repeat(np.array([_KIND_CODES[k] for k in kinds], dtype=np.int8), np.diff(starts))
    numeric, digital, anything = kind == 0, kind == 2, kind == 3
    reasons: dict[int, str] = {}
    non_finite = 0

    is_number = code == _NUMBER
    number_ok = is_number & (numeric | anything)
    has_value = number_ok.copy()
    value = _floats(raw, number_ok)
    if not number_ok.all():
        reasons.update(dict.fromkeys(np.flatnonzero(is_number & ~number_ok).tolist(), _WRONG))

    is_text = code == _TEXT
    text_ok = is_text & ~numeric & ~digital
    text = pa.array(raw, pa.string(), mask=~text_ok) if text_ok.any() else pa.nulls(n, pa.string())
    for at in np.flatnonzero(is_text & numeric).tolist():
        special = NON_FINITE_STRINGS.get(raw[at])
        if special is None:
            reasons[at] = _WRONG
        else:
            value[at], has_value[at] = special, True
            non_finite += 1
    reasons.update(dict.fromkeys(np.flatnonzero(is_text & digital).tolist(), _WRONG))

    system = np.zeros(n, dtype=bool)
    system_valid = has_value | text_ok
    object_at = np.flatnonzero(code == _OBJECT)
    state, state_code, object_system, object_ok = _states(
        list(compress(raw, (code == _OBJECT).tolist()))
    )
    system[object_at] = object_system
    system_valid[object_at] = object_ok
    reasons.update(dict.fromkeys(object_at[~object_ok].tolist(), REASON_BAD_DIGITAL_STATE))

    for at in np.flatnonzero(code == _NULL).tolist():
        # A null or absent `Value` is only data when `Errors` says why (PI's own answer
        # for a value it could not read); otherwise it is a malformed value.
        if not errors[at]:
            reasons[at] = _WRONG
    reasons.update(dict.fromkeys(np.flatnonzero(code == _OTHER).tolist(), _WRONG))

    columns = [
        pa.array(value) if has_value.all() else pa.array(value, mask=~has_value),
        text,
        _scatter(state, object_at, n),
        _scatter(state_code, object_at, n),
        pa.array(system) if system_valid.all() else pa.array(system, mask=~system_valid),
    ]
    return columns, sorted(reasons.items()), non_finite


def _floats(raw: list[Any], ok: np.ndarray) -> np.ndarray:
    """The Python ints and floats of `raw` where `ok` → a writable float64 array (0
    elsewhere). pyarrow skips the masked values in C; it refuses ints a double cannot hold
    exactly, which are then rounded like `float()` does."""
    try:
        converted = pa.array(raw, pa.float64(), mask=None if ok.all() else ~ok)
        return converted.fill_null(0.0).to_numpy(zero_copy_only=False, writable=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return np.array([float(x) if k else 0.0 for x, k in zip(raw, ok, strict=True)])


def _scatter(values: pa.Array, at: np.ndarray, n: int) -> pa.Array:
    """`values` placed at the (ascending) positions `at` of an array of `n`, nulls elsewhere."""
    if len(at) == n:
        return values
    if len(at) == 0:
        return pa.nulls(n, values.type)
    index = np.zeros(n, dtype=np.int64)
    index[at] = np.arange(len(at))
    missing = np.ones(n, dtype=bool)
    missing[at] = False
    return values.take(pa.array(index, mask=missing))


def _states(
    objects: list[dict[str, Any]],
) -> tuple[pa.Array, pa.Array, np.ndarray, np.ndarray]:
    """Digital state objects → Name, Value (int32), IsSystem and whether each is well formed.

    Vectorised when pyarrow reads them as one struct; objects it cannot vouch for (a null
    or absent field, another field type) are classified one by one, exactly.
    """
    m = len(objects)
    ok = np.zeros(m, dtype=bool)
    system = np.zeros(m, dtype=bool)
    names: list[str | None] | pa.Array = pa.nulls(m, pa.string())
    codes = np.zeros(m, dtype=np.int64)
    struct = _struct(objects)
    if struct is not None:
        name, code = struct.field("Name"), struct.field("Value")
        codes = np.array(code.fill_null(0).to_numpy())
        ok = _valid(name) & _valid(code) & (codes >= _INT32_MIN) & (codes <= _INT32_MAX)
        if "IsSystem" in {f.name for f in struct.type}:
            flag = struct.field("IsSystem")
            if flag.type == pa.bool_():
                ok &= _valid(flag)
                system = np.array(flag.fill_null(False).to_numpy(zero_copy_only=False))
            else:
                ok[:] = False
        names = name
    doubtful = np.flatnonzero(~ok).tolist()
    fixed = [(i, got) for i in doubtful if (got := _digital_state(objects[i])) is not None]
    if fixed:
        names = names.to_pylist()
        for i, (s, c, y) in fixed:
            names[i], codes[i], system[i], ok[i] = s, c, y, True
    state = pa.array(names, pa.string()) if isinstance(names, list) else names
    if not ok.all():
        state = pc.if_else(pa.array(ok), state, pa.scalar(None, pa.string()))
    code32 = pa.array(np.where(ok, codes, 0).astype(np.int32), mask=~ok)
    return state, code32, system, ok


def _struct(objects: list[dict[str, Any]]) -> pa.StructArray | None:
    """The objects as a struct array with a string `Name` and an int64 `Value`, else None."""
    try:
        arr = pa.array(objects)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return None
    if not pa.types.is_struct(arr.type):
        return None
    fields = {f.name: f.type for f in arr.type}
    if fields.get("Name") != pa.string() or fields.get("Value") != pa.int64():
        return None
    return arr


def _valid(arr: pa.Array) -> np.ndarray:
    return np.asarray(arr.is_valid().to_numpy(zero_copy_only=False))


def _digital_state(x: dict[str, Any]) -> tuple[str, int, bool] | None:
    """(Name, Value, IsSystem) of a well-formed digital state object, else None."""
    s, c, y = x.get("Name"), x.get("Value"), x.get("IsSystem", False)
    if type(s) is str and type(c) is int and _INT32_MIN <= c <= _INT32_MAX and type(y) is bool:
        return s, c, y
    return None


def _bools(raw: list[Any]) -> pa.Array:
    try:
        return pa.array(raw, pa.bool_())
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([x if type(x) is bool else None for x in raw], pa.bool_())


def _strings(raw: list[Any]) -> pa.Array:
    try:
        return pa.array(raw, pa.string())
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([x if type(x) is str else None for x in raw], pa.string())


def _errors(raw: list[Any]) -> pa.Array:
    """`Errors` lists → one text per value: `Field: message; message`, null when none."""
    if raw.count(None) == len(raw):
        return pa.nulls(len(raw), pa.string())
    return pa.array([_error_text(e) if e else None for e in raw], pa.string())


def _error_text(errors: Any) -> str:
    if not isinstance(errors, list):
        return orjson.dumps(errors).decode()
    parts = []
    for err in errors:
        if isinstance(err, dict):
            messages = err.get("Message")
            if isinstance(messages, list):
                messages = "; ".join(str(m) for m in messages)
            field_name = err.get("FieldName")
            parts.append(f"{field_name}: {messages}" if field_name else str(messages))
        else:
            parts.append(str(err))
    return " | ".join(parts)


class _QuarantineRows:
    """Collects rejected values; rare, so plain lists are fine here."""

    def __init__(self, source: str, ingested: datetime) -> None:
        self.source = source
        self.ingested = ingested
        self.webids: list[str | None] = []
        self.names: list[str | None] = []
        self.raw: list[str] = []
        self.reasons: list[str] = []
        self.at: list[int] = []

    def add(
        self, webid: str | None, name: str | None, value: Any, reason: str, at: int | None
    ) -> None:
        """`at`: the value's position among the decoded ones when its timestamp parsed."""
        if isinstance(value, TimedValue):
            raise NeedsRawValues(reason)
        self.webids.append(webid)
        self.names.append(name)
        self.raw.append(orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode())
        self.reasons.append(reason)
        self.at.append(-1 if at is None else at)

    def table(self, ts_us: np.ndarray, sequence: np.ndarray) -> pa.Table:
        """The rows, with the key (timestamp, sequence) of those whose timestamp parsed."""
        n = len(self.raw)
        at = np.array(self.at, dtype=np.int64)
        keyed = at >= 0
        stamps, sequences = np.zeros(n, ts_us.dtype), np.zeros(n, sequence.dtype)
        stamps[keyed], sequences[keyed] = ts_us[at[keyed]], sequence[at[keyed]]
        return pa.Table.from_arrays(
            [
                pa.array(self.webids, pa.string()),
                pa.array(self.names, pa.string()),
                pa.array(self.raw, pa.string()),
                pa.array(self.reasons, pa.string()),
                pa.array([self.source] * n, pa.string()),
                pa.nulls(n, pa.string()),
                pa.nulls(n, pa.int64()),
                pa.array([self.ingested] * n, UTC_US),
                pa.array(stamps, mask=~keyed).cast(UTC_US),
                pa.array(sequences, mask=~keyed),
            ],
            schema=QUARANTINE_SCHEMA,
        )
