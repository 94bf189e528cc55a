"""The PI `Value` field of structs or dicts → the five value columns of `pi_timeseries`.

Values are split by `ValueKind` (their Python type) across all streams: numbers, strings
and objects are each converted with one pyarrow call and scattered back, so a numeric
stream with a few system states stays columnar; only nulls, odd types and doubtful objects
are classified one by one. Whether a kind fits is decided by the tag's `PointKind`.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum
from itertools import compress, repeat
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from workers.timeseries.body import ValueKind
from workers.timeseries.quarantine import REASON_BAD_DIGITAL_STATE, REASON_WRONG_VALUE_TYPE

NON_FINITE_STRINGS: Mapping[str, float] = {
    "NaN": float("nan"),
    "Infinity": float("inf"),
    "-Infinity": float("-inf"),
}

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


class PointKind(IntEnum):
    """What a tag's PI point type lets its values be."""

    NUMERIC = 0
    STRING = 1
    DIGITAL = 2
    ANY = 3  # a tag of unknown type: any JSON kind


_POINT_KINDS: Mapping[str, PointKind] = {
    **dict.fromkeys(
        ("Float16", "Float32", "Float64", "Int16", "Int32", "Int64"), PointKind.NUMERIC
    ),
    "String": PointKind.STRING,
    "Digital": PointKind.DIGITAL,
}


def point_kind(point_type: str | None) -> PointKind:
    return _POINT_KINDS.get(point_type or "", PointKind.ANY)


# Plain ints: numpy reads them fastest, once per value.
_VALUE_KINDS: Mapping[type, int] = {
    float: int(ValueKind.NUMBER),
    int: int(ValueKind.NUMBER),
    str: int(ValueKind.TEXT),
    dict: int(ValueKind.STATE),
    type(None): int(ValueKind.NULL),
}


def value_columns(
    raw: list[Any], point: np.ndarray, errors: list[Any]
) -> tuple[list[pa.Array], list[tuple[int, str]]]:
    """The five value columns of all values, with (flat position, reason) of rejects;
    `point` is the `PointKind` of each value's tag.

    Only nulls, odd types, non-finite strings and objects that are not clean digital
    states are looked at one by one.
    """
    n = len(raw)
    kind = np.fromiter(
        map(_VALUE_KINDS.get, map(type, raw), repeat(int(ValueKind.OTHER))), np.int8, count=n
    )
    numeric, digital = point == PointKind.NUMERIC, point == PointKind.DIGITAL
    anything = point == PointKind.ANY
    reasons: dict[int, str] = {}
    wrong = REASON_WRONG_VALUE_TYPE

    is_number = kind == ValueKind.NUMBER
    number_ok = is_number & (numeric | anything)
    has_value = number_ok.copy()
    value = _floats(raw, number_ok)
    if not number_ok.all():
        reasons.update(dict.fromkeys(np.flatnonzero(is_number & ~number_ok).tolist(), wrong))

    is_text = kind == ValueKind.TEXT
    text_ok = is_text & ~numeric & ~digital
    text = pa.array(raw, pa.string(), mask=~text_ok) if text_ok.any() else pa.nulls(n, pa.string())
    for at in np.flatnonzero(is_text & numeric).tolist():
        special = NON_FINITE_STRINGS.get(raw[at])
        if special is None:
            reasons[at] = wrong
        else:
            value[at], has_value[at] = special, True
    reasons.update(dict.fromkeys(np.flatnonzero(is_text & digital).tolist(), wrong))

    system = np.zeros(n, dtype=bool)
    system_valid = has_value | text_ok
    is_object = kind == ValueKind.STATE
    object_at = np.flatnonzero(is_object)
    state, state_code, object_system, object_ok = _states(list(compress(raw, is_object.tolist())))
    system[object_at] = object_system
    system_valid[object_at] = object_ok
    reasons.update(dict.fromkeys(object_at[~object_ok].tolist(), REASON_BAD_DIGITAL_STATE))

    for at in np.flatnonzero(kind == ValueKind.NULL).tolist():
        # A null or absent `Value` is only data when `Errors` says why (PI's own answer
        # for a value it could not read); otherwise it is a malformed value.
        if not errors[at]:
            reasons[at] = wrong
    reasons.update(dict.fromkeys(np.flatnonzero(kind == ValueKind.OTHER).tolist(), wrong))

    columns = [
        pa.array(value) if has_value.all() else pa.array(value, mask=~has_value),
        text,
        _scatter(state, object_at, n),
        _scatter(state_code, object_at, n),
        pa.array(system) if system_valid.all() else pa.array(system, mask=~system_valid),
    ]
    return columns, sorted(reasons.items())


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


def bools(raw: list[Any]) -> pa.Array:
    try:
        return pa.array(raw, pa.bool_())
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([x if type(x) is bool else None for x in raw], pa.bool_())


def strings(raw: list[Any]) -> pa.Array:
    try:
        return pa.array(raw, pa.string())
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([x if type(x) is str else None for x in raw], pa.string())


def error_texts(raw: list[Any]) -> pa.Array:
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
