"""Edits and deletions: pure, only values alone at their timestamp, every read as of its
moment, and stream updates that carry a reader from one moment's archive to the next."""

from __future__ import annotations

import itertools
import time
from typing import Any

from mock_pi.settings import MockSettings
from mock_pi.truth import GroundTruth
from tests.conftest import SimClock
from tests.mock_pi import get, iso, truth_for, url
from tests.mock_pi.test_protocol import XRW, call
from tests.mock_pi.test_updates import issued_ticks, register, retrieve

TICKS = 10_000_000
T0 = 1_780_000_000  # a fixed instant (seconds), inside the default history
CHANGES = {
    "tag_count": 40,
    "seed": 7,
    "late_fraction": 0.5,
    "late_seconds": 1800.0,
    "edit_fraction": 0.2,
    "delete_fraction": 0.1,
    "change_seconds": 120.0,
    "history_days": 400,
}


def keyed(values: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    """TimedValues by (timestamp, position among values sharing it)."""
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for v in values:
        seq = 0
        while (v["Timestamp"], seq) in out:
            seq += 1
        out[(v["Timestamp"], seq)] = v
    return out


def apply(archive: dict[tuple[str, int], dict[str, Any]], events: list[dict[str, Any]]) -> None:
    """What a client does with stream updates (values alone at their timestamp change)."""
    for e in events:
        value = {k: v for k, v in e.items() if k not in ("Action", "PreviousEventAction")}
        if e["Action"] == "Add":
            seq = 0
            while (e["Timestamp"], seq) in archive:
                seq += 1
            archive[(e["Timestamp"], seq)] = value
        elif e["Action"] == "Update":
            assert (e["Timestamp"], 1) not in archive
            assert (e["Timestamp"], 0) in archive
            archive[(e["Timestamp"], 0)] = value
        else:
            assert e["Action"] == "Delete"
            assert archive.pop((e["Timestamp"], 0)) == value


def test_changes_are_pure_and_hit_only_values_alone() -> None:
    truth = truth_for(**CHANGES)
    start, end = (T0 - 4 * 3600) * TICKS, T0 * TICKS
    seen = {"Update": 0, "Delete": 0}
    for i in range(CHANGES["tag_count"]):
        point = truth.state.catalog.point(i)
        changes = truth.changes(point, start, end)
        assert changes == truth_for(**CHANGES).changes(point, start, end)
        first = keyed(truth.arrivals(point, start - 3600 * TICKS, end + 3600 * TICKS))
        for action, value, at in changes:
            seen[action] += 1
            assert (value["Timestamp"], 0) in first
            assert (value["Timestamp"], 1) not in first
            assert value["Good"]
            old = first[(value["Timestamp"], 0)]
            if action == "Update":
                assert value["Value"] != old["Value"]
                assert value["Substituted"]
            else:
                assert value == old
            stamp = truth._ticks(value["Timestamp"], 0)
            assert at == stamp + 120 * TICKS
    assert seen["Update"] > seen["Delete"] > 0


def test_updates_carry_one_moments_archive_to_the_next() -> None:
    """recorded as of t0, plus the events of (t0, t1], is recorded as of t1; late values
    (half an hour), edits and deletions of old timestamps included."""
    truth = truth_for(**CHANGES)
    lo = (T0 - 3 * 3600) * TICKS
    moments = [T0 - 2 * 3600 + k * 700 for k in range(12)]
    totals: dict[str, int] = {"Add": 0, "Update": 0, "Delete": 0}
    for i in range(0, CHANGES["tag_count"], 3):
        point = truth.state.catalog.point(i)
        archive = keyed(truth.recorded(point, lo, moments[0] * TICKS, at=moments[0]))
        for a, b in itertools.pairwise(moments):
            events = truth.updates(point, a * TICKS, b * TICKS)
            # Values stamped before `lo` are not in this archive: leave them out.
            events = [e for e in events if truth._ticks(e["Timestamp"], 0) >= lo]
            for e in events:
                totals[e["Action"]] += 1
            apply(archive, events)
            assert archive == keyed(truth.recorded(point, lo, b * TICKS, at=b)), (i, b)
    assert min(totals.values()) > 0, totals


def test_reads_show_the_archive_as_of_the_request(mock_pi_factory) -> None:
    """A range whose changes are all made by now reads edited and without the deleted."""
    settings = {**CHANGES, "late_fraction": 0.0, "change_seconds": 2.0, "rate_limit": 0}
    server = mock_pi_factory(**settings)
    truth = GroundTruth(MockSettings(**settings))
    now = time.time()
    start, end = iso(now - 900), iso(now - 60)
    changed = 0
    for i in range(6):
        point = truth.state.catalog.point(i)
        target = url(server.url, f"/streams/{point.webid}/recorded", startTime=start, endTime=end)
        status, body = get(target)
        assert status == 200
        assert body["Items"] == truth.recorded(point, start, end)
        changed += len(truth.changes(point, start, end))
        first = truth.arrivals(point, truth._ticks(start, 0) - 1, truth._ticks(end, 0))
        assert len(first) - len(body["Items"]) == sum(
            a == "Delete" for a, _, _ in truth.changes(point, start, end)
        )
    assert changed > 0


def test_updates_switched_off(mock_pi_factory) -> None:
    server = mock_pi_factory(updates=False)
    status, _, body = call("POST", f"{server.url}/streamsets/updates?webId=x", b"", XRW)
    assert (status, body) == (404, {"Errors": ["Stream updates are not enabled on this server."]})
    status, _, body = call("GET", f"{server.url}/streamsets/updates?marker=x")
    assert (status, body) == (404, {"Errors": ["Stream updates are not enabled on this server."]})


def test_edits_and_deletions_reach_a_marker_over_http(mock_pi_factory) -> None:
    settings = {
        **CHANGES,
        "late_fraction": 0.0,
        "change_seconds": 1.0,
        "rate_limit": 0,
        "edit_fraction": 0.3,
        "delete_fraction": 0.2,
    }
    server = mock_pi_factory(**settings)
    truth = GroundTruth(MockSettings(**settings))
    web_ids = [truth.state.catalog.point(i).webid for i in range(40)]
    _, reg = register(server, web_ids)
    markers = [item["LatestMarker"] for item in reg["Items"]]
    actions: set[str] = set()
    for _ in range(20):  # each window holds whatever changed in it: read until all came
        time.sleep(1.0)
        got = retrieve(server, markers)
        for marker, item in zip(markers, got["Items"], strict=True):
            after, upto = issued_ticks(marker), issued_ticks(item["LatestMarker"])
            assert item["Events"] == truth.updates(item["Source"], after, upto)
            actions |= {e["Action"] for e in item["Events"]}
        markers = [item["LatestMarker"] for item in got["Items"]]
        if len(actions) == 3:
            break
    assert actions == {"Add", "Update", "Delete"}


def test_malformed_values_reach_a_marker_as_they_are_served(mock_pi_factory) -> None:
    """With BAD_FRACTION an event carries the malformed value as recorded serves it (a bare
    value in place of the event when the value is not an object)."""
    settings = {"tag_count": 30, "seed": 3, "bad_fraction": 0.5, "rate_limit": 0}
    clock = SimClock.start()  # the same values arrive on every run
    server = mock_pi_factory(clock=clock, **settings)
    truth = GroundTruth(MockSettings(**settings), clock=clock.time)
    web_ids = [truth.state.catalog.point(i).webid for i in range(30)]
    _, reg = register(server, web_ids)
    markers = [item["LatestMarker"] for item in reg["Items"]]
    bare = 0
    for _ in range(60):
        time.sleep(1.0)
        query = "&".join(f"marker={m}" for m in markers)
        status, _, got = call("GET", f"{server.url}/streamsets/updates?{query}")
        assert status == 200
        for marker, item in zip(markers, got["Items"], strict=True):
            after, upto = issued_ticks(marker), issued_ticks(item["LatestMarker"])
            assert item["Events"] == truth.updates(item["Source"], after, upto)
            bare += sum(not isinstance(e, dict) for e in item["Events"])
        markers = [item["LatestMarker"] for item in got["Items"]]
        if bare:
            break
    assert bare > 0
