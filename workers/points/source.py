"""Reading what PI says a point is: its attributes, and the data servers' state sets.

A point's attributes come from `points/{webId}/attributes`, one request per point, so they
travel in `/batch` requests of `points_batch_size` points (`pi_max_concurrency` batches in
flight, as the client allows): 100,000 points are 200 requests. Only the attributes that
`pi_points` keeps are asked for, by name.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from workers.af.common import resource
from workers.errors import PIWebAPIError
from workers.lake.schemas import UTC_US
from workers.pi.client import PIClient
from workers.pi.replies import batch_content
from workers.pi.times import parse_iso_us
from workers.settings import Settings
from workers.timeseries.discovery import TagInfo, data_servers

log = logging.getLogger(__name__)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _number(value: Any) -> float | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    return float(value) if ok else None


def _integer(value: Any) -> int | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value == int(value)
    return int(value) if ok and -(2**31) <= value < 2**31 else None


def _flag(value: Any) -> bool | None:
    """PI flags are Int16 0/1 (`step`, `compressing`), or Booleans (`future`)."""
    if isinstance(value, bool):
        return value
    number = _integer(value)
    return None if number is None else number != 0


def _time(value: Any) -> int | None:
    """An attribute date (`creationdate`) in epoch µs, None when absent or unreadable."""
    if not isinstance(value, str):
        return None
    try:
        return parse_iso_us(value)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Column:
    attribute: str  # PI point attribute name
    name: str  # pi_points column
    read: Callable[[Any], Any]
    type: pa.DataType


COLUMNS: tuple[Column, ...] = (
    Column("tag", "tag_name", _text, pa.string()),
    Column("descriptor", "descriptor", _text, pa.string()),
    Column("exdesc", "extended_descriptor", _text, pa.string()),
    Column("engunits", "engineering_units", _text, pa.string()),
    Column("pointtype", "point_type", _text, pa.string()),
    Column("ptclassname", "point_class", _text, pa.string()),
    Column("digitalset", "digital_set_name", _text, pa.string()),
    Column("zero", "zero", _number, pa.float64()),
    Column("span", "span", _number, pa.float64()),
    Column("typicalvalue", "typical_value", _number, pa.float64()),
    Column("step", "step", _flag, pa.bool_()),
    Column("future", "future", _flag, pa.bool_()),
    Column("pointsource", "point_source", _text, pa.string()),
    Column("instrumenttag", "instrument_tag", _text, pa.string()),
    Column("sourcetag", "source_tag", _text, pa.string()),
    *(Column(f"location{i}", f"location{i}", _integer, pa.int32()) for i in range(1, 6)),
    Column("compressing", "compressing", _flag, pa.bool_()),
    Column("compdev", "comp_dev", _number, pa.float64()),
    Column("compdevpercent", "comp_dev_percent", _number, pa.float64()),
    Column("compmin", "comp_min", _integer, pa.int32()),
    Column("compmax", "comp_max", _integer, pa.int32()),
    Column("excdev", "exc_dev", _number, pa.float64()),
    Column("excdevpercent", "exc_dev_percent", _number, pa.float64()),
    Column("excmin", "exc_min", _integer, pa.int32()),
    Column("excmax", "exc_max", _integer, pa.int32()),
    Column("archiving", "archiving", _flag, pa.bool_()),
    Column("scan", "scan", _flag, pa.bool_()),
    Column("shutdown", "shutdown", _flag, pa.bool_()),
    Column("displaydigits", "display_digits", _integer, pa.int32()),
    Column("creator", "creator", _text, pa.string()),
    Column("creationdate", "creation_date", _time, UTC_US),
    Column("changer", "changer", _text, pa.string()),
    Column("changedate", "change_date", _time, UTC_US),
    Column("pointid", "point_id", _integer, pa.int32()),
)
ATTRIBUTE_NAMES = tuple(c.attribute for c in COLUMNS)


async def read_points(
    client: PIClient, settings: Settings, tags: Sequence[TagInfo]
) -> tuple[pa.Table, int]:
    """The attributes of `tags`, one row per point PI still knows (columns of `COLUMNS`
    plus `data_server` and `tag_webid`); and the number of `/batch` requests."""
    size = settings.points_batch_size
    chunks = [tags[i : i + size] for i in range(0, len(tags), size)]
    answers = await asyncio.gather(*(_read_chunk(client, settings, c) for c in chunks))
    rows = [row for answer in answers for row in answer]
    columns: dict[str, pa.Array] = {
        "data_server": pa.array([r[0] for r in rows], pa.string()),
        "tag_webid": pa.array([r[1] for r in rows], pa.string()),
    }
    for i, col in enumerate(COLUMNS):
        values = [r[2][i] for r in rows]
        columns[col.name] = pa.array(values, pa.int64() if col.type == UTC_US else col.type)
        if col.type == UTC_US:
            columns[col.name] = columns[col.name].cast(UTC_US)
    return pa.table(columns), len(chunks)


async def _read_chunk(
    client: PIClient, settings: Settings, tags: Sequence[TagInfo]
) -> list[tuple[str, str, list[Any]]]:
    params = [("name", n) for n in ATTRIBUTE_NAMES] + [("selectedFields", "Items.Name;Items.Value")]
    requests = {
        str(i): {"Method": "GET", "Resource": resource(settings, f"points/{t.webid}/attributes",
                                                       params)}
        for i, t in enumerate(tags)
    }  # fmt: skip
    answers = await client.batch(requests)
    out = []
    for i, tag in enumerate(tags):
        try:
            content = batch_content(answers, str(i))
        except PIWebAPIError as exc:
            if exc.status == 404:  # deleted since it was listed: gone from PI
                continue
            raise
        found = _attributes(content)
        values = [col.read(found.get(col.attribute)) for col in COLUMNS]
        if values[-1] is None:
            values[-1] = tag.point_id
        if values[-1] is None:
            log.warning("point %s skipped: PI gives it no point ID", tag.webid)
            continue
        out.append((tag.data_server, tag.webid, values))
    return out


def _attributes(content: Any) -> dict[str, Any]:
    items = content.get("Items") if isinstance(content, Mapping) else None
    return {
        str(item.get("Name", "")).lower(): item.get("Value")
        for item in items or ()
        if isinstance(item, Mapping)
    }


# ----- digital state sets -----------------------------------------------------------------
SYSTEM_SET = "SYSTEM"


async def read_state_sets(client: PIClient, settings: Settings) -> pa.Table:
    """Every state of every enumeration set of the data servers in scope (one row each)."""
    server_name, set_name, set_webid, code, state = [], [], [], [], []
    for server_webid, name in await data_servers(client, settings):
        doc = await client.get_json(
            f"dataservers/{server_webid}/enumerationsets",
            [("selectedFields", "Items.WebId;Items.Name")],
            endpoint="enumerationsets",
        )
        sets = [
            (str(s["WebId"]), str(s["Name"]))
            for s in (doc.get("Items") or [] if isinstance(doc, Mapping) else [])
            if isinstance(s, Mapping) and s.get("WebId") and s.get("Name")
        ]
        params = [("selectedFields", "Items.Name;Items.Value")]
        requests = {
            str(i): {"Method": "GET", "Resource": resource(
                settings, f"enumerationsets/{w}/enumerationvalues", params)}
            for i, (w, _) in enumerate(sets)
        }  # fmt: skip
        answers = await client.batch(requests) if requests else {}
        for i, (w, s_name) in enumerate(sets):
            for item in _items(batch_content(answers, str(i))):
                value = _integer(item.get("Value"))
                if value is None or not isinstance(item.get("Name"), str):
                    log.warning("state set %s: state skipped, malformed: %r", s_name, item)
                    continue
                server_name.append(name)
                set_name.append(s_name)
                set_webid.append(w)
                code.append(value)
                state.append(item["Name"])
    return pa.table(
        {
            "data_server": pa.array(server_name, pa.string()),
            "set_name": pa.array(set_name, pa.string()),
            "code": pa.array(code, pa.int32()),
            "state_name": pa.array(state, pa.string()),
            "is_system_set": pa.array([s.upper() == SYSTEM_SET for s in set_name], pa.bool_()),
            "set_webid": pa.array(set_webid, pa.string()),
        }
    )


def _items(content: Any) -> list[Mapping[str, Any]]:
    items = content.get("Items") if isinstance(content, Mapping) else None
    return [i for i in items or () if isinstance(i, Mapping)]
