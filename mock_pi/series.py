"""Recorded values of every point: a pure function of (seed, point, timestamp).

Each point has an event grid anchored at the UNIX epoch: slot `k` covers
`[k * scan, (k + 1) * scan)` seconds. A slot is hashed (splitmix64, vectorised with numpy)
to decide whether it holds values (compression skips a deterministic share), the
sub-second jitter of its timestamp (whole microseconds, below one second), and how many
values share that timestamp (one, sometimes two or three). Values are smooth signals plus
hashed noise between zero and zero + span, digital states, or strings; a few events are
system states or carry Questionable/Substituted/Annotated flags. Any range is generated in
O(values) without state, so the process can serve any tag at any time.

Late tags have a periodic interface outage (every 15 minutes, a few minutes long, phase
per tag): a value stamped inside an outage becomes visible `late_seconds` after its
timestamp. Everything else is visible at its timestamp. Times are 100 ns ticks (int64).

With BAD_FRACTION, a hashed share of the non-system values is served malformed (`bad` holds
the BAD_* kind; the underlying event is unchanged, so interpolation ignores it). Kinds that
remove or break the timestamp (or the object) only hit a value alone at its timestamp, so
the sequence numbers of the good values stay those of the clean series.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from mock_pi import catalog as cat

TICKS = 10_000_000
TICKS_PER_US = 10
OUTAGE_PERIOD = 900  # seconds between two interface outages of a late tag
BATCH_SECONDS = 7200  # a batch id lasts two hours
DIGITAL_BLOCK = 40  # slots over which a digital state is held
MESSAGES: tuple[str, ...] = (
    "Shift handover complete",
    "Sample taken for lab analysis",
    "Setpoint changed by operator",
    'Pump "A" swapped to "B"',
    "Filter backflush started",
    "Température élevée — check cooling",
    "Alarm acknowledged",
    "Maintenance work order 4711 opened",
)
# System states by code index: the random ones first, then "No Data" (before any value).
SYSTEM_CODES: tuple[tuple[str, int], ...] = tuple(cat.SYSTEM_STATES.items())
SYSTEM_TABLE: tuple[tuple[str, int], ...] = (*SYSTEM_CODES, ("No Data", 248))
NO_DATA_INDEX = len(SYSTEM_CODES)
WINDOW = 48  # slots searched either side of an interpolation time before a full scan

# Malformed renderings of a value (BAD_FRACTION); 0 is a well-formed value.
BAD_NONE = 0
BAD_LIST = 1  # Value is a JSON list
BAD_OBJECT = 2  # Value is an object without Name (numeric/string) or with swapped types
BAD_NUMBER = 3  # a number where a digital state or a string belongs
BAD_NAN = 4  # the string "NaN" on a numeric point
BAD_INF = 5  # "Infinity"
BAD_NEG_INF = 6  # "-Infinity"
BAD_MISSING_VALUE = 7  # no Value field
BAD_MISSING_TIMESTAMP = 8  # no Timestamp field
BAD_TIMESTAMP = 9  # a Timestamp with month 13
BAD_NOT_OBJECT = 10  # a bare number or string (a state's code) instead of a TimedValue
_BAD_SHARED = (BAD_LIST, BAD_OBJECT, BAD_MISSING_VALUE)
_BAD_ALONE = (BAD_MISSING_TIMESTAMP, BAD_TIMESTAMP, BAD_NOT_OBJECT)
BAD_KINDS_NUMERIC = np.array((*_BAD_SHARED, BAD_NAN, BAD_INF, BAD_NEG_INF, *_BAD_ALONE), np.int8)
BAD_KINDS_OTHER = np.array((*_BAD_SHARED, BAD_NUMBER, *_BAD_ALONE), np.int8)

_U = np.uint64
_C1 = _U(0x9E3779B97F4A7C15)
_C2 = _U(0xBF58476D1CE4E5B9)
_C3 = _U(0x94D049BB133111EB)
_SHIFT30, _SHIFT27, _SHIFT31 = _U(30), _U(27), _U(31)


def splitmix(x: np.ndarray) -> np.ndarray:
    """splitmix64 of a uint64 array (wrapping arithmetic)."""
    x = x + _C1
    x = (x ^ (x >> _SHIFT30)) * _C2
    x = (x ^ (x >> _SHIFT27)) * _C3
    return x ^ (x >> _SHIFT31)


def _bits(h: np.ndarray, shift: int, width: int) -> np.ndarray:
    return ((h >> _U(shift)) & _U((1 << width) - 1)).astype(np.int64)


@dataclass(slots=True)
class Events:
    """Values of one point as columns, in the order they are served."""

    ticks: np.ndarray  # int64 timestamp ticks (whole microseconds)
    seq: np.ndarray  # int32 position among values sharing the timestamp, ascending order
    value: np.ndarray  # float64 numeric value (NaN where not numeric)
    code: np.ndarray  # int64 digital/system state code, message index or batch number
    system: np.ndarray  # bool: a system state, Good = false
    questionable: np.ndarray
    substituted: np.ndarray
    annotated: np.ndarray
    visible: np.ndarray  # int64 ticks at which the value can be read
    bad: np.ndarray  # int8 BAD_* kind of the rendering, BAD_NONE when well-formed

    def __len__(self) -> int:
        return len(self.ticks)

    def take(self, index: np.ndarray | slice) -> Events:
        return Events(*(getattr(self, f)[index] for f in _FIELDS))

    @classmethod
    def concat(cls, parts: Sequence[Events]) -> Events:
        if len(parts) == 1:
            return parts[0]
        if not parts:
            return EMPTY
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in _FIELDS))


_FIELDS = Events.__slots__
EMPTY = Events(
    np.empty(0, np.int64),
    np.empty(0, np.int32),
    np.empty(0),
    np.empty(0, np.int64),
    *(np.empty(0, bool) for _ in range(4)),
    np.empty(0, np.int64),
    np.empty(0, np.int8),
)


class Series:
    """The value generator of one point (cheap to build, nothing precomputed per value)."""

    def __init__(
        self, seed: int, point: cat.Point, late_seconds: float, bad_fraction: float = 0.0
    ) -> None:
        self.point = point
        kind = point.kind
        h = cat.mix(seed, "series", point.index)
        self.key = _U(h)
        self.key2 = _U(cat.mix(seed, "events", point.index))
        self.key3 = _U(cat.mix(seed, "bad", point.index))
        self.bad_below = int(bad_fraction * (1 << 20))
        # Whole microseconds, so that every timestamp stays a whole microsecond.
        self.scan_ticks = round(point.scan_seconds * 1_000_000) * TICKS_PER_US
        self.numeric = kind.point_type in ("Float32", "Float64", "Int32")
        self.keep = {"Digital": 0.25, "String": 0.2}.get(kind.point_type, 0.6)
        self.rate = self.keep * 1.05  # expected values per slot, to size generation chunks
        self.jitter_mode = (h >> 8) % 3  # 0 whole seconds, 1 milliseconds, 2 microseconds
        self.period1 = 86_400.0 * (0.5 + ((h >> 12) % 1000) / 666.0)
        self.period2 = 3_600.0 * (0.3 + ((h >> 22) % 1000) / 370.0)
        self.phase1 = ((h >> 32) % 6283) / 1000.0
        self.phase2 = ((h >> 44) % 6283) / 1000.0
        top = kind.zero + kind.span
        self.decimals = max(0, 6 - len(str(int(abs(top))))) if kind.point_type == "Float32" else 0
        self.late = point.late
        self.late_ticks = round(late_seconds * TICKS)
        self.outage_phase = (h >> 52) % OUTAGE_PERIOD
        self.outage_length = 60 + (h >> 40) % 240
        # Edits and deletions as of a tick (`mock_pi.changes`, set by the state); None: none.
        self.changes: Callable[[Events, int], Events] | None = None

    def slots(self, slots: np.ndarray) -> Events:
        """All values of the given slots (sorted int64), ascending, visibility not applied."""
        hs = splitmix(slots.astype(np.uint64) * _C2 + self.key)
        kept = _bits(hs, 0, 16) < int(self.keep * 65536)
        slots, hs = slots[kept], hs[kept]
        mult_bits = _bits(hs, 40, 8)
        mult = 1 + (mult_bits < 13).astype(np.int64) + (mult_bits < 5).astype(np.int64)
        raw = _bits(hs, 16, 20)
        if self.jitter_mode == 0:
            jitter_us = np.zeros(len(slots), np.int64)
        elif self.jitter_mode == 1:
            jitter_us = (raw % 1000) * 1000
        else:
            jitter_us = raw % 1_000_000
        ticks = slots * self.scan_ticks + jitter_us * TICKS_PER_US
        n = int(mult.sum())
        hs_events = hs
        if n != len(slots):
            hs_events = np.repeat(hs, mult)
            ticks = np.repeat(ticks, mult)
            slots = np.repeat(slots, mult)
            starts = np.cumsum(mult) - mult
            seq = (np.arange(n) - np.repeat(starts, mult)).astype(np.int32)
        else:
            seq = np.zeros(n, np.int32)
        he = splitmix((slots.astype(np.uint64) << _U(2)) + seq.astype(np.uint64) + self.key2)
        system = _bits(he, 20, 10) < 3
        code = np.where(system, _bits(he, 30, 8) % len(SYSTEM_CODES), 0)
        value = np.full(n, np.nan)
        kind = self.point.kind
        if self.numeric:
            value = self._analog(ticks, _bits(he, 0, 20) / float(1 << 20) * 2.0 - 1.0)
        elif kind.digital_set is not None:
            states = len(cat.DIGITAL_SETS[kind.digital_set])
            block = splitmix((slots // DIGITAL_BLOCK).astype(np.uint64) + self.key2)
            code = np.where(system, code, (_bits(block, 7, 16) + seq) % states)
        elif kind.prefix == "BATCH":
            code = np.where(system, code, ticks // (BATCH_SECONDS * TICKS) + seq)
        else:
            code = np.where(system, code, (_bits(hs_events, 48, 10) + seq) % len(MESSAGES))
        value = np.where(system, np.nan, value)
        bad = np.zeros(n, np.int8)
        if self.bad_below:
            hb = splitmix(he ^ self.key3)
            hit = (_bits(hb, 0, 20) < self.bad_below) & ~system
            kinds = BAD_KINDS_NUMERIC if self.numeric else BAD_KINDS_OTHER
            chosen = kinds[_bits(hb, 20, 16) % len(kinds)]
            alone = np.repeat(mult == 1, mult) if n != len(mult) else mult == 1
            chosen = np.where(np.isin(chosen, _BAD_ALONE) & ~alone, BAD_LIST, chosen)
            bad = np.where(hit, chosen, BAD_NONE).astype(np.int8)
        return Events(
            ticks=ticks,
            seq=seq,
            value=value,
            code=code,
            system=system,
            questionable=_bits(he, 32, 10) < 10,
            substituted=_bits(he, 42, 10) < 5,
            annotated=_bits(he, 52, 10) < 3,
            visible=self._visible(ticks),
            bad=bad,
        )

    def _analog(self, ticks: np.ndarray, noise: np.ndarray) -> np.ndarray:
        kind = self.point.kind
        t = ticks / TICKS
        x = (
            0.5
            + 0.28 * np.sin(2 * np.pi * (t / self.period1) + self.phase1)
            + 0.12 * np.sin(2 * np.pi * (t / self.period2) + self.phase2)
            + 0.01 * noise
        )
        v = kind.zero + kind.span * np.clip(x, 0.0, 1.0)
        if kind.point_type == "Int32":
            return np.rint(v)
        if kind.point_type == "Float32":
            return np.round(v, self.decimals)
        return v

    def _visible(self, ticks: np.ndarray) -> np.ndarray:
        if not self.late:
            return ticks
        seconds = ticks // TICKS
        outage = (seconds - self.outage_phase) % OUTAGE_PERIOD < self.outage_length
        return ticks + outage * self.late_ticks

    def scan(
        self,
        lo: int,
        hi: int,
        now: int,
        history_start: int,
        limit: int | None = None,
        descending: bool = False,
        visible_upto: int | None = None,
        changes: bool = True,
    ) -> Events:
        """Values with lo <= timestamp <= hi, history_start <= timestamp <= now, visible by now,
        edited and deleted as they stand then (`changes=False`: as first archived).

        `visible_upto` overrides the visibility instant (defaults to `now`). Generates slots
        in chunks sized from `limit`, so a small page of a long range stays cheap.
        """
        seen_at = now if visible_upto is None else visible_upto
        lo = max(lo, history_start)
        hi = min(hi, now)
        if hi < lo or limit == 0:
            return EMPTY
        slot_lo, slot_hi = lo // self.scan_ticks, hi // self.scan_ticks
        parts: list[Events] = []
        found = 0
        pos = slot_hi if descending else slot_lo
        while (pos >= slot_lo if descending else pos <= slot_hi) and (
            limit is None or found < limit
        ):
            if limit is None:
                size = slot_hi - slot_lo + 1
            else:
                size = max(256, int((limit - found) / self.rate * 1.25) + 64)
            if descending:
                first, last = max(slot_lo, pos - size + 1), pos
                pos = first - 1
            else:
                first, last = pos, min(slot_hi, pos + size - 1)
                pos = last + 1
            ev = self.slots(np.arange(first, last + 1, dtype=np.int64))
            keep = (ev.ticks >= lo) & (ev.ticks <= hi) & (ev.visible <= seen_at)
            if not keep.all():
                ev = ev.take(keep)
            if changes and self.changes is not None:
                ev = self.changes(ev, seen_at)
            if descending:
                ev = ev.take(slice(None, None, -1))
            parts.append(ev)
            found += len(ev)
        out = Events.concat(parts)
        return out if limit is None or len(out) <= limit else out.take(slice(0, limit))

    def interpolate(self, times: np.ndarray, now: int, history_start: int) -> Events:
        """Values at the given times (int64 ticks): linear between neighbours for numeric
        points, the previous value for digital and string points and after a system state,
        "No Data" before the first value; only values visible by `now` count."""
        n = len(times)
        if n == 0:
            return EMPTY
        s = times // self.scan_ticks
        lo_slot, hi_slot = int(s.min()) - WINDOW, int(s.max()) + WINDOW
        if hi_slot - lo_slot <= n * 4 * WINDOW + 4096:
            slots = np.arange(lo_slot, hi_slot + 1, dtype=np.int64)
        else:
            slots = np.unique((s[:, None] + np.arange(-WINDOW, WINDOW + 1)).ravel())
        ev = self.slots(slots)
        ev = ev.take((ev.ticks >= history_start) & (ev.ticks <= now) & (ev.visible <= now))
        if self.changes is not None:
            ev = self.changes(ev, now)
        m = len(ev)
        ev_slot = np.append(ev.ticks // self.scan_ticks, 0)
        pidx = np.searchsorted(ev.ticks, times, "right") - 1
        nidx = pidx + 1
        pidx[(pidx < 0) | (ev_slot[pidx] < s - WINDOW)] = -1
        nidx[(nidx >= m) | (ev_slot[np.minimum(nidx, m)] > s + WINDOW)] = -1
        extra: list[Events] = []
        for idx, before in ((pidx, True), (nidx, False)):
            for i in np.flatnonzero(idx < 0):
                t = int(times[i])
                if before:
                    one = self.scan(history_start, t, now, history_start, 1, descending=True)
                else:
                    one = self.scan(t + 1, now, now, history_start, 1)
                if len(one):
                    idx[i] = m + len(extra)
                    extra.append(one)
        pool = Events.concat([ev, *extra])
        return self._combine(times, pool, pidx, nidx)

    def _combine(
        self, times: np.ndarray, pool: Events, pidx: np.ndarray, nidx: np.ndarray
    ) -> Events:
        n = len(times)
        has_prev, has_next = pidx >= 0, nidx >= 0
        if len(pool) == 0:
            pool = Events(*(np.zeros(1, getattr(EMPTY, f).dtype) for f in _FIELDS))
        prev = pool.take(np.maximum(pidx, 0))
        nxt = pool.take(np.maximum(nidx, 0))
        linear = has_prev & has_next & ~prev.system & ~nxt.system & (prev.ticks != times)
        if not self.numeric:
            linear[:] = False
        span = np.where(linear, nxt.ticks - prev.ticks, 1)
        frac = (times - prev.ticks) / span
        value = np.where(linear, prev.value + (nxt.value - prev.value) * frac, prev.value)
        if self.point.kind.point_type == "Int32":
            value = np.rint(value)
        elif self.point.kind.point_type == "Float32":
            value = np.round(value, self.decimals)
        system = prev.system | ~has_prev
        code = np.where(has_prev, prev.code, NO_DATA_INDEX)
        value = np.where(system, np.nan, value)
        false = np.zeros(n, bool)
        return Events(
            ticks=times.astype(np.int64),
            seq=np.zeros(n, np.int32),
            value=value,
            code=code,
            system=system,
            questionable=(prev.questionable & has_prev) | (nxt.questionable & linear),
            substituted=false,
            annotated=false,
            visible=times.astype(np.int64),
            bad=np.zeros(n, np.int8),
        )

    def text(self, code: int) -> str:
        """The String value of a non-system event's code."""
        if self.point.kind.prefix == "BATCH":
            return f"B{self.point.index % 1000:03d}-{code:07d}"
        return MESSAGES[code]
