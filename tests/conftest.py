"""Shared fixtures: a real mock-pi server over HTTP on loopback."""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


# The instant a test's simulated clock starts from: tests that follow "now" see the same
# days, outages and malformed values on every run. Noon, so no window of a test meets a
# UTC midnight; in the past, so a worker on the real clock may read any window of it.
FIXED_NOW = datetime(2025, 6, 2, 12, 0, tzinfo=UTC)
SIMCLOCK_SITE = Path(__file__).parent / "simclock"


@dataclass(frozen=True)
class SimClock:
    """The real clock moved by whole seconds, so that it read `FIXED_NOW` (within the
    second) when made.

    The test reads it with `time()`/`now()`; a process started with `process_env()` runs on
    it too (its wall clock; see tests/simclock): mock-pi and a pidelta worker then share
    one "now" to the microsecond, whatever the real date.
    """

    offset: int

    @classmethod
    def start(cls, at: datetime = FIXED_NOW) -> SimClock:
        return cls(math.floor(at.timestamp()) - math.floor(time.time()))

    def time(self) -> float:
        return time.time() + self.offset

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.time(), UTC)

    def process_env(self) -> dict[str, str]:
        """Environment that puts a Python subprocess on this clock (tests/simclock)."""
        path = [str(SIMCLOCK_SITE), *filter(None, [os.environ.get("PYTHONPATH")])]
        return {"PYTHONPATH": os.pathsep.join(path), "SIMCLOCK_OFFSET": str(self.offset)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class MockServer:
    """A mock-pi process: `url` is the PI Web API base (ends in /piwebapi)."""

    process: subprocess.Popen[bytes]
    port: int
    env: dict[str, str]
    clock: SimClock | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/piwebapi"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def start_mock(clock: SimClock | None = None, **env: object) -> MockServer:
    """Start `python -m mock_pi` with MOCK_PI_* settings given as keyword arguments, on
    `clock` when given (a worker built with `worker_env` for it then shares that clock)."""
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MOCK_PI_")}
    full_env.update({f"MOCK_PI_{k.upper()}": str(v) for k, v in env.items()})
    full_env["MOCK_PI_PORT"] = str(port)
    if clock is not None:
        full_env.update(clock.process_env())
    proc = subprocess.Popen(
        [sys.executable, "-m", "mock_pi"],
        cwd=ROOT,
        env=full_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    server = MockServer(proc, port, full_env, clock)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise RuntimeError(f"mock-pi exited with {proc.returncode}: {err}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return server
        except OSError:
            time.sleep(0.05)
    server.stop()
    raise RuntimeError("mock-pi did not start within 30 s")


@pytest.fixture
def mock_pi_factory() -> Iterator[Callable[..., MockServer]]:
    """Start any number of mock-pi servers with their own settings; all stop at teardown."""
    started: list[MockServer] = []

    def factory(clock: SimClock | None = None, **env: object) -> MockServer:
        server = start_mock(clock, **env)
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def mock_pi() -> Iterator[MockServer]:
    """One default mock-pi (1000 tags, seed 42, no auth, no faults) for read-only tests."""
    server = start_mock(tag_count=1000, seed=42, rate_limit=0)
    yield server
    server.stop()


def get_json(url: str, headers: dict[str, str] | None = None) -> tuple[int, object]:
    """A plain stdlib GET, so that tests of the server do not depend on pidelta's client."""
    import json
    import urllib.error

    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        body = err.read()
        return err.code, json.loads(body) if body else None
