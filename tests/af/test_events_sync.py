"""Event-frame sync against mock-pi: exact rows, frames closing in place, kill -9 + restart."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime
from typing import Any

import pytest
from deltalake import DeltaTable

from mock_pi.af import AfModel
from mock_pi.eventframes import EventFrameModel, Frame
from service.commands_af import run_schedules
from service.metrics import Metrics
from tests.conftest import FIXED_NOW, ROOT, SimClock
from workers.af import events as events_module
from workers.af.common import iso_us
from workers.af.events import sync_events, value_text, windows
from workers.af.tables import META_WATERMARK
from workers.lake.schemas import PI_AF_HIERARCHY, PI_EVENT_FRAMES
from workers.lifecycle import Lifecycle
from workers.pi.client import PIClient
from workers.pi.times import parse_pi_time
from workers.settings import load_settings

SEED = 42
TAGS = 100
SLOT = 2.0  # seconds per event-frame slot: alarms last 0.1-6 s, batch runs 12-72 s
PER_SLOT = 3
DAY = 86_400


def mock_env() -> dict[str, object]:
    return {
        "tag_count": TAGS,
        "seed": SEED,
        "rate_limit": 0,
        "history_days": 1,
        "ef_slot_seconds": SLOT,
        "ef_per_slot": PER_SLOT,
    }


FIXED_US = round(FIXED_NOW.timestamp() * 1_000_000)


def frame_model() -> EventFrameModel:
    """The ground truth of a mock started on a SimClock with `mock_env()`."""
    history_start = (FIXED_NOW.timestamp() // DAY) * DAY - DAY
    return EventFrameModel(AfModel(SEED, TAGS), history_start, SLOT, PER_SLOT)


def ms_of(text: str) -> int:
    """As mock-pi reads a search time."""
    return round(parse_pi_time(text, time.time()) * 1000)


def on_clock(monkeypatch: pytest.MonkeyPatch) -> SimClock:
    """A SimClock that an in-process event-frame sync reads its "now" from too."""
    clock = SimClock.start()
    monkeypatch.setattr(events_module, "now_us", lambda: round(clock.time() * 1_000_000))
    return clock


def us(moment: datetime | None) -> int | None:
    if moment is None:
        return None
    return round(moment.timestamp() * 1_000_000)


def map_text(value: Any) -> str | None:
    return value_text(value)[0]


def expected(ef: EventFrameModel, f: Frame, at_ms: int) -> dict[str, Any]:
    """The row of frame `f` as mock-pi serves it at `at_ms`."""
    refs = ef.referenced(f)
    acked = f.is_acknowledged(at_ms)
    return {
        "event_frame_webid": f.webid,
        "event_frame_id": str(f.id),
        "name": f.name,
        "path": f.path,
        "template_name": f.template_name,
        "description": f"{f.template_name} on {refs[0].name}",
        "start_time": f.start_ms * 1000,
        "end_time": None if f.is_open(at_ms) else f.planned_end_ms * 1000,
        "primary_referenced_element_webid": refs[0].webid,
        "referenced_element_webids": [e.webid for e in refs],
        "severity": f.severity,
        "can_be_acknowledged": f.can_be_acknowledged,
        "is_acknowledged": acked,
        "acknowledged_by": f.operator if acked else None,
        "acknowledged_date": f.ack_ms * 1000 if acked and f.ack_ms is not None else None,
        "is_alarm": f.template_name == "Alarm",
        "category_names": list(f.category_names),
        "attributes": [(a.name, map_text(a.value)) for a in ef.attributes(f, at_ms)],
        "database_webid": ef.af.database_webid,
    }


def normalised(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if k != "synced_at"}
    for key in ("start_time", "end_time", "acknowledged_date"):
        out[key] = us(out[key])
    return out


def without_running_duration(row: dict[str, Any]) -> dict[str, Any]:
    """An open Downtime frame's Duration grows with every millisecond it is served."""
    if row["end_time"] is None and row["template_name"] == "Downtime":
        row = {**row, "attributes": [(k, v) for k, v in row["attributes"] if k != "Duration"]}
    return row


def assert_served(ef: EventFrameModel, row: dict[str, Any], after_ms: int, before_ms: int) -> None:
    """The row equals the frame as served at some instant in [after_ms, before_ms]."""
    f = ef.by_guid(uuid.UUID(row["event_frame_id"]), before_ms)
    assert f is not None, row["name"]
    instants = {after_ms, before_ms}
    instants |= {t for t in (f.planned_end_ms, f.ack_ms) if t and after_ms <= t <= before_ms}
    got = without_running_duration(normalised(row))
    candidates = [without_running_duration(expected(ef, f, t)) for t in sorted(instants)]
    assert got in candidates, (got, candidates)


def table_rows(target: str) -> list[dict[str, Any]]:
    return DeltaTable(f"{target}/{PI_EVENT_FRAMES}").to_pyarrow_table().to_pylist()


def truth_webids(ef: EventFrameModel, start: str, end: str) -> set[str]:
    end_ms = ms_of(end)
    return {f.webid for f in ef.search_range("Overlapped", ms_of(start), end_ms, end_ms)}


@pytest.mark.parametrize(
    ("value", "text", "ok"),
    [
        (None, None, True),
        (True, "true", True),
        (3, "3", True),
        (2.5, "2.5", True),
        ("B001", "B001", True),
        ({"Name": "Open", "Value": 1}, "Open", True),
        ({"Value": 1}, None, False),
        ([1, 2], None, False),
    ],
)
def test_value_text(value: Any, text: str | None, ok: bool) -> None:
    assert value_text(value) == (text, ok)


def test_windows_cover_the_range_without_gaps() -> None:
    assert windows(0, 10_000_000, 4) == [(0, 4_000_000), (4_000_000, 8_000_000),
                                         (8_000_000, 10_000_000)]  # fmt: skip
    assert windows(5, 5, 4) == [(5, 5)]


async def test_frames_equal_the_mock_and_close_in_place(
    mock_pi_factory: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = on_clock(monkeypatch)
    server = mock_pi_factory(clock=clock, **mock_env())
    target = str(tmp_path / "lake")
    start = iso_us(FIXED_US - 60_000_000)
    settings = load_settings(
        pi_url=server.url,
        target=target,
        events_start=start,
        events_lookback=0,
        events_max_window=25,
    )
    ef = frame_model()

    first = await sync_events(settings)
    after_first = int(clock.time() * 1000)
    assert first is not None
    assert first.open_frames > 0
    history = DeltaTable(f"{target}/{PI_EVENT_FRAMES}").history()
    assert len([c for c in history if META_WATERMARK in c]) == 3  # 60 s in windows of 25 s
    rows = table_rows(target)
    assert {r["event_frame_webid"] for r in rows} == truth_webids(ef, start, first.watermark)
    for row in rows:
        assert_served(ef, row, ms_of(first.watermark), after_first)
    opened = {r["event_frame_webid"] for r in rows if r["end_time"] is None}
    version = DeltaTable(f"{target}/{PI_EVENT_FRAMES}").version()

    # Wait for open frames to close (alarms last at most 6 s), then sync again.
    soonest = min(f.planned_end_ms for f in ef.search_range(
        "Overlapped", ms_of(start), ms_of(first.watermark), ms_of(first.watermark)
    ) if f.webid in opened)  # fmt: skip
    await asyncio.sleep(max(0.0, soonest / 1000 - clock.time()) + 0.5)
    second = await sync_events(settings)
    after_second = int(clock.time() * 1000)
    assert second is not None
    rows = table_rows(target)
    webids = [r["event_frame_webid"] for r in rows]
    assert len(webids) == len(set(webids)), "a frame was duplicated"
    assert set(webids) == truth_webids(ef, start, second.watermark)
    closed = {r["event_frame_webid"] for r in rows if r["end_time"] is not None} & opened
    assert closed, "no open frame closed"
    for row in rows:
        if row["event_frame_webid"] in closed or row["end_time"] is None:
            assert_served(ef, row, ms_of(second.watermark), after_second)
    table = DeltaTable(f"{target}/{PI_EVENT_FRAMES}")
    assert table.version() == version + 1
    assert table.history(1)[0][META_WATERMARK] == second.watermark


def test_kill_9_during_sync_then_restart_leaves_no_duplicate_and_no_gap(
    mock_pi_factory: Any, tmp_path: Any
) -> None:
    clock = SimClock.start()
    server = mock_pi_factory(clock=clock, **mock_env())
    target = str(tmp_path / "lake")
    # Twenty minutes of frames in pages of 25: about two thousand frames, many batches.
    start = iso_us(FIXED_US - 1_200_000_000)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIDELTA_")}
    env.update(
        clock.process_env(),
        PIDELTA_PI_URL=server.url,
        PIDELTA_TARGET=target,
        PIDELTA_EVENTS_START=start,
        PIDELTA_EVENTS_LOOKBACK="0",
        PIDELTA_AF_PAGE_SIZE="25",
    )
    command = [sys.executable, "-m", "service", "events"]
    # How long one whole run takes here (start-up, fetch, merge), into a scratch table.
    began = time.monotonic()
    scratch = {**env, "PIDELTA_TARGET": str(tmp_path / "scratch")}
    subprocess.run(command, cwd=ROOT, env=scratch, stderr=subprocess.DEVNULL, check=True)
    whole = time.monotonic() - began
    rng = random.Random(7)
    killed = 0
    for _ in range(6):
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.2, 0.7) * whole)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.wait(30)
    assert killed >= 2
    final = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, timeout=120)
    assert final.returncode == 0, final.stderr.decode()[-2000:]
    table = DeltaTable(f"{target}/{PI_EVENT_FRAMES}")
    watermark = table.history(1)[0][META_WATERMARK]
    webids = [r["event_frame_webid"] for r in table_rows(target)]
    assert len(webids) == len(set(webids)), "a frame was duplicated"
    assert set(webids) == truth_webids(frame_model(), start, watermark), "a frame is missing"


async def test_run_schedules_sync_both_until_stopped(
    mock_pi_factory: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = mock_pi_factory(clock=on_clock(monkeypatch), **mock_env())
    target = str(tmp_path / "lake")
    settings = load_settings(
        pi_url=server.url,
        target=target,
        events_start=iso_us(FIXED_US - 30_000_000),
        af_sync_interval=60,
        events_sync_interval=0.3,
    )
    lifecycle = Lifecycle()
    metrics = Metrics(process=False)

    def merges() -> list[dict[str, Any]]:
        path = f"{target}/{PI_EVENT_FRAMES}"
        if not DeltaTable.is_deltatable(path):
            return []
        return [c for c in DeltaTable(path).history() if META_WATERMARK in c]

    async with PIClient(settings) as client:
        task = asyncio.create_task(run_schedules(settings, client, lifecycle, metrics))
        for _ in range(300):  # up to a minute on a loaded machine
            if len(merges()) >= 3 or task.done():
                break
            await asyncio.sleep(0.2)
        lifecycle.stop("test")
        await asyncio.wait_for(task, 30)
    assert DeltaTable(f"{target}/{PI_AF_HIERARCHY}").version() == 1  # created, then one sync
    done = merges()
    assert len(done) >= 3
    frames = metrics.rows_committed.labels(table=PI_EVENT_FRAMES, shard="0")._value.get()
    assert frames == sum(c["operationMetrics"]["num_source_rows"] for c in done)
