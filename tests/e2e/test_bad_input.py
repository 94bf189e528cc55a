"""Bad input from the server: wrong types, NaN/inf, unknown digital states, broken JSON,
missing fields, a stream answered with an error. The worker never crashes: bad values are
quarantined (with their reason), non-finite numbers are kept as such, broken bodies are
retried, and the good values land exactly once.

The real mock serves malformed values (`MOCK_PI_BAD_FRACTION`) and invalid JSON bodies (the
`badjson` fault) to a `pidelta run` worker; its ground truth says which values are bad and
how they must be stored or quarantined. A small crafted server covers what the mock never
serves: a value carrying `Errors`, a well-formed but unknown digital state, a stream
answered with a WebException, and a body that is HTML.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import polars as pl
import pytest
from aiohttp import web

from mock_pi import series as ser
from tests.conftest import FIXED_NOW, ROOT, MockServer, SimClock, free_port, get_json, start_mock
from tests.e2e.helpers import (
    assert_same,
    checkpoints,
    comparable,
    expected,
    expected_quarantine,
    fixed_past,
    iso,
    metrics_port_env,
    ok,
    pidelta,
    read_table,
    scrape,
    start_worker,
    truth_for,
    wait_for,
    worker_env,
)
from workers.pi.times import parse_iso_us

T0 = datetime(2026, 1, 5, tzinfo=UTC)
SERVER = "F1DSbad"
TAGS = {
    "F1DPfloat": ("FLOAT.PV", "Float32", "bar", None),
    "F1DPdigital": ("DIGITAL.PV", "Digital", "", "Valve"),
    "F1DPstring": ("STRING.PV", "String", "", None),
    "F1DPgone": ("GONE.PV", "Float64", "m", None),
}


def ts(seconds: float) -> str:
    return iso(T0 + timedelta(seconds=seconds)).replace(".000000Z", "Z")


def good(seconds: float, value: Any) -> dict[str, Any]:
    return {
        "Timestamp": ts(seconds),
        "Value": value,
        "Good": True,
        "Questionable": False,
        "Substituted": False,
        "Annotated": False,
    }


STREAMS: dict[str, list[Any]] = {
    "F1DPfloat": [
        good(1, 1.5),
        good(2, "NaN"),
        good(3, "Infinity"),
        good(4, "-Infinity"),
        good(5, "not a number"),  # wrong type
        {"Value": 2.5, "Good": True},  # missing Timestamp
        {**good(6, 0), "Timestamp": "yesterday at noon"},  # bad Timestamp
        good(7, [1, 2]),  # wrong type
        {**good(8, None), "Errors": [{"FieldName": "Value", "Message": ["Sensor offline"]}]},
        42,  # not an object
        good(9, 3),
    ],
    "F1DPdigital": [
        good(1, {"Name": "Open", "Value": 1, "IsSystem": False}),
        good(2, {"Name": "Never heard of it", "Value": 77, "IsSystem": False}),
        good(3, {"Name": 5, "Value": "x"}),  # malformed state
        {**good(4, {"Name": "I/O Timeout", "Value": 246, "IsSystem": True}), "Good": False},
    ],
    "F1DPstring": [good(1, "batch 17"), good(2, 12.0), good(3, "batch 18")],
}


class CraftedPI:
    """Discovery routes and `/streamsets/recorded` with crafted bodies; the first recorded
    answer is cut mid-body, the second is not JSON at all."""

    def __init__(self) -> None:
        self.recorded_calls = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/piwebapi/dataservers", self.servers)
        app.router.add_get("/piwebapi/dataservers/{id}/points", self.points)
        app.router.add_get("/piwebapi/streamsets/recorded", self.recorded)
        return app

    async def servers(self, request: web.Request) -> web.Response:
        return web.json_response({"Items": [{"WebId": SERVER, "Name": "BADPI"}]})

    async def points(self, request: web.Request) -> web.Response:
        start = int(request.query.get("startIndex", "0"))
        items = [
            {
                "WebId": w,
                "Name": name,
                "PointType": kind,
                "EngineeringUnits": units,
                "DigitalSetName": digital,
                "Descriptor": "",
            }
            for w, (name, kind, units, digital) in TAGS.items()
        ]
        return web.json_response({"Items": items[start:]})

    async def recorded(self, request: web.Request) -> web.Response:
        self.recorded_calls += 1
        lo = request.query["startTime"]
        hi = request.query["endTime"]
        items = []
        for webid in request.query.getall("webId"):
            if webid == "F1DPgone":
                items.append(
                    {
                        "WebId": webid,
                        "Items": [],
                        "WebException": {"StatusCode": 404, "Errors": ["gone"]},
                    }
                )
                continue
            values = [
                v
                for v in STREAMS[webid]
                if not isinstance(v, dict)
                or "Timestamp" not in v
                or lo <= v["Timestamp"] <= hi
                or not v["Timestamp"].startswith("20")
            ]
            items.append({"WebId": webid, "Items": values if lo <= ts(1) <= hi else []})
        body = orjson.dumps({"Items": items})
        if self.recorded_calls == 1:
            body = body[: len(body) // 2]
        elif self.recorded_calls == 2:
            body = b"<html>proxy error</html>"
        return web.Response(body=body, content_type="application/json")


async def test_bad_input_is_quarantined_never_a_crash(tmp_path: Path) -> None:
    server = CraftedPI()
    runner = web.AppRunner(server.app())
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    target = tmp_path / "lake"
    env = worker_env(f"http://127.0.0.1:{port}/piwebapi", target, pi_max_attempts=4)
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "service",
            "backfill",
            "--start",
            iso(T0),
            "--end",
            iso(T0 + timedelta(minutes=1)),
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), 120)
    finally:
        await runner.cleanup()
    assert proc.returncode == 0, err.decode()[-3000:]
    assert server.recorded_calls >= 3

    rows = pl.from_arrow(read_table(target)).sort(["tag_webid", "timestamp"])
    values = {(r["tag_webid"], r["timestamp"].second): r for r in rows.iter_rows(named=True)}
    assert rows.height == len(values)
    assert values[("F1DPfloat", 1)]["value"] == 1.5
    assert math.isnan(values[("F1DPfloat", 2)]["value"])
    assert values[("F1DPfloat", 3)]["value"] == math.inf
    assert values[("F1DPfloat", 4)]["value"] == -math.inf
    assert values[("F1DPfloat", 8)]["value_error"] == "Value: Sensor offline"
    assert values[("F1DPfloat", 9)]["value"] == 3.0
    assert values[("F1DPdigital", 1)]["digital_state"] == "Open"
    assert values[("F1DPdigital", 2)]["digital_code"] == 77
    assert values[("F1DPdigital", 4)]["is_system_state"] is True
    assert values[("F1DPstring", 1)]["value_string"] == "batch 17"
    assert not any(w == "F1DPgone" for w, _ in values)

    quarantine = pl.from_arrow(read_table(target, "_pidelta_quarantine"))
    reasons = sorted(
        zip(quarantine["tag_webid"].to_list(), quarantine["reason"].to_list(), strict=True)
    )
    assert reasons == sorted(
        [
            ("F1DPfloat", "wrong_value_type"),
            ("F1DPfloat", "missing_timestamp"),
            ("F1DPfloat", "bad_timestamp"),
            ("F1DPfloat", "wrong_value_type"),
            ("F1DPfloat", "not_an_object"),
            ("F1DPdigital", "bad_digital_state"),
            ("F1DPstring", "wrong_value_type"),
        ]
    )
    assert set(quarantine["app_id"].to_list()) == {"pidelta-bf-0-of-1"}


BAD_TAGS = 200


@dataclass
class BadRun:
    """What a `pidelta run` against a misbehaving mock left behind."""

    mock: MockServer
    target: Path
    start: datetime
    quarantined_metric: dict[str, float]
    quarantined_then: dict[str, int]  # the table's rows per reason at the metric's scrape
    badjson: int
    exit_code: int

    def ranges(self) -> dict[str, tuple[datetime, datetime]]:
        return {w: (self.start, cp) for w, cp in checkpoints(self.target).items()}


def open_set_asides(target: Path) -> int:
    """Ranges set aside and not read again yet: until then the table lacks them."""
    if not (target / "_pidelta_set_aside").exists():
        return 0
    rows = pl.from_arrow(read_table(target, "_pidelta_set_aside"))
    closed = rows.group_by(["tag_webid", "range_start", "range_end"]).agg(
        pl.col("resolved_at").is_not_null().any().alias("closed")
    )
    return int((~closed["closed"]).sum())


def quarantined_snapshot(port: int, target: Path) -> tuple[dict[str, float], dict[str, int]]:
    """The metric and the quarantine table's rows per reason at one quiet moment: the
    worker goes on committing after it caught up, so the two are taken together, and only
    when neither moved while the other was read."""
    for _ in range(120):
        before = quarantined_metric(port)
        rows = dict(Counter(read_table(target, "_pidelta_quarantine")["reason"].to_pylist()))
        after = quarantined_metric(port)
        again = dict(Counter(read_table(target, "_pidelta_quarantine")["reason"].to_pylist()))
        if before == after and rows == again:
            return before, rows
        time.sleep(0.5)
    raise AssertionError("the quarantine never held still for a snapshot")


def quarantined_metric(port: int) -> dict[str, float]:
    """`pidelta_quarantined_values_total` by reason, from the worker's /metrics."""
    prefix = 'pidelta_quarantined_values_total{reason="'
    return {
        name.removeprefix(prefix).partition('"')[0]: value
        for name, value in scrape(port).items()
        if name.startswith(prefix)
    }


@pytest.fixture(scope="module")
def bad_run(tmp_path_factory: pytest.TempPathFactory) -> BadRun:
    """One `pidelta run` against a mock serving 1% malformed values and 20% invalid JSON
    bodies: once it has caught up an hour and read again every stream it had to set aside,
    the test reads its metrics and stops it."""
    clock = SimClock.start()
    mock = start_mock(
        clock, tag_count=BAD_TAGS, seed=42, rate_limit=0, bad_fraction=0.01, faults="badjson=0.2"
    )
    target = tmp_path_factory.mktemp("bad") / "lake"
    start = fixed_past(60)
    env, port = metrics_port_env(
        worker_env(
            mock,
            target,
            start=iso(start),
            poll_interval=2,
            pi_max_attempts=10,
            pi_page_size=2000,
        )
    )
    until = clock.now().replace(microsecond=0) - timedelta(seconds=11)
    worker = start_worker("run", env=env, log=target.parent / "worker.log")
    try:
        caught_up = wait_for(
            lambda: (
                (target / "_pidelta_checkpoints").exists()
                and len(cps := checkpoints(target)) == BAD_TAGS
                and min(cps.values()) >= until
                and open_set_asides(target) == 0
            ),
            timeout=240,
        )
        assert caught_up, worker.text()[-3000:]
        metric, then = quarantined_snapshot(port, target)
        code = worker.terminate()
        _, faults = get_json(f"{mock.url}/mock/faults")
    finally:
        worker.kill9()
        mock.stop()
    injected = faults["Injected"]["badjson"]  # type: ignore[index]
    return BadRun(mock, target, start, metric, then, injected, code)


UNREADABLE = "unreadable_answer"


def test_mock_bad_values_are_stored_or_quarantined_exactly(bad_run: BadRun) -> None:
    assert bad_run.exit_code == 0
    assert bad_run.badjson > 0
    truth = truth_for(bad_run.mock)
    ranges = bad_run.ranges()
    want = expected(truth, ranges)
    values = want["value"].to_numpy(zero_copy_only=False)
    assert int(np.isposinf(values).sum()) > 0
    assert int(np.isneginf(values).sum()) > 0
    assert int(np.isnan(values).sum()) > want["value"].null_count
    rows = pl.from_arrow(read_table(bad_run.target))
    assert_same(rows.to_arrow(), want)

    bad = pl.from_arrow(expected_quarantine(truth, ranges))
    assert set(bad["reason"]) == {
        "wrong_value_type",
        "bad_digital_state",
        "missing_timestamp",
        "bad_timestamp",
        "not_an_object",
    }
    got = pl.from_arrow(read_table(bad_run.target, "_pidelta_quarantine"))
    # The injected badjson faults may leave a stream's answer unreadable three times over:
    # it is then set aside (a row of its own, reason unreadable_answer) and read again
    # later, which the table's equality above proves. Every other row is a bad value.
    got = got.filter(pl.col("reason") != UNREADABLE)
    key = ["tag_webid", "reason", "raw"]
    assert comparable(got).sort(key).equals(comparable(bad).sort(key))
    # The metric counts what the table held when it was read (the worker went on after).
    counted = {reason: n for reason, n in bad_run.quarantined_metric.items() if n}
    assert counted == bad_run.quarantined_then
    assert open_set_asides(bad_run.target) == 0


def test_a_value_without_value_field_is_quarantined(bad_run: BadRun) -> None:
    truth = truth_for(bad_run.mock)
    missing = pl.from_arrow(expected_quarantine(truth, bad_run.ranges())).filter(
        pl.col("bad_kind") == ser.BAD_MISSING_VALUE
    )
    assert missing.height > 0
    rows = pl.from_arrow(read_table(bad_run.target))
    assert rows.filter(pl.col("is_system_state").is_null()).height == 0
    got = pl.from_arrow(read_table(bad_run.target, "_pidelta_quarantine"))
    got = got.filter(pl.col("reason") != UNREADABLE)  # answers set aside: no value's text
    held = comparable(got).join(comparable(missing), on=["tag_webid", "raw"], how="semi")
    assert held.height == missing.height
    assert set(held["reason"]) == {"wrong_value_type"}


def test_bad_values_at_page_boundaries_are_quarantined_once(
    tmp_path: Path, mock_pi_factory: Callable[..., MockServer]
) -> None:
    """Pages of 7 values against a mock where 30% are malformed: many pages end on (or
    continue after) a value whose timestamp does not parse. Each good value lands once,
    each bad one is quarantined once."""
    mock = mock_pi_factory(
        tag_count=12, seed=7, rate_limit=0, bad_fraction=0.3, clock_start=FIXED_NOW.isoformat()
    )
    target = tmp_path / "lake"
    start = fixed_past(90)
    end = start + timedelta(minutes=20)
    env = worker_env(mock, target, pi_page_size=7, pi_max_items_per_call=150_000)
    ok(pidelta("backfill", "--start", iso(start), "--end", iso(end), env=env))
    truth = truth_for(mock)
    ranges = {w: (start, cp) for w, cp in checkpoints(target, "pidelta-bf-").items()}
    assert len(ranges) == 12
    assert set(ranges.values()) == {(start, end)}
    assert_same(read_table(target), expected(truth, ranges))
    want = comparable(pl.from_arrow(expected_quarantine(truth, ranges)))
    got = comparable(pl.from_arrow(read_table(target, "_pidelta_quarantine")))
    key = ["tag_webid", "reason", "raw"]
    assert want.height > 100
    assert got.sort(key).equals(want.sort(key))


STUCK_TAGS = {"F1DPstuck": "STUCK.PV", "F1DPfine": "FINE.PV"}
STUCK_VALUES = 1200  # at one timestamp: more than PIDELTA_PI_MAX_ITEMS_PER_CALL=1000


class UnpageablePI:
    """Discovery and `/streamsets/recorded` honouring the range (inclusive, as `Inside`)
    and maxCount; F1DPstuck holds STUCK_VALUES values at one timestamp, which no call
    within the server's item cap can page past."""

    def __init__(self, at: datetime) -> None:
        self.at = at
        self.series = {
            "F1DPstuck": [good_at(at, float(i)) for i in range(STUCK_VALUES)],
            "F1DPfine": [good_at(at + timedelta(seconds=s), float(s)) for s in (-60, 0, 60)],
        }

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/piwebapi/dataservers", self.servers)
        app.router.add_get("/piwebapi/dataservers/{id}/points", self.points)
        app.router.add_get("/piwebapi/streamsets/recorded", self.recorded)
        app.router.add_get("/piwebapi/assetservers", self.nothing)
        app.router.add_get("/piwebapi/dataservers/{id}/enumerationsets", self.nothing)
        app.router.add_post("/piwebapi/batch", self.no_attributes)
        return app

    async def no_attributes(self, request: web.Request) -> web.Response:
        """The points sync of `once` asks each point's attributes in a /batch: none here."""
        asked = await request.json()
        empty = {"Status": 200, "Headers": {}, "Content": {"Items": []}}
        return web.json_response({key: empty for key in asked})

    async def servers(self, request: web.Request) -> web.Response:
        return web.json_response({"Items": [{"WebId": SERVER, "Name": "STUCKPI"}]})

    async def points(self, request: web.Request) -> web.Response:
        start = int(request.query.get("startIndex", "0"))
        items = [
            {"WebId": w, "Name": n, "PointType": "Float32", "EngineeringUnits": "bar"}
            for w, n in STUCK_TAGS.items()
        ]
        return web.json_response({"Items": items[start:]})

    async def nothing(self, request: web.Request) -> web.Response:
        return web.json_response({"Items": []})

    async def recorded(self, request: web.Request) -> web.Response:
        lo, hi = (parse_iso_us(request.query[k]) for k in ("startTime", "endTime"))
        limit = int(request.query["maxCount"])
        items = []
        for webid in request.query.getall("webId"):
            inside = [v for v in self.series[webid] if lo <= parse_iso_us(v["Timestamp"]) <= hi]
            items.append({"WebId": webid, "Items": inside[:limit]})
        return web.Response(body=orjson.dumps({"Items": items}), content_type="application/json")


def good_at(moment: datetime, value: float) -> dict[str, Any]:
    return good((moment - T0).total_seconds(), value)


async def test_a_stream_that_cannot_be_paged_is_quarantined_and_once_exits_0_twice(
    tmp_path: Path,
) -> None:
    """More values at one timestamp than one call may return used to crash the worker on
    every restart (the batch re-ran). Now the stream is quarantined once, the other stream
    lands, and `pidelta once` exits 0 each time."""
    at = fixed_past(30)
    server = UnpageablePI(at)
    runner = web.AppRunner(server.app())
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    target = tmp_path / "lake"
    env = worker_env(
        f"http://127.0.0.1:{port}/piwebapi",
        target,
        clock=SimClock.start(),
        start=iso(at - timedelta(minutes=5)),
        late_lookback=0,
        pi_max_items_per_call=1000,
        pi_page_size=100,
    )
    try:
        for _ in range(2):
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "service",
                "once",
                cwd=ROOT,
                env=env,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            _, err = await asyncio.wait_for(proc.communicate(), 120)
            assert proc.returncode == 0, err.decode()[-3000:]
    finally:
        await runner.cleanup()

    rows = pl.from_arrow(read_table(target)).sort(["tag_webid", "timestamp", "sequence"])
    fine = rows.filter(pl.col("tag_webid") == "F1DPfine")
    assert fine["value"].to_list() == [-60.0, 0.0, 60.0]
    # The first page of the stuck stream (maxCount = PIDELTA_PI_PAGE_SIZE) is kept.
    stuck = rows.filter(pl.col("tag_webid") == "F1DPstuck")
    assert stuck["sequence"].to_list() == list(range(100))
    assert stuck["value"].to_list() == [float(i) for i in range(100)]
    quarantine = read_table(target, "_pidelta_quarantine").to_pylist()
    assert [(q["tag_webid"], q["tag_name"], q["reason"], q["source"]) for q in quarantine] == [
        ("F1DPstuck", "STUCK.PV", "unpageable", "streamsets/recorded")
    ]
    assert quarantine[0]["raw"].startswith(
        f"at least 1000 values at {iso(at).replace('.000000Z', 'Z')}, the most one call may "
        "return: values after it up to "
    )
