"""The attributes of the simulated AF database's equipment elements.

Every tag of the catalog is the PI point data reference of one attribute of its attribute
home (`AfModel.home_of_tag`), named after its measurement; each equipment also carries three
static nameplate attributes. Attributes are computed from the model when asked for and cached,
so they cost nothing at start-up.

Attribute config strings come in three shapes, as AF stores them: `\\\\MOCKPI01\\TAG`,
`\\\\MOCKPI01\\TAG;ptclassname=classic;pointtype=Float32;ReadOnly=False` and the resolved
`\\\\MOCKPI01?{server guid}\\TAG?{point id}`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from mock_pi import webid
from mock_pi.af import AfModel, Element, Key
from mock_pi.catalog import SERVER_NAME, Point, mix

STATIC_TIMESTAMP = "1970-01-01T00:00:00Z"  # what PI Web API shows for a value without time

# Attribute name, AF units name and abbreviation per instrument kind (catalog prefix).
MEASUREMENTS: dict[str, tuple[str, str]] = {
    "TI": ("Temperature", "degree Celsius"),
    "PI": ("Pressure", "bar"),
    "LI": ("Level", "percent"),
    "FI": ("Flow", "cubic meter per hour"),
    "AI": ("Concentration", "parts per million"),
    "JI": ("Power", "kilowatt"),
    "SI": ("Speed", "revolution per minute"),
    "CNT": ("Counter", "count"),
    "XV": ("Valve State", ""),
    "MTR": ("Motor State", ""),
    "BATCH": ("Batch ID", ""),
    "MSG": ("Message", ""),
}
ATTRIBUTE_TYPES = {
    "Float32": "Single",
    "Float64": "Double",
    "Int32": "Int32",
    "Digital": "EnumerationValue",
    "String": "String",
}


@dataclass(frozen=True, slots=True)
class Attribute:
    id: uuid.UUID
    webid: str
    name: str
    path: str
    owner_webid: str
    description: str
    type: str
    type_qualifier: str
    units_name: str
    units_abbreviation: str
    data_reference: str  # "PI Point" or "" for a static value
    config_string: str
    point: Point | None
    category_names: tuple[str, ...]
    is_configuration_item: bool
    step: bool
    value: Any = None  # the static value (attributes without a data reference)
    zero: float | None = None
    span: float | None = None


class AfAttributes:
    """The attributes of one AF model version: the ground truth of the attribute endpoints."""

    def __init__(self, model: AfModel) -> None:
        self.model = model
        self.of = lru_cache(maxsize=100_000)(self._make)

    def of_tag(self, index: int) -> Attribute:
        """The attribute whose PI point data reference is tag `index`."""
        home = self.model.home_of_tag(index)
        return next(a for a in self.of(home) if a.point and a.point.index == index)

    def by_guid(self, owner: uuid.UUID, attribute: uuid.UUID) -> Attribute | None:
        """An attribute by its owner's and its own GUID; None once the owner is gone."""
        element = self.model.element_by_guid(owner)
        if element is None:
            return None
        return next((a for a in self.of(element.key) if a.id == attribute), None)

    def every(self) -> Iterator[Attribute]:
        """Every attribute of the tree, elements depth first."""
        for element in self.model.elements():
            yield from self.of(element.key)

    def _make(self, key: Key) -> tuple[Attribute, ...]:
        """An element's attributes sorted by name (the PI default order)."""
        element = self.model.element(key)
        if key[0] != "equipment":
            return ()
        out: list[Attribute] = []
        used: dict[str, int] = {}
        for index in self.model.tags_of(key):
            point = self.model.catalog.point(index)
            base, units_name = MEASUREMENTS[point.kind.prefix]
            used[base] = used.get(base, 0) + 1
            name = base if used[base] == 1 else f"{base} {used[base]}"
            out.append(self._point_attribute(element, point, name, units_name))
        out.extend(self._static_attributes(element))
        return tuple(sorted(out, key=lambda a: a.name.lower()))

    def _guid(self, element: Element, part: object) -> uuid.UUID:
        return webid.stable_guid(self.model.seed, "attribute", element.id, part)

    def _point_attribute(
        self, element: Element, point: Point, name: str, units_name: str
    ) -> Attribute:
        guid = self._guid(element, ("tag", point.index))
        path = f"{element.path}|{name}"
        style = mix(self.model.seed, "config-string", point.index) % 3
        if style == 0:
            config = f"\\\\{SERVER_NAME}\\{point.name}"
        elif style == 1:
            config = (
                f"\\\\{SERVER_NAME}\\{point.name};ptclassname=classic;"
                f"pointtype={point.point_type};ReadOnly=False"
            )
        else:
            server_id = self.model.catalog.server_id
            config = f"\\\\{SERVER_NAME}?{server_id}\\{point.name}?{point.point_id}"
        numeric = point.point_type in ("Float32", "Float64", "Int32")
        return Attribute(
            id=guid,
            webid=webid.attribute("E", element.id, guid, path.lstrip("\\")),
            name=name,
            path=path,
            owner_webid=element.webid,
            description=point.descriptor,
            type=ATTRIBUTE_TYPES[point.point_type],
            type_qualifier=point.digital_set or "",
            units_name=units_name,
            units_abbreviation=point.units,
            data_reference="PI Point",
            config_string=config,
            point=point,
            category_names=("Process Data",),
            is_configuration_item=False,
            step=not numeric or point.point_type == "Int32",
            zero=point.kind.zero if numeric else None,
            span=point.kind.span if numeric else None,
        )

    def _static_attributes(self, element: Element) -> list[Attribute]:
        e = element.key[1]
        kind = self.model.equipment_kind(e)
        h = mix(self.model.seed, "nameplate", e)
        installed = datetime(2005, 1, 1, tzinfo=UTC).timestamp() + (h % 7000) * 86_400
        values: list[tuple[str, str, Any]] = [
            ("Manufacturer", "String", kind.manufacturers[h % len(kind.manufacturers)]),
            ("Model", "String", f"{kind.prefix}{100 + (h >> 8) % 900}"),
            (
                "Install Date",
                "DateTime",
                datetime.fromtimestamp(installed, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            ),
        ]
        out = []
        for name, type_, value in values:
            guid = self._guid(element, ("static", name))
            path = f"{element.path}|{name}"
            out.append(
                Attribute(
                    id=guid,
                    webid=webid.attribute("E", element.id, guid, path.lstrip("\\")),
                    name=name,
                    path=path,
                    owner_webid=element.webid,
                    description=f"{name} of {element.name}",
                    type=type_,
                    type_qualifier="",
                    units_name="",
                    units_abbreviation="",
                    data_reference="",
                    config_string="",
                    point=None,
                    category_names=("Nameplate",),
                    is_configuration_item=True,
                    step=True,
                    value=value,
                )
            )
        return out
