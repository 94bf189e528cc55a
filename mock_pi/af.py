"""The simulated Asset Framework database: a plant hierarchy derived from the tag catalog.

Enterprise → sites → areas → units → equipment, sized from TAG_COUNT: every tag of the
catalog is the PI point data reference of exactly one equipment attribute (its "attribute
home"). Elements are computed arithmetically from their (level, index) key and cached when
asked for, so a million tags cost nothing at start-up.

GUIDs are `webid.stable_guid(seed, "af", level)` with the last eight bytes replaced by the
element index, so a WebID's GUID decodes straight back to its element.

Hierarchy versions (`AfModel(seed, tag_count, version)`): each step k = 1..version adds one
equipment element (static attributes only), renames one equipment and one unit (name +
`-v{k}`), moves one equipment to another unit and deletes one equipment, each picked
deterministically from elements no earlier step touched. A deleted element's tags find
their new home on the next surviving original equipment (by index, wrapping), appended after
its own attributes. A renamed or moved element keeps its GUID (`Id`); its path, and so its
Full WebID (which embeds the upper-cased path), changes, as in a real AF server with Full
WebIDs. Lookups by WebID go by GUID, so a WebID issued before a move or rename still resolves
(to the element with its new WebID), while a deleted element's WebID answers 404.

Attributes live in `mock_pi.af_attributes` (`AfAttributes(model)`); this module answers
which tags an element is the attribute home of.
"""

from __future__ import annotations

import fnmatch
import math
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache

from mock_pi import webid
from mock_pi.catalog import Catalog, mix

AF_SERVER = "MOCKAF01"
DATABASE = "PlantDB"
SERVER_PATH = f"\\\\{AF_SERVER}"
DATABASE_PATH = f"{SERVER_PATH}\\{DATABASE}"

TAGS_PER_EQUIPMENT = 10
EQUIPMENT_PER_UNIT = 5
UNITS_PER_AREA = 4
AREAS_PER_SITE = 3

LEVELS = ("enterprise", "site", "area", "unit", "equipment")

Key = tuple[str, int]


@dataclass(frozen=True, slots=True)
class EquipmentKind:
    template: str
    prefix: str
    categories: tuple[str, ...]
    manufacturers: tuple[str, ...]


EQUIPMENT_KINDS: tuple[EquipmentKind, ...] = (
    EquipmentKind(
        "Pump", "P", ("Equipment", "Rotating Equipment"), ("Flowserve", "Sulzer", "KSB", "Grundfos")
    ),
    EquipmentKind(
        "Compressor",
        "K",
        ("Equipment", "Rotating Equipment"),
        ("Atlas Copco", "Ingersoll Rand", "Siemens"),
    ),
    EquipmentKind(
        "Heat Exchanger",
        "E",
        ("Equipment", "Static Equipment"),
        ("Alfa Laval", "Kelvion", "SPX Flow"),
    ),
    EquipmentKind(
        "Tank", "T", ("Equipment", "Static Equipment"), ("CST Industries", "Containment Solutions")
    ),
)
LEVEL_TEMPLATES = {
    "enterprise": ("Enterprise", ("Enterprise",)),
    "site": ("Site", ("Site",)),
    "area": ("Process Area", ("Area",)),
    "unit": ("Process Unit", ("Unit",)),
}


@dataclass(frozen=True, slots=True)
class Element:
    key: Key
    id: uuid.UUID
    webid: str
    name: str
    path: str
    parent_key: Key | None
    parent_webid: str | None  # None for a root element (child of the database)
    template_name: str
    description: str
    category_names: tuple[str, ...]
    depth: int  # 0 for the enterprise root, 4 for equipment
    has_children: bool


@dataclass(frozen=True, slots=True)
class Change:
    version: int
    kind: str  # added, renamed, moved, deleted
    element_id: uuid.UUID
    detail: str = ""  # renamed: the new name; moved: the new parent unit's index


@dataclass
class _Plan:
    """What versions 1..v did to the version-0 tree."""

    renamed: dict[Key, str] = field(default_factory=dict)
    moved: dict[int, int] = field(default_factory=dict)  # equipment -> new unit
    deleted: set[int] = field(default_factory=set)
    added: dict[int, int] = field(default_factory=dict)  # new equipment -> unit
    changes: list[Change] = field(default_factory=list)
    adopted: dict[int, list[int]] = field(default_factory=dict)  # home -> tag indices
    receiver: dict[int, int] = field(default_factory=dict)  # deleted -> home of its tags

    @staticmethod
    def _pick(
        seed: int, count: int, step: int, op: str, touched: set[Key], level: str
    ) -> int | None:
        """An element of `level` for step `step`'s operation `op` that no step touched yet."""
        for attempt in range(64):
            i = mix(seed, "af-version", step, op, attempt) % count
            if (level, i) not in touched:
                return i
        return None

    @classmethod
    def build(cls, model: AfModel) -> _Plan:
        """The plan of `model.version` steps over the model's version-0 tree."""
        plan = cls()
        touched: set[Key] = set()
        for k in range(1, model.version + 1):
            new = model.n_equipment + k - 1
            unit = mix(model.seed, "af-version", k, "add-unit") % model.n_units
            plan.added[new] = unit
            touched.add(("equipment", new))
            plan.changes.append(Change(k, "added", model.guid(("equipment", new))))
            e = cls._pick(
                model.seed, model.n_equipment, k, "rename-equipment", touched, "equipment"
            )
            if e is not None:
                touched.add(("equipment", e))
                plan.renamed[("equipment", e)] = f"{model.base_name(('equipment', e))}-v{k}"
                plan.changes.append(
                    Change(
                        k, "renamed", model.guid(("equipment", e)), plan.renamed[("equipment", e)]
                    )
                )
            u = cls._pick(model.seed, model.n_units, k, "rename-unit", touched, "unit")
            if u is not None:
                touched.add(("unit", u))
                plan.renamed[("unit", u)] = f"{model.base_name(('unit', u))}-v{k}"
                plan.changes.append(
                    Change(k, "renamed", model.guid(("unit", u)), plan.renamed[("unit", u)])
                )
            e = cls._pick(model.seed, model.n_equipment, k, "move", touched, "equipment")
            if e is not None and model.n_units > 1:
                touched.add(("equipment", e))
                home = e // EQUIPMENT_PER_UNIT
                shift = 1 + mix(model.seed, "af-version", k, "move-to") % (model.n_units - 1)
                plan.moved[e] = (home + shift) % model.n_units
                plan.changes.append(
                    Change(k, "moved", model.guid(("equipment", e)), str(plan.moved[e]))
                )
            e = cls._pick(model.seed, model.n_equipment, k, "delete", touched, "equipment")
            if e is not None and model.n_equipment - len(plan.deleted) > 1:
                touched.add(("equipment", e))
                plan.deleted.add(e)
                plan.changes.append(Change(k, "deleted", model.guid(("equipment", e))))
        for d in sorted(plan.deleted):
            r = (d + 1) % model.n_equipment
            while r in plan.deleted:
                r = (r + 1) % model.n_equipment
            plan.receiver[d] = r
            plan.adopted.setdefault(r, []).extend(model.own_tags(d))
        return plan


def name_pattern(pattern: str | None) -> re.Pattern[str] | None:
    """A PI name filter (`*`, `?`, case-insensitive) as a regex; None matches everything."""
    if pattern is None or pattern in ("", "*"):
        return None
    return re.compile(fnmatch.translate(pattern), re.IGNORECASE)


def _count(n: int, per: int) -> int:
    return max(1, math.ceil(n / per))


class AfModel:
    """One version of the AF database: the ground truth of every AF endpoint."""

    def __init__(
        self, seed: int, tag_count: int, version: int = 0, catalog: Catalog | None = None
    ) -> None:
        self.seed = seed
        self.tag_count = tag_count
        self.version = version
        self.catalog = catalog if catalog is not None else Catalog(seed, tag_count)
        self.n_equipment = _count(tag_count, TAGS_PER_EQUIPMENT)
        self.n_units = _count(self.n_equipment, EQUIPMENT_PER_UNIT)
        self.n_areas = _count(self.n_units, UNITS_PER_AREA)
        self.n_sites = _count(self.n_areas, AREAS_PER_SITE)
        self.server_id = webid.stable_guid(seed, "assetserver", AF_SERVER)
        self.database_id = webid.stable_guid(seed, "assetdatabase", AF_SERVER, DATABASE)
        self.server_webid = webid.asset_server(self.server_id, AF_SERVER)
        self.database_webid = webid.asset_database(
            self.server_id, self.database_id, f"{AF_SERVER}\\{DATABASE}"
        )
        self._prefixes = {level: webid.stable_guid(seed, "af", level).bytes[:8] for level in LEVELS}
        self._levels = {prefix: level for level, prefix in self._prefixes.items()}
        self.equipment_kind = lru_cache(maxsize=600_000)(self._equipment_kind)
        self._plan = _Plan.build(self)
        self._moved_in: dict[int, list[int]] = {}
        for e, u in sorted(self._plan.moved.items()):
            self._moved_in.setdefault(u, []).append(e)
        for e, u in sorted(self._plan.added.items()):
            self._moved_in.setdefault(u, []).append(e)
        self.element = lru_cache(maxsize=300_000)(self._make_element)
        self._all: tuple[Element, ...] | None = None

    # ----- identity -------------------------------------------------------------------
    def guid(self, key: Key) -> uuid.UUID:
        level, index = key
        return uuid.UUID(bytes=self._prefixes[level] + index.to_bytes(8, "big"))

    def key_of_guid(self, guid: uuid.UUID) -> Key | None:
        level = self._levels.get(guid.bytes[:8])
        return None if level is None else (level, int.from_bytes(guid.bytes[8:], "big"))

    def exists(self, key: Key) -> bool:
        level, i = key
        if level == "enterprise":
            return i == 0
        if level == "site":
            return 0 <= i < self.n_sites
        if level == "area":
            return 0 <= i < self.n_areas
        if level == "unit":
            return 0 <= i < self.n_units
        if level == "equipment":
            if 0 <= i < self.n_equipment:
                return i not in self._plan.deleted
            return i in self._plan.added
        return False

    def element_by_guid(self, guid: uuid.UUID) -> Element | None:
        key = self.key_of_guid(guid)
        return self.element(key) if key is not None and self.exists(key) else None

    # ----- versions -------------------------------------------------------------------
    @property
    def changes(self) -> list[Change]:
        """Every change of versions 1..version, in order: the ground truth of a bump."""
        return list(self._plan.changes)

    # ----- tree -----------------------------------------------------------------------
    def _equipment_kind(self, e: int) -> EquipmentKind:
        return EQUIPMENT_KINDS[mix(self.seed, "equipment-kind", e) % len(EQUIPMENT_KINDS)]

    def base_name(self, key: Key) -> str:
        level, i = key
        if level == "enterprise":
            return "Enterprise"
        if level == "site":
            return f"Site{i + 1:0{max(2, len(str(self.n_sites)))}d}"
        if level == "area":
            return f"Area{i % AREAS_PER_SITE + 1:02d}"
        if level == "unit":
            return f"Unit{i % UNITS_PER_AREA + 1:02d}"
        return f"{self.equipment_kind(i).prefix}-{i:06d}"

    def name(self, key: Key) -> str:
        return self._plan.renamed.get(key) or self.base_name(key)

    def parent(self, key: Key) -> Key | None:
        level, i = key
        if level == "enterprise":
            return None
        if level == "site":
            return ("enterprise", 0)
        if level == "area":
            return ("site", i // AREAS_PER_SITE)
        if level == "unit":
            return ("area", i // UNITS_PER_AREA)
        unit = self._plan.moved.get(i, self._plan.added.get(i, i // EQUIPMENT_PER_UNIT))
        return ("unit", unit)

    def children(self, key: Key | None) -> list[Key]:
        """Direct children of an element, or the root elements for `None` (the database)."""
        if key is None:
            return [("enterprise", 0)]
        level, i = key
        if level == "enterprise":
            return [("site", s) for s in range(self.n_sites)]
        if level == "site":
            return [("area", a) for a in self._span(i, AREAS_PER_SITE, self.n_areas)]
        if level == "area":
            return [("unit", u) for u in self._span(i, UNITS_PER_AREA, self.n_units)]
        if level == "unit":
            own = [
                e
                for e in self._span(i, EQUIPMENT_PER_UNIT, self.n_equipment)
                if e not in self._plan.deleted and e not in self._plan.moved
            ]
            return [("equipment", e) for e in own + self._moved_in.get(i, [])]
        return []

    @staticmethod
    def _span(i: int, per: int, limit: int) -> range:
        return range(i * per, min((i + 1) * per, limit))

    def _make_element(self, key: Key) -> Element:
        if not self.exists(key):
            raise KeyError(key)
        level, i = key
        parent_key = self.parent(key)
        parent = self.element(parent_key) if parent_key is not None else None
        name = self.name(key)
        path = f"{parent.path if parent else DATABASE_PATH}\\{name}"
        guid = self.guid(key)
        if level == "equipment":
            kind = self.equipment_kind(i)
            template, categories = kind.template, kind.categories
            description = f"{kind.template} {name}"
        else:
            template, categories = LEVEL_TEMPLATES[level]
            description = f"{template} {name}"
        return Element(
            key=key,
            id=guid,
            webid=webid.element(guid, path.lstrip("\\")),
            name=name,
            path=path,
            parent_key=parent_key,
            parent_webid=parent.webid if parent else None,
            template_name=template,
            description=description,
            category_names=categories,
            depth=LEVELS.index(level),
            has_children=bool(self.children(key)),
        )

    def walk(self, root: Key | None = None) -> Iterator[Element]:
        """Every element below `root` (the database when None), depth first."""
        stack = list(reversed(self.children(root)))
        while stack:
            key = stack.pop()
            yield self.element(key)
            stack.extend(reversed(self.children(key)))

    def elements(self) -> tuple[Element, ...]:
        """The whole tree, depth first, computed once per model."""
        if self._all is None:
            self._all = tuple(self.walk())
        return self._all

    # ----- tag homes ------------------------------------------------------------------
    def own_tags(self, e: int) -> range:
        """The tags equipment `e` was created with (none for an added one)."""
        if e >= self.n_equipment:
            return range(0)
        return range(e * TAGS_PER_EQUIPMENT, min((e + 1) * TAGS_PER_EQUIPMENT, self.tag_count))

    def tags_of(self, key: Key) -> list[int]:
        """Tag indices whose attribute home is this element, in attribute order."""
        level, e = key
        if level != "equipment" or not self.exists(key):
            return []
        return [*self.own_tags(e), *self._plan.adopted.get(e, [])]

    def home_of_tag(self, index: int) -> Key:
        """The equipment element holding the attribute that references tag `index`."""
        if not 0 <= index < self.tag_count:
            raise IndexError(index)
        return self.surviving(index // TAGS_PER_EQUIPMENT)

    def surviving(self, e: int) -> Key:
        """Equipment `e`, or where its tags went if a version deleted it."""
        return ("equipment", self._plan.receiver.get(e, e))

    # ----- templates ------------------------------------------------------------------
    def element_templates(self) -> list[tuple[str, str, tuple[str, ...]]]:
        """(name, "Element", categories) of every element template; `eventframes.templates`
        adds the event frame ones."""
        out = [(name, "Element", cats) for name, cats in LEVEL_TEMPLATES.values()]
        out += [(k.template, "Element", k.categories) for k in EQUIPMENT_KINDS]
        return out

    def template_webid(self, name: str) -> tuple[uuid.UUID, str]:
        guid = webid.stable_guid(self.seed, "elementtemplate", name)
        path = f"{AF_SERVER}\\{DATABASE}\\ElementTemplates[{name}]"
        return guid, webid.element_template(guid, path)
