"""A `/streamsets/recorded` body → a neutral `ParsedBody`, by the first reader that takes it.

Why three readers: the PI `Value` field is polymorphic (a number, a string or a
digital-state object), which neither `pyarrow.json` nor `polars.read_json` can read. The C
reader `workers.timeseries._pijson` turns the usual, clean body straight into arrays
(`parse_columns`: no Python object per value); msgspec reads any other well-formed body
into one small `TimedValue` struct per value (`parse_typed`); orjson dicts (`parse_json`)
serve a body of odd shape or with a value to quarantine, as only they keep its raw text.
`readings` yields a body as each fast reader in turn reads it: the decoder takes the first
one whose values it can judge (`NeedsRawValues` asks for the next), else `parse_json`'s.

Every reader gives the same `ParsedBody`: per stream its WebId, name, units, WebException
and values, either a `ValueSlice` of the body's columns or a list of structs or dicts.
Paging reads timestamps from either (`stamp_reader`) without knowing the decoder.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, NamedTuple

import msgspec
import numpy as np
import orjson
import pyarrow as pa

from workers.errors import DecodeError
from workers.pi.times import TimeParseError, parse_iso_us

try:
    from workers.timeseries import _pijson
except ImportError:  # installed without a C compiler: msgspec and orjson read every body
    _pijson = None


class ValueKind(IntEnum):
    """What a `Value` field holds: the C reader's codes, then two only Python readers see."""

    NUMBER = 0
    TEXT = 1
    STATE = 2  # a digital-state object (any JSON object, for the Python readers)
    NULL = 3
    OTHER = 4  # a boolean, a list


class Quality(IntEnum):
    """A quality flag in the C reader's columns."""

    FALSE = 0
    TRUE = 1
    NULL = 2  # null or absent


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


@dataclass(frozen=True, slots=True)
class ValueColumns:
    """Every value of a body read by `workers.timeseries._pijson`, one array per field."""

    ts_us: np.ndarray
    kind: np.ndarray  # ValueKind NUMBER, TEXT or STATE
    number: np.ndarray
    quality: np.ndarray  # (n, 4) of Quality: Good, Questionable, Substituted, Annotated
    text: pa.Array
    state: pa.Array
    code: np.ndarray
    system: np.ndarray


@dataclass(frozen=True, slots=True)
class ValueSlice:
    """One stream's values in a body's `ValueColumns`: `[lo, hi)`. It stands in for the list
    of values where paging cuts a stream (`len`, slices and `timestamps`)."""

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


# A stream's values: columns from the C reader, else structs (msgspec) or anything (orjson).
Values = ValueSlice | list[Any]


@dataclass(slots=True)
class ParsedStream:
    """One stream of a body. `values` is None when the stream carried no list of values
    (then `error`, its WebException, usually says why)."""

    webid: str
    name: str | None
    units: str | None
    values: Values | None
    error: Any = None

    def __post_init__(self) -> None:
        # A server may send any JSON in these fields: only text is a name or a unit.
        if not isinstance(self.name, str):
            self.name = None
        if not isinstance(self.units, str):
            self.units = None


@dataclass(slots=True)
class ParsedBody:
    """The streams of a body, in order; `strays` counts entries of its `Items` that are not
    streams (not an object, or no string WebId)."""

    streams: list[ParsedStream] = field(default_factory=list)
    strays: int = 0


class CReading(NamedTuple):
    """What `_pijson.decode` returns for a body it accepts (its C comment says the same)."""

    streams: list[tuple[str, str | None, str | None, int]]  # WebId, Name, units, count
    n: int  # values in the body
    ts_us: bytes  # int64[n]: epoch microseconds, fraction truncated
    kind: bytes  # uint8[n]: ValueKind NUMBER, TEXT or STATE
    number: bytes  # float64[n]: 0 where not a number
    quality: bytes  # uint8[4n]: Quality of Good, Questionable, Substituted, Annotated
    text_offsets: bytes  # int32[n + 1]: Arrow offsets into text_data (empty: not text)
    text_data: bytes
    state_code: bytes  # int32[n]
    state_system: bytes  # uint8[n]
    state_offsets: bytes  # int32[n + 1]: Arrow offsets into state_data
    state_data: bytes


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


def parse_columns(body: bytes | str) -> ParsedBody | None:
    """The body with `ValueSlice` values, or None when the C reader is not installed or the
    body is not the usual clean one (any field, type or text it does not know).

    No Python object per value: about a third of the CPU of `parse_typed` alone, and the
    decoder then builds the columns with numpy and Arrow only.
    """
    if _pijson is None or not isinstance(body, bytes):
        return None
    parsed = _pijson.decode(body)
    if parsed is None:
        return None
    got = CReading._make(parsed)
    kinds = np.frombuffer(got.kind, np.uint8)
    columns = ValueColumns(
        ts_us=np.frombuffer(got.ts_us, np.int64),
        kind=kinds,
        number=np.frombuffer(got.number, np.float64),
        quality=np.frombuffer(got.quality, np.uint8).reshape(got.n, 4),
        text=_string_array(got.text_offsets, got.text_data, kinds == ValueKind.TEXT),
        state=_string_array(got.state_offsets, got.state_data, kinds == ValueKind.STATE),
        code=np.frombuffer(got.state_code, np.int32),
        system=np.frombuffer(got.state_system, np.bool_),
    )
    out, lo = ParsedBody(), 0
    for webid, name, units, count in got.streams:
        out.streams.append(ParsedStream(webid, name, units, ValueSlice(columns, lo, lo + count)))
        lo += count
    return out


def _string_array(ends: bytes, data: bytes, present: np.ndarray) -> pa.Array:
    """Arrow strings straight from the reader's offsets and bytes (UTF-8 checked in C)."""
    n = len(present)
    if not present.any():
        return pa.nulls(n, pa.string())
    validity = None if present.all() else pa.py_buffer(np.packbits(present, bitorder="little"))
    return pa.StringArray.from_buffers(n, pa.py_buffer(ends), pa.py_buffer(data), validity)


def parse_typed(body: bytes | str) -> ParsedBody | None:
    """The body with `TimedValue` values, or None when it is not a well-formed streamset
    (e.g. a value that is not an object): `parse_json` then keeps every oddity for the
    decoder to quarantine.

    msgspec builds one small struct per value instead of a dict: about a third of the CPU
    of `parse_json` on a full TimedValue body, half on a trimmed one.
    """
    plain, full = _TYPED_DECODERS
    # msgspec raises UnicodeDecodeError for bad UTF-8, and RecursionError for a value nested
    # about a thousand levels deep: parse_json then judges the body (orjson stops at 1024).
    try:
        doc = plain.decode(body)
    except msgspec.ValidationError:
        try:
            doc = full.decode(body)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            return None
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None
    out = ParsedBody()
    for s in doc.Items:
        if type(s.WebId) is not str:
            out.strays += 1
        else:
            out.streams.append(
                ParsedStream(s.WebId, s.Name, s.UnitsAbbreviation, s.Items, s.WebException)
            )
    return out


def parse_json(body: bytes | str, source: str) -> ParsedBody:
    """orjson: every value a dict (or whatever it is), for the decoder to judge. DecodeError
    when the body is not JSON or not a streamset."""
    try:
        with gc_paused():
            doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(str(exc), source=source, size=len(body)) from None
    return from_json(doc, source, len(body))


def from_json(doc: Any, source: str, size: int | None = None) -> ParsedBody:
    """A streamset already parsed into dicts (e.g. the `Content` of a `/batch` answer)."""
    if not isinstance(doc, Mapping) or not isinstance(doc.get("Items"), list):
        raise DecodeError("no Items list at the top level", source=source, size=size)
    out = ParsedBody()
    for s in doc["Items"]:
        if not isinstance(s, Mapping) or not isinstance(s.get("WebId"), str):
            out.strays += 1
            continue
        values = s.get("Items")
        out.streams.append(
            ParsedStream(
                s["WebId"],
                s.get("Name"),
                s.get("UnitsAbbreviation"),
                values if isinstance(values, list) else None,
                s.get("WebException"),
            )
        )
    return out


READERS: tuple[Callable[[bytes | str], ParsedBody | None], ...] = (parse_columns, parse_typed)


def readings(body: bytes | str) -> Iterator[ParsedBody]:
    """The body as each reader of `READERS` that takes it reads it; these lose the raw text
    of values, so the caller goes on to the next reading when one holds a value to
    quarantine, and ends with `parse_json`. A reading is only made when asked for."""
    for read in READERS:
        parsed = read(body)
        if parsed is not None:
            yield parsed


def stamp_reader(values: Values) -> Callable[[int], int | None]:
    """Reads the microsecond timestamp of the value at a position (None: none that parses)."""
    if isinstance(values, ValueSlice):
        stamps = values.timestamps()
        return lambda pos: int(stamps[pos])
    return lambda pos: _timestamp_us(values[pos])


def _timestamp_us(item: Any) -> int | None:
    """The microsecond timestamp of one struct or dict value, None when it has none that
    parses."""
    if isinstance(item, TimedValue):
        stamp = item.Timestamp
    elif type(item) is dict:
        stamp = item.get("Timestamp")
    else:
        return None
    if type(stamp) is not str:
        return None
    try:
        return parse_iso_us(stamp)
    except TimeParseError:
        return None
