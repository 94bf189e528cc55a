"""Event frames: a pure function of (seed, time slot), closing on a wall-clock schedule.

Time is cut into slots of `slot_seconds` (absolute, counted from the epoch); slot n holds
`per_slot` frames, frame j starting inside the j-th stratum of the slot, so two frames of a
slot never share a start time. A frame exists once its start is at or after the history
start and not after now. Its planned end is start + a template-dependent number of slots; a
frame whose planned end is after now is open (EndTime `9999-12-31T23:59:59Z`), and is served
closed, same WebID, once the clock passes its end. Alarm frames may be acknowledged later
in the same way. GUIDs carry (slot, j) in their last eight bytes, so a WebID decodes to its
frame without any index.

Frames reference an equipment element of the AF model (a deleted element's references go to
the home of its tags); Batch Run frames also reference the equipment's unit.
"""

from __future__ import annotations

import math
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property, lru_cache
from typing import Any

from mock_pi import pitime, webid
from mock_pi.af import DATABASE_PATH, AfModel, Element, name_pattern
from mock_pi.catalog import mix

OPEN_END = "9999-12-31T23:59:59Z"  # how PI Web API shows the end of an in-progress frame
NEVER = "1970-01-01T00:00:00Z"  # AcknowledgedDate of a frame nobody acknowledged
SEVERITIES = ("None", "Information", "Warning", "Minor", "Major", "Critical")
INF = math.inf
_MASK = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class Template:
    name: str
    categories: tuple[str, ...]
    weight: int
    min_slots: float  # duration range, in slots
    max_slots: float


TEMPLATES: tuple[Template, ...] = (
    Template("Alarm", ("Alarm",), 5, 0.05, 3.0),
    Template("Batch Run", ("Production",), 3, 6.0, 36.0),
    Template("Downtime", ("Downtime",), 2, 0.5, 12.0),
)
_TEMPLATE_TABLE = tuple(t for t in TEMPLATES for _ in range(t.weight))
MAX_SLOTS = max(t.max_slots for t in TEMPLATES)
_ALARM_SEVERITIES = ("Information", "Warning", "Warning", "Minor", "Minor", "Major", "Critical")
_PRODUCTS = ("Polymer A", "Polymer B", "Solvent S1", "Resin X", "Additive 7")
_REASONS = ("Planned Maintenance", "Mechanical Failure", "No Feed", "Power Loss", "Changeover")

# Search modes as PI Web API names them (AFSearchMode and AFEventFrameSearchMode).
RANGE_MODES = ("None", "Overlapped", "Inclusive", "StartInclusive", "EndInclusive", "InProgress")
DIRECTIONAL_MODES = (
    "BackwardFromStartTime",
    "ForwardFromStartTime",
    "BackwardFromEndTime",
    "ForwardFromEndTime",
    "BackwardInProgress",
    "ForwardInProgress",
)
SEARCH_MODES = RANGE_MODES + DIRECTIONAL_MODES
SORT_FIELDS = ("Name", "StartTime", "EndTime")
SETTLED_SEARCHES = 8  # finished range searches kept for paging


@dataclass(frozen=True, slots=True)
class FrameAttribute:
    id: uuid.UUID
    webid: str
    name: str
    path: str
    type: str
    units_name: str
    units_abbreviation: str
    value: Any


@dataclass(eq=False)
class Frame:
    """One event frame; fields that change with time are methods taking `now_ms`.

    Name, GUID, path and WebID are computed on first use: a search over a month of frames
    only needs times, template and severity, and sorts by `sort_key` (same order as Name).
    """

    slot: int
    j: int
    template: Template
    start_ms: int
    planned_end_ms: int
    equipment: int  # original equipment index it was raised on
    equipment_name: str
    severity: str
    ack_ms: int | None  # when an operator acknowledges it; None: never
    operator: str
    annotated: bool
    guid_prefix: bytes

    @property
    def sort_key(self) -> tuple[str, str, int]:
        """Orders as `name.lower()` does (fixed-width equipment names and timestamps)."""
        return (self.equipment_name.lower(), self.template.name.lower(), self.start_ms)

    @cached_property
    def name(self) -> str:
        stamp = datetime.fromtimestamp(self.start_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
        return f"{self.equipment_name} {self.template.name} {stamp}.{self.start_ms % 1000:03d}"

    @cached_property
    def id(self) -> uuid.UUID:
        return uuid.UUID(
            bytes=self.guid_prefix + self.slot.to_bytes(6, "big") + self.j.to_bytes(2, "big")
        )

    @cached_property
    def path(self) -> str:
        return f"{DATABASE_PATH}\\EventFrames[{self.name}]"

    @cached_property
    def webid(self) -> str:
        return webid.event_frame(self.id, self.path.lstrip("\\"))

    @property
    def template_name(self) -> str:
        return self.template.name

    @property
    def category_names(self) -> tuple[str, ...]:
        return self.template.categories

    @property
    def can_be_acknowledged(self) -> bool:
        return self.template.name == "Alarm"

    @property
    def start_time(self) -> str:
        return _iso(self.start_ms)

    def is_open(self, now_ms: int) -> bool:
        return self.planned_end_ms > now_ms

    def end_ms(self, now_ms: int) -> float:
        """The end in epoch ms, or +inf while in progress (AF's MaxValue)."""
        return INF if self.is_open(now_ms) else self.planned_end_ms

    def end_time(self, now_ms: int) -> str:
        return OPEN_END if self.is_open(now_ms) else _iso(self.planned_end_ms)

    def is_acknowledged(self, now_ms: int) -> bool:
        return self.ack_ms is not None and self.ack_ms <= now_ms

    def acknowledged(self, now_ms: int) -> tuple[str, str]:
        """(AcknowledgedBy, AcknowledgedDate) as served at `now_ms`."""
        if self.ack_ms is not None and self.ack_ms <= now_ms:
            return self.operator, _iso(self.ack_ms)
        return "", NEVER


def _splitmix(x: int) -> int:
    """splitmix64: a fast, well-mixed 64-bit hash of a frame's (seed, slot, index) key."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


@dataclass(frozen=True, slots=True)
class FrameFilter:
    """The non-time criteria of an event frame search (None: no filter)."""

    name_filter: str | None = None
    template_name: str | None = None
    referenced_element_name_filter: str | None = None
    severities: tuple[str, ...] = ()
    category_name: str | None = None
    can_be_acknowledged: bool | None = None
    is_acknowledged: bool | None = None


def _iso(ms: int) -> str:
    return pitime.format_time(ms * 10_000)


def templates(af: AfModel) -> list[tuple[str, str, tuple[str, ...]]]:
    """(name, instance type, categories) of every element and event frame template, by name."""
    out = af.element_templates() + [(t.name, "EventFrame", t.categories) for t in TEMPLATES]
    return sorted(out, key=lambda t: t[0].lower())


class EventFrameModel:
    """The event frames of the one database, given the AF model their references live in."""

    def __init__(
        self,
        af: AfModel,
        history_start: float,
        slot_seconds: float = 600.0,
        per_slot: int = 3,
    ) -> None:
        self.seed = af.seed
        self.af = af
        self.slot_ms = max(1, round(slot_seconds * 1000))
        self.per_slot = per_slot
        if per_slot > self.slot_ms:
            raise ValueError("event frames per slot exceed the slot's milliseconds")
        self.history_start_ms = math.ceil(history_start * 1000)
        self._prefix = webid.stable_guid(self.seed, "eventframe").bytes[:8]
        self._key = mix(self.seed, "eventframe")
        self.slot_frames = lru_cache(maxsize=100_000)(self._make_slot)
        self._settled: OrderedDict[tuple[Any, ...], list[Frame]] = OrderedDict()

    # ----- generation -----------------------------------------------------------------
    def _make_slot(self, slot: int) -> tuple[Frame, ...]:
        return tuple(self._make_frame(slot, j) for j in range(self.per_slot))

    def _make_frame(self, slot: int, j: int) -> Frame:
        h = _splitmix(self._key ^ (slot * 1024 + j))
        stratum = self.slot_ms // self.per_slot
        start = slot * self.slot_ms + j * stratum + (h % max(1, stratum))
        template = _TEMPLATE_TABLE[(h >> 20) % len(_TEMPLATE_TABLE)]
        fraction = ((h >> 28) % 10_000) / 10_000
        slots = template.min_slots + fraction * (template.max_slots - template.min_slots)
        end = start + max(1, round(slots * self.slot_ms))
        equipment = (h >> 42) % self.af.n_equipment
        severity, ack, operator = "None", None, ""
        if template.name == "Alarm":
            severity = _ALARM_SEVERITIES[(h >> 8) % len(_ALARM_SEVERITIES)]
            if (h >> 12) % 4:
                ack = start + round(((h >> 14) % 1000) / 500 * self.slot_ms)
                operator = f"MOCKPI\\operator{1 + (h >> 24) % 6}"
        return Frame(
            slot=slot,
            j=j,
            template=template,
            start_ms=start,
            planned_end_ms=end,
            equipment=equipment,
            equipment_name=self.af.base_name(("equipment", equipment)),
            severity=severity,
            ack_ms=ack,
            operator=operator,
            annotated=(h >> 50) % 10 == 0,
            guid_prefix=self._prefix,
        )

    def _exists(self, frame: Frame, now_ms: int) -> bool:
        return self.history_start_ms <= frame.start_ms <= now_ms

    def frames_between(self, first_slot: int, last_slot: int, now_ms: int) -> Iterable[Frame]:
        lo = max(first_slot, self.history_start_ms // self.slot_ms)
        hi = min(last_slot, now_ms // self.slot_ms)
        for slot in range(lo, hi + 1):
            for frame in self.slot_frames(slot):
                if self._exists(frame, now_ms):
                    yield frame

    def by_guid(self, guid: uuid.UUID, now_ms: int) -> Frame | None:
        if guid.bytes[:8] != self._prefix:
            return None
        slot, j = int.from_bytes(guid.bytes[8:14], "big"), int.from_bytes(guid.bytes[14:], "big")
        if j >= self.per_slot:
            return None
        frame = self.slot_frames(slot)[j]
        return frame if self._exists(frame, now_ms) else None

    # ----- references and attributes --------------------------------------------------
    def referenced(self, frame: Frame) -> list[Element]:
        """Referenced elements, the primary one first, in the current AF version."""
        primary = self.af.element(self.af.surviving(frame.equipment))
        out = [primary]
        if frame.template.name == "Batch Run" and primary.parent_key is not None:
            out.append(self.af.element(primary.parent_key))
        return out

    def attributes(self, frame: Frame, now_ms: int) -> list[FrameAttribute]:
        """The frame's attributes, sorted by name; values depend on `now_ms` while open."""
        h = mix(self.seed, "eventframe-values", frame.slot, frame.j)
        t = frame.template.name
        values: list[tuple[str, str, str, str, Any]]
        if t == "Batch Run":
            values = [
                ("Batch ID", "String", "", "", f"B{frame.slot % 100_000:05d}{frame.j}"),
                ("Product", "String", "", "", _PRODUCTS[h % len(_PRODUCTS)]),
                ("Quantity", "Double", "kilogram", "kg", round(500 + (h >> 8) % 9500 * 1.25, 2)),
            ]
        elif t == "Downtime":
            end = min(frame.planned_end_ms, now_ms)
            values = [
                ("Duration", "Double", "minute", "min", round((end - frame.start_ms) / 60_000, 3)),
                ("Reason", "String", "", "", _REASONS[h % len(_REASONS)]),
            ]
        else:
            limit = float(50 + (h % 40) * 5)
            values = [
                ("Alarm Limit", "Double", "", "", limit),
                (
                    "Trigger Value",
                    "Double",
                    "",
                    "",
                    round(limit * (1 + ((h >> 8) % 200) / 1000), 3),
                ),
            ]
        out = []
        for name, type_, units, abbreviation, value in values:
            guid = webid.stable_guid(self.seed, "eventframe-attribute", t, name)
            path = f"{frame.path}|{name}"
            out.append(
                FrameAttribute(
                    id=guid,
                    webid=webid.attribute("F", frame.id, guid, path.lstrip("\\")),
                    name=name,
                    path=path,
                    type=type_,
                    units_name=units,
                    units_abbreviation=abbreviation,
                    value=value,
                )
            )
        return sorted(out, key=lambda a: a.name.lower())

    # ----- search ---------------------------------------------------------------------
    def _accept(self, f: FrameFilter, now_ms: int) -> Callable[[Frame], bool]:
        name_rx = name_pattern(f.name_filter)
        ref_rx = name_pattern(f.referenced_element_name_filter)
        severities = {s.lower() for s in f.severities}
        template = f.template_name.lower() if f.template_name else None
        category = f.category_name.lower() if f.category_name else None

        def accept(frame: Frame) -> bool:
            if template is not None and frame.template.name.lower() != template:
                return False
            if severities and frame.severity.lower() not in severities:
                return False
            if category is not None and category not in {
                c.lower() for c in frame.template.categories
            }:
                return False
            if f.can_be_acknowledged is not None and (
                frame.can_be_acknowledged != f.can_be_acknowledged
            ):
                return False
            if f.is_acknowledged is not None and (
                frame.is_acknowledged(now_ms) != f.is_acknowledged
            ):
                return False
            if name_rx is not None and not name_rx.match(frame.name):
                return False
            return ref_rx is None or any(ref_rx.match(e.name) for e in self.referenced(frame))

        return accept

    def search_range(
        self,
        mode: str,
        start_ms: int,
        end_ms: int,
        now_ms: int,
        criteria: FrameFilter = FrameFilter(),
        sort_field: str = "Name",
        descending: bool = False,
    ) -> list[Frame]:
        """Every frame matching a range search mode (the whole result, sorted).

        A range that ended more than the longest frame before now can no longer change
        (every frame that could match has started, closed and been acknowledged if it ever
        will be), so its result is kept for the pages that follow.
        """
        settled = end_ms + (math.ceil(MAX_SLOTS) + 3) * self.slot_ms < now_ms
        key = (mode, start_ms, end_ms, criteria, sort_field, descending)
        if settled and key in self._settled:
            self._settled.move_to_end(key)
            return self._settled[key]
        accept = self._accept(criteria, now_ms)
        first = (start_ms // self.slot_ms) - math.ceil(MAX_SLOTS) - 1
        last = end_ms // self.slot_ms
        out = []
        for frame in self.frames_between(first, last, now_ms):
            s = frame.start_ms
            e = frame.planned_end_ms if frame.planned_end_ms <= now_ms else INF
            if mode in ("Overlapped", "None"):
                hit = s <= end_ms and e >= start_ms
            elif mode == "Inclusive":
                hit = s >= start_ms and e <= end_ms
            elif mode == "StartInclusive":
                hit = start_ms <= s <= end_ms
            elif mode == "EndInclusive":
                hit = start_ms <= e <= end_ms
            elif mode == "InProgress":
                hit = start_ms <= s <= end_ms and e == INF
            else:
                raise ValueError(mode)
            if hit and accept(frame):
                out.append(frame)
        result = sort_frames(out, sort_field, descending, now_ms)
        if settled:
            self._settled[key] = result
            while len(self._settled) > SETTLED_SEARCHES:
                self._settled.popitem(last=False)
        return result

    def search_directional(
        self,
        mode: str,
        time_ms: int,
        now_ms: int,
        need: int,
        criteria: FrameFilter = FrameFilter(),
    ) -> list[Frame]:
        """The first `need` frames of a Backward*/Forward* search, in its order."""
        if need <= 0:
            return []
        accept = self._accept(criteria, now_ms)
        backward = mode.startswith("Backward")
        by_end = mode.endswith("EndTime")
        in_progress = mode.endswith("InProgress")
        lag = math.ceil(MAX_SLOTS) + 1
        lo = self.history_start_ms // self.slot_ms
        hi = now_ms // self.slot_ms
        if backward:
            slots: Iterable[int] = range(min(hi, time_ms // self.slot_ms), lo - 1, -1)
        else:
            slots = range(max(lo, time_ms // self.slot_ms - (lag if by_end else 0)), hi + 1)

        def key(frame: Frame) -> float:
            return frame.end_ms(now_ms) if by_end else frame.start_ms

        def hit(frame: Frame) -> bool:
            k = key(frame)
            if in_progress and not frame.is_open(now_ms):
                return False
            return k <= time_ms if backward else k >= time_ms

        found: list[Frame] = []
        for count, slot in enumerate(slots):
            for frame in self.slot_frames(slot):
                if self._exists(frame, now_ms) and hit(frame) and accept(frame):
                    found.append(frame)
            if len(found) < need:
                continue
            if not by_end:
                break
            if count % 16:
                continue
            # Frames of slots not yet scanned end within MAX_SLOTS of this slot's edge.
            if backward:
                bound = (slot + lag) * self.slot_ms
                final = sum(1 for f in found if key(f) > bound)
            else:
                bound = (slot + 1) * self.slot_ms
                final = sum(1 for f in found if key(f) < bound)
            if final >= need:
                break
        found.sort(key=lambda f: (key(f), f.sort_key), reverse=backward)
        return found[:need]


def sort_frames(frames: list[Frame], field: str, descending: bool, now_ms: int) -> list[Frame]:
    if field == "StartTime":
        return sorted(frames, key=lambda f: (f.start_ms, f.sort_key), reverse=descending)
    if field == "EndTime":
        return sorted(frames, key=lambda f: (f.end_ms(now_ms), f.sort_key), reverse=descending)
    return sorted(frames, key=lambda f: f.sort_key, reverse=descending)
