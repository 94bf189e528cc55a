"""Ground truth: what mock-pi serves, computed in-process without HTTP, for tests to compare.

    truth = GroundTruth(settings)            # or GroundTruth.from_state(state)
    truth.point(webid_or_name_or_point) -> catalog.Point
    truth.recorded(webid_or_point, start, end, at=None) -> list[dict]
        exactly the TimedValue dicts `GET streams/{webId}/recorded` (boundaryType Inside,
        no maxCount limit) returns when called at wall-clock instant `at`;
        descending when end < start.
    truth.recorded_table(points, start, end, at=None) -> pyarrow.Table
        the same values as `pi_timeseries` columns (docs/DESIGN.md): tag_webid, tag_name,
        timestamp (timestamp[us, UTC]), sequence (int32, position among values sharing a
        timestamp, from 0), value (float64, null when not numeric), value_string,
        digital_state, digital_code (int32), is_system_state, units, quality_good,
        quality_questionable, quality_substituted, quality_annotated, value_error (null);
        rows ordered by tag (as given), timestamp, sequence. With BAD_FRACTION these are
        the rows a client should store: quarantined values left out, "NaN"/"Infinity"/
        "-Infinity" on numeric points kept as those floats.
    truth.quarantine_table(points, start, end, at=None) -> pyarrow.Table
        the malformed values a client should quarantine instead: tag_webid, tag_name,
        timestamp (of the value behind the malformed one), reason (QUARANTINE_REASONS of
        workers/timeseries/decode.py), raw (the served TimedValue as compact JSON), bad_kind.
    truth.arrivals(point, after_ticks, upto_ticks) -> list[dict]
        TimedValue dicts of the values whose visibility instant (the timestamp, or the
        timestamp + LATE_SECONDS for a late tag's value stamped inside an outage) falls in
        (after_ticks, upto_ticks], as archived first (edits not applied), in (timestamp,
        sequence) order.
    truth.updates(point, after_ticks, upto_ticks) -> list[dict]
        the DataPipeEvents a stream-updates marker issued at `after_ticks` reports when read
        at `upto_ticks`: `Add` (arrived, as it stands at `upto_ticks`), `Update` (edited: the
        new value) and `Delete` (removed: the old value), ordered by when each happened
        (`mock_pi.changes`).
    truth.changes(point, start, end) -> list[tuple[str, dict, int]]
        every edit or deletion of a value with start <= timestamp <= end: ("Update" or
        "Delete", the TimedValue after (edit) or before (deletion), the tick it happens).
    truth.visible_at(webid_or_point, start, end) -> list[tuple[dict, int]]
        every value with start <= timestamp <= end and the tick at which it becomes visible.

Times: `start`/`end` are PI time strings or ISO 8601 (read relative to `at`), `datetime`s,
or ints of 100 ns ticks since the UNIX epoch; `at` is epoch seconds (float), default now.
"Now" is `clock` if given, else the server's rule: the real clock, or with CLOCK_START that
instant plus the time elapsed since the truth was built (pass `at` for an exact instant).
`history_start` defaults to the server's rule (midnight UTC HISTORY_DAYS before today), so
build the truth on the same UTC day as the server, or pass the server's value.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from mock_pi import catalog as cat
from mock_pi import pitime
from mock_pi import series as ser
from mock_pi.changes import ACTION_NAMES, EDIT, NONE
from mock_pi.render import timed_value
from mock_pi.series import SYSTEM_TABLE, TICKS_PER_US, Events, Series
from mock_pi.settings import MockSettings
from mock_pi.state import MockState

Instant = str | datetime | int

SCHEMA = pa.schema(
    [
        ("tag_webid", pa.string()),
        ("tag_name", pa.string()),
        ("timestamp", pa.timestamp("us", tz="UTC")),
        ("sequence", pa.int32()),
        ("value", pa.float64()),
        ("value_string", pa.string()),
        ("digital_state", pa.string()),
        ("digital_code", pa.int32()),
        ("is_system_state", pa.bool_()),
        ("units", pa.string()),
        ("quality_good", pa.bool_()),
        ("quality_questionable", pa.bool_()),
        ("quality_substituted", pa.bool_()),
        ("quality_annotated", pa.bool_()),
        ("value_error", pa.string()),
    ]
)

QUARANTINE_SCHEMA = pa.schema(
    [
        ("tag_webid", pa.string()),
        ("tag_name", pa.string()),
        ("timestamp", pa.timestamp("us", tz="UTC")),
        ("reason", pa.string()),
        ("raw", pa.string()),
        ("bad_kind", pa.int8()),
    ]
)
# How a client should treat each malformed rendering (series.BAD_*): the quarantine reason;
# kinds not listed (NaN, Infinity, -Infinity on numeric points) are kept as floats. A value
# without a Value field (and without Errors) has no value of the point's type.
QUARANTINE_REASON: dict[int, str] = {
    ser.BAD_LIST: "wrong_value_type",
    ser.BAD_OBJECT: "bad_digital_state",
    ser.BAD_NUMBER: "wrong_value_type",
    ser.BAD_MISSING_VALUE: "wrong_value_type",
    ser.BAD_MISSING_TIMESTAMP: "missing_timestamp",
    ser.BAD_TIMESTAMP: "bad_timestamp",
    ser.BAD_NOT_OBJECT: "not_an_object",
}
_QUARANTINED = np.array(sorted(QUARANTINE_REASON), np.int8)
_KEPT_FLOATS = {ser.BAD_NAN: np.nan, ser.BAD_INF: np.inf, ser.BAD_NEG_INF: -np.inf}


class GroundTruth:
    """The values of a mock-pi started with the same settings."""

    def __init__(
        self,
        settings: MockSettings,
        history_start: float | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.state = MockState.create(settings, clock)
        if history_start is not None:
            self.state.history_start = history_start

    @classmethod
    def from_state(cls, state: MockState) -> GroundTruth:
        truth = cls.__new__(cls)
        truth.state = state
        return truth

    def point(self, ref: str | cat.Point) -> cat.Point:
        if isinstance(ref, cat.Point):
            return ref
        found = self.state.catalog.by_webid(ref) or self.state.catalog.by_name(ref)
        if found is None:
            raise KeyError(ref)
        return found

    def _ticks(self, when: Instant, now: int) -> int:
        if isinstance(when, datetime):
            return int(when.timestamp() * 1_000_000) * TICKS_PER_US
        if isinstance(when, str):
            return pitime.parse_time(when, now)
        if not isinstance(when, int):
            raise TypeError(f"a time is a string, a datetime or int ticks, not {when!r}")
        return when

    def _now(self, at: float | None) -> int:
        return pitime.ticks_of_seconds(self.state.clock() if at is None else at)

    def events(
        self, ref: str | cat.Point, start: Instant, end: Instant, at: float | None = None
    ) -> tuple[Series, Events]:
        """The raw columns behind `recorded`."""
        now = self._now(at)
        s = self.state.series(self.point(ref))
        lo, hi = self._ticks(start, now), self._ticks(end, now)
        desc = hi < lo
        if desc:
            lo, hi = hi, lo
        return s, s.scan(lo, hi, now, self.state.history_start_ticks, descending=desc)

    def recorded(
        self, ref: str | cat.Point, start: Instant, end: Instant, at: float | None = None
    ) -> list[dict[str, Any]]:
        return timed_values(*self.events(ref, start, end, at))

    def recorded_table(
        self,
        points: Sequence[str | cat.Point],
        start: Instant,
        end: Instant,
        at: float | None = None,
    ) -> pa.Table:
        return self._per_point(table, SCHEMA, points, start, end, at)

    def quarantine_table(
        self,
        points: Sequence[str | cat.Point],
        start: Instant,
        end: Instant,
        at: float | None = None,
    ) -> pa.Table:
        return self._per_point(quarantined, QUARANTINE_SCHEMA, points, start, end, at)

    def _per_point(
        self,
        build: Callable[..., pa.Table],
        schema: pa.Schema,
        points: Sequence[str | cat.Point],
        start: Instant,
        end: Instant,
        at: float | None,
    ) -> pa.Table:
        tables = [build(*self.events(p, start, end, at)) for p in points]
        return pa.concat_tables(tables) if tables else schema.empty_table()

    def arrivals(self, ref: str | cat.Point, after_ticks: int, upto_ticks: int) -> list[dict]:
        s = self.state.series(self.point(ref))
        hs = self.state.history_start_ticks
        ev = s.scan(
            after_ticks - s.late_ticks,
            upto_ticks,
            upto_ticks,
            hs,
            visible_upto=upto_ticks,
            changes=False,
        )
        return timed_values(s, ev.take(ev.visible > after_ticks))

    def updates(self, ref: str | cat.Point, after_ticks: int, upto_ticks: int) -> list[dict]:
        s = self.state.series(self.point(ref))
        model = self.state.change_model(s)
        ev, actions = model.window(after_ticks, upto_ticks, self.state.history_start_ticks)
        return [
            pipe_event(ACTION_NAMES[a], v)
            for a, v in zip(actions, timed_values(s, ev), strict=True)
        ]

    def changes(
        self, ref: str | cat.Point, start: Instant, end: Instant
    ) -> list[tuple[str, dict[str, Any], int]]:
        now = self._now(None)
        s = self.state.series(self.point(ref))
        model = self.state.change_model(s)
        lo, hi = sorted((self._ticks(start, now), self._ticks(end, now)))
        far = hi + s.late_ticks
        ev = s.scan(lo, hi, far, self.state.history_start_ticks, visible_upto=far, changes=False)
        kind = model.kinds(ev)
        hit = kind != NONE
        at = model.changed_at(ev)[hit]
        ev = model.edited(ev, kind == EDIT).take(hit)
        names = ["Update" if k == EDIT else "Delete" for k in kind[hit]]
        return list(zip(names, timed_values(s, ev), (int(a) for a in at), strict=True))

    def visible_at(
        self, ref: str | cat.Point, start: Instant, end: Instant
    ) -> list[tuple[dict[str, Any], int]]:
        now = self._now(None)
        s = self.state.series(self.point(ref))
        lo, hi = sorted((self._ticks(start, now), self._ticks(end, now)))
        far = hi + s.late_ticks
        ev = s.scan(lo, hi, far, self.state.history_start_ticks, visible_upto=far)
        return list(zip(timed_values(s, ev), (int(v) for v in ev.visible), strict=True))


def pipe_event(action: str, value: Any) -> Any:
    """A DataPipeEvent: the action, then the TimedValue it concerns (a value served as a
    bare value instead of an object, BAD_NOT_OBJECT, is served so in its place too)."""
    if not isinstance(value, dict):
        return value
    return {"Action": action, "PreviousEventAction": "PreviousEventArchived", **value}


def timed_values(s: Series, ev: Events) -> list[Any]:
    """TimedValues of the rows as served (malformed where BAD_FRACTION made them so)."""
    return [timed_value(s, ev, i) for i in range(len(ev))]


def quarantined(s: Series, ev: Events) -> pa.Table:
    """The rows a client should quarantine, with their reasons and raw JSON."""
    rows = np.flatnonzero(np.isin(ev.bad, _QUARANTINED))
    n = len(rows)
    return pa.table(
        {
            "tag_webid": pa.array([s.point.webid] * n, pa.string()),
            "tag_name": pa.array([s.point.name] * n, pa.string()),
            "timestamp": pa.array(ev.ticks[rows] // TICKS_PER_US, pa.timestamp("us", tz="UTC")),
            "reason": pa.array([QUARANTINE_REASON[int(ev.bad[i])] for i in rows], pa.string()),
            "raw": pa.array(
                [orjson.dumps(timed_value(s, ev, int(i))).decode() for i in rows], pa.string()
            ),
            "bad_kind": pa.array(ev.bad[rows], pa.int8()),
        },
        schema=QUARANTINE_SCHEMA,
    )


def table(s: Series, ev: Events) -> pa.Table:
    """The rows as `pi_timeseries` columns (the stored ones: quarantined rows left out)."""
    if ev.bad.any():
        ev = ev.take(~np.isin(ev.bad, _QUARANTINED))
    point = s.point
    n = len(ev)
    kind = point.kind
    system_names = np.array([name for name, _ in SYSTEM_TABLE], dtype=object)
    system_codes = np.array([code for _, code in SYSTEM_TABLE], dtype=np.int32)
    sys_idx = np.where(ev.system, ev.code, 0)
    state = np.where(ev.system, system_names[sys_idx], None)
    code = np.where(ev.system, system_codes[sys_idx], 0).astype(np.int32)
    has_code = ev.system.copy()
    text: list[str | None] = [None] * n
    if kind.digital_set is not None:
        names = np.array(cat.DIGITAL_SETS[kind.digital_set], dtype=object)
        state = np.where(ev.system, state, names[np.where(ev.system, 0, ev.code)])
        code = np.where(ev.system, code, ev.code).astype(np.int32)
        has_code[:] = True
    elif kind.point_type == "String":
        text = [None if ev.system[i] else s.text(int(ev.code[i])) for i in range(n)]
    numeric = s.numeric & ~ev.system
    value = ev.value
    for kind, number in _KEPT_FLOATS.items():
        value = np.where(ev.bad == kind, number, value)
    return pa.table(
        {
            "tag_webid": pa.array([point.webid] * n, pa.string()),
            "tag_name": pa.array([point.name] * n, pa.string()),
            "timestamp": pa.array(ev.ticks // TICKS_PER_US, pa.timestamp("us", tz="UTC")),
            "sequence": pa.array(ev.seq, pa.int32()),
            "value": pa.array(value, pa.float64(), mask=~numeric),
            "value_string": pa.array(text, pa.string()),
            "digital_state": pa.array(state, pa.string()),
            "digital_code": pa.array(code, pa.int32(), mask=~has_code),
            "is_system_state": pa.array(ev.system, pa.bool_()),
            "units": pa.array([point.units] * n, pa.string()),
            "quality_good": pa.array(~ev.system, pa.bool_()),
            "quality_questionable": pa.array(ev.questionable, pa.bool_()),
            "quality_substituted": pa.array(ev.substituted, pa.bool_()),
            "quality_annotated": pa.array(ev.annotated, pa.bool_()),
            "value_error": pa.nulls(n, pa.string()),
        },
        schema=SCHEMA,
    )
