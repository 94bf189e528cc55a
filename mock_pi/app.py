"""The aiohttp application: middleware (limits, auth, faults) and the route modules."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from mock_pi import (
    middleware,
    routes_af,
    routes_batch,
    routes_data,
    routes_points,
    routes_summary,
    routes_updates,
)
from mock_pi.settings import MockSettings
from mock_pi.state import MockState

STATE = web.AppKey("state", MockState)


def create_app(settings: MockSettings, clock: Callable[[], float] | None = None) -> web.Application:
    state = MockState.create(settings, clock)
    app = web.Application(
        middlewares=middleware.build(state),
        handler_args=middleware.handler_args(settings),
        client_max_size=settings.max_body_bytes * 4,
    )
    app[STATE] = state
    routes_data.register(app, state)
    routes_points.register(app, state)
    routes_af.register(app, state)
    routes_batch.register(app, state)
    routes_updates.register(app, state)
    routes_summary.register(app, state)
    return app


def serve(settings: MockSettings) -> None:
    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        access_log=None,
        print=lambda msg: print(f"mock-pi: {msg} (/piwebapi, {settings.tag_count} tags)"),
    )
