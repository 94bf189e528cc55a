"""PI time strings and ISO 8601 timestamps, as the PI Web API reads and writes them.

Accepted: `*` (now), `t`/`today`, `y`/`yesterday`, an optional base followed by signed
offsets (`*-1d`, `t+8h`, `-30m`, `*-1h+15m`), ISO 8601 with up to seven fractional digits
and an optional zone (`Z`, `+02:00`), and a bare date. Times without a zone are UTC.
Internally a time is a float of epoch seconds, or an int of 100 ns ticks where exactness
matters (the PI resolution).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from workers.errors import PideltaError

DAY = 86_400.0
TICKS_PER_SECOND = 10_000_000
TICKS_PER_US = 10

_UNITS = {
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "seconds": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "minutes": 60.0,
    "h": 3600.0,
    "hr": 3600.0,
    "hour": 3600.0,
    "hours": 3600.0,
    "d": DAY,
    "day": DAY,
    "days": DAY,
    "w": 7 * DAY,
    "week": 7 * DAY,
    "weeks": 7 * DAY,
}
_OFFSET = re.compile(r"\s*([+-])\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]+)")
_ISO = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})"
    r"(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?"
    r"\s*(Z|[+-]\d{2}:?\d{2})?$"
)


class TimeParseError(PideltaError, ValueError):
    """A time string the PI Web API would refuse with HTTP 400 (a ValueError too, which
    pydantic validators rely on)."""


def parse_pi_time(text: str, now: float) -> float:
    """Epoch seconds (float) of a PI time string, relative expressions taken from `now`."""
    return parse_pi_ticks(text, now) / TICKS_PER_SECOND


def parse_pi_ticks(text: str, now: float) -> int:
    """Epoch time in 100 ns ticks, exact for ISO strings with seven fractional digits."""
    s = text.strip()
    if not s:
        raise TimeParseError(f"Cannot parse time string '{text}'.")
    m = _ISO.match(s)
    if m and len(m.group(7) or "") <= 7:  # PI refuses finer than its 100 ns
        return _iso_ticks(m, text)
    low = s.lower()
    base: float
    for word, value in (
        ("*", now),
        ("today", _midnight(now)),
        ("yesterday", _midnight(now) - DAY),
        ("t", _midnight(now)),
        ("y", _midnight(now) - DAY),
    ):
        if low.startswith(word):
            base, rest = value, low[len(word) :]
            break
    else:
        if low[0] in "+-":
            base, rest = now, low
        else:
            raise TimeParseError(f"Cannot parse time string '{text}'.")
    pos = 0
    seconds = 0.0
    while pos < len(rest):
        om = _OFFSET.match(rest, pos)
        if not om or om.group(3) not in _UNITS:
            raise TimeParseError(f"Cannot parse time string '{text}'.")
        sign = -1.0 if om.group(1) == "-" else 1.0
        seconds += sign * float(om.group(2)) * _UNITS[om.group(3)]
        pos = om.end()
    return round((base + seconds) * TICKS_PER_SECOND)


def parse_iso_us(text: str) -> int:
    """Epoch microseconds of an ISO 8601 timestamp of a value (no relative time). Digits
    past the microsecond are truncated, never rounded into the next one, and any number of
    them is read, as the decoder reads a value's timestamp: paging counts the same values."""
    m = _ISO.match(text)
    if not m:
        raise TimeParseError(f"Cannot parse time string '{text}'.")
    return _iso_ticks(m, text) // TICKS_PER_US


def _midnight(now: float) -> float:
    return (now // DAY) * DAY


def _iso_ticks(m: re.Match[str], text: str) -> int:
    year, month, day, hh, mm, ss, frac, zone = m.groups()
    try:
        dt = datetime(
            int(year), int(month), int(day), int(hh or 0), int(mm or 0), int(ss or 0), tzinfo=UTC
        )
    except ValueError:
        raise TimeParseError(f"Cannot parse time string '{text}'.") from None
    if zone and zone != "Z":
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        dt -= sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    whole = int(dt.timestamp()) * TICKS_PER_SECOND
    return whole + (int(frac[:7].ljust(7, "0")) if frac else 0)


def format_ticks(ticks: int) -> str:
    """ISO 8601 UTC as the PI Web API writes it: seven fractional digits only when needed."""
    seconds, rem = divmod(ticks, TICKS_PER_SECOND)
    base = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{rem:07d}Z" if rem else f"{base}Z"


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def to_us(moment: datetime) -> int:
    """Epoch microseconds of an aware datetime, exactly (no float rounding)."""
    delta = moment - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def format_us(us: int) -> str:
    """ISO 8601 UTC with microseconds, as the PI Web API reads it."""
    seconds, rem = divmod(us, 1_000_000)
    base = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{rem:06d}Z" if rem else f"{base}Z"


def parse_time(text: str, now: datetime) -> datetime:
    """ISO 8601 or a PI time string (`*-1h`, `t`, `y+6h`), relative to `now`, to µs.

    Raises ValueError (TimeParseError) for text PI would refuse.
    """
    ticks = parse_pi_ticks(text, now.timestamp())
    return from_us(ticks // TICKS_PER_US)
