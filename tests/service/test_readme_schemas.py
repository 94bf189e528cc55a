"""The README's table schemas are exactly the code's, and exactly what lands in Delta."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from tests.conftest import ROOT
from workers.af.tables import AF_TABLES
from workers.lake.tables import POINT_TABLES, TABLES, TableSpec, TableStore

SPECS = [*TABLES.values(), *AF_TABLES.values(), *POINT_TABLES.values()]
_SECTION = re.compile(r"^### `(?P<name>[\w]+)`(?: \(partitioned by `(?P<parts>[^`]+)`\))?$")
_ROW = re.compile(r"^\| `(?P<col>\w+)` \| `(?P<type>[^`]+)` \| (?P<null>yes|no) \|$")


def readme_schemas() -> dict[str, tuple[tuple[str, ...], list[tuple[str, str, bool]]]]:
    found: dict[str, tuple[tuple[str, ...], list[tuple[str, str, bool]]]] = {}
    current: str | None = None
    for line in (ROOT / "README.md").read_text().splitlines():
        if m := _SECTION.match(line):
            current = m["name"]
            parts = tuple(p.strip() for p in m["parts"].split(",")) if m["parts"] else ()
            found[current] = (parts, [])
        elif current and (m := _ROW.match(line)):
            found[current][1].append((m["col"], m["type"], m["null"] == "yes"))
    return found


def described(schema: pa.Schema) -> list[tuple[str, str, bool]]:
    return [(f.name, str(f.type), f.nullable) for f in schema]


def test_readme_lists_every_table_exactly() -> None:
    documented = readme_schemas()
    assert sorted(documented) == sorted(s.name for s in SPECS)
    for spec in SPECS:
        assert documented[spec.name] == (tuple(spec.partition_by), described(spec.schema))


@pytest.mark.parametrize("spec", list(TABLES.values()), ids=lambda s: s.name)
def test_created_tables_have_the_documented_schema(spec: TableSpec, tmp_path: Path) -> None:
    TableStore(str(tmp_path)).create_all()
    table = DeltaTable(str(tmp_path / spec.name))
    arrow = pa.schema(table.schema().to_arrow())
    parts, columns = readme_schemas()[spec.name]
    assert described(arrow) == columns
    assert tuple(table.metadata().partition_columns) == parts
