"""PI time strings and timestamps as the simulator reads and writes them.

Written from the PI Web API reference ("Time Strings", AFTime and AFTimeSpan syntax), not
from the client's parser: the simulator is the other side the client is tested against, so
a misreading the client makes must not be made here too.

An instant is an int of 100 ns ticks since 1970-01-01T00:00:00Z, the resolution PI keeps.

A time string is an optional base followed by any number of offsets:

    base    *                        now
            t, today                 midnight of now's day
            y, yesterday             midnight of the day before
            YYYY-MM-DD               midnight of that date
            YYYY-MM-DD[T| ]hh:mm[:ss[.f]][Z|±hh:mm|±hhmm]
                                     ISO 8601, at most 7 fraction digits (whole ticks)
            hh:mm[:ss[.f]]           that time of now's day
            (nothing)                now
    offset  + or -, a number, a unit (a sign left out repeats the one before: -1h30m):
            s sec second seconds, m min minute minutes, h hr hour hours,
            d day days, w week weeks         any decimal, rounded to the nearest tick
                                             (an exact half to the even tick)
            mo month months, y year years    whole numbers; calendar steps, the day
                                             clamped to the month's last (Jan 31 + 1mo
                                             = Feb 28/29)

Letters may be of any case and blanks may stand between the parts. A time without a zone is
UTC: the simulator's local time zone is UTC. Offsets apply left to right.

An interval (`interval=` of interpolated reads, AFTimeSpan) is one or more offsets in the
fixed units s/m/h/d/w, the first one's sign optional: `10m`, `1h30m`, `1d-2h`.

Not read, though PI reads them: weekday and month names, a bare day-of-month or year number,
quoted dates and the other layouts of .NET DateTime.TryParse.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterator
from datetime import date
from fractions import Fraction

TICKS_PER_SECOND = 10_000_000
TICKS_PER_DAY = 86_400 * TICKS_PER_SECOND
_EPOCH_DAY = date(1970, 1, 1).toordinal()
# What a time string may name: the years 1 to 9999, as .NET DateTime and Python's date.
_FIRST = (date.min.toordinal() - _EPOCH_DAY) * TICKS_PER_DAY
_END = (date.max.toordinal() + 1 - _EPOCH_DAY) * TICKS_PER_DAY

_FIXED_UNITS = {
    TICKS_PER_SECOND: ("s", "sec", "second", "seconds"),
    60 * TICKS_PER_SECOND: ("m", "min", "minute", "minutes"),
    3600 * TICKS_PER_SECOND: ("h", "hr", "hour", "hours"),
    TICKS_PER_DAY: ("d", "day", "days"),
    7 * TICKS_PER_DAY: ("w", "week", "weeks"),
}
_TICKS_OF_UNIT = {name: ticks for ticks, names in _FIXED_UNITS.items() for name in names}
_MONTHS_OF_UNIT = {"mo": 1, "month": 1, "months": 1, "y": 12, "year": 12, "years": 12}


def _clock(prefix: str) -> str:
    """hh:mm[:ss[.fffffff]], its groups named `prefix` + hour, minute, second, fraction."""
    return (
        rf"(?P<{prefix}hour>\d\d):(?P<{prefix}minute>\d\d)"
        rf"(?::(?P<{prefix}second>\d\d)(?:\.(?P<{prefix}fraction>\d{{1,7}}))?)?"
    )


_DATE = r"(?P<year>\d{4})-(?P<month>\d\d)-(?P<day>\d\d)"
# A zone is not followed by a digit, point or letter: "+1000s" is an offset, not "+10:00".
_ZONE = r"(?P<zone>z|(?P<zsign>[+-])(?P<zh>\d\d):?(?P<zm>\d\d))(?![\d.a-z])"
_BASE = re.compile(
    rf"\s*(?:(?P<keyword>\*|today|t|yesterday|y)(?![a-z])"
    rf"|{_DATE}(?:[t ]{_clock('')}(?:{_ZONE})?)?"
    rf"|(?P<clock>{_clock('c')}))"
)
_OFFSET = re.compile(r"\s*(?P<sign>[+-])?\s*(?P<number>\d+(?:\.\d*)?|\.\d+)\s*(?P<unit>[a-z]+)")


class PiTimeError(ValueError):
    """A time string the simulator cannot read; the message is what PI Web API answers."""

    def __init__(self, text: str) -> None:
        super().__init__(f"Cannot parse time string '{text}'.")


def parse_time(text: str, now: int) -> int:
    """The instant (ticks) `text` names, reading `*`, `t` and `y` relative to `now` (ticks)."""
    lowered = text.lower()
    base = _BASE.match(lowered)
    if base is None:
        instant, position = now, 0
    else:
        instant, position = _base_ticks(base, now, text), base.end()
    for sign, number, unit in _offsets(lowered, position, text, first_needs_sign=True):
        instant = _shift(instant, sign, number, unit, text)
    if not _FIRST <= instant < _END:
        raise PiTimeError(text)
    return instant


def parse_span(text: str) -> int:
    """The length in ticks of an AFTimeSpan such as `10m`, `1.5h` or `1d-2h` (may be <= 0)."""
    lowered = text.lower()
    total = 0
    offsets = list(_offsets(lowered, 0, text, first_needs_sign=False))
    if not offsets:
        raise PiTimeError(text)
    for sign, number, unit in offsets:
        if unit not in _TICKS_OF_UNIT:
            raise PiTimeError(text)
        total += sign * round(Fraction(number) * _TICKS_OF_UNIT[unit])
    return total


def format_time(ticks: int) -> str:
    """`2026-12-01T00:00:00Z`, or with seven fraction digits when the instant has some."""
    days, rest = divmod(ticks, TICKS_PER_DAY)
    seconds, fraction = divmod(rest, TICKS_PER_SECOND)
    hour, seconds = divmod(seconds, 3600)
    minute, second = divmod(seconds, 60)
    stamp = f"{date.fromordinal(_EPOCH_DAY + days).isoformat()}T{hour:02}:{minute:02}:{second:02}"
    return f"{stamp}.{fraction:07}Z" if fraction else f"{stamp}Z"


def ticks_of_seconds(seconds: float) -> int:
    """Epoch seconds as ticks, truncated to whole microseconds as the simulator's clock is."""
    return int(seconds * 1_000_000) * 10


# ----- the parts ----------------------------------------------------------------------------
def _base_ticks(m: re.Match[str], now: int, text: str) -> int:
    midnight = now - now % TICKS_PER_DAY
    keyword = m["keyword"]
    if keyword == "*":
        return now
    if keyword is not None:  # t, today, y, yesterday
        return midnight - TICKS_PER_DAY if keyword[0] == "y" else midnight
    if m["clock"] is not None:
        return midnight + _clock_ticks(m["chour"], m["cminute"], m["csecond"], m["cfraction"], text)
    try:
        day = date(int(m["year"]), int(m["month"]), int(m["day"]))
    except ValueError:
        raise PiTimeError(text) from None
    ticks = (day.toordinal() - _EPOCH_DAY) * TICKS_PER_DAY
    if m["hour"] is not None:
        ticks += _clock_ticks(m["hour"], m["minute"], m["second"], m["fraction"], text)
    if m["zsign"] is not None:
        zh, zm = int(m["zh"]), int(m["zm"])
        if zh > 14 or zm > 59:
            raise PiTimeError(text)
        ticks -= (1 if m["zsign"] == "+" else -1) * (zh * 60 + zm) * 60 * TICKS_PER_SECOND
    return ticks


def _clock_ticks(
    hour: str, minute: str, second: str | None, fraction: str | None, text: str
) -> int:
    h, m, s = int(hour), int(minute), int(second or 0)
    if h > 23 or m > 59 or s > 59:
        raise PiTimeError(text)
    return ((h * 60 + m) * 60 + s) * TICKS_PER_SECOND + int((fraction or "").ljust(7, "0"))


def _offsets(
    lowered: str, position: int, text: str, *, first_needs_sign: bool
) -> Iterator[tuple[int, str, str]]:
    """(sign, number text, unit) of each offset from `position` to the end of the string.

    An offset without a sign takes the sign before it (`-1h30m` is -1h-30m); the first one
    needs its own unless `first_needs_sign` is false (then it is +).
    """
    sign = None if first_needs_sign else "+"
    while lowered[position:].strip():
        m = _OFFSET.match(lowered, position)
        if m is None or not (m["sign"] or sign):
            raise PiTimeError(text)
        sign = m["sign"] or sign
        yield -1 if sign == "-" else 1, m["number"], m["unit"]
        position = m.end()


def _shift(instant: int, sign: int, number: str, unit: str, text: str) -> int:
    if unit in _TICKS_OF_UNIT:
        return instant + sign * round(Fraction(number) * _TICKS_OF_UNIT[unit])
    if unit not in _MONTHS_OF_UNIT or not number.isdigit():
        raise PiTimeError(text)
    days, time_of_day = divmod(instant, TICKS_PER_DAY)
    if not _FIRST <= instant < _END:
        raise PiTimeError(text)
    day = date.fromordinal(_EPOCH_DAY + days)
    months = day.year * 12 + day.month - 1 + sign * int(number) * _MONTHS_OF_UNIT[unit]
    year, month = divmod(months, 12)
    if not 1 <= year <= 9999:
        raise PiTimeError(text)
    month += 1
    moved = date(year, month, min(day.day, calendar.monthrange(year, month)[1]))
    return (moved.toordinal() - _EPOCH_DAY) * TICKS_PER_DAY + time_of_day
