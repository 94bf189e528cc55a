"""Summary figures of recorded values, per interval, computed in columns.

PI Web API `summary` semantics this module follows (PI Web API reference topics
"Summary Type" and "Calculation Basis"):
- EventWeighted: every event weighs the same; no interpolation. Boundary events: both
  boundaries belong to a lone interval; with several ascending intervals an event at an
  interval's start belongs to it and one at its end to the next (the last interval leaves
  out the range's end); with descending intervals the later boundary belongs instead.
- TimeWeighted: values are weighted by the time they apply, linear between two good events
  of a numeric point (stepped for digital and string points and before a bad event),
  with interpolated values at every interval boundary.
- Only good events (not system states) enter Total, Average, Minimum, Maximum, Range and
  the deviations; `Count` is the number of good events (EventWeighted) or the seconds of
  good data (TimeWeighted); `PercentGood` is the share of events or of time that is good,
  so a client gets the number of events as `Count * 100 / PercentGood`.
- Totals of a TimeWeighted basis are per day (value x days), as PI totalises rates.
Values served malformed (BAD_FRACTION) are still good events of the archive.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mock_pi.series import TICKS, Events, Series

TYPES = (
    "Total",
    "Average",
    "Minimum",
    "Maximum",
    "Range",
    "StdDev",
    "PopulationStdDev",
    "Count",
    "PercentGood",
)
VALUE_TYPES = frozenset(TYPES) - {"Count", "PercentGood"}
TICKS_PER_DAY = 86_400 * TICKS


@dataclass(slots=True)
class Figures:
    """Per-interval figures of one stream, ascending in time (float64 arrays, NaN = none)."""

    edges: np.ndarray  # int64 ticks, n + 1 ascending boundaries
    good: np.ndarray  # good events (EventWeighted) or good seconds (TimeWeighted)
    percent_good: np.ndarray
    total: np.ndarray
    average: np.ndarray
    minimum: np.ndarray
    maximum: np.ndarray
    min_ticks: np.ndarray  # int64 time of the minimum (-1 when none)
    max_ticks: np.ndarray
    std: np.ndarray
    population_std: np.ndarray
    questionable: np.ndarray  # bool: a questionable value entered the interval

    def value(self, kind: str) -> np.ndarray:
        return {
            "Total": self.total,
            "Average": self.average,
            "Minimum": self.minimum,
            "Maximum": self.maximum,
            "Range": self.maximum - self.minimum,
            "StdDev": self.std,
            "PopulationStdDev": self.population_std,
            "Count": self.good,
            "PercentGood": self.percent_good,
        }[kind]


def interval_edges(lo: int, hi: int, duration: int | None) -> np.ndarray:
    """Ascending boundaries from lo to hi, every `duration` ticks (the last one shorter)."""
    if duration is None or hi <= lo:
        return np.array([lo, hi], np.int64)
    count = -(-(hi - lo) // duration)
    edges = lo + np.arange(count + 1, dtype=np.int64) * duration
    edges[-1] = hi
    return edges


def _group_extremes(
    idx: np.ndarray, values: np.ndarray, ticks: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Minimum, maximum and their times per group (NaN / -1 for empty groups)."""
    minimum, maximum = np.full(n, np.nan), np.full(n, np.nan)
    min_t, max_t = np.full(n, -1, np.int64), np.full(n, -1, np.int64)
    if len(idx):
        order = np.lexsort((ticks, values, idx))
        gi, gv, gt = idx[order], values[order], ticks[order]
        first = np.flatnonzero(np.r_[True, gi[1:] != gi[:-1]])
        last = np.r_[first[1:] - 1, len(gi) - 1]
        minimum[gi[first]], min_t[gi[first]] = gv[first], gt[first]
        maximum[gi[last]], max_t[gi[last]] = gv[last], gt[last]
    return minimum, maximum, min_t, max_t


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)


def event_weighted(s: Series, ev: Events, edges: np.ndarray, closed: str) -> Figures:
    """EventWeighted figures of `ev` (ascending) over the intervals between `edges`.

    `closed` is "both" (a lone interval), "left" (ascending) or "right" (descending)."""
    n = len(edges) - 1
    if closed == "both":
        idx = np.where((ev.ticks >= edges[0]) & (ev.ticks <= edges[-1]), 0, -1)
    else:
        idx = np.searchsorted(edges, ev.ticks, "right" if closed == "left" else "left") - 1
    inside = (idx >= 0) & (idx < n)
    idx, ev = idx[inside], ev.take(inside)
    good = ~ev.system
    events = np.bincount(idx, minlength=n).astype(np.float64)
    good_n = np.bincount(idx[good], minlength=n).astype(np.float64)
    gi, gv, gt = idx[good], ev.value[good], ev.ticks[good]
    numeric = s.numeric
    nan = np.full(n, np.nan)
    total = np.bincount(gi, weights=gv, minlength=n) if numeric else nan
    average = _ratio(total, good_n) if numeric else nan
    if numeric:
        minimum, maximum, min_t, max_t = _group_extremes(gi, gv, gt, n)
        dev2 = np.bincount(gi, weights=(gv - average[gi]) ** 2, minlength=n)
        std = np.sqrt(_ratio(dev2, good_n - 1))
        population = np.sqrt(_ratio(dev2, good_n))
    else:
        minimum = maximum = std = population = nan
        min_t = max_t = np.full(n, -1, np.int64)
    total = np.where(good_n > 0, total, np.nan)
    return Figures(
        edges=edges,
        good=good_n,
        percent_good=100.0 * _ratio(good_n, events),
        total=total,
        average=average,
        minimum=minimum,
        maximum=maximum,
        min_ticks=min_t,
        max_ticks=max_t,
        std=std,
        population_std=population,
        questionable=np.bincount(idx, weights=ev.questionable, minlength=n) > 0,
    )


def time_weighted(s: Series, ev: Events, edges: np.ndarray, now: int, hs: int) -> Figures:
    """TimeWeighted figures: interpolated values at every edge, events in between."""
    n = len(edges) - 1
    at_edges = s.interpolate(edges, now, hs)
    inner = ev.take((ev.ticks > edges[0]) & (ev.ticks < edges[-1]) & ~np.isin(ev.ticks, edges))
    ticks = np.concatenate([edges, inner.ticks])
    order = np.argsort(ticks, kind="stable")
    t = ticks[order]
    v = np.concatenate([at_edges.value, inner.value])[order]
    ok = ~np.concatenate([at_edges.system, inner.system])[order]
    q = np.concatenate([at_edges.questionable, inner.questionable])[order]
    dt = np.diff(t).astype(np.float64)
    seg_bucket = np.minimum(np.searchsorted(edges, t[:-1], "right") - 1, n - 1)
    seg_good = ok[:-1]
    both = seg_good & ok[1:]
    good_ticks = np.bincount(seg_bucket, weights=dt * seg_good, minlength=n)
    length = np.diff(edges).astype(np.float64)
    nan = np.full(n, np.nan)
    if s.numeric:
        right = np.where(both, v[1:], v[:-1])
        mean = np.where(seg_good, (v[:-1] + right) / 2.0, 0.0)
        area = np.bincount(seg_bucket, weights=mean * dt, minlength=n)
        average = _ratio(area, good_ticks)
        total = np.where(good_ticks > 0, area / TICKS_PER_DAY, np.nan)
        spread = np.where(seg_good, (mean - average[seg_bucket]) ** 2 * dt, 0.0)
        population = np.sqrt(_ratio(np.bincount(seg_bucket, spread, n), good_ticks))
        # A point at an edge belongs to the interval on either side of it.
        point_bucket = np.searchsorted(edges, t, "right") - 1
        is_edge = np.isin(t, edges)
        idx = np.concatenate([point_bucket, point_bucket[is_edge] - 1])
        pv = np.concatenate([v, v[is_edge]])
        pt = np.concatenate([t, t[is_edge]])
        keep = np.concatenate([ok, ok[is_edge]]) & (idx >= 0) & (idx < n)
        minimum, maximum, min_t, max_t = _group_extremes(idx[keep], pv[keep], pt[keep], n)
    else:
        total = average = population = minimum = maximum = nan
        min_t = max_t = np.full(n, -1, np.int64)
    point_bucket = np.minimum(np.searchsorted(edges, t, "right") - 1, n - 1)
    return Figures(
        edges=edges,
        good=good_ticks / TICKS,
        percent_good=100.0 * _ratio(good_ticks, length),
        total=total,
        average=average,
        minimum=minimum,
        maximum=maximum,
        min_ticks=min_t,
        max_ticks=max_t,
        std=population,
        population_std=population,
        questionable=np.bincount(point_bucket, weights=q, minlength=n) > 0,
    )


def figures(
    s: Series,
    start: int,
    end: int,
    duration: int | None,
    basis: str,
    now: int,
    history_start: int,
) -> Figures:
    """The figures of one stream from start to end (either order) in intervals."""
    lo, hi = min(start, end), max(start, end)
    if start <= end:
        edges = interval_edges(lo, hi, duration)
    else:
        edges = interval_edges(-hi, -lo, duration)[::-1] * -1
    ev = s.scan(lo, hi, now, history_start)
    if basis == "TimeWeighted":
        return time_weighted(s, ev, edges, now, history_start)
    closed = "both" if len(edges) == 2 else ("left" if start <= end else "right")
    return event_weighted(s, ev, edges, closed)
