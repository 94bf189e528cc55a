"""An in-process mock-pi on a clock the test moves: the aggregate tables' tests read PI's
own answers for the same windows from it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web

from mock_pi.app import create_app
from mock_pi.settings import MockSettings


class Clock:
    """The mock's clock: seconds since the epoch, set by the test."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
async def mock_at() -> AsyncIterator[Callable[..., Any]]:
    """`await mock_at(t0, tags, **mock_settings)` -> (base URL, clock set to `t0` seconds)."""
    runners: list[web.AppRunner] = []

    async def start(t0: float, tags: int, **settings: Any) -> tuple[str, Clock]:
        clock = Clock(t0)
        app = create_app(MockSettings(tag_count=tags, rate_limit=0, **settings), clock)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}/piwebapi", clock

    yield start
    for runner in runners:
        await runner.cleanup()
