"""The mock's event frames over HTTP, checked against `mock_pi.eventframes.EventFrameModel`.

Expected sets are computed here by brute force over the model's frames with the search
modes' definitions written out again, so the server's search code is checked, not echoed.
"""

from __future__ import annotations

import time
import urllib.parse
from typing import Any

import pytest

from mock_pi.af import AfModel
from mock_pi.eventframes import OPEN_END, EventFrameModel, Frame
from tests.conftest import FIXED_NOW, MockServer, SimClock, get_json
from tests.spec import validate_response
from workers.pi.times import format_ticks

SEED, TAGS, DAY_MS = 42, 1000, 86_400_000
DB = AfModel(SEED, TAGS).database_webid
EF_PATH = "/assetdatabases/{webId}/eventframes"


def history_start(days: float) -> float:
    """What a server on a SimClock computes at start: midnight UTC of FIXED_NOW's day (a
    session's SimClock stays on that day) minus HISTORY_DAYS."""
    return (FIXED_NOW.timestamp() // 86_400) * 86_400 - days * 86_400


def iso(ms: float) -> str:
    return format_ticks(int(ms) * 10_000)


def model(
    days: float = 30, slot: float = 600, per_slot: int = 3, seed: int = SEED, tags: int = TAGS
) -> EventFrameModel:
    return EventFrameModel(AfModel(seed, tags), history_start(days), slot, per_slot)


def search(server: MockServer, db: str, **params: Any) -> list[dict[str, Any]]:
    query = urllib.parse.urlencode(
        [(k, v) for k, vs in params.items() for v in (vs if isinstance(vs, list) else [vs])]
    )
    status, body = get_json(f"{server.url}/assetdatabases/{db}/eventframes?{query}")
    assert status == 200, body
    validate_response(body, EF_PATH)
    return body["Items"]


def names(items: list[dict[str, Any]]) -> list[str]:
    return [i["Name"] for i in items]


def by_name(frames: list[Frame]) -> list[str]:
    return sorted((f.name for f in frames), key=str.lower)


@pytest.fixture(scope="module")
def past(mock_pi: MockServer) -> tuple[EventFrameModel, list[Frame], int, int, int]:
    """A closed stretch of history: (model, every frame there, range start, end, now)."""
    m = model()
    now = int(mock_pi.clock.time() * 1000)
    lo = int(m.history_start_ms) + 2 * DAY_MS + 3 * 3_600_000
    hi = lo + 2 * 3_600_000
    frames = list(m.frames_between(0, (lo + 2 * DAY_MS) // m.slot_ms, now))
    assert all(not f.is_open(now) for f in frames if f.start_ms < hi)
    return m, frames, lo, hi, now


def test_range_modes_give_exact_sets(mock_pi: MockServer, past: Any) -> None:
    _, frames, lo, hi, _ = past
    want = {
        "Overlapped": [f for f in frames if f.start_ms <= hi and f.planned_end_ms >= lo],
        "Inclusive": [f for f in frames if f.start_ms >= lo and f.planned_end_ms <= hi],
        "StartInclusive": [f for f in frames if lo <= f.start_ms <= hi],
        "EndInclusive": [f for f in frames if lo <= f.planned_end_ms <= hi],
        "InProgress": [],
    }
    assert len(want["Inclusive"]) > 5
    assert len(want["Overlapped"]) > len(want["StartInclusive"]) > len(want["Inclusive"])
    for mode, expected in want.items():
        got = search(mock_pi, DB, searchMode=mode, startTime=iso(lo), endTime=iso(hi))
        assert names(got) == by_name(expected), mode
    default = search(mock_pi, DB, startTime=iso(lo), endTime=iso(hi))
    assert names(default) == by_name(want["Overlapped"])


def test_boundaries_of_one_frame(mock_pi: MockServer, past: Any) -> None:
    _, frames, lo, _, _ = past
    f = next(f for f in frames if f.start_ms > lo and f.template.name == "Downtime")
    s, e = f.start_ms, f.planned_end_ms

    def hit(mode: str, a: int, b: int) -> bool:
        return f.name in names(
            search(
                mock_pi, DB, searchMode=mode, startTime=iso(a), endTime=iso(b), nameFilter=f.name
            )
        )

    assert hit("StartInclusive", s, s)
    assert not hit("StartInclusive", s + 1, e)
    assert hit("EndInclusive", e, e)
    assert not hit("EndInclusive", s, e - 1)
    assert hit("Inclusive", s, e)
    assert not hit("Inclusive", s + 1, e)
    assert hit("Overlapped", e, e + 3_600_000)
    assert not hit("Overlapped", e + 1, e + 3_600_000)
    assert hit("Overlapped", s - 3_600_000, s)


def test_directional_modes(mock_pi: MockServer, past: Any) -> None:
    _, frames, lo, hi, now = past
    t = (lo + hi) // 2
    cases = {
        "BackwardFromStartTime": sorted(
            (f for f in frames if f.start_ms <= t), key=lambda f: f.start_ms, reverse=True
        ),
        "ForwardFromStartTime": sorted(
            (f for f in frames if f.start_ms >= t), key=lambda f: f.start_ms
        ),
        "BackwardFromEndTime": sorted(
            (f for f in frames if f.planned_end_ms <= t),
            key=lambda f: f.planned_end_ms,
            reverse=True,
        ),
        "ForwardFromEndTime": sorted(
            (f for f in frames if f.planned_end_ms >= t), key=lambda f: f.planned_end_ms
        ),
    }
    for mode, expected in cases.items():
        got = search(mock_pi, DB, searchMode=mode, startTime=iso(t), maxCount=7)
        assert names(got) == [f.name for f in expected[:7]], mode
    skip = search(
        mock_pi, DB, searchMode="ForwardFromStartTime", startTime=iso(t), startIndex=3, maxCount=2
    )
    assert names(skip) == [f.name for f in cases["ForwardFromStartTime"][3:5]]
    assert now > hi


def test_filters_and_paging(mock_pi: MockServer, past: Any) -> None:
    m, frames, _, _, _ = past
    lo = int(m.history_start_ms)
    hi = lo + 3 * DAY_MS
    inside = [f for f in frames if f.start_ms <= hi and f.planned_end_ms >= lo]
    window = {"startTime": iso(lo), "endTime": iso(hi), "maxCount": 5000}
    alarms = search(mock_pi, DB, templateName="alarm", severity=["Major", "Critical"], **window)
    assert names(alarms) == by_name(
        [f for f in inside if f.template.name == "Alarm" and f.severity in ("Major", "Critical")]
    )
    for a in alarms:
        assert (a["TemplateName"], a["CategoryNames"], a["CanBeAcknowledged"]) == (
            "Alarm",
            ["Alarm"],
            True,
        )
    pumps = search(mock_pi, DB, referencedElementNameFilter="p-*", **window)
    assert names(pumps) == by_name(
        [f for f in inside if any(e.name.startswith("P-") for e in m.referenced(f))]
    )
    unacked = search(mock_pi, DB, isAcknowledged="false", canBeAcknowledged="true", **window)
    assert names(unacked) == by_name(
        [f for f in inside if f.template.name == "Alarm" and f.ack_ms is None]
    )
    downtime = search(mock_pi, DB, nameFilter="*Downtime*", categoryName="Downtime", **window)
    assert names(downtime) == by_name([f for f in inside if f.template.name == "Downtime"])
    everything = by_name(inside)
    paged: list[str] = []
    while True:
        page = search(
            mock_pi, DB, startTime=iso(lo), endTime=iso(hi), startIndex=len(paged), maxCount=97
        )
        paged += names(page)
        if len(page) < 97:
            break
    assert paged == everything
    newest = search(
        mock_pi,
        DB,
        startTime=iso(lo),
        endTime=iso(hi),
        sortField="StartTime",
        sortOrder="Descending",
        maxCount=3,
    )
    assert names(newest) == [f.name for f in sorted(inside, key=lambda f: -f.start_ms)[:3]]


def test_frame_endpoints(mock_pi: MockServer, past: Any) -> None:
    m, frames, lo, _, now = past
    for template in ("Alarm", "Batch Run", "Downtime"):
        f = next(f for f in frames if f.template.name == template and f.start_ms >= lo)
        status, body = get_json(f"{mock_pi.url}/eventframes/{f.webid}")
        assert status == 200
        validate_response(body, "/eventframes/{webId}")
        refs = m.referenced(f)
        assert body["Id"] == str(f.id)
        assert (body["StartTime"], body["EndTime"]) == (iso(f.start_ms), iso(f.planned_end_ms))
        assert body["RefElementWebIds"] == [e.webid for e in refs]
        assert body["Links"]["PrimaryReferencedElement"].endswith(f"/elements/{refs[0].webid}")
        assert body["AreValuesCaptured"] is True
        assert len(refs) == (2 if template == "Batch Run" else 1)
        status, attrs = get_json(f"{mock_pi.url}/eventframes/{f.webid}/attributes")
        validate_response(attrs, "/eventframes/{webId}/attributes")
        want = m.attributes(f, now)
        assert [a["WebId"] for a in attrs["Items"]] == [a.webid for a in want]
        for a in attrs["Items"]:
            status, one = get_json(a["Links"]["Self"])
            assert (status, one["Path"]) == (200, a["Path"])
        status, refs_body = get_json(f"{mock_pi.url}/eventframes/{f.webid}/referencedelements")
        validate_response(refs_body, "/eventframes/{webId}/referencedelements")
        assert [e["WebId"] for e in refs_body["Items"]] == [e.webid for e in refs]
        status, values = get_json(f"{mock_pi.url}/streamsets/{f.webid}/value")
        validate_response(values, "/streamsets/{webId}/value")
        assert {v["Name"]: v["Value"]["Value"] for v in values["Items"]} == {
            a.name: a.value for a in want
        }
    alarm = next(f for f in frames if f.template.name == "Alarm" and f.ack_ms is not None)
    status, body = get_json(f"{mock_pi.url}/eventframes/{alarm.webid}")
    assert (body["IsAcknowledged"], body["AcknowledgedDate"]) == (True, iso(alarm.ack_ms or 0))
    assert body["AcknowledgedBy"].startswith("MOCKPI\\operator")


def test_errors(mock_pi: MockServer, past: Any) -> None:
    _, frames, lo, hi, _ = past
    f = frames[0]
    later = future_webid(f)
    for path in (
        f"/eventframes/{later}",
        "/eventframes/F1Fmxyz",
        f"/eventframes/{later}/attributes",
        "/assetdatabases/F1RDabc/eventframes",
    ):
        status, body = get_json(mock_pi.url + path)
        assert status == 404, path
        assert body["Errors"], path
    base = f"{mock_pi.url}/assetdatabases/{DB}/eventframes?"
    for query in (
        "searchMode=Sideways",
        "startTime=yesterday-ish",
        f"startTime={iso(hi)}&endTime={iso(lo)}",
        "searchMode=BackwardFromStartTime&endTime=*",
        "searchMode=ForwardFromEndTime&sortField=Name",
        "sortField=Colour",
        "maxCount=abc",
        "isAcknowledged=perhaps",
    ):
        status, body = get_json(base + query)
        assert status == 400, query
        assert body["Errors"], query


def future_webid(f: Frame) -> str:
    """The WebID a frame of the same (slot, j) would have a year from now: not yet real."""
    future = Frame(
        slot=f.slot + 365 * 144,
        j=f.j,
        template=f.template,
        start_ms=f.start_ms + 365 * DAY_MS,
        planned_end_ms=f.planned_end_ms,
        equipment=f.equipment,
        equipment_name=f.equipment_name,
        severity=f.severity,
        ack_ms=None,
        operator="",
        annotated=False,
        guid_prefix=f.guid_prefix,
    )
    return future.webid


def test_open_frames_close_later_with_the_same_webid(mock_pi_factory: Any) -> None:
    clock = SimClock.start()
    server = mock_pi_factory(
        clock=clock,
        tag_count=100,
        seed=5,
        rate_limit=0,
        history_days=0.001,
        ef_slot_seconds=1,
        ef_per_slot=2,
    )
    m = EventFrameModel(AfModel(5, 100), history_start(0.001), 1, 2)
    db = AfModel(5, 100).database_webid
    open_now = search(server, db, searchMode="InProgress", startTime="*-60s", endTime="*")
    assert open_now
    assert {f["EndTime"] for f in open_now} == {OPEN_END}
    assert not any(f["AreValuesCaptured"] for f in open_now)
    now = int(clock.time() * 1000)
    known = {f.webid: f for f in m.frames_between(now // 1000 - 90, now // 1000 + 1, now + 5000)}
    soonest = min((known[f["WebId"]] for f in open_now), key=lambda f: f.planned_end_ms)
    wait = soonest.planned_end_ms / 1000 - clock.time() + 0.3
    assert wait < 10
    time.sleep(max(0.0, wait))
    status, body = get_json(f"{server.url}/eventframes/{soonest.webid}")
    assert status == 200
    assert body["WebId"] == soonest.webid
    assert body["EndTime"] == iso(soonest.planned_end_ms) != OPEN_END
    assert body["AreValuesCaptured"] is True
    still_open = search(server, db, searchMode="InProgress", startTime="*-90s", endTime="*")
    assert soonest.webid not in {f["WebId"] for f in still_open}
    closed = search(
        server,
        db,
        searchMode="EndInclusive",
        startTime=iso(soonest.start_ms),
        endTime="*",
        nameFilter=soonest.name,
    )
    assert [f["WebId"] for f in closed] == [soonest.webid]
