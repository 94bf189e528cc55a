"""The mock-pi tests' shared server runs on a SimClock, so their windows are constants."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import MockServer, SimClock, start_mock


@pytest.fixture(scope="session")
def mock_pi() -> Iterator[MockServer]:
    """The default mock-pi (1000 tags, seed 42) on a SimClock started with it: its "now" is
    FIXED_NOW plus the session's time so far, so a window set from FIXED_NOW is the same on
    every run (tests elsewhere share the real-clock one of tests/conftest.py)."""
    server = start_mock(SimClock.start(), tag_count=1000, seed=42, rate_limit=0)
    yield server
    server.stop()
