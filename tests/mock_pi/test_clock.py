"""MOCK_PI_CLOCK_START: the server's "now" starts at a set instant and runs in real time."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from mock_pi.cli import build_parser, main
from mock_pi.clock import clock_from
from mock_pi.settings import MockSettings
from tests.conftest import FIXED_NOW, MockServer, SimClock
from tests.mock_pi import get, truth_for, url

START = datetime(2025, 6, 2, 12, 0, tzinfo=UTC)
SETTINGS = {"tag_count": 50, "seed": 42, "clock_start": START.isoformat()}


def test_a_set_clock_runs_from_its_start() -> None:
    real = [1000.0]
    clock = clock_from(START.isoformat(), lambda: real[0])
    assert clock() == START.timestamp()
    real[0] = 1002.5
    assert clock() == START.timestamp() + 2.5
    assert clock_from(None, lambda: real[0])() == 1002.5


def test_the_truth_reads_the_settings_clock() -> None:
    truth = truth_for(**SETTINGS)
    assert START.timestamp() <= truth.state.clock() < START.timestamp() + 60
    # The archive starts at midnight UTC HISTORY_DAYS (30) before the set day.
    assert truth.state.history_start == datetime(2025, 5, 3, tzinfo=UTC).timestamp()
    assert MockSettings().clock_start is None


def test_the_server_serves_the_set_days(mock_pi_factory: Callable[..., MockServer]) -> None:
    server = mock_pi_factory(**SETTINGS, rate_limit=0)
    truth = truth_for(**SETTINGS)
    point = truth.state.catalog.point(0)
    base = f"/streams/{point.webid}"

    def times(items: list[dict[str, object]]) -> list[datetime]:
        return [datetime.fromisoformat(str(i["Timestamp"])) for i in items]

    # `*` is the set clock: the last ten minutes end at the set start, not today.
    _, recent = get(url(server.url, f"{base}/recorded", startTime="*-10m", endTime="*"))
    stamps = times(recent["Items"])
    assert stamps, "no value in the last ten minutes of the set clock"
    assert START - timedelta(minutes=11) < min(stamps) <= max(stamps) < START + timedelta(minutes=5)
    _, end = get(url(server.url, f"{base}/end"))
    assert START - timedelta(minutes=5) < times([end])[0] < START + timedelta(minutes=5)
    # A settled range is what the truth built with the same settings holds.
    settled = url(
        server.url,
        f"{base}/recorded",
        startTime="2025-06-02T11:50:00Z",
        endTime="2025-06-02T11:55:00Z",
        maxCount=100_000,
    )
    _, body = get(settled)
    assert body["Items"] == truth.recorded(point, "2025-06-02T11:50:00Z", "2025-06-02T11:55:00Z")
    assert body["Items"]
    # The archive begins 30 days before the set day.
    early = url(
        server.url,
        f"{base}/recorded",
        startTime="2025-05-01T00:00:00Z",
        endTime="2025-05-03T00:10:00Z",
        maxCount=100_000,
    )
    _, body = get(early)
    assert min(times(body["Items"])) >= datetime(2025, 5, 3, tzinfo=UTC)


def test_help_names_the_setting() -> None:
    text = " ".join(build_parser().format_help().split())
    assert "--clock-start CLOCK_START" in text
    assert "MOCK_PI_CLOCK_START" in text


def test_a_start_without_its_zone_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--clock-start", "2025-06-02T12:00:00"]) == 2
    assert capsys.readouterr().err == (
        "mock-pi: invalid configuration: MOCK_PI_CLOCK_START: "
        "'2025-06-02T12:00:00' has no time zone: add Z or an offset such as +02:00\n"
    )


# Reads the clock, then sleeps, waits on an event and on the event loop, as a worker does:
# a clock that reads right but breaks a sleep (libfaketime did) crashed workers on a retry.
SLEEPER = """
import asyncio, threading, time
began = time.time()
time.sleep(0.01)
threading.Event().wait(0.01)
asyncio.run(asyncio.sleep(0.01))
print(repr(began), time.time() - began >= 0.03)
"""


def test_a_process_on_a_sim_clock_reads_the_tests_clock_and_sleeps() -> None:
    """What `SimClock.process_env` gives mock-pi and the workers: the same "now"."""
    clock = SimClock.start()
    before = clock.time()
    child = subprocess.run(
        [sys.executable, "-c", SLEEPER],
        env={**os.environ, **clock.process_env()},
        capture_output=True,
        text=True,
        check=True,
    )
    after = clock.time()
    began, slept = child.stdout.split()
    assert before <= float(began) <= after
    assert slept == "True"
    assert FIXED_NOW.timestamp() <= before < FIXED_NOW.timestamp() + 60


def test_a_process_on_a_sim_clock_keeps_time_before_its_first_read() -> None:
    """A process that works a while before it first reads the clock (mock-pi imports for
    most of a second) reads the test's "now" then, not the instant it started plus the
    time since that first read: two processes on one SimClock agree to the microsecond."""
    clock = SimClock.start()
    before = clock.time()
    child = subprocess.run(
        [sys.executable, "-c", "import time; time.sleep(0.5); print(repr(time.time()))"],
        env={**os.environ, **clock.process_env()},
        capture_output=True,
        text=True,
        check=True,
    )
    after = clock.time()
    assert before + 0.5 <= float(child.stdout) <= after
