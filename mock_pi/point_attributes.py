"""PI point attributes and the data server's enumeration (digital state) sets.

Attributes are those of a classic PI point, with values that fit the point's kind: zero and
span bound the values the series generates, compression and exception deviations are
fractions of the span, digital points name their state set, and `creationdate` and
`changedate` follow `mock_pi.point_changes`. Values carry PI's own types: Int16 flags as
0 or 1, Float32 numbers, strings, and `future` as a Boolean.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mock_pi import catalog as cat
from mock_pi import webid
from mock_pi.point_changes import Version

SYSTEM_SET = "SYSTEM"
# Sets of the data server that no mock point uses, as a plant's server holds them.
EXTRA_SETS: dict[str, tuple[str, ...]] = {"Modes": ("Manual", "Auto", "Cascade")}
# PI's system states (a subset of the SYSTEM set: those the series serves, and common ones).
SYSTEM_STATES: dict[str, int] = {
    **cat.SYSTEM_STATES,
    "No Data": 248,
    "Calc Failed": 249,
    "Scan Off": 253,
    "Comm Fail": 313,
}
POINT_SOURCES: dict[str, str] = {"L": "Lab", "R": "Totalizer"}
_SOURCE_BY_PREFIX: dict[str, str] = {"AI": "L", "CNT": "R", "BATCH": "R", "MSG": "R"}
SECURITY = "piadmins: A(r,w) | PIWorld: A(r)"


def iso(seconds: float) -> str:
    """PI's date form: whole seconds, with a fraction only when there is one."""
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if moment.microsecond else "%Y-%m-%dT%H:%M:%SZ")


def span_of(kind: cat.PointKind) -> float:
    """A digital point's span is its number of states; others their kind's span."""
    if kind.digital_set is not None:
        return float(len(cat.DIGITAL_SETS[kind.digital_set]))
    return kind.span


def attributes(version: Version) -> dict[str, Any]:
    """Every attribute of a point (which must exist), by lower-case name, in PI's order."""
    point = version.point
    assert point is not None
    kind = point.kind
    numeric = kind.point_type in ("Float32", "Float64", "Int32")
    span = span_of(kind)
    source = _SOURCE_BY_PREFIX.get(kind.prefix, "OPC")
    interface = point.index % 4 + 1
    compdev = round(span * 0.005, 6) if numeric else 0.0
    return {
        "tag": point.name,
        "descriptor": point.descriptor,
        "exdesc": "" if source == "OPC" else f"source={POINT_SOURCES[source]}",
        "engunits": kind.units,
        "typicalvalue": kind.zero + span / 2,
        "zero": kind.zero,
        "span": span,
        "step": int(kind.point_type in ("Digital", "String")),
        "future": False,
        "pointtype": kind.point_type,
        "ptclassname": "classic",
        "digitalset": kind.digital_set or "",
        "pointsource": source,
        "instrumenttag": (
            f"Plant.Area{point.index % 12 + 1:02d}.{kind.prefix}{point.index:07d}.PV"
            if source == "OPC"
            else ""
        ),
        "location1": interface,
        "location2": 0,
        "location3": 0,
        "location4": int(point.scan_seconds) if source == "OPC" else 0,
        "location5": 0,
        "userint1": 0,
        "userint2": 0,
        "userreal1": 0.0,
        "userreal2": 0.0,
        "compressing": int(kind.prefix != "MSG"),
        "compdev": compdev,
        "compdevpercent": 0.5 if numeric else 0.0,
        "compmin": 0,
        "compmax": 28_800,
        "excdev": compdev / 2,
        "excdevpercent": 0.25 if numeric else 0.0,
        "excmin": 0,
        "excmax": 600,
        "archiving": 1,
        "scan": 1,
        "shutdown": 1,
        "displaydigits": -5,
        "sourcetag": "",
        "convers": 1.0,
        "filtercode": 0,
        "squareroot": 0,
        "totalcode": 0,
        "srcptid": 0,
        "creator": "piadmin",
        "creationdate": iso(version.created_at),
        "changer": "piadmin",
        "changedate": iso(version.changed_at),
        "pointid": point.point_id,
        "recno": point.point_id + 1,
        "ptsecurity": SECURITY,
        "datasecurity": SECURITY,
    }


# ----- enumeration sets -------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class EnumerationSet:
    name: str
    id: uuid.UUID
    webid: str
    states: tuple[tuple[str, int], ...]  # (name, code) in code order
    description: str


def enumeration_sets(catalog: cat.Catalog) -> list[EnumerationSet]:
    """The data server's state sets, the SYSTEM set last, as PI lists them."""
    found = {**cat.DIGITAL_SETS, **EXTRA_SETS}
    out = []
    for name, states in found.items():
        out.append(_set(catalog, name, tuple((s, i) for i, s in enumerate(states)), ""))
    system = tuple(sorted(SYSTEM_STATES.items(), key=lambda item: item[1]))
    out.append(_set(catalog, SYSTEM_SET, system, "PI System digital states"))
    return out


def _set(
    catalog: cat.Catalog, name: str, states: tuple[tuple[str, int], ...], description: str
) -> EnumerationSet:
    set_id = webid.stable_guid(catalog.seed, "enumerationset", name)
    return EnumerationSet(
        name=name,
        id=set_id,
        webid=webid.enumeration_set(catalog.server_id, set_id, f"{cat.SERVER_NAME}\\{name}"),
        states=states,
        description=description or f"{name} states",
    )


def value_id(catalog: cat.Catalog, es: EnumerationSet, state: str) -> uuid.UUID:
    return webid.stable_guid(catalog.seed, "enumerationvalue", es.name, state)


def value_webid(catalog: cat.Catalog, es: EnumerationSet, state: str) -> str:
    path = f"{cat.SERVER_NAME}\\{es.name}\\{state}"
    return webid.enumeration_value(catalog.server_id, es.id, value_id(catalog, es, state), path)
