"""Parsers of setting values that are small languages of their own (grid intervals,
summary specs, keytabs), used by the settings' validators and by the code that reads the
parsed values."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass


def is_keytab(text: str) -> bool:
    """Base64 of an MIT keytab file: version bytes 0x05 0x01 or 0x05 0x02, then entries."""
    try:
        raw = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        return False
    return len(raw) > 2 and raw[0] == 5 and raw[1] in (1, 2)


_GRID = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
_GRID_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


def grid_seconds(text: str) -> int:
    """`1m` -> 60: a whole number of seconds, minutes, hours or days, at least one second."""
    m = _GRID.match(text.lower())
    seconds = int(m.group(1)) * _GRID_UNITS[m.group(2)] if m else 0
    if seconds < 1:
        raise ValueError(f"{text!r} is not a grid interval such as 30s, 1m, 1h or 1d")
    return seconds


# PI Web API's summary types (SummaryType); `All` and friends are left out, as they
# would not name one column of a row.
SUMMARY_TYPES = (
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


@dataclass(frozen=True, slots=True)
class SummarySpec:
    """One duration of PIDELTA_SUMMARIES: its text (`1h`), seconds and summary types."""

    duration: str
    seconds: int
    types: tuple[str, ...]


def summary_specs(text: str) -> tuple[SummarySpec, ...]:
    """`1h:Average,Count;1d:Total` -> the specs; a ValueError names what is wrong."""
    specs: list[SummarySpec] = []
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        duration, sep, kinds = part.partition(":")
        if not sep:
            raise ValueError(f"{part!r} is not duration:types such as 1h:Average,Maximum")
        seconds = grid_seconds(duration)
        by_lower = {t.lower(): t for t in SUMMARY_TYPES}
        types: list[str] = []
        for kind in (k.strip() for k in kinds.split(",") if k.strip()):
            if kind.lower() not in by_lower:
                raise ValueError(f"{kind!r} is not a summary type ({', '.join(SUMMARY_TYPES)})")
            if by_lower[kind.lower()] not in types:
                types.append(by_lower[kind.lower()])
        if not types:
            raise ValueError(f"{part!r} names no summary type")
        if any(s.seconds == seconds for s in specs):
            raise ValueError(f"duration {duration.strip()!r} is given twice")
        specs.append(SummarySpec(duration.strip().lower(), seconds, tuple(types)))
    if not specs:
        raise ValueError("names no duration, e.g. 1h:Average")
    return tuple(specs)
