"""Response helpers shared by the route modules: `selectedFields`, Links, JSON bodies.

`selectedFields` is read as PI reads it: semicolon-separated dotted paths, matched
case-insensitively; a path keeps its field with everything below it, lists are walked
through, and fields that no path names are dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import orjson
import polars as pl
from aiohttp import web

from mock_pi import catalog, pitime, series

ALL: dict[str, Any] = {}  # the subtree marker "keep everything below"


class Fields:
    """A parsed `selectedFields` tree; `Fields(None)` keeps everything."""

    __slots__ = ("tree",)

    def __init__(self, tree: dict[str, Any] | None) -> None:
        self.tree = tree

    @classmethod
    def parse(cls, text: str | None) -> Fields:
        if text is None or not text.strip():
            return cls(None)
        tree: dict[str, Any] = {}
        for raw in text.split(";"):
            parts = [p.strip().lower() for p in raw.strip().split(".") if p.strip()]
            node = tree
            for i, part in enumerate(parts):
                last = i == len(parts) - 1
                child = node.get(part)
                if child is ALL:
                    break
                if last:
                    node[part] = ALL
                else:
                    node = node.setdefault(part, {})
        return cls(tree)

    @property
    def everything(self) -> bool:
        return self.tree is None

    def has(self, key: str) -> bool:
        return self.tree is None or key.lower() in self.tree

    def sub(self, key: str) -> Fields | None:
        """The selection below `key`, or None when `key` itself is not selected."""
        if self.tree is None:
            return self
        child = self.tree.get(key.lower())
        if child is None:
            return None
        return Fields(None) if child is ALL else Fields(child)

    def prune(self, obj: Any) -> Any:
        if self.tree is None:
            return obj
        if isinstance(obj, list):
            return [self.prune(v) for v in obj]
        if not isinstance(obj, dict):
            return obj
        out = {}
        for key, value in obj.items():
            sub = self.sub(key)
            if sub is not None:
                out[key] = sub.prune(value)
        return out


def base_url(request: web.Request) -> str:
    """`scheme://host/piwebapi/`, the prefix of every link, as the client addressed us."""
    return f"{request.scheme}://{request.host}/piwebapi/"


def json_bytes(body: bytes, status: int = 200) -> web.Response:
    return web.Response(status=status, body=body, content_type="application/json", charset="utf-8")


def json_response(obj: Any, fields: Fields | None = None, status: int = 200) -> web.Response:
    if fields is not None:
        obj = fields.prune(obj)
    return json_bytes(orjson.dumps(obj), status)


ITEM_KEYS = (
    "Timestamp",
    "Value",
    "UnitsAbbreviation",
    "Good",
    "Questionable",
    "Substituted",
    "Annotated",
)
PLACEHOLDER = "\x1f@items@\x1f"
PLACEHOLDER_JSON = orjson.dumps(PLACEHOLDER)
_SYSTEM_FRAGMENTS = [
    {"Name": name, "Value": code, "IsSystem": True} for name, code in series.SYSTEM_TABLE
]


def _label_objects(s: series.Series, codes: np.ndarray) -> list[Any]:
    """The JSON values of non-numeric, non-system codes of one point."""
    digital = s.point.kind.digital_set
    if digital is not None:
        names = catalog.DIGITAL_SETS[digital]
        return [{"Name": names[c], "Value": int(c), "IsSystem": False} for c in codes]
    return [s.text(int(c)) for c in codes]


def value_object(s: series.Series, ev: series.Events, i: int) -> Any:
    """The well-formed JSON `Value` of row i, as the PI Web API renders it."""
    code = int(ev.code[i])
    if ev.system[i]:
        name, number = series.SYSTEM_TABLE[code]
        return {"Name": name, "Value": number, "IsSystem": True}
    kind = s.point.kind
    if kind.digital_set is not None:
        names = catalog.DIGITAL_SETS[kind.digital_set]
        return {"Name": names[code], "Value": code, "IsSystem": False}
    if kind.point_type == "String":
        return s.text(code)
    if kind.point_type == "Int32":
        return int(ev.value[i])
    return float(ev.value[i])


_NON_FINITE = {series.BAD_NAN: "NaN", series.BAD_INF: "Infinity", series.BAD_NEG_INF: "-Infinity"}


def bad_value(s: series.Series, ev: series.Events, i: int) -> Any:
    """The malformed `Value` of a row whose kind is a BAD_* value kind."""
    good = value_object(s, ev, i)
    bad = int(ev.bad[i])
    if bad == series.BAD_LIST:
        return [good]
    if bad == series.BAD_OBJECT:
        if isinstance(good, dict):
            return {"Name": good["Value"], "Value": good["Name"], "IsSystem": False}
        return {"Value": good}
    if bad == series.BAD_NUMBER:
        return int(ev.code[i])
    return _NON_FINITE.get(bad, good)


def timed_value(s: series.Series, ev: series.Events, i: int) -> Any:
    """The TimedValue of row i as served, malformed when the row's `bad` says so."""
    bad = int(ev.bad[i])
    if bad == series.BAD_NOT_OBJECT:
        bare = value_object(s, ev, i)
        return bare["Value"] if isinstance(bare, dict) else bare
    stamp = pitime.format_time(int(ev.ticks[i]))
    item: dict[str, Any] = {
        "Timestamp": f"{stamp[:5]}13{stamp[7:]}" if bad == series.BAD_TIMESTAMP else stamp,
        "Value": bad_value(s, ev, i) if bad else value_object(s, ev, i),
        "UnitsAbbreviation": s.point.units,
        "Good": not bool(ev.system[i]),
        "Questionable": bool(ev.questionable[i]),
        "Substituted": bool(ev.substituted[i]),
        "Annotated": bool(ev.annotated[i]),
    }
    if bad == series.BAD_MISSING_TIMESTAMP:
        del item["Timestamp"]
    elif bad == series.BAD_MISSING_VALUE:
        del item["Value"]
    return item


def render_values(
    streams: Sequence[tuple[series.Series, series.Events]], fields: Fields
) -> list[bytes]:
    """Each stream's values as the JSON text of a TimedValue array, built column-wise.

    `fields` is the selection below the array (`Items.Items` of a streamset). Rows are
    concatenated strings of pre-rendered fragments, never a dict per value.
    """
    lens = np.array([len(ev) for _, ev in streams], np.int64)
    total = int(lens.sum())
    if total == 0:
        return [b"[]"] * len(streams)
    keys = [k for k in ITEM_KEYS if fields.has(k)]
    parts: list[pl.Expr] = []
    columns: dict[str, Any] = {}
    stream_idx = np.repeat(np.arange(len(streams), dtype=np.uint32), lens)
    events = series.Events.concat([ev for _, ev in streams])
    if "Timestamp" in keys:
        parts.append(
            pl.lit('"Timestamp":"') + _timestamp_expr(events.ticks, columns) + pl.lit('Z"')
        )
    if "Value" in keys:
        parts.append(pl.lit('"Value":') + _value_expr(streams, events, lens, fields, columns))
    tail_keys = [k for k in keys if k not in ("Timestamp", "Value")]
    if tail_keys:
        units = sorted({st.point.units for st, _ in streams})
        unit_of = np.array([units.index(st.point.units) for st, _ in streams], np.int64)
        table = pl.Series(
            [text for u in units for text in _tail_fragments(u, tuple(tail_keys))],
            dtype=pl.String,
        )
        columns["tail"] = table.gather(
            np.repeat(unit_of, lens) * 16
            + (~events.system) * 8
            + events.questionable * 4
            + events.substituted * 2
            + events.annotated
        )
        parts.append(pl.col("tail"))
    columns["stream"] = stream_idx
    row = pl.lit("{") + pl.concat_str(parts, separator=",") + pl.lit("}") if parts else pl.lit("{}")
    if events.bad.any():
        columns["badrow"] = _bad_rows(streams, events, fields)
        row = pl.coalesce(pl.col("badrow"), row)
    frame = pl.DataFrame(columns)
    joined = (
        frame.select(pl.col("stream"), row.alias("row"))
        .group_by("stream", maintain_order=True)
        .agg(pl.col("row").str.join(","))
    )
    texts = dict(zip(joined["stream"].to_list(), joined["row"].to_list(), strict=True))
    return [f"[{texts.get(i, '')}]".encode() for i in range(len(streams))]


def _bad_rows(
    streams: Sequence[tuple[series.Series, series.Events]],
    events: series.Events,
    fields: Fields,
) -> pl.Series:
    """JSON text of the malformed rows (null elsewhere): few rows, so one dict each."""
    owner = np.repeat(np.arange(len(streams)), [len(ev) for _, ev in streams])
    starts = np.cumsum([0] + [len(ev) for _, ev in streams])
    texts: list[str | None] = [None] * len(events)
    for i in np.flatnonzero(events.bad):
        k = int(owner[i])
        s, ev = streams[k]
        item = fields.prune(timed_value(s, ev, int(i - starts[k])))
        texts[i] = orjson.dumps(item).decode()
    return pl.Series(texts, dtype=pl.String)


_MINUTE_SECOND = pl.Series([f"{m:02d}:{s:02d}" for m in range(60) for s in range(60)])


def _timestamp_expr(ticks: np.ndarray, columns: dict[str, Any]) -> pl.Expr:
    """ISO 8601 without the zone, seven fractional digits only when not whole seconds.

    Gathers an hour prefix (few distinct) and a minute:second text (3600 distinct) instead
    of formatting dates per row.
    """
    us = ticks // series.TICKS_PER_US
    sec = us // 1_000_000
    hour = sec // 3600
    hours, inverse = np.unique(hour, return_inverse=True)
    prefixes = pl.Series([str(np.datetime64(int(h), "h")) + ":" for h in hours], dtype=pl.String)
    columns["hour"] = prefixes.gather(inverse)
    columns["minsec"] = _MINUTE_SECOND.gather(sec - hour * 3600)
    columns["frac"] = us - sec * 1_000_000
    fraction = (
        pl.when(pl.col("frac") > 0)
        .then(pl.lit(".") + (pl.col("frac") * 10 + 10_000_000).cast(pl.String).str.slice(1))
        .otherwise(pl.lit(""))
    )
    return pl.concat_str([pl.col("hour"), pl.col("minsec"), fraction])


@lru_cache(maxsize=256)
def _tail_fragments(units: str, keys: tuple[str, ...]) -> tuple[str, ...]:
    """`"UnitsAbbreviation":..,"Good":..` text for the 16 combinations of the four flags of
    one unit: a row gathers its text instead of five string operations."""
    out = []
    for bits in range(16):
        flags = {
            "UnitsAbbreviation": orjson.dumps(units).decode(),
            "Good": "true" if bits & 8 else "false",
            "Questionable": "true" if bits & 4 else "false",
            "Substituted": "true" if bits & 2 else "false",
            "Annotated": "true" if bits & 1 else "false",
        }
        out.append(",".join(f'"{k}":{flags[k]}' for k in keys))
    return tuple(out)


def _value_expr(
    streams: Sequence[tuple[series.Series, series.Events]],
    events: series.Events,
    lens: np.ndarray,
    fields: Fields,
    columns: dict[str, Any],
) -> pl.Expr:
    """The `Value` JSON of each row: a number, or a pre-rendered state object or string."""
    value_fields = fields.sub("Value") or Fields(None)
    objects: list[Any] = list(_SYSTEM_FRAGMENTS)
    label = events.code.copy()
    numeric = np.repeat(np.array([s.numeric for s, _ in streams]), lens) & ~events.system
    integer = (
        np.repeat(np.array([s.point.point_type == "Int32" for s, _ in streams]), lens)
        & ~events.system
    )
    start = 0
    for s, ev in streams:
        stop = start + len(ev)
        if not s.numeric and len(ev):
            plain = ~ev.system
            codes, inverse = np.unique(ev.code[plain], return_inverse=True)
            label[start:stop][plain] = inverse + len(objects)
            objects.extend(_label_objects(s, codes))
        start = stop
    fragments = pl.Series(
        [orjson.dumps(value_fields.prune(o)).decode() for o in objects], dtype=pl.String
    )
    columns["label"] = fragments.gather(np.where(numeric, 0, label))
    columns["num"] = events.value
    columns["int"] = np.where(integer, events.value, 0).astype(np.int64)
    columns["numeric"] = numeric
    columns["integer"] = integer
    return (
        pl.when(pl.col("integer"))
        .then(pl.col("int").cast(pl.String))
        .when(pl.col("numeric"))
        .then(pl.col("num").cast(pl.String))
        .otherwise(pl.col("label"))
    )


def data_links(base: str, kind: str, webid: str) -> dict[str, str]:
    """The data links PI gives a point, attribute (`streams`) or element (`streamsets`)."""
    root = f"{base}{kind}/{webid}"
    return {
        "InterpolatedData": f"{root}/interpolated",
        "RecordedData": f"{root}/recorded",
        "PlotData": f"{root}/plot",
        "SummaryData": f"{root}/summary",
        "Value": f"{root}/value",
        "EndValue": f"{root}/end",
    }
