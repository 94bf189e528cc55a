"""Edits and deletions of archived values: a pure function of (seed, point, timestamp).

With EDIT_FRACTION / DELETE_FRACTION, a hashed share of the values is replaced by another
value, or removed, CHANGE_SECONDS after its timestamp. Only a well-formed, non-system value
alone at its timestamp is changed, so the key of what changed (tag, timestamp, sequence 0)
is unambiguous. An edit moves a number by a few percent of the point's span (rounded as the
point stores it), or a state or message to the next one, and marks it Substituted, as PI
marks a value replaced by hand. Every read applies the changes made by the moment of the
request (`ChangeModel.apply`), and stream updates report them (`ChangeModel.window`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mock_pi import catalog as cat
from mock_pi import series as ser
from mock_pi.series import TICKS, Events, Series

NONE = 0
EDIT = 1
DELETE = 2
_RESOLUTION = 1 << 20


def alone(ev: Events) -> np.ndarray:
    """True where a value is the only one at its timestamp (events in ascending order, all
    values of a timestamp present, as `Series.slots` makes them)."""
    n = len(ev)
    out = ev.seq == 0
    if n > 1:
        out[:-1] &= ev.ticks[1:] != ev.ticks[:-1]
    return out


@dataclass(frozen=True, slots=True)
class ChangeModel:
    """The edits and deletions of one point."""

    series: Series
    key: np.uint64
    edit_below: int
    delete_below: int
    change_ticks: int

    @classmethod
    def create(
        cls, seed: int, s: Series, edit: float, delete: float, change_seconds: float
    ) -> ChangeModel:
        key = np.uint64(cat.mix(seed, "changes", s.point.index))
        delete_below = int(delete * _RESOLUTION)
        edit_below = delete_below + int(edit * _RESOLUTION)
        return cls(s, key, edit_below, delete_below, round(change_seconds * TICKS))

    def kinds(self, ev: Events) -> np.ndarray:
        """NONE, EDIT or DELETE for each value (ascending, whole timestamps)."""
        h = ser.splitmix(ev.ticks.astype(np.uint64) ^ self.key)
        u = (h & np.uint64(_RESOLUTION - 1)).astype(np.int64)
        eligible = alone(ev) & ~ev.system & (ev.bad == ser.BAD_NONE)
        kind = np.where(u < self.delete_below, DELETE, np.where(u < self.edit_below, EDIT, NONE))
        return np.where(eligible, kind, NONE).astype(np.int8)

    def changed_at(self, ev: Events) -> np.ndarray:
        """The tick at which each value is edited or deleted (if it is)."""
        return ev.ticks + self.change_ticks

    def apply(self, ev: Events, at: int) -> Events:
        """The values as they stand at tick `at`: deletions gone, edits made."""
        if len(ev) == 0 or self.edit_below == 0:
            return ev
        kind = self.kinds(ev)
        done = self.changed_at(ev) <= at
        gone = (kind == DELETE) & done
        if gone.any():
            ev, kind, done = ev.take(~gone), kind[~gone], done[~gone]
        edited = (kind == EDIT) & done
        return self.edited(ev, edited) if edited.any() else ev

    def edited(self, ev: Events, where: np.ndarray) -> Events:
        """`ev` with the values at `where` replaced by their edit."""
        s = self.series
        kind = s.point.kind
        value, code = ev.value, ev.code
        if s.numeric:
            step = max(1.0, kind.span * 0.05)
            moved = ev.value + np.where(ev.value > kind.zero + kind.span / 2, -step, step)
            if kind.point_type == "Int32":
                moved = np.rint(moved)
            elif kind.point_type == "Float32":
                moved = np.round(moved, s.decimals)
            value = np.where(where, moved, ev.value)
        elif kind.digital_set is not None:
            code = np.where(where, (ev.code + 1) % len(cat.DIGITAL_SETS[kind.digital_set]), code)
        elif kind.prefix == "BATCH":
            code = np.where(where, ev.code + 1, code)
        else:
            code = np.where(where, (ev.code + 1) % len(ser.MESSAGES), code)
        out = ev.take(slice(None))
        out.value, out.code = value, code
        out.substituted = ev.substituted | where
        return out

    def window(self, after: int, upto: int, history_start: int) -> tuple[Events, np.ndarray]:
        """What changed in (after, upto]: each event, ordered by the moment it happened.

        A value that arrived in the window is an `Add` of what it was when it arrived (an
        edit made before then included; nothing when it was deleted before then); an edit
        or deletion of a value already there is an `Update` (the new value) or a `Delete`
        (the value as it stood). A value that arrived and then changed in the window has
        both events, in that order: a marker is a position in the stream of events, so a
        read from an older marker returns every event since, not only the outcome.
        """
        s = self.series
        lo = after - max(s.late_ticks, self.change_ticks)
        ev = s.scan(lo, upto, upto, history_start, visible_upto=upto, changes=False)
        kind = self.kinds(ev)
        at = self.changed_at(ev)
        changed = (kind != NONE) & (at <= upto)
        before = changed & (at <= ev.visible)  # made before the value could be seen
        add = (ev.visible > after) & ~(before & (kind == DELETE))
        later = changed & (at > ev.visible) & (at > after)
        adds = ev.take(add)
        edited_first = (before & (kind == EDIT))[add]
        if edited_first.any():
            adds = self.edited(adds, edited_first)
        changes = ev.take(later)
        edits = kind[later] == EDIT
        if edits.any():
            changes = self.edited(changes, edits)
        actions = np.concatenate([np.full(len(adds), ADD), np.where(edits, UPDATE, REMOVE)]).astype(
            np.int8
        )
        moment = np.concatenate([ev.visible[add], at[later]])
        order = np.argsort(moment, kind="stable")
        return Events.concat([adds, changes]).take(order), actions[order]


# Stream-update actions (AF SDK's AFDataPipeAction names, as PI Web API reports them).
ADD = 0
UPDATE = 1
REMOVE = 2
ACTION_NAMES = ("Add", "Update", "Delete")
